"""The gate in front of ``@best``: a pinned evaluation suite run on the candidate and on the holder.

After a sweep, the best trial's encoder becomes a new version of ``<model_name>-<key>``
(:func:`pipelines.tune.tracking.promote_best`). It takes the alias ``best`` only if it scores
strictly higher than the current holder on an :class:`EvalSuite`: one manifest (fixed by its
content fingerprint), one protocol and metric (``retrieval`` R@1 or ``linear`` top-1), fixed
splits and fixed test views (windows, crops, stride, size, seed), so that two encoders trained
by different sweeps, on different data or metrics, are compared on the same ground.

* **Pinning**: the first suite that scores a candidate for a registered model is stored on it
  (registered-model tag :data:`SUITE_TAG`, the suite's JSON). Every later gate of that model uses
  the pinned suite, whatever the command line says, and first checks that its manifest still has
  the pinned fingerprint: if not, ``@best`` does not move and the decision says how to go on
  (restore the manifest, or ``jobs/tune.py --repin-suite``).
* **Scores**: each scored version gets the tag ``vidray_gate_score.<suite_id>``; a holder that
  already has one for the pinned suite is not evaluated again.
* **Decision**: no holder -> promoted; a tie keeps the holder; a candidate that cannot be scored
  (e.g. a detector, whose output is not an embedding) is judged on the sweep's own metric instead
  (:func:`pipelines.tune.tracking.promote_best`), and the decision says so. The candidate version records the suite,
  both scores and the decision (:func:`judge`).
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import json
from collections.abc import Callable
from typing import Any

from pipelines.io import storage
from pipelines.io.manifest import exists as manifest_exists

SUITE_TAG = "vidray_eval_suite"            # on the registered model: the pinned suite's JSON
SCORE_TAG = "vidray_gate_score."           # + suite_id, on every version scored on that suite
METRICS = {"retrieval": "R@1", "linear": "top1"}
REPIN_HINT = "jobs/tune.py --repin-suite"


@dataclasses.dataclass(frozen=True)
class EvalSuite:
    """What a gate scores encoders on; every field is part of :attr:`suite_id`.

    Attributes:
        manifest: dataset folder or manifest URL (absolute).
        fingerprint: :func:`pipelines.io.manifest.fingerprint` of that manifest when pinned.
        protocol: ``retrieval`` (metric R@1) or ``linear`` (metric top1), higher is better.
        train_split, test_split: gallery / probe-training split and query / test split.
        modality: ``rgb`` or ``flow`` views; an encoder of the other modality cannot be scored.
        debug_size, num_clips, spatial_crops, stride, seed, linear_epochs: the
            :class:`~pipelines.eval.protocols.EvalConfig` fields that fix the views and the probe.
    """

    manifest: str
    fingerprint: str
    protocol: str = "retrieval"
    train_split: str = "train"
    test_split: str = "test"
    modality: str = "rgb"
    debug_size: bool = False
    num_clips: int = 2
    spatial_crops: int = 1
    stride: int = 1
    seed: int = 0
    linear_epochs: int = 300

    def __post_init__(self) -> None:
        if self.protocol not in METRICS:
            raise ValueError(f"gate protocol must be one of {', '.join(METRICS)}, got {self.protocol!r}")
        if self.modality not in ("rgb", "flow"):
            raise ValueError(f"suite modality must be 'rgb' or 'flow', got {self.modality!r}")

    @property
    def metric(self) -> str:
        """The protocol's score the gate compares (``R@1`` or ``top1``, in %)."""
        return METRICS[self.protocol]

    @property
    def label(self) -> str:
        """``retrieval R@1``: how a score of this suite is named in sentences."""
        return f"{self.protocol} {self.metric}"

    def to_json(self) -> str:
        """Canonical JSON (sorted keys, no spaces): what is pinned and hashed."""
        return json.dumps(dataclasses.asdict(self), sort_keys=True, separators=(",", ":"))

    @classmethod
    def from_json(cls, text: str) -> EvalSuite:
        """The suite of :meth:`to_json`; unknown keys (a newer writer) are ignored."""
        raw = json.loads(text)
        return cls(**{f.name: raw[f.name] for f in dataclasses.fields(cls) if f.name in raw})

    @property
    def suite_id(self) -> str:
        """12 hex digits of the sha256 of :meth:`to_json`."""
        return hashlib.sha256(self.to_json().encode()).hexdigest()[:12]

    def eval_config(self, batch_size: int = 4):
        """The :class:`~pipelines.eval.protocols.EvalConfig` of this suite."""
        from pipelines.eval.protocols import EvalConfig

        return EvalConfig(manifest=self.manifest, train_split=self.train_split, test_split=self.test_split,
                          debug_size=self.debug_size, num_clips=self.num_clips, spatial_crops=self.spatial_crops,
                          stride=self.stride, batch_size=batch_size, linear_epochs=self.linear_epochs,
                          seed=self.seed, modality=self.modality)


