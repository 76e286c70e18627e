"""vidray's data plane and orchestration glue (storage, manifest, ingest, Ray Data, Ray Train, MLflow)."""

import os as _os

# Ray reads its authentication mode when it is imported: set the secure default before
# any module of ours imports ray (DEVELOPERS.md rule 7). An explicit setting wins.
_os.environ.setdefault("RAY_AUTH_MODE", "token")
