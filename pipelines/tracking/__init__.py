"""MLflow tracking for vidray runs: params, buffered metrics, artifacts, models and the registry.

Where runs go: ``MLFLOW_TRACKING_URI`` when set (an ``http://`` tracking server in
production), else the embedded default ``sqlite:///<project>/mlflow.db`` with artifacts
under ``<project>/mlruns`` (both git-ignored). The model registry needs a SQL-backed
store, which both give.

:class:`RunLogger` is what training uses, on rank 0 only (every method is a no-op on
other ranks; the rank is passed in so this module never imports Ray). It never lets a
tracking-server outage kill training:

- metrics, params and tags go to an in-memory buffer that a background thread flushes
  with ``MlflowClient.log_batch``; a failed flush is retried with exponential backoff
  (1 s doubling to 60 s) while training goes on;
- the buffer is bounded (``max_buffered`` metrics in memory); beyond that, the oldest
  half spills to a local JSONL file, replayed first on the next successful flush;
- one warning per outage, ``tracking server unreachable since <time>, N metrics
  buffered``, and one when it is back (with its length); outages are also recorded in
  the run's ``tracking_outages`` tag;
- artifacts logged during an outage are staged locally and uploaded on recovery;
- MLflow's own per-request HTTP retries (~4 minutes by default) are cut to a few seconds
  (``MLFLOW_HTTP_REQUEST_MAX_RETRIES=2``, ``..._BACKOFF_FACTOR=1``, ``..._TIMEOUT=30``,
  unless already set), so a flush or :meth:`RunLogger.end` never hangs on a dead server;
- metrics still undelivered at :meth:`RunLogger.end` stay in the spill file, whose path
  is logged as an error.

Resume rule (job resubmission): :meth:`RunLogger.start` reuses the most recently
started run of the experiment with the same run name whose status is RUNNING, FAILED or
KILLED, and sets it RUNNING again; a FINISHED run is never reused, so a new run with
that name is created. Params of a resumed run are immutable in MLflow: a param whose
value changed is not logged, its key goes to the ``resume_changed_params`` tag.

Credentials never reach MLflow: param and tag keys named like credentials
(``aws_secret_access_key``, ``HF_TOKEN``, ``db_password``, ``api_key``; not
``key_queue_size``, ``cls_token`` or ``num_tokens``) are dropped, and values that look
like credentials (AWS key ids, private keys, GitHub/Slack/HF tokens, JWTs, passwords in
URLs, long random mixed-case strings) are redacted. Environment variables are never logged.

Models (:meth:`RunLogger.log_model`) are logged in MLflow's pytorch flavour (``pt2``, a
``torch.export`` graph, falling back to pickle for modules that do not export) and,
next to it in ``extra_files/``, a plain ``state_dict.pt``, a ``model_info.json``
(backbone name and kwargs) and a ``checksums.json`` (sha256 of both).
:func:`load_registered_model` verifies those and loads the weights with
``torch.load(weights_only=True)`` into a freshly built backbone: loading a registered
model never unpickles code and never depends on how MLflow serialised the flavour
(``mlflow.pytorch.load_model`` may unpickle a whole module, so it is not used).

A tracking server started for the tests: ``tests/conftest.py::mlflow_server``.
"""

from __future__ import annotations

import atexit
import collections
import dataclasses
import datetime
import hashlib
import itertools
import json
import logging
import os
import random
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Self

log = logging.getLogger(__name__)

PROJECT_ROOT = Path(__file__).resolve().parents[2]


def home() -> Path:
    """Where the embedded store lives: ``VIDRAY_HOME`` or the checkout.

    A job submitted with ``ray job submit --working-dir .`` runs in a copy of the
    checkout; ``VIDRAY_HOME`` points it back at the project so runs land in one store.
    """
    return Path(os.environ.get("VIDRAY_HOME") or PROJECT_ROOT)
MAX_PARAM_VALUE = 6000  # mlflow.utils.validation.MAX_PARAM_VAL_LENGTH
MAX_TAG_VALUE = 8000
MAX_KEY = 250
BATCH_METRICS = 1000    # MlflowClient.log_batch limits
BATCH_PARAMS_TAGS = 100
REDACTED = "***REDACTED***"
MODEL_FILES = ("state_dict.pt", "model_info.json")
_HTTP_RETRY_DEFAULTS = {"MLFLOW_HTTP_REQUEST_MAX_RETRIES": "2", "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "1",
                        "MLFLOW_HTTP_REQUEST_BACKOFF_JITTER": "0.5", "MLFLOW_HTTP_REQUEST_TIMEOUT": "30"}

# ---------------------------------------------------------------------------------------------
# Where runs go


def tracking_uri() -> str:
    """``MLFLOW_TRACKING_URI``, else the embedded default ``sqlite:///<home>/mlflow.db`` (:func:`home`)."""
    return os.environ.get("MLFLOW_TRACKING_URI") or f"sqlite:///{home() / 'mlflow.db'}"


def default_artifact_root() -> Path:
    """Artifact folder of the embedded default store."""
    return home() / "mlruns"


