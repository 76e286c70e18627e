"""Where runs go: the tracking URI, the embedded default store, and the tags every run gets.

``MLFLOW_TRACKING_URI`` when set (an ``http://`` tracking server in production), else the
embedded default ``sqlite:///<home>/mlflow.db`` with artifacts under ``<home>/mlruns``, where
``<home>`` is ``VIDRAY_HOME`` or ``~/.vidray``: one store per user and machine, shared by a
checkout, the demo and the jobs a local cluster runs from uploaded copies of the checkout
(``ray job submit --working-dir .``), so ``jobs/registry.py`` finds what they registered. The model registry needs a SQL-backed store,
which both give.
"""

from __future__ import annotations

import logging
import os
import re
import subprocess
import sys
from pathlib import Path

log = logging.getLogger(__package__)  # "pipelines.tracking": one logger name for the whole package

PROJECT_ROOT = Path(__file__).resolve().parents[2]  # pipelines/tracking/store.py -> the checkout
# The environment of an ``mlflow server`` that vidray starts (tests, benchmarks): no server-side
# job runner. vidray submits no MLflow jobs, and the runner is 8 huey consumers polling their
# queue: ~20 % of a core per server, and twice the server's start-up (17 s against 9 s on 2 busy cores).
MLFLOW_SERVER_ENV = {"MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}


def home() -> Path:
    """Where the embedded store lives: ``VIDRAY_HOME``, else ``~/.vidray`` (created on first use).

    Not the checkout: a job submitted with ``ray job submit --working-dir .`` runs in an
    uploaded copy of it, and its runs would be lost with the copy.
    """
    path = Path(os.environ.get("VIDRAY_HOME") or Path.home() / ".vidray")
    path.mkdir(parents=True, exist_ok=True)
    return path


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