ScoreFn = Callable[[str, EvalSuite], float]


@dataclasses.dataclass(frozen=True)
class GateSettings:
    """How :func:`pipelines.tune.tracking.promote_best` gates: the proposed suite per encoder key
    (used unless one is pinned), ``repin`` (replace the pinned suite by the proposed one) and the
    scorer (``None``: :func:`evaluate`)."""

    suites: dict[str, EvalSuite]
    repin: bool = False
    score_fn: ScoreFn | None = None


@dataclasses.dataclass(frozen=True)
class Verdict:
    """A gate's outcome: whether the candidate takes ``@best``, why, and its version tags."""

    promoted: bool
    decision: str
    tags: dict[str, str]
    unscorable: bool = False  # the candidate could not be scored on the suite (e.g. a detector)


def check_gate(cfg: Any) -> None:
    """Refuse gate settings of a :class:`~pipelines.tune.sweep.SweepConfig` that cannot work.

    Raises:
        ConfigError: an unknown ``--gate-protocol``, a ``--gate-manifest`` with no manifest,
            or gate settings beside ``--no-gate``.
    """
    from pipelines.config import ConfigError

    given = [flag for flag, on in (("--gate-manifest", cfg.gate_manifest), ("--gate-protocol", cfg.gate_protocol),
                                   ("--repin-suite", cfg.repin_suite)) if on]
    if not cfg.gate and given:
        raise ConfigError(f"{', '.join(given)} set(s) the evaluation gate that --no-gate turns off")
    if cfg.gate_protocol is not None and cfg.gate_protocol not in METRICS:
        raise ConfigError(f"--gate-protocol must be one of {', '.join(METRICS)}, got {cfg.gate_protocol!r}")
    if cfg.gate_manifest and not manifest_exists(storage.absolute(cfg.gate_manifest)):
        raise ConfigError(f"--gate-manifest {cfg.gate_manifest}: no manifest there (jobs/ingest.py makes one)")


def manifest_fingerprint(url: str) -> str:
    """The content fingerprint of the manifest at ``url`` (folder or ``.parquet``)."""
    from pipelines.io import manifest

    return manifest.fingerprint(manifest.read_manifest(url))


def make_suite(manifest: str, **fields: Any) -> EvalSuite:
    """An :class:`EvalSuite` on ``manifest`` with its current fingerprint and ``fields``."""
    url = storage.absolute(manifest)
    return EvalSuite(manifest=url, fingerprint=manifest_fingerprint(url), **fields)


def sweep_suites(job: Any, spec: Any, phases: list, *, manifest: str | None = None,
                 protocol: str | None = None) -> dict[str, EvalSuite]:
    """The suite a sweep proposes for each encoder key it registers.

    Defaults: the base job's data manifest and view size, the method's first gateable eval
    protocol (retrieval before linear), ``flow`` views for the key ``flow``, the stride of the
    clips the key's last phase trains on, and 2 windows x 1 crop per video.
    """
    protocol = protocol or next((p for p in ("retrieval", "linear") if p in spec.eval_protocols), "retrieval")
    url = storage.absolute(manifest or job.data.manifest)
    fingerprint = manifest_fingerprint(url)
    suites = {}
    for phase in phases:
        for key in phase.registers:  # the last phase registering a key wins, as in promote_best's keys
            suites[key] = EvalSuite(manifest=url, fingerprint=fingerprint, protocol=protocol,
                                    modality="flow" if key == "flow" else "rgb", debug_size=job.data.debug_size,
                                    stride=_stride(spec, job, phase))
    return suites


