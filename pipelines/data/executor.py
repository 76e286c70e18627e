"""Ray Data's executor, tuned for short decode tasks and executions that start often.

Two fixed intervals of Ray Data 2.60's streaming executor leave decode CPUs idle; neither has
an environment variable or a ``DataContext`` field, so :func:`tune_executor` sets them in
this process:

* ``ResourceManager.GLOBAL_LIMITS_UPDATE_INTERVAL_S`` (Ray: 1 s). An execution takes its
  resource limits from Ray Data's autoscaling coordinator, whose answer is asynchronous (the
  first read returns an empty cache), and refreshes them at most this often. Until the
  first refresh the execution has no CPU budget and runs one task: on 2 CPUs, one CPU idled
  for the first second of every execution. Here: :data:`LIMITS_REFRESH_S`.
* ``streaming_executor_state.WAIT_FOR_TASK_COMPLETION_TIMEOUT_S`` (Ray: 0.1 s). Each turn
  of the scheduling loop waits this long for *all* running tasks, so an ended task is
  noticed (and its CPU given a new task) up to one or two turns late. Here: :data:`TURN_S`.

Measured in ``bench/RESULTS.md`` (2026-12-01, 2 CPUs, 720 clips of 16 × 112² in one
execution): 4.4–4.7 s → 3.7–3.9 s for the first. For the second, with the driver only
counting blocks, 215–232 clips/s at Ray's 0.1 s, 237–250 at 0.05 s and 246–262 at 0.02 s,
for 0.1 ms more executor CPU per clip at 0.02 s; with the driver taking every batch (the
pipeline as training uses it; 8 interleaved rounds), the medians were 141.9 / 152.9 / 147.7
clips/s at 12.08 / 11.80 / 12.37 ms of CPU per clip. Hence 0.05 s.

It must run where the executor runs: the driver that iterates a dataset, or the coordinator
actor of Ray Train's dataset shards. Both import :mod:`pipelines.data.tasks` (the
coordinator when it unpickles our stage functions), which calls it once Ray Data is
loaded; :func:`~pipelines.data.dataset.build_pipeline` calls it too. Environment
variables override each interval; ``0`` (or a Ray without the attribute) leaves Ray's own.
"""

from __future__ import annotations

import importlib
import logging
import os

log = logging.getLogger(__name__)
LIMITS_REFRESH_S = 0.1
TURN_S = 0.05
SETTINGS = {  # env variable: (module, attribute holder, attribute, our default)
    "VIDRAY_RAY_DATA_LIMITS_REFRESH_S": ("ray.data._internal.execution.resource_manager", "ResourceManager",
                                         "GLOBAL_LIMITS_UPDATE_INTERVAL_S", LIMITS_REFRESH_S),
    "VIDRAY_RAY_DATA_TURN_S": ("ray.data._internal.execution.streaming_executor_state", None,
                               "WAIT_FOR_TASK_COMPLETION_TIMEOUT_S", TURN_S),
}


def tune_executor() -> dict[str, float]:
    """Set Ray Data's executor intervals in this process; ``{attribute: seconds}`` of those set."""
    done = {}
    for env, (module_name, holder, attr, default) in SETTINGS.items():
        seconds = float(os.environ.get(env, default))
        if seconds <= 0:
            continue
        try:
            module = importlib.import_module(module_name)
        except ImportError:  # another Ray: leave its executor alone
            continue
        target = getattr(module, holder, None) if holder else module
        if target is None or not hasattr(target, attr):
            log.debug("Ray Data has no %s.%s; left as it is", module_name, attr)
            continue
        setattr(target, attr, seconds)
        done[attr] = seconds
    return done
