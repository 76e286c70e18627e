"""Ray Data's executor, tuned for short decode tasks and executions that start often.

Four settings of Ray Data 2.60's streaming executor decide how soon a decode CPU gets its next
task; three of them, at Ray's values, leave it idle, and the fourth (the turn) is left at Ray's
value by default. Three have no environment variable or ``DataContext`` field, and the other's
variable is read when Ray Data is imported, so :func:`tune_executor` sets them in this process:

* ``ResourceManager.GLOBAL_LIMITS_UPDATE_INTERVAL_S`` (Ray: 1 s). An execution takes its
  resource limits from Ray Data's autoscaling coordinator, whose answer is asynchronous (the
  first read returns an empty cache), and refreshes them at most this often. Until the
  first refresh the execution has no CPU budget and runs one task: on 2 CPUs, one CPU idled
  for the first second of every execution. Here: :data:`LIMITS_REFRESH_S`, doubled at each
  refresh that grants no CPU, and Ray's interval once the limits grant CPUs (each refresh is
  an actor call: the coordinator spent 21.2 ms of CPU a second at a steady 0.1 s, 12.0 with
  the return to Ray's interval). At 0.1 s the second decode task of an execution started
  0.12-0.16 s after the first. ``bench/pipeline.py``'s Ray runner, 720 clips of 16 x 112² in
  120-row blocks, 8 alternated rounds each (2026-12-02): 278.0 / 286.3 / 289.4 clips/s at a
  steady 0.1 / 0.03 / 0.01 s, 6.72 / 6.71 / 6.67 CPU ms per clip. The doubling bounds what
  an execution that never gets a CPU (all taken by other work) pays: 7 refreshes in its first
  1.3 s, then one a second.
* ``streaming_executor_state.WAIT_FOR_TASK_COMPLETION_TIMEOUT_S`` (Ray: 0.1 s), the longest
  turn of the scheduling loop. Before :class:`WakeOnAny`, a turn waited this long for *all*
  running tasks, so an ended task was noticed up to one or two turns late, and 0.05 s was set
  here. With it a turn ends as soon as a task has output, and a shorter turn only adds idle
  turns, each ~2.5 ms of the driver's CPU (two resource-budget updates: ~117
  ``ExecutionResources`` built per turn). 0.05 against 0.1 s, 8 alternated rounds of 720 clips
  (2026-12-02 21:51, a slow host): 0.544 against 0.420 s of driver CPU per round, 16.84
  against 16.65 CPU ms per clip, 115.8 against 116.2 clips/s. So :data:`TURN_S` is 0: Ray's
  own; ``VIDRAY_RAY_DATA_TURN_S`` still sets it.
* ``metadata_fetcher._PREFETCH_ON_THREAD`` (Ray: on, ``RAY_DATA_METADATA_PREFETCH_ON_THREAD``).
  A task's output metadata is fetched by a background thread, and the task counts as done
  (its CPU free for the next task) only once that thread has published it and a later turn
  of the loop has seen it: a decode worker idled 98 ms median between two tasks of ~0.9 s
  (``ray.timeline()``, 29 gaps), 42 ms with the metadata fetched inline (2026-12-01,
  2 CPUs, 90-row blocks of 16 × 112² clips). Alternated in one cluster, 6 rounds each of
  720 clips: 151.0 against 143.1 clips/s, 11.72 against 11.97 CPU ms per clip (the thread
  polls as well). Here: inline (:data:`INLINE_METADATA`), unless
  ``RAY_DATA_METADATA_PREFETCH_ON_THREAD`` is set, which is left to decide.

* ``streaming_executor_state.ray.wait`` (Ray: all of the running tasks, or the turn). Each
  turn waits until *every* running task has output ready or the turn has passed, so a task
  that ended waits for the turn's end before its CPU gets the next task. Here: the wait
  returns as soon as *any* task has output (:class:`WakeOnAny`, the module's ``ray`` replaced
  by a stand-in whose ``wait`` is changed and nothing else), unless
  ``VIDRAY_RAY_DATA_WAKE_ON_ANY=0``. ``bench/pipeline.py``'s Ray runner, 2 CPUs, 720 clips of
  16 × 112² per execution, alternated rounds (2026-12-02): 281.5 → 294.2, 283.9 → 290.1 and
  278.7 → 293.1 clips/s in three runs (+2.2 to +5.2 %), at 6.45 → 6.38, 6.38 → 6.45 and
  6.47 → 6.40 ms of CPU per clip.

The first two, measured in ``bench/RESULTS.md`` (2026-12-01, 2 CPUs, 720 clips of 16 × 112²
in one execution): 4.4–4.7 s → 3.7–3.9 s for the first. For the second, with the driver only
counting blocks, 215–232 clips/s at Ray's 0.1 s, 237–250 at 0.05 s and 246–262 at 0.02 s,
for 0.1 ms more executor CPU per clip at 0.02 s; with the driver taking every batch (the
pipeline as training uses it; 8 interleaved rounds), the medians were 141.9 / 152.9 / 147.7
clips/s at 12.08 / 11.80 / 12.37 ms of CPU per clip. Hence 0.05 s then; with the metadata fetched
inline, 0.05 and 0.02 s measured the same (143.6 and 142.1 clips/s, 6 alternated rounds), and
with :class:`WakeOnAny` as well, Ray's 0.1 s (above).

It must run where the executor runs: the driver that iterates a dataset, or the coordinator
actor of Ray Train's dataset shards. Both import :mod:`pipelines.data.tasks` (the
coordinator when it unpickles our stage functions), which calls it once Ray Data is
loaded; :func:`~pipelines.data.dataset.build_pipeline` calls it too. Environment
variables override each setting; ``0`` (or a Ray without the attribute) leaves Ray's own.
"""

