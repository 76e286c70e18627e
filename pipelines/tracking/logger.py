""":class:`RunLogger`, what training uses to log a run: buffered, retried, outage-tolerant.

It runs on rank 0 only (every method is a no-op on other ranks; the rank is passed in so
this package never imports Ray). It never lets a tracking-server outage kill training:

- metrics, params and tags go to an in-memory buffer that a background thread flushes
  with ``MlflowClient.log_batch``; a failed flush is retried with exponential backoff
  (1 s doubling to 60 s) while training goes on;
- the training loop calls :meth:`~pipelines.tracking.delivery.Delivery.flush_if_reachable`
  before each checkpoint, so a dead node loses no metric logged before its last checkpoint;
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

The delivery machinery (flush thread, backoff, spill file) is
:class:`pipelines.tracking.delivery.Delivery`, which :class:`RunLogger` extends.

Resume rule (job resubmission): :meth:`RunLogger.start` reuses the most recently
started run of the experiment with the same run name whose status is RUNNING, FAILED or
KILLED, and sets it RUNNING again; a FINISHED run is never reused, so a new run with
that name is created. Params of a resumed run are immutable in MLflow: a param whose
value changed is not logged, its key goes to the ``resume_changed_params`` tag.
"""

from __future__ import annotations

import atexit
import collections
import dataclasses
import logging
import os
import re
import shutil
import tempfile
import threading
import time
import uuid
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Self

from pipelines.tracking.delivery import BATCH_METRICS, Delivery, Outage
from pipelines.tracking.models import write_model_files
from pipelines.tracking.plots import plot_curves
from pipelines.tracking.redact import MAX_KEY, MAX_PARAM_VALUE, MAX_TAG_VALUE, redact_value, sanitize
from pipelines.tracking.store import default_artifact_root, default_tags, tracking_uri

log = logging.getLogger(__package__)  # "pipelines.tracking": one logger name for the whole package

_HTTP_RETRY_DEFAULTS = {"MLFLOW_HTTP_REQUEST_MAX_RETRIES": "2", "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "1",
                        "MLFLOW_HTTP_REQUEST_BACKOFF_JITTER": "0.5", "MLFLOW_HTTP_REQUEST_TIMEOUT": "30"}


def _metric_key(key: str) -> str:
    return re.sub(r"[^\w\-. /:]", "_", str(key))[:MAX_KEY]


class RunLogger(Delivery):
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
        self.experiment_id: str | None = None
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
                the signature is inferred from it and the module's output. A batch of one
                is logged repeated to two, so that the ``pt2`` program takes any batch size.
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
            # torch.export keeps a size-1 dimension static: from a batch of one, the pt2 program
            # would take batches of one only. The example goes in as a batch of two.
            if fmt == "pt2" and input_example.shape[0] == 1:
                input_example = input_example.expand(2, *input_example.shape[1:])
                output = output.expand(2, *output.shape[1:])
            x = input_example.detach().cpu().numpy()
            kwargs = {
                "name": name, "run_id": self.run_id, "input_example": x,
                "signature": infer_signature(x, output.detach().cpu().numpy()),
                # Pinned requirements skip MLflow's slow environment inference.
                "pip_requirements": [f"torch=={torch.__version__.split('+')[0]}"],
                "extra_files": [str(f) for f in files], "registered_model_name": registered_name,
                "await_registration_for": 60}
            info = self._log_flavour(module, name, fmt, kwargs)
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

    def _log_flavour(self, module, name: str, fmt: str, kwargs: dict[str, Any]):
        """``mlflow.pytorch.log_model`` in ``fmt``, falling back to pickle when ``pt2`` does not export.

        MLflow 3 files a logged model under the *active* experiment, the Default one ("0") when
        none is set, not under its run's: its artifacts would land in experiment 0's folder, which
        the embedded store puts in ./mlruns of whichever process created the database (a checkout,
        or a job's uploaded working dir that Ray later deletes). The run's experiment is named
        for the call.
        """
        import mlflow

        from pipelines.data.workers import patched_environ

        with patched_environ({"MLFLOW_EXPERIMENT_ID": str(self.experiment_id)}):
            try:
                # validate_serving_input=False: MLflow would reload the pt2 program to check the
                # example; the pickle path forwards unknown kwargs to torch.save, so not there.
                return mlflow.pytorch.log_model(module, serialization_format=fmt, **kwargs,
                                                **({"validate_serving_input": False} if fmt == "pt2" else {}))
            except Exception as exc:  # torch.export raises many types
                if fmt != "pt2" or isinstance(exc, (ConnectionError, OSError)):
                    raise
                log.warning("%s does not torch.export (%s: %s); logging it pickled",
                            name, type(exc).__name__, str(exc)[:200])
                return mlflow.pytorch.log_model(module, serialization_format="pickle", **kwargs)