def _stride(spec: Any, job: Any, phase: Any) -> int:
    """The frame stride of the phase's training clips (1 when its recipe has none)."""
    try:
        return int(getattr(spec.recipe(job, phase), "stride", 1) or 1)
    except Exception:  # noqa: BLE001 - a recipe that needs data not there yet: the recipes' default
        return 1


def evaluate(model_uri: str, suite: EvalSuite) -> float:
    """Score a registered encoder on ``suite`` (Ray must be up: features come from Ray Data).

    Raises:
        ValueError: the encoder's modality is not the suite's, or the protocol cannot run.
    """
    from pipelines.eval.protocols import build_from_state, match_modality, run_protocols
    from pipelines.eval.results import load_encoder

    backbone, kwargs, state, _ = load_encoder(model_uri)
    cfg, kwargs = match_modality(suite.eval_config(), {"in_chans": _in_chans(state), **kwargs})
    if cfg.modality != suite.modality:
        raise ValueError(f"{model_uri} is a {cfg.modality} encoder (in_chans={kwargs.get('in_chans')}); "
                         f"the suite scores {suite.modality} views")
    results = run_protocols(functools.partial(build_from_state, backbone, kwargs, state, suite.seed),
                            [suite.protocol], cfg)
    return float(results[suite.protocol][suite.metric])


def _in_chans(state: dict) -> int:
    """The input channels of an encoder's first 3D convolution (registered kwargs may not say:
    match_modality would then take the suite's modality for the encoder's)."""
    return next((int(v.shape[1]) for v in state.values() if getattr(v, "ndim", 0) == 5), 3)


def pinned_suite(c, name: str) -> EvalSuite | None:
    """The suite pinned on registered model ``name``, or None."""
    text = (c.get_registered_model(name).tags or {}).get(SUITE_TAG)
    return EvalSuite.from_json(text) if text else None


def pin_suite(c, name: str, suite: EvalSuite) -> None:
    """Store ``suite`` as the one every later gate of ``name`` uses."""
    c.set_registered_model_tag(name, SUITE_TAG, suite.to_json())


def choose_suite(c, name: str, proposed: EvalSuite, repin: bool) -> tuple[EvalSuite, bool]:
    """``(suite, needs_pin)``: the pinned suite of ``name``, else (or with ``repin``) ``proposed``."""
    pinned = None if repin else pinned_suite(c, name)
    if pinned is None:
        return proposed, True
    if pinned != proposed:
        print(f"gate {name}: using its pinned suite {pinned.suite_id} ({pinned.label} on {pinned.manifest}), not "
              f"this sweep's {proposed.suite_id}; {REPIN_HINT} replaces it", flush=True)
    return pinned, False


def stale_reason(suite: EvalSuite) -> str | None:
    """Why ``suite`` cannot be run as pinned (its manifest is gone or changed), or None."""
    try:
        if not manifest_exists(suite.manifest):
            raise FileNotFoundError("no manifest there")
        now = manifest_fingerprint(suite.manifest)
    except Exception as exc:  # noqa: BLE001 - any read failure refuses the same way
        return (f"not promoted: the manifest {suite.manifest} of suite {suite.suite_id} cannot be read "
                f"({_brief(exc)}); restore it, or re-pin the suite with {REPIN_HINT}")
    if now != suite.fingerprint:
        return (f"not promoted: the manifest {suite.manifest} changed since suite {suite.suite_id} was pinned "
                f"(fingerprint {suite.fingerprint[:12]} then, {now[:12]} now); restore that manifest, or re-pin "
                f"the suite to the new one with {REPIN_HINT}")
    return None