from __future__ import annotations

import importlib
import logging
import os
from collections.abc import Callable
from typing import Any, NamedTuple

log = logging.getLogger(__name__)
LIMITS_REFRESH_S = 0.01
TURN_S = 0  # Ray's own turn (see above)
INLINE_METADATA = 1
WAKE_ON_ANY = 1


class _Setting(NamedTuple):
    module: str
    holder: str | None  # the class holding the attribute, or None for the module itself
    attr: str
    default: float
    to_ray: Callable[[float], Any] = float  # our value (> 0) -> the attribute's
    ray_env: str | None = None  # Ray's own variable for it: when set, Ray's choice stands
    before: Callable[[Any], None] | None = None  # called with the holder before each setting (idempotent)


def _fast_until_budgeted(manager_cls: type) -> None:
    """Refresh an execution's limits after the class's (fast) interval, then after twice as long
    at each refresh that grants no CPU, up to Ray's own interval; once they grant CPUs, at Ray's.

    The fast refresh is for an execution's start, where the budget is still 0; after that each
    refresh is an actor call to the autoscaling coordinator, for a figure that changes only
    when the cluster does."""
    original = manager_cls.get_global_limits
    if getattr(original, "vidray_fast_until_budgeted", False):
        return
    ray_interval_s = manager_cls.GLOBAL_LIMITS_UPDATE_INTERVAL_S

    def get_global_limits(self):
        before = self._global_limits_last_update_time
        limits = original(self)
        if limits.cpu:
            self.GLOBAL_LIMITS_UPDATE_INTERVAL_S = ray_interval_s  # this execution's; the class keeps ours
        elif self._global_limits_last_update_time != before:  # refreshed, and still no CPU
            self.GLOBAL_LIMITS_UPDATE_INTERVAL_S = min(ray_interval_s, 2 * self.GLOBAL_LIMITS_UPDATE_INTERVAL_S)
        return limits

    get_global_limits.vidray_fast_until_budgeted = True
    manager_cls.get_global_limits = get_global_limits


class WakeOnAny:
    """The ``ray`` module as :mod:`ray.data._internal.execution.streaming_executor_state` sees it,
    but for ``wait``: a wait for *all* of ``refs`` returns as soon as one is ready, with every
    other one ready by then (``timeout`` still bounds it). Any other wait, and every other
    attribute, is Ray's own."""

    def __init__(self, ray_module) -> None:
        self._ray = ray_module

    def __getattr__(self, name: str):
        return getattr(self._ray, name)

    def wait(self, refs, *, num_returns: int = 1, fetch_local: bool = True, timeout: float | None = None):
        if not refs or num_returns < len(refs):
            return self._ray.wait(refs, num_returns=num_returns, fetch_local=fetch_local, timeout=timeout)
        ready, rest = self._ray.wait(refs, num_returns=1, fetch_local=fetch_local, timeout=timeout)
        if ready and rest:
            more, rest = self._ray.wait(rest, num_returns=len(rest), fetch_local=fetch_local, timeout=0)
            ready = ready + more
        return ready, rest


def _wake_on_any(_: float) -> WakeOnAny:
    import ray

    return WakeOnAny(ray)


SETTINGS = {
    "VIDRAY_RAY_DATA_LIMITS_REFRESH_S": _Setting("ray.data._internal.execution.resource_manager", "ResourceManager",
                                                 "GLOBAL_LIMITS_UPDATE_INTERVAL_S", LIMITS_REFRESH_S,
                                                 before=_fast_until_budgeted),
    "VIDRAY_RAY_DATA_TURN_S": _Setting("ray.data._internal.execution.streaming_executor_state", None,
                                       "WAIT_FOR_TASK_COMPLETION_TIMEOUT_S", TURN_S),
    "VIDRAY_RAY_DATA_INLINE_METADATA": _Setting("ray.data._internal.execution.metadata_fetcher", None,
                                                "_PREFETCH_ON_THREAD", INLINE_METADATA, lambda _: False,
                                                "RAY_DATA_METADATA_PREFETCH_ON_THREAD"),
    "VIDRAY_RAY_DATA_WAKE_ON_ANY": _Setting("ray.data._internal.execution.streaming_executor_state", None, "ray",
                                            WAKE_ON_ANY, _wake_on_any),
}


def tune_executor() -> dict[str, Any]:
    """Set Ray Data's executor settings in this process; ``{attribute: value}`` of those set."""
    done = {}
    for env, setting in SETTINGS.items():
        value = float(os.environ.get(env, setting.default))
        if value <= 0 or (setting.ray_env and setting.ray_env in os.environ):
            continue
        try:
            module = importlib.import_module(setting.module)
        except ImportError:  # another Ray: leave its executor alone
            continue
        target = getattr(module, setting.holder, None) if setting.holder else module
        if target is None or not hasattr(target, setting.attr):
            log.debug("Ray Data has no %s.%s; left as it is", setting.module, setting.attr)
            continue
        if setting.before:
            setting.before(target)
        done[setting.attr] = setting.to_ray(value)
        setattr(target, setting.attr, done[setting.attr])
    return done
