"""vidray's data plane and orchestration glue (storage, manifest, ingest, Ray Data, Ray Train, MLflow)."""

import os as _os

# Ray reads its authentication mode when it is imported: set the secure default before
# any module of ours imports ray (DEVELOPERS.md rule 7). An explicit setting wins.
_os.environ.setdefault("RAY_AUTH_MODE", "token")
# Ray Train 2.60's controller takes each worker's reports (a queue of one) only when it
# polls, every RAY_TRAIN_HEALTH_CHECK_INTERVAL_S (Ray's default 2 s): a report sooner than
# that after the previous one blocks the training loop, and a finished run is noticed up
# to one interval late. Clusters started by our code (and the Docker images) poll every
# 0.5 s; bench/train.py measures what reports cost. An explicit setting wins.
_os.environ.setdefault("RAY_TRAIN_HEALTH_CHECK_INTERVAL_S", "0.5")
# MLflow draws a tqdm bar for every artifact download (a registered encoder, a model's files):
# in a job's log, three or more lines of carriage-return fragments per training phase between the
# one-line-per-epoch progress. An explicit setting wins.
_os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
