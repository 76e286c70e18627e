"""The evaluation gate in front of ``@best`` (:mod:`pipelines.tune.gate`) against a real MLflow registry.

Most tests inject the scorer (``score_fn``: a fixed score per trial id), so they check the gate's
logic in seconds; one runs the real evaluation (retrieval R@1) on a tiny synthetic set.
"""

from __future__ import annotations

import dataclasses
import uuid

import pytest
import torch

import vidmodels
from pipelines.config import ConfigError
from pipelines.io import manifest as manifest_mod
from pipelines.tracking import RunLogger
from pipelines.tune import tracking
from pipelines.tune.gate import (SCORE_TAG, SUITE_TAG, EvalSuite, GateSettings, check_gate, judge,
                                 make_suite, manifest_fingerprint, pinned_suite, sweep_suites)
from pipelines.tune.sweep import SweepConfig

BACKBONE = "s3d_debug"
PHASE = "supervised"


def _write_manifest(folder, labels=("a", "b")) -> str:
    """A manifest of four labelled rows (no video files: only its fingerprint is read here)."""
    rows = [{"video_id": f"v{i}", "uri": f"v{i}.mp4", "label": labels[i % 2], "label_index": i % 2,
             "split": "train" if i < 2 else "test", "num_frames": 24, "fps": 8.0, "width": 64, "height": 64,
             "duration_s": 3.0, "codec": "h264", "content_hash": f"h{i}", "source_uri": f"v{i}.mp4",
             "size_bytes": 1, "segments": []} for i in range(4)]
    folder.mkdir(parents=True, exist_ok=True)
    manifest_mod.write_table(manifest_mod.to_table(rows, manifest_mod.MANIFEST_SCHEMA),
                             str(folder / manifest_mod.MANIFEST_NAME))
    return str(folder)


@pytest.fixture
def registry(mlflow_server, monkeypatch, tmp_path):
    """The session's MLflow server; yields a fresh model-name prefix."""
    monkeypatch.setenv("MLFLOW_TRACKING_URI", mlflow_server)
    return f"gate-{uuid.uuid4().hex[:6]}"


def _register_trial(prefix: str, trial_id: str, tmp_path, seed: int = 0) -> str:
    """A debug encoder registered as the trial model ``<prefix>-<trial_id>-rgb@supervised`` (what a trial leaves)."""
    torch.manual_seed(seed)
    encoder = vidmodels.create_backbone(BACKBONE, num_classes=0)
    logger = RunLogger("gate-test", spill_dir=tmp_path / f"spill-{trial_id}")
    logger.start(f"{prefix}-{trial_id}", {"backbone": BACKBONE}, tags={"dataset_fingerprint": "ab" * 32})
    name = f"{prefix}-{trial_id}-rgb"
    version = logger.log_model(encoder, "encoder", torch.zeros(1, 3, 8, 64, 64), name, backbone=BACKBONE,
                               backbone_kwargs={"num_classes": 0}, serialization_format="pickle")
    assert logger.end() and version is not None
    tracking.client().set_registered_model_alias(name, PHASE, version.version)
    return f"{prefix}-{trial_id}"


class _Scores:
    """``score_fn``: a fixed score per trial id (read off the version's ``vidray_trial_id``), calls recorded."""

    def __init__(self, scores: dict[str, float]) -> None:
        self.scores, self.calls = scores, []

    def __call__(self, model_uri: str, suite: EvalSuite) -> float:
        name, version = model_uri.removeprefix("models:/").rsplit("/", 1)
        self.calls.append(model_uri)
        trial = tracking.client().get_model_version(name, version).tags.get("vidray_trial_id", "")
        if trial not in self.scores:
            raise ValueError(f"no score for {trial!r}")
        return self.scores[trial]


def _promote(prefix: str, trial_id: str, suite: EvalSuite | None, scores: _Scores, repin: bool = False) -> dict:
    gating = None if suite is None else GateSettings({"rgb": suite}, repin=repin, score_fn=scores)
    (out,) = tracking.promote_best(model_name=prefix, trial_model_name=f"{prefix}-{trial_id}", keys={"rgb": PHASE},
                                   metric="val_top1", mode="max", value=50.0, sweep="s", trial_id=trial_id,
                                   gating=gating)
    return out


def _best(name: str) -> str | None:
    try:
        return tracking.client().get_model_version_by_alias(name, "best").version
    except Exception:  # noqa: BLE001 - no alias
        return None


def _tags(name: str, version: str) -> dict[str, str]:
    return tracking.client().get_model_version(name, version).tags