def setup(experiment: str, uri: str | None = None) -> str:
    """Point MLflow at ``uri`` (default :func:`tracking_uri`) and return the experiment id.

    With the embedded default store, a new experiment gets its artifacts under
    ``<project>/mlruns/<experiment>``; a tracking server picks its own artifact root.
    """
    import mlflow
    from mlflow.exceptions import MlflowException

    uri = uri or tracking_uri()
    mlflow.set_tracking_uri(uri)
    client = mlflow.MlflowClient(uri)
    exp = client.get_experiment_by_name(experiment)
    if exp is not None:
        if exp.lifecycle_stage == "deleted":
            client.restore_experiment(exp.experiment_id)
        return exp.experiment_id
    location = None
    if uri == f"sqlite:///{home() / 'mlflow.db'}":
        location = (default_artifact_root() / re.sub(r"[^\w.-]", "_", experiment)).as_uri()
    try:
        return client.create_experiment(experiment, artifact_location=location)
    except MlflowException:  # created concurrently by another process
        exp = client.get_experiment_by_name(experiment)
        if exp is None:
            raise
        return exp.experiment_id


def git_commit() -> str:
    """``git rev-parse HEAD`` of the project, else ``$VIDRAY_GIT_COMMIT``, else ``"unknown"``."""
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=PROJECT_ROOT, capture_output=True,
                             text=True, timeout=5, check=True).stdout.strip()
        if re.fullmatch(r"[0-9a-f]{40,64}", out):
            return out
    except (OSError, subprocess.SubprocessError):
        pass  # no git or no .git (Ray job working dirs are uploaded without it)
    return os.environ.get("VIDRAY_GIT_COMMIT") or "unknown"


def ray_job_id() -> str | None:
    """The current Ray job id when Ray is initialised, else ``$RAY_JOB_ID``/``$RAY_JOB_SUBMISSION_ID``."""
    ray = sys.modules.get("ray")  # never import Ray just to ask
    if ray is not None and getattr(ray, "is_initialized", lambda: False)():
        try:
            return ray.get_runtime_context().get_job_id()
        except Exception as exc:  # noqa: BLE001 - a tag is not worth failing for
            log.debug("no Ray job id from the runtime context: %s", exc)
    return os.environ.get("RAY_JOB_ID") or os.environ.get("RAY_JOB_SUBMISSION_ID")


def default_tags() -> dict[str, str]:
    """``git_commit``, and ``ray_job_id`` / ``ray_submission_id`` when known."""
    tags = {"git_commit": git_commit()}
    if job := ray_job_id():
        tags["ray_job_id"] = job
    if sub := os.environ.get("RAY_JOB_SUBMISSION_ID"):
        tags["ray_submission_id"] = sub
    return tags


# ---------------------------------------------------------------------------------------------
# Credential filtering

_SECRET_WORDS = {"secret", "secrets", "password", "passwd", "passphrase", "credential",
                 "credentials", "apikey", "accesskey", "secretkey", "privatekey", "authorization",
                 "cookie", "sessionid"}
_KEY_QUALIFIERS = {"access", "api", "secret", "private", "auth", "session", "encryption", "signing",
                   "master", "ssh", "account", "license", "client", "storage", "service"}
_TOKEN_QUALIFIERS = {"access", "auth", "api", "bearer", "refresh", "session", "id", "hf", "github",
                     "gh", "gitlab", "slack", "oauth", "security", "personal", "bot", "mlflow",
                     "databricks", "wandb", "ray", "aws", "csrf", "huggingface", "tracking"}
_SECRET_VALUES = [re.compile(p) for p in (
    r"\b(?:AKIA|ASIA)[0-9A-Z]{16}\b",                       # AWS access key id
    r"-----BEGIN [A-Z ]*PRIVATE KEY-----",
    r"\bgh[pousr]_[A-Za-z0-9]{30,}", r"\bgithub_pat_\w{30,}",
    r"\bxox[abprs]-[A-Za-z0-9-]{10,}",                        # Slack
    r"\bhf_[A-Za-z0-9]{30,}", r"\bsk-[A-Za-z0-9_-]{20,}",
    r"\beyJ[\w-]{10,}\.eyJ[\w-]{10,}\.[\w-]+",                # JWT
    r"(?i)\bbearer\s+[\w.~+/-]{16,}",
)]
_URL_PASSWORD = re.compile(r"(?P<head>\b[a-z][a-z0-9+.-]*://[^/\s:@]+:)[^@\s/]+(?=@)", re.IGNORECASE)
_RANDOM_TOKEN = re.compile(r"[A-Za-z0-9/+=_-]{32,256}")


def _words(key: str) -> list[str]:
    key = re.sub(r"([a-z0-9])([A-Z])", r"\1_\2", key)  # camelCase -> camel_Case
    return [w for w in re.split(r"[^A-Za-z0-9]+", key.lower()) if w]