def _score(c, name: str, version: Any, suite: EvalSuite, score_fn: ScoreFn) -> float:
    """``version``'s score on ``suite``: its tag when it has one, else evaluated now and tagged."""
    stored = (version.tags or {}).get(SCORE_TAG + suite.suite_id)
    if stored is not None:
        return float(stored)
    value = float(score_fn(f"models:/{name}/{version.version}", suite))
    c.set_model_version_tag(name, version.version, SCORE_TAG + suite.suite_id, repr(value))
    return value


def judge(c, name: str, candidate: Any, holder: Any, proposed: EvalSuite, *, repin: bool = False,
          score_fn: ScoreFn | None = None) -> Verdict:
    """Score ``candidate`` (a version of ``name``) and the ``@best`` ``holder`` (or None) on the
    suite of ``name`` (module docstring), pin it on first use, and decide.

    Returns:
        the verdict; its ``tags`` (suite, both scores) are for the candidate version.
    """
    score_fn = score_fn or evaluate
    try:
        suite, needs_pin = choose_suite(c, name, proposed, repin)
    except Exception as exc:  # noqa: BLE001 - a pinned tag edited by hand
        why = f"not promoted: the suite pinned on {name} cannot be read ({_brief(exc)}); re-pin it with {REPIN_HINT}"
        return _told(name, candidate, Verdict(False, why, {}))
    tags = {"vidray_gate_suite": suite.suite_id, "vidray_gate_metric": suite.label, SUITE_TAG: suite.to_json()}
    stale = stale_reason(suite)
    if stale is not None:
        return _told(name, candidate, Verdict(False, stale, tags))
    try:
        score = _score(c, name, candidate, suite, score_fn)
    except Exception as exc:  # noqa: BLE001 - an encoder the suite cannot score stays out of @best
        why = f"not promoted: v{candidate.version} could not be scored on suite {suite.suite_id} ({suite.label}): "
        return _told(name, candidate, Verdict(False, why + _brief(exc), tags, unscorable=True))
    if needs_pin:
        pin_suite(c, name, suite)
    tags["vidray_gate_score"] = repr(score)
    return _told(name, candidate, _against_holder(c, name, holder, suite, score, score_fn, tags))


def _against_holder(c, name: str, holder: Any, suite: EvalSuite, score: float, score_fn: ScoreFn,
                    tags: dict[str, str]) -> Verdict:
    """The candidate's ``score`` against the holder's on ``suite`` (scored now when not tagged)."""
    if holder is None:
        return Verdict(True, f"promoted: no holder of @best; {suite.label} {score:.4g} on suite {suite.suite_id}",
                       tags)
    tags["vidray_gate_holder_version"] = str(holder.version)
    try:
        old = _score(c, name, holder, suite, score_fn)
    except Exception as exc:  # noqa: BLE001 - a holder that cannot be scored any more (artifacts gone)
        return Verdict(True, f"promoted: {suite.label} {score:.4g} on suite {suite.suite_id}; the holder "
                             f"v{holder.version} could not be scored: {_brief(exc)}", tags)
    tags["vidray_gate_holder_score"] = repr(old)
    if score > old:
        return Verdict(True, f"promoted: beats v{holder.version} on suite {suite.suite_id}: {suite.label} "
                             f"{score:.4g} vs {old:.4g}", tags)
    tie = " (a tie keeps the holder)" if score == old else ""
    return Verdict(False, f"not promoted: kept v{holder.version} on suite {suite.suite_id}: {suite.label} "
                          f"{score:.4g} vs its {old:.4g}{tie}", tags)


def _brief(exc: BaseException, limit: int = 400) -> str:
    """``Type: message`` on one line, cut to ``limit`` characters (a tag value has a size limit)."""
    text = " ".join(f"{type(exc).__name__}: {exc}".split())
    return text if len(text) <= limit else text[:limit - 3] + "..."


def _told(name: str, candidate: Any, verdict: Verdict) -> Verdict:
    """Print the verdict as one line (both scores are in its sentence) and return it."""
    print(f"gate {name} v{candidate.version}: {verdict.decision}", flush=True)
    return verdict
