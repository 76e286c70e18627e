"""Ray Data's executor, tuned for executions that start often: how soon it sees the cluster's CPUs.

Ray Data 2.60 takes an execution's resource limits from its autoscaling coordinator. The
coordinator's answer is asynchronous (the first read returns an empty cache), and the
resource manager refreshes the limits at most every ``GLOBAL_LIMITS_UPDATE_INTERVAL_S``
(1 s, not configurable by an environment variable). Until the first refresh an execution
has no CPU budget and runs one task: on 2 CPUs, for the first second of every execution,
one CPU idles. ``bench/ray_overhead.py`` and a task timeline measured it (``bench/RESULTS.md``,
2026-12-01): 720 clips in 12 blocks took 4.4–4.7 s, and 3.7–3.9 s with a 0.1 s refresh,
where the second task started after 0.1–0.3 s instead of ~1 s.

:func:`tune_executor` sets the refresh to :data:`LIMITS_REFRESH_S` in this process. It must
run where the executor runs: the driver that iterates a dataset, or the coordinator actor of
Ray Train's dataset shards. Both import :mod:`pipelines.data.tasks` (the coordinator when
it unpickles our stage functions), which calls it once Ray Data is loaded. The cost is one
non-blocking actor call per refresh. ``VIDRAY_RAY_DATA_LIMITS_REFRESH_S`` overrides the
interval; ``0`` or a Ray without this attribute leaves Ray's default.
"""

from __future__ import annotations

import logging
import os

log = logging.getLogger(__name__)
LIMITS_REFRESH_S = 0.1
ENV = "VIDRAY_RAY_DATA_LIMITS_REFRESH_S"


def tune_executor() -> float | None:
    """Set Ray Data's resource-limit refresh interval in this process; the interval set, or ``None``."""
    seconds = float(os.environ.get(ENV, LIMITS_REFRESH_S))
    if seconds <= 0:
        return None
    try:
        from ray.data._internal.execution.resource_manager import ResourceManager
    except ImportError:  # another Ray: leave its executor alone
        return None
    if not hasattr(ResourceManager, "GLOBAL_LIMITS_UPDATE_INTERVAL_S"):
        log.debug("Ray Data has no GLOBAL_LIMITS_UPDATE_INTERVAL_S; executor left as it is")
        return None
    ResourceManager.GLOBAL_LIMITS_UPDATE_INTERVAL_S = seconds
    return seconds