def is_secret_key(key: str) -> bool:
    """Whether a param/tag/env name denotes a credential.

    ``secret``, ``password``, ``credentials``... anywhere; ``key`` after ``access``/``api``/
    ``private``/...; ``token`` after ``access``/``auth``/``hf``/...; and env-style names
    (``UPPER_CASE``) ending in ``_KEY`` or ``_TOKEN``. ``key_queue_size``, ``cls_token``,
    ``num_tokens`` are not credentials.
    """
    words = _words(key)
    if any(w in _SECRET_WORDS for w in words):
        return True
    last = re.split(r"[.:/]", key)[-1]
    env_like = bool(re.fullmatch(r"[A-Z][A-Z0-9]*(_[A-Z0-9]+)+", last))
    for i, word in enumerate(words):
        prev = words[i - 1] if i else ""
        if word == "key" and (prev in _KEY_QUALIFIERS or (env_like and i == len(words) - 1)):
            return True
        if word == "token" and (prev in _TOKEN_QUALIFIERS or len(words) == 1
                                or (env_like and i == len(words) - 1)):
            return True
    return False


def looks_like_secret(value: str) -> bool:
    """Whether a value looks like a credential (known token formats, or a long random string)."""
    if any(p.search(value) for p in _SECRET_VALUES):
        return True
    v = value.strip()
    if not _RANDOM_TOKEN.fullmatch(v):
        return False
    # A random mixed-case string (an AWS secret key) switches between upper case, lower
    # case and digits at ~60% of positions; paths and identifiers rarely at 25%. Hex
    # digests (fingerprints, commits, run ids) have no upper case at all.
    classes = [c.isupper() + 2 * c.isdigit() for c in v if c.isalnum()]
    switches = sum(a != b for a, b in itertools.pairwise(classes))
    return len(set(classes)) == 3 and switches > 0.25 * len(v)


def redact_value(value: str) -> str:
    """``value`` with URL passwords masked, or :data:`REDACTED` when it looks like a credential."""
    value = _URL_PASSWORD.sub(r"\g<head>***", value)
    return REDACTED if looks_like_secret(value) else value


def sanitize(items: Mapping[str, Any], max_value: int) -> dict[str, str]:
    """Drop credential keys, redact credential-like values, shorten long keys and values."""
    out: dict[str, str] = {}
    dropped = []
    for key, value in items.items():
        key = str(key)
        if is_secret_key(key):
            dropped.append(key)
            continue
        text = redact_value(value if isinstance(value, str) else json.dumps(value, default=str)
                            if isinstance(value, (list, tuple, dict)) else str(value))
        if len(text) > max_value:
            suffix = f"...[truncated {len(text)} chars]"
            text = text[: max_value - len(suffix)] + suffix
        if len(key) > MAX_KEY:
            key = key[: MAX_KEY - 9] + "~" + hashlib.sha1(key.encode()).hexdigest()[:8]
        out[key] = text
    if dropped:
        log.info("not logging %d credential-like keys: %s", len(dropped), ", ".join(sorted(dropped)))
    return out


def _metric_key(key: str) -> str:
    return re.sub(r"[^\w\-. /:]", "_", str(key))[:MAX_KEY]