def test_suite_identity_and_settings(tmp_path):
    url = _write_manifest(tmp_path / "m")
    suite = make_suite(url, debug_size=True)
    assert suite.fingerprint == manifest_fingerprint(url) and suite.metric == "R@1" and suite.label == "retrieval R@1"
    again = EvalSuite.from_json(suite.to_json())
    assert again == suite and again.suite_id == suite.suite_id and len(suite.suite_id) == 12
    linear = dataclasses.replace(suite, protocol="linear")
    assert linear.metric == "top1" and linear.suite_id != suite.suite_id
    assert suite.eval_config().num_clips == 2 and suite.eval_config().manifest == url
    with pytest.raises(ValueError, match="gate protocol"):
        dataclasses.replace(suite, protocol="finetune")
    for cfg, message in ((SweepConfig(method="supervised", gate=False, repin_suite=True), "--no-gate"),
                         (SweepConfig(method="supervised", gate_protocol="mlp"), "--gate-protocol"),
                         (SweepConfig(method="supervised", gate_manifest=str(tmp_path / "none")), "no manifest")):
        with pytest.raises(ConfigError, match=message):
            check_gate(cfg)
    check_gate(SweepConfig(method="supervised", gate_manifest=url, gate_protocol="linear"))


def test_sweep_suites_default_to_the_sweeps_manifest_and_the_methods_protocol(tmp_path):
    from pipelines.methods import get_method
    from pipelines.methods.spec import Phase

    spec = get_method("coclr")
    job = dataclasses.replace(spec.variants["debug"](), data=dataclasses.replace(
        spec.variants["debug"]().data, manifest=_write_manifest(tmp_path / "m")))
    phases = [Phase("a", 1, registers=("rgb",)), Phase("b", 1, registers=("flow",))]
    suites = sweep_suites(job, spec, phases)
    assert {k: (s.protocol, s.modality, s.debug_size) for k, s in suites.items()} == {
        "rgb": ("retrieval", "rgb", job.data.debug_size), "flow": ("retrieval", "flow", job.data.debug_size)}
    other = _write_manifest(tmp_path / "other", labels=("c", "d"))
    (linear,) = sweep_suites(job, spec, phases[:1], manifest=other, protocol="linear").values()
    assert linear.manifest == other and linear.metric == "top1" and linear.fingerprint != suites["rgb"].fingerprint


def test_first_promoted_worse_kept_better_promoted_and_holder_scores_reused(registry, tmp_path, capsys):
    prefix, name = registry, f"{registry}-rgb"
    suite = make_suite(_write_manifest(tmp_path / "m"))
    scores = _Scores({"t1": 40.0, "t2": 30.0, "t3": 60.0, "t4": 60.0})
    for trial in scores.scores:
        _register_trial(prefix, trial, tmp_path)

    first = _promote(prefix, "t1", suite, scores)
    assert first["promoted"] and "no holder" in first["decision"] and _best(name) == first["version"]
    assert pinned_suite(tracking.client(), name) == suite  # pinned on first use
    tags = _tags(name, first["version"])
    assert tags["vidray_gate_suite"] == suite.suite_id and float(tags["vidray_gate_score"]) == 40.0
    assert float(tags[SCORE_TAG + suite.suite_id]) == 40.0 and tags["vidray_best_metric"] == "val_top1"

    scores.calls.clear()
    worse = _promote(prefix, "t2", suite, scores)
    assert not worse["promoted"] and _best(name) == first["version"]
    tags = _tags(name, worse["version"])
    assert (float(tags["vidray_gate_score"]), tags["vidray_gate_holder_version"],
            float(tags["vidray_gate_holder_score"])) == (30.0, first["version"], 40.0)
    assert tags["vidray_best_decision"] == worse["decision"] and "kept v1" in worse["decision"]
    assert scores.calls == [f"models:/{name}/{worse['version']}"]  # the holder's score was read from its tags
    out = capsys.readouterr().out
    assert f"gate {name} v{worse['version']}: not promoted: kept v1" in out and "30 vs its 40" in out

    better = _promote(prefix, "t3", suite, scores)
    assert better["promoted"] and _best(name) == better["version"] and "beats v1" in better["decision"]
    tie = _promote(prefix, "t4", suite, scores)
    assert not tie["promoted"] and "a tie keeps the holder" in tie["decision"] and _best(name) == better["version"]


def test_a_holder_without_a_score_is_evaluated_and_tagged(registry, tmp_path):
    prefix, name = registry, f"{registry}-rgb"
    suite = make_suite(_write_manifest(tmp_path / "m"))
    scores = _Scores({"t1": 20.0, "t2": 10.0})
    for trial in scores.scores:
        _register_trial(prefix, trial, tmp_path)
    old = _promote(prefix, "t1", None, scores)  # --no-gate: promoted on the sweep metric, never scored
    assert old["promoted"] and not scores.calls and SCORE_TAG + suite.suite_id not in _tags(name, old["version"])
    new = _promote(prefix, "t2", suite, scores)
    assert not new["promoted"] and len(scores.calls) == 2
    assert float(_tags(name, old["version"])[SCORE_TAG + suite.suite_id]) == 20.0  # written on the holder


