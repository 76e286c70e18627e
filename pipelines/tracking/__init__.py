"""MLflow tracking for vidray runs: params, buffered metrics, artifacts, models and the registry.

What lives where (everything below is re-exported here; import from ``pipelines.tracking``):

- :mod:`~pipelines.tracking.store`: where runs go (``MLFLOW_TRACKING_URI`` or the embedded
  ``sqlite:///<VIDRAY_HOME>/mlflow.db``, ``~/.vidray`` by default), :func:`setup` of an experiment, and the tags every
  run gets (:func:`git_commit`, :func:`ray_job_id`, :func:`default_tags`);
- :mod:`~pipelines.tracking.redact`: credential filtering of params and tags
  (:func:`sanitize`, :func:`is_secret_key`, :func:`looks_like_secret`, :func:`redact_value`)
  and MLflow's length limits;
- :mod:`~pipelines.tracking.logger`: :class:`RunLogger`, what training uses (rank 0 only,
  buffered, outage-tolerant; the resume rule), extending
- :mod:`~pipelines.tracking.delivery`: its background flush, retries with backoff,
  :class:`Outage` reports and the spill file;
- :mod:`~pipelines.tracking.models`: model files next to MLflow's pytorch flavour
  (:func:`write_model_files`), their verification (:func:`verify_model_dir`) and safe
  loading of a registered model (:func:`load_registered_model`);
- :mod:`~pipelines.tracking.plots`: :func:`plot_curves`.

Module-level names are read where they are defined: a test that replaces one (e.g.
``PROJECT_ROOT``) patches that module (``pipelines.tracking.store``), not this package.

A tracking server started for the tests: ``tests/conftest.py::mlflow_server``.
"""

from __future__ import annotations

from pipelines.tracking.delivery import BATCH_METRICS, BATCH_PARAMS_TAGS, Outage
from pipelines.tracking.logger import RunLogger
from pipelines.tracking.models import (MODEL_FILES, ModelVerificationError, load_registered_model,
                                       sha256_file, verify_model_dir, write_model_files)
from pipelines.tracking.plots import plot_curves
from pipelines.tracking.redact import (MAX_KEY, MAX_PARAM_VALUE, MAX_TAG_VALUE, REDACTED, is_secret_key,
                                       looks_like_secret, redact_value, sanitize)
from pipelines.tracking.store import (PROJECT_ROOT, default_artifact_root, default_tags, git_commit, home,
                                      ray_job_id, setup, tracking_uri)

__all__ = [
    "BATCH_METRICS", "BATCH_PARAMS_TAGS", "MAX_KEY", "MAX_PARAM_VALUE", "MAX_TAG_VALUE", "MODEL_FILES",
    "PROJECT_ROOT", "REDACTED", "ModelVerificationError", "Outage", "RunLogger", "default_artifact_root",
    "default_tags", "git_commit", "home", "is_secret_key", "load_registered_model", "looks_like_secret",
    "plot_curves", "ray_job_id", "redact_value", "sanitize", "setup", "sha256_file", "tracking_uri",
    "verify_model_dir", "write_model_files",
]