def sha256_file(path: str | Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


# ---------------------------------------------------------------------------------------------
# The run logger


@dataclasses.dataclass
class Outage:
    """One period during which the tracking server could not be reached."""

    since: float
    until: float | None = None
    buffered_at_start: int = 0
    error: str = ""


class RunLogger:
    """Logs one training run to MLflow from rank 0; buffered, retried, outage-tolerant.

    Args:
        experiment: Experiment name (created if missing).
        rank: Global rank of the calling worker; every method is a no-op unless 0.
        uri: Tracking URI (default :func:`tracking_uri`).
        flush_every_s: How often the background thread flushes buffered metrics.
        max_buffered: Metrics kept in memory during an outage before spilling to disk.
        spill_dir: Folder of the spill file (default ``<project>/mlruns/.buffer``).
        backoff_s: First and largest delay between flush attempts while the server is down.
    """

    def __init__(self, experiment: str, *, rank: int = 0, uri: str | None = None,
                 flush_every_s: float = 10.0, max_buffered: int = 100_000,
                 spill_dir: str | Path | None = None, backoff_s: tuple[float, float] = (1.0, 60.0)):
        self.experiment = experiment
        self.enabled = rank == 0
        if self.enabled:
            # MLflow's HTTP client retries a failed request for ~4 minutes by default, which
            # would hold every flush (and end()) that long in an outage; we back off ourselves,
            # so its own retries only need to cover a blip. Explicit user settings win.
            for name, value in _HTTP_RETRY_DEFAULTS.items():
                os.environ.setdefault(name, value)
        self.uri = uri or tracking_uri()
        self.flush_every_s = flush_every_s
        self.max_buffered = max_buffered
        self.backoff_s = backoff_s
        self.run_id: str | None = None
        self.outages: list[Outage] = []
        self._client = None
        self._run_name: str | None = None
        self._metrics: collections.deque[tuple[str, float, int, int]] = collections.deque()
        self._params: dict[str, str] = {}
        self._tags: dict[str, str] = {}
        self._artifacts: list[tuple[str, str | None]] = []  # staged (local path, artifact dir)
        self._logged_params: dict[str, str] = {}
        self._changed_params: set[str] = set()
        self._lock = threading.Lock()        # guards the buffers
        self._flush_lock = threading.Lock()  # one flush at a time
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._failures = 0
        self._next_attempt = 0.0
        self._outage: Outage | None = None
        self._staging_dir: Path | None = None
        spill_root = Path(spill_dir) if spill_dir else default_artifact_root() / ".buffer"
        self.spill_path = spill_root / f"{uuid.uuid4().hex}.jsonl"
        self._spilled = 0

    # -- lifecycle -----------------------------------------------------------------------------

    def start(self, run_name: str, config: Any = None, tags: Mapping[str, Any] | None = None) -> str | None:
        """Create or resume (see the module docstring) the run and log ``config`` and ``tags``.

        ``config`` may be a dataclass (flattened to params and saved as ``config.yaml``) or
        a mapping. Never raises for an unreachable server: the run is then created by the
        background thread when the server answers. Returns the run id, if known yet.
        """
        if not self.enabled:
            return None
        self._run_name, self.run_id = run_name, None
        self._logged_params, self._changed_params = {}, set()
        self._stop.clear()
        self.set_tags({**default_tags(), **(tags or {})})
        if config is not None:
            self.log_config(config)
        self._thread = threading.Thread(target=self._flush_loop, name="mlflow-flush", daemon=True)
        self._thread.start()
        atexit.register(self._at_exit)
        self.flush()
        return self.run_id

    def end(self, status: str = "FINISHED") -> bool:
        """Flush everything and mark the run ``status``; returns whether all data was delivered."""
        if not self.enabled or self._run_name is None:
            return True
        delivered = self._drain()
        if delivered and self.run_id:
            try:
                self._mlflow().set_terminated(self.run_id, status)
            except Exception as exc:  # noqa: BLE001 - reported, never raised into training
                log.error("could not mark MLflow run %s %s: %s", self.run_id, status, redact_value(str(exc)))
                delivered = False
        return self._close(delivered)

    def detach(self) -> bool:
        """Deliver what is buffered and stop logging, leaving the run's status to its owner.

        For a training worker that joined the run a driver opened: the driver ends it.
        Returns whether everything was delivered (the rest stays in the spill file).
        """
        if not self.enabled or self._run_name is None:
            return True
        return self._close(self._drain())

    def _drain(self) -> bool:
        """Stop the flush thread and try one last delivery."""
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout=30)
        return self.flush()

    def _close(self, delivered: bool) -> bool:
        """Spill what was not delivered (and say where), clean up, stop being a logger of this run."""
        if not delivered:
            self._spill(everything=True)
            log.error("MLflow run %s (%s): %d metrics and %d artifacts not delivered; metrics kept in %s, "
                      "artifacts in %s", self.run_id, self._run_name, self._spilled, len(self._artifacts),
                      self.spill_path, self._staging_dir)
        if self._staging_dir and not self._artifacts:
            shutil.rmtree(self._staging_dir, ignore_errors=True)
        self._staging_dir = None
        self._run_name = None
        atexit.unregister(self._at_exit)
        return delivered

    def __enter__(self) -> Self:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        self.end("FAILED" if exc_type else "FINISHED")

    @property
    def _staging(self) -> Path:
        """Local copies of artifacts until uploaded (kept after end() only if some were not)."""
        if self._staging_dir is None:
            self._staging_dir = Path(tempfile.mkdtemp(prefix="vidray-mlflow-"))
        self._staging_dir.mkdir(parents=True, exist_ok=True)  # tmp cleaners may remove it in a long run
        return self._staging_dir

    def _at_exit(self) -> None:
        if self._run_name is not None:
            self.end("KILLED")

    # -- what training calls -------------------------------------------------------------------

    def log_config(self, config: Any) -> None:
        """Log a config as params (flattened) and, for a dataclass, as ``config.yaml``."""
        from pipelines import config as cfglib

        if dataclasses.is_dataclass(config):
            path = self._staging / "config.yaml"
            cfglib.save_config(config, str(path))
            self.log_artifact(path)
        self.log_params(cfglib.flatten(config))

    def log_params(self, params: Mapping[str, Any]) -> None:
        """Buffer params (credentials dropped, values truncated to 6000 characters)."""
        if not self.enabled:
            return
        with self._lock:
            self._params.update(sanitize(params, MAX_PARAM_VALUE))
        self._wake.set()

    def set_tags(self, tags: Mapping[str, Any]) -> None:
        """Buffer tags, e.g. ``dataset_fingerprint``, ``git_commit``, ``ray_job_id``."""
        if not self.enabled:
            return
        with self._lock:
            self._tags.update(sanitize({k: v for k, v in tags.items() if v is not None}, MAX_TAG_VALUE))
        self._wake.set()

    def log_metrics(self, metrics: Mapping[str, Any], step: int | None = None) -> None:
        """Buffer ``{name: number}`` at ``step``; never blocks on the server."""
        if not self.enabled:
            return
        now_ms = int(time.time() * 1000)
        rows = []
        for key, value in metrics.items():
            try:
                rows.append((_metric_key(key), float(value), now_ms, int(step or 0)))
            except (TypeError, ValueError):
                log.warning("metric %s=%r is not a number; not logged", key, value)
        with self._lock:
            self._metrics.extend(rows)
            over = len(self._metrics) > self.max_buffered
        if over:
            self._spill()
        if len(self._metrics) >= BATCH_METRICS:
            self._wake.set()  # the flush thread sends full batches early

    def log_artifact(self, obj: Any, artifact_path: str | None = None, name: str | None = None) -> None:
        """Log a file or folder, a PIL image or a matplotlib figure (saved as ``name``, a PNG).

        During an outage the file is staged locally and uploaded on recovery.
        """
        if not self.enabled:
            return
        if isinstance(obj, (str, Path)):
            local = Path(obj)
        else:
            local = self._staging / "new" / (name or f"{type(obj).__name__.lower()}.png")
            local.parent.mkdir(parents=True, exist_ok=True)
            if hasattr(obj, "savefig"):
                obj.savefig(local, dpi=100, bbox_inches="tight")
            elif hasattr(obj, "save"):
                obj.save(local)
            else:
                raise TypeError(f"cannot log {type(obj).__name__} as an artifact")
        # Staged copy: the caller may delete or overwrite its file before an outage ends.
        staged = self._staging / uuid.uuid4().hex[:8] / local.name
        staged.parent.mkdir(parents=True)
        (shutil.copytree if local.is_dir() else shutil.copy2)(local, staged)
        with self._lock:
            self._artifacts.append((str(staged), artifact_path))
        self._wake.set()  # uploaded by the flush thread; training does not wait for it

    def log_curves(self, history: Mapping[str, Sequence[float]] | Sequence[Mapping[str, float]],
                   name: str = "curves.png", xlabel: str = "epoch") -> Path | None:
        """Plot each series of ``history`` (``{"loss": [...], "top1": [...], "lr": [...]}``
        or a list of per-epoch dicts) in its own panel and log the PNG under ``plots/``."""
        if not self.enabled:
            return None
        path = plot_curves(history, self._staging / "plots" / name, xlabel=xlabel)
        self.log_artifact(path, "plots")
        return path

    def log_model(self, module, name: str, input_example, registered_name: str | None = None, *,
                  backbone: str | None = None, backbone_kwargs: Mapping[str, Any] | None = None,
                  serialization_format: str = "pt2"):
        """Log ``module`` as an MLflow model (pytorch flavour) and optionally register it.

        Besides MLflow's pytorch flavour, the model folder gets ``extra_files/``
        ``state_dict.pt``, ``model_info.json`` (``backbone``, ``backbone_kwargs``) and
        ``checksums.json``, which :func:`load_registered_model` uses to rebuild the module
        without unpickling. The registered version is tagged with the run's
        ``dataset_fingerprint``, ``git_commit`` and ``ray_job_id``.

        Args:
            module: The encoder, e.g. ``vidmodels.create_backbone("s3d", num_classes=0)``;
                unwrapped (``ddp_model.module``), so its state-dict keys match a fresh build.
            name: Model name inside the run.
            input_example: One input batch on the module's device, e.g. ``x_BCTHW`` of shape
                ``(1, 3, T, H, W)``;
                the signature is inferred from it and the module's output.
            registered_name: Registered model to add a version to (None: not registered).
            backbone: Registry name :func:`vidmodels.create_backbone` rebuilds it from.
            backbone_kwargs: Keyword arguments of that call (e.g. ``num_classes=0``).
            serialization_format: MLflow's format for the flavour: ``"pt2"`` (a
                ``torch.export`` graph, no pickle; falls back to ``"pickle"`` when the
                module does not export) or ``"pickle"`` (fast, but unpickles on load).

        Returns:
            The new ``ModelVersion`` when registered, else None; None too when the
            tracking server is unreachable (reported, not raised: the checkpoint is safe
            in Ray's storage and the model can be logged again from it).
        """
        if not self.enabled:
            return None
        if not self.flush() or self.run_id is None:
            log.error("tracking server unreachable: model %s not logged", name)
            return None
        try:
            return self._log_model(module, name, input_example, registered_name, backbone,
                                   dict(backbone_kwargs or {}), serialization_format)
        except Exception as exc:  # noqa: BLE001 - training must survive a tracking failure
            log.error("logging model %s failed: %s: %s", name, type(exc).__name__, redact_value(str(exc)))
            return None

    def _log_model(self, module, name, input_example, registered_name, backbone, backbone_kwargs, fmt):
        import mlflow
        import torch
        from mlflow.models import infer_signature

        was_training = module.training
        module.eval()
        try:
            with torch.no_grad():
                output = module(input_example)
            folder = self._staging / "model" / name
            files = write_model_files(module, folder, backbone, backbone_kwargs,
                                      input_shape=list(input_example.shape))
            x = input_example.detach().cpu().numpy()
            kwargs = {
                "name": name, "run_id": self.run_id, "input_example": x,
                "signature": infer_signature(x, output.detach().cpu().numpy()),
                # Pinned requirements skip MLflow's slow environment inference.
                "pip_requirements": [f"torch=={torch.__version__.split('+')[0]}"],
                "extra_files": [str(f) for f in files], "registered_model_name": registered_name,
                "await_registration_for": 60}
            try:
                # validate_serving_input=False: MLflow would reload the pt2 program to check the
                # example; the pickle path forwards unknown kwargs to torch.save, so not there.
                info = mlflow.pytorch.log_model(module, serialization_format=fmt, **kwargs,
                                                **({"validate_serving_input": False} if fmt == "pt2" else {}))
            except Exception as exc:  # torch.export raises many types
                if fmt != "pt2" or isinstance(exc, (ConnectionError, OSError)):
                    raise
                log.warning("%s does not torch.export (%s: %s); logging it pickled",
                            name, type(exc).__name__, str(exc)[:200])
                info = mlflow.pytorch.log_model(module, serialization_format="pickle", **kwargs)
        finally:
            module.train(was_training)
        if registered_name is None:
            return None
        client = self._mlflow()
        version = client.get_model_version(registered_name, str(info.registered_model_version))
        run_tags = client.get_run(self.run_id).data.tags
        for key in ("dataset_fingerprint", "git_commit", "ray_job_id"):
            if key in run_tags:
                client.set_model_version_tag(registered_name, version.version, key, run_tags[key])
        return client.get_model_version(registered_name, version.version)

    # -- flushing ------------------------------------------------------------------------------

    def flush(self) -> bool:
        """Try to deliver everything buffered now; returns whether the buffers are empty."""
        if not self.enabled:
            return True
        if self._run_name is None and self.run_id is None:
            return False  # start() not called yet: keep buffering
        with self._flush_lock:
            try:
                self._deliver()
            except Exception as exc:  # noqa: BLE001 - any failure means "retry later"
                self._on_failure(exc)
                return False
            self._on_success()
            return True

    def _flush_loop(self) -> None:
        while not self._stop.is_set():
            retry_in = self._next_attempt - time.time()
            self._wake.wait(timeout=self.flush_every_s if self._failures == 0 else max(0.05, retry_in))
            self._wake.clear()
            if self._stop.is_set():
                break
            if time.time() >= self._next_attempt:
                self.flush()

    def _mlflow(self):
        if self._client is None:
            import mlflow

            self._client = mlflow.MlflowClient(self.uri)
        return self._client

    def _check_server(self) -> None:
        """Raise ConnectionError fast when an HTTP tracking server does not answer ``/health``.

        MLflow's own client retries a refused connection for minutes; this check keeps a
        flush during an outage to one short request.
        """
        if not self.uri.startswith(("http://", "https://")):
            return
        import requests

        try:
            ok = requests.get(self.uri.rstrip("/") + "/health", timeout=3).status_code == 200
        except requests.RequestException as exc:
            raise ConnectionError(f"{type(exc).__name__}") from exc
        if not ok:
            raise ConnectionError("health check failed")

    def _deliver(self) -> None:
        self._check_server()
        client = self._mlflow()
        if self.run_id is None:
            self._open_run()
        if self._outage is not None:  # report the outage on the run itself
            with self._lock:
                self._tags["tracking_outages"] = str(len(self.outages) + 1)
        with self._lock:
            params = {k: v for k, v in self._params.items() if k not in self._logged_params}
            changed = {k for k, v in self._params.items() if self._logged_params.get(k, v) != v}
            if changed - self._changed_params:
                self._changed_params |= changed
                self._tags["resume_changed_params"] = ",".join(sorted(self._changed_params))
            tags = dict(self._tags)
        self._send_params_tags(client, params, tags)
        self._send_spilled(client)
        while True:
            with self._lock:  # take a chunk out; log_metrics may spill the rest meanwhile
                chunk = [self._metrics.popleft() for _ in range(min(BATCH_METRICS, len(self._metrics)))]
            if not chunk:
                break
            try:
                self._send_metrics(client, chunk)
            except Exception:
                with self._lock:
                    self._metrics.extendleft(reversed(chunk))
                raise
        while self._artifacts:
            local, artifact_path = self._artifacts[0]
            if Path(local).is_dir():
                client.log_artifacts(self.run_id, local, artifact_path)
            else:
                client.log_artifact(self.run_id, local, artifact_path)
            with self._lock:
                self._artifacts.pop(0)

    def _open_run(self) -> None:
        from mlflow.entities import RunStatus

        client = self._mlflow()
        exp_id = setup(self.experiment, self.uri)
        name = self._run_name.replace("'", "\\'")
        runs = client.search_runs([exp_id], filter_string=f"attributes.run_name = '{name}'",
                                  order_by=["attributes.start_time DESC"], max_results=50)
        resumable = [r for r in runs if r.info.status in ("RUNNING", "FAILED", "KILLED")]
        if resumable:
            run = resumable[0]
            client.update_run(run.info.run_id, status=RunStatus.to_string(RunStatus.RUNNING))
            self._logged_params = dict(run.data.params)
            resumed = int(run.data.tags.get("resume_count", "0")) + 1
            with self._lock:
                self._tags["resume_count"] = str(resumed)
            log.info("resuming MLflow run %s (%s, was %s)", run.info.run_id, self._run_name, run.info.status)
        else:
            run = client.create_run(exp_id, run_name=self._run_name)
            log.info("MLflow run %s (%s) in experiment %s at %s", run.info.run_id, self._run_name,
                     self.experiment, redact_value(self.uri))
        self.run_id = run.info.run_id

    def _send_params_tags(self, client, params: dict[str, str], tags: dict[str, str]) -> None:
        from mlflow.entities import Param, RunTag

        items = [("p", k, v) for k, v in params.items()] + [("t", k, v) for k, v in tags.items()]
        for i in range(0, len(items), BATCH_PARAMS_TAGS):
            chunk = items[i:i + BATCH_PARAMS_TAGS]
            client.log_batch(self.run_id, params=[Param(k, v) for kind, k, v in chunk if kind == "p"],
                             tags=[RunTag(k, v) for kind, k, v in chunk if kind == "t"], synchronous=True)
            with self._lock:
                for kind, k, v in chunk:
                    if kind == "p":
                        self._logged_params[k] = v
                    elif self._tags.get(k) == v:
                        del self._tags[k]

    def _send_metrics(self, client, rows: Sequence[Sequence]) -> None:
        from mlflow.entities import Metric
        from mlflow.exceptions import MlflowException

        metrics = [Metric(key, value, ts, step) for key, value, ts, step in rows]
        try:
            client.log_batch(self.run_id, metrics=metrics, synchronous=True)
        except MlflowException as exc:
            # A 4xx (a bad key) would be rejected forever: drop it and report, keep the rest flowing.
            if exc.get_http_status_code() < 500 and exc.error_code not in ("TEMPORARILY_UNAVAILABLE",
                                                                           "REQUEST_LIMIT_EXCEEDED"):
                log.error("MLflow rejected %d metrics (%s); dropped", len(metrics), exc.message[:200])
                return
            raise

    # -- outages and the spill file ------------------------------------------------------------

    def _on_failure(self, exc: Exception) -> None:
        self._failures += 1
        first, largest = self.backoff_s
        delay = min(largest, first * 2 ** (self._failures - 1))
        self._next_attempt = time.time() + random.uniform(0.5 * delay, delay)
        if self._outage is None:
            self._outage = Outage(since=time.time(), buffered_at_start=self.buffered,
                                  error=redact_value(f"{type(exc).__name__}: {str(exc)[:200]}"))
            since = datetime.datetime.fromtimestamp(self._outage.since).isoformat(timespec="seconds")
            log.warning("tracking server unreachable since %s, %d metrics buffered (%s); training "
                        "continues, retrying with backoff", since, self.buffered, self._outage.error)
        else:
            log.debug("MLflow flush attempt %d failed: %s", self._failures, redact_value(str(exc)))

    def _on_success(self) -> None:
        self._failures = 0
        self._next_attempt = 0.0
        if self._outage is not None:
            self._outage.until = time.time()
            self.outages.append(self._outage)
            log.warning("tracking server reachable again after %.1fs; buffered metrics delivered",
                        self._outage.until - self._outage.since)
            self._outage = None

    @property
    def buffered(self) -> int:
        """Metrics not yet delivered (in memory and spilled)."""
        return len(self._metrics) + self._spilled

    def _spill(self, everything: bool = False) -> None:
        """Move the oldest half (or all) of the in-memory metrics to the JSONL spill file."""
        with self._lock:
            n = len(self._metrics) if everything else len(self._metrics) // 2
            rows = [self._metrics.popleft() for _ in range(n)]
            if not rows:
                return
            self.spill_path.parent.mkdir(parents=True, exist_ok=True)
            with open(self.spill_path, "a") as f:
                f.writelines(json.dumps(r) + "\n" for r in rows)
            self._spilled += len(rows)

    def _send_spilled(self, client) -> None:
        """Replay spilled metrics (oldest first); only the flush thread touches the ``.sending`` file."""
        sending = self.spill_path.with_suffix(".sending")
        with self._lock:  # take the spill file over; new spills start a fresh one
            if not sending.exists() and self.spill_path.exists():
                self.spill_path.rename(sending)
        if not sending.exists():
            return
        rows = [json.loads(line) for line in sending.read_text().splitlines() if line]
        for i in range(0, len(rows), BATCH_METRICS):
            try:
                self._send_metrics(client, rows[i:i + BATCH_METRICS])
            except Exception:
                sending.write_text("".join(json.dumps(r) + "\n" for r in rows[i:]))
                raise
            with self._lock:
                self._spilled -= len(rows[i:i + BATCH_METRICS])
        sending.unlink()
        if self._spilled:  # spilled while we were sending
            self._send_spilled(client)