def test_a_changed_manifest_refuses_until_the_suite_is_repinned(registry, tmp_path):
    prefix, name = registry, f"{registry}-rgb"
    folder = tmp_path / "m"
    suite = make_suite(_write_manifest(folder))
    scores = _Scores({"t1": 20.0, "t2": 90.0, "t3": 95.0})
    for trial in scores.scores:
        _register_trial(prefix, trial, tmp_path)
    first = _promote(prefix, "t1", suite, scores)
    _write_manifest(folder, labels=("a", "z"))  # same URL, other content
    scores.calls.clear()
    refused = _promote(prefix, "t2", suite, scores)  # the sweep proposes the old suite; the pin decides anyway
    assert not refused["promoted"] and _best(name) == first["version"] and not scores.calls
    assert "changed since suite" in refused["decision"] and "--repin-suite" in refused["decision"]
    assert _tags(name, refused["version"])["vidray_best_decision"] == refused["decision"]

    fresh = make_suite(str(folder))
    repinned = _promote(prefix, "t3", fresh, scores, repin=True)
    assert repinned["promoted"] and _best(name) == repinned["version"]
    assert pinned_suite(tracking.client(), name) == fresh
    assert float(_tags(name, first["version"])[SCORE_TAG + fresh.suite_id]) == 20.0  # re-scored on the new suite


def test_the_pinned_suite_wins_over_the_proposed_one(registry, tmp_path, capsys):
    prefix, name = registry, f"{registry}-rgb"
    suite = make_suite(_write_manifest(tmp_path / "m"))
    scores = _Scores({"t1": 20.0, "t2": 30.0, "t3": 40.0})
    for trial in scores.scores:
        _register_trial(prefix, trial, tmp_path)
    _promote(prefix, "t1", suite, scores)
    other = _promote(prefix, "t2", dataclasses.replace(suite, protocol="linear"), scores)
    assert other["promoted"] and _tags(name, other["version"])["vidray_gate_suite"] == suite.suite_id
    assert f"using its pinned suite {suite.suite_id}" in capsys.readouterr().out
    tracking.client().set_registered_model_tag(name, SUITE_TAG, "{edited by hand")
    broken = _promote(prefix, "t3", suite, scores)
    assert not broken["promoted"] and "cannot be read" in broken["decision"] and _best(name) == other["version"]


def test_a_candidate_that_cannot_be_scored_is_judged_on_the_sweep_metric_and_pins_nothing(registry, tmp_path):
    """E.g. a detector (no embedding to score): the gate falls back to the sweep's own metric and says so."""
    prefix, name = registry, f"{registry}-rgb"
    _register_trial(prefix, "t1", tmp_path)
    flow = make_suite(_write_manifest(tmp_path / "m"), modality="flow")
    out = _promote(prefix, "t1", flow, _Scores({}))  # the real evaluator's refusal comes first: no data read
    out_real = tracking.promote_best(
        model_name=prefix, trial_model_name=f"{prefix}-t1", keys={"rgb": PHASE}, metric="val_top1", mode="max",
        value=1.0, sweep="s", trial_id="t1", gating=GateSettings({"rgb": flow}))
    assert out["promoted"] and "could not be scored" in out["decision"] and "no score for" in out["decision"]
    assert out["decision"].startswith("no earlier holder of @best (on the sweep's val_top1: not promoted: v")
    assert not out_real[0]["promoted"] and "2-channel" in out_real[0]["decision"]  # val_top1 1.0 < 50.0
    assert "kept v" in out_real[0]["decision"]
    assert _best(name) == out["version"] and pinned_suite(tracking.client(), name) is None
    assert SUITE_TAG not in tracking.client().get_registered_model(name).tags


def test_judge_with_no_holder_reports_one_line(registry, tmp_path, capsys):
    prefix, name = registry, f"{registry}-rgb"
    _register_trial(prefix, "t1", tmp_path)
    c = tracking.client()
    c.create_registered_model(name)
    source = c.get_model_version_by_alias(f"{prefix}-t1-rgb", PHASE)
    version = c.create_model_version(name, source.source, run_id=source.run_id, model_id=tracking._model_id(source),
                                     tags={"vidray_trial_id": "t1"})
    capsys.readouterr()
    verdict = judge(c, name, version, None, make_suite(_write_manifest(tmp_path / "m")), score_fn=_Scores({"t1": 5}))
    assert verdict.promoted and verdict.tags["vidray_gate_score"] == "5.0"
    assert f"gate {name} v1: {verdict.decision}" in capsys.readouterr().out.splitlines()