# ---------------------------------------------------------------------------------------------
# Plots and models


def plot_curves(history: Mapping[str, Sequence[float]] | Sequence[Mapping[str, float]],
                path: str | Path, xlabel: str = "epoch") -> Path:
    """One panel per series (``loss``, ``top1``, ``lr``...) to a PNG; returns its path."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    if not isinstance(history, Mapping):  # list of per-epoch dicts -> dict of series
        series: dict[str, list[float]] = {}
        for row in history:
            for key, value in row.items():
                series.setdefault(key, []).append(value)
        history = series
    keys = [k for k, v in history.items() if len(v)]
    fig = Figure(figsize=(4 * max(1, len(keys)), 3))  # no pyplot: no global state, no GUI backend
    FigureCanvasAgg(fig)
    for i, key in enumerate(keys):
        ax = fig.add_subplot(1, len(keys), i + 1)
        ax.plot(range(len(history[key])), history[key], marker="." if len(history[key]) < 50 else None)
        ax.set_title(key)
        ax.set_xlabel(xlabel)
        if key == "lr" or key.endswith("/lr"):
            ax.ticklabel_format(axis="y", style="sci", scilimits=(-2, 2))
        ax.grid(alpha=0.3)
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    return path


def write_model_files(module, folder: str | Path, backbone: str | None,
                      backbone_kwargs: Mapping[str, Any] | None = None, **extra: Any) -> list[Path]:
    """Write ``state_dict.pt``, ``model_info.json`` and ``checksums.json`` for ``module``."""
    import torch

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().cpu().contiguous() for k, v in module.state_dict().items()}
    torch.save(state, folder / "state_dict.pt")
    info = {"backbone": backbone, "kwargs": dict(backbone_kwargs or {}),
            "class": f"{type(module).__module__}.{type(module).__qualname__}",
            "num_params": sum(p.numel() for p in module.parameters()),
            "feature_dim": getattr(module, "feature_dim", None),
            "torch_version": torch.__version__, **extra}
    (folder / "model_info.json").write_text(json.dumps(info, indent=2, default=str))
    checksums = {"algorithm": "sha256", "files": {f: sha256_file(folder / f) for f in MODEL_FILES}}
    (folder / "checksums.json").write_text(json.dumps(checksums, indent=2))
    return [folder / f for f in (*MODEL_FILES, "checksums.json")]


class ModelVerificationError(RuntimeError):
    """A downloaded model is incomplete or does not match its checksums."""


def verify_model_dir(folder: str | Path) -> Path:
    """Check the MLflow model files and the sha256 checksums; returns the ``extra_files`` folder.

    Raises:
        ModelVerificationError: a file is missing, the flavour is not pytorch, or a checksum differs.
    """
    import yaml

    folder = Path(folder)
    mlmodel = folder / "MLmodel"
    if not mlmodel.is_file():
        raise ModelVerificationError(f"{folder}: no MLmodel file; not an MLflow model")
    flavors = (yaml.safe_load(mlmodel.read_text()) or {}).get("flavors", {})
    if "pytorch" not in flavors:
        raise ModelVerificationError(f"{folder}: not a pytorch-flavour model ({', '.join(flavors)})")
    extra = folder / "extra_files"
    sums_path = extra / "checksums.json"
    if not sums_path.is_file():
        raise ModelVerificationError(f"{folder}: no extra_files/checksums.json; not logged by vidray")
    sums = json.loads(sums_path.read_text())["files"]
    for name in MODEL_FILES:
        if name not in sums or not (extra / name).is_file():
            raise ModelVerificationError(f"{folder}: {name} missing")
        actual = sha256_file(extra / name)
        if actual != sums[name]:
            raise ModelVerificationError(f"{folder}: sha256 of {name} is {actual[:12]}, "
                                         f"expected {sums[name][:12]}")
    return extra


def load_registered_model(uri: str, dst: str | Path | None = None):
    """Download ``models:/NAME@alias`` or ``models:/NAME/version``, verify it, load it safely.

    The weights are read with ``torch.load(weights_only=True)`` into a module built by
    ``vidmodels.create_backbone(backbone, **kwargs)`` from ``model_info.json``;
    nothing is unpickled.

    Returns:
        ``(module, info)``: the module in eval mode and ``model_info.json`` plus ``path``.

    Raises:
        ModelVerificationError: see :func:`verify_model_dir`, or no backbone name recorded.
        mlflow.exceptions.MlflowException: no such model, version or alias.
    """
    import mlflow
    import torch

    import vidmodels

    if dst is not None:
        Path(dst).mkdir(parents=True, exist_ok=True)
    local = Path(mlflow.artifacts.download_artifacts(artifact_uri=uri, dst_path=str(dst) if dst else None,
                                                     tracking_uri=tracking_uri(), registry_uri=tracking_uri()))
    extra = verify_model_dir(local)
    info = json.loads((extra / "model_info.json").read_text())
    if not info.get("backbone"):
        raise ModelVerificationError(f"{uri}: model_info.json names no backbone to rebuild")
    module = vidmodels.create_backbone(info["backbone"], **info.get("kwargs", {}))
    state = torch.load(extra / "state_dict.pt", map_location="cpu", weights_only=True)
    module.load_state_dict(state, strict=True)
    module.eval()
    return module, {**info, "path": str(local)}
