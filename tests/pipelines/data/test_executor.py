"""pipelines.data.executor: Ray Data's executor tuned in the processes that run it."""

from __future__ import annotations

import pytest


def test_the_executor_sees_the_cluster_and_ended_tasks_soon(monkeypatch):
    """Resource limits refresh after 0.01 s (Ray's 1 s left one CPU idle for an execution's first
    second), a task's output metadata is fetched inline (Ray's fetch thread held a task's CPU
    ~0.1 s after it ended) and a turn ends when any task has output; the longest turn is Ray's
    unless ``VIDRAY_RAY_DATA_TURN_S`` sets it; an environment variable set to 0 keeps Ray's own
    value, and so does Ray's own variable for the fetch thread."""
    import ray
    from ray.data._internal.execution import metadata_fetcher, streaming_executor_state
    from ray.data._internal.execution.resource_manager import ResourceManager

    from pipelines.data import executor

    monkeypatch.setattr(ResourceManager, "GLOBAL_LIMITS_UPDATE_INTERVAL_S", 1)
    monkeypatch.setattr(streaming_executor_state, "WAIT_FOR_TASK_COMPLETION_TIMEOUT_S", 0.1)
    monkeypatch.setattr(metadata_fetcher, "_PREFETCH_ON_THREAD", True)
    monkeypatch.delenv("RAY_DATA_METADATA_PREFETCH_ON_THREAD", raising=False)
    monkeypatch.setattr(streaming_executor_state, "ray", ray)
    monkeypatch.delenv("VIDRAY_RAY_DATA_TURN_S", raising=False)
    monkeypatch.setenv("VIDRAY_RAY_DATA_LIMITS_REFRESH_S", "0")
    monkeypatch.setenv("VIDRAY_RAY_DATA_INLINE_METADATA", "0")
    monkeypatch.setenv("VIDRAY_RAY_DATA_WAKE_ON_ANY", "0")
    assert executor.tune_executor() == {}  # the turn is Ray's own unless VIDRAY_RAY_DATA_TURN_S says
    assert streaming_executor_state.ray is ray
    assert ResourceManager.GLOBAL_LIMITS_UPDATE_INTERVAL_S == 1
    assert streaming_executor_state.WAIT_FOR_TASK_COMPLETION_TIMEOUT_S == 0.1
    assert metadata_fetcher._PREFETCH_ON_THREAD is True
    assert isinstance(metadata_fetcher.make_metadata_fetcher(), metadata_fetcher.ThreadedMetadataFetcher)

    monkeypatch.delenv("VIDRAY_RAY_DATA_LIMITS_REFRESH_S")
    monkeypatch.delenv("VIDRAY_RAY_DATA_INLINE_METADATA")
    monkeypatch.delenv("VIDRAY_RAY_DATA_WAKE_ON_ANY")
    monkeypatch.setenv("VIDRAY_RAY_DATA_TURN_S", "0.02")
    done = executor.tune_executor()
    assert {k: v for k, v in done.items() if k != "ray"} == {"GLOBAL_LIMITS_UPDATE_INTERVAL_S": 0.01,
                                                             "WAIT_FOR_TASK_COMPLETION_TIMEOUT_S": 0.02,
                                                             "_PREFETCH_ON_THREAD": False}
    assert isinstance(done["ray"], executor.WakeOnAny) and streaming_executor_state.ray is done["ray"]
    assert streaming_executor_state.ray.ObjectRef is ray.ObjectRef  # all but wait is Ray's own
    assert ResourceManager.GLOBAL_LIMITS_UPDATE_INTERVAL_S == 0.01
    assert isinstance(metadata_fetcher.make_metadata_fetcher(), metadata_fetcher.InlineMetadataFetcher)

    monkeypatch.setattr(metadata_fetcher, "_PREFETCH_ON_THREAD", True)
    monkeypatch.setenv("RAY_DATA_METADATA_PREFETCH_ON_THREAD", "1")  # the user's choice stands
    assert "_PREFETCH_ON_THREAD" not in executor.tune_executor()
    assert metadata_fetcher._PREFETCH_ON_THREAD is True


def test_decode_workers_do_not_import_torch():
    """A decode worker imports the stage module and every recipe (to unpickle its config): none of
    them may pull in torch, which costs a new worker ~2 s of CPU and ~220 MB of RSS before its first read."""
    import subprocess
    import sys

    code = ("import sys, pipelines.data.tasks, pipelines.data.recipes; "
            "print(sorted(m for m in ('torch', 'mlflow') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], check=False, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip() == "[]", out.stdout


def test_limits_refresh_fast_only_until_the_execution_has_cpus():
    """Each refresh is an actor call to Ray Data's autoscaling coordinator: the interval doubles
    at each refresh that grants no CPU (up to Ray's), and once an execution's limits grant it
    CPUs it refreshes at Ray's own interval again, the class keeping ours."""
    from types import SimpleNamespace

    from ray.data._internal.execution.resource_manager import ResourceManager

    from pipelines.data import executor

    class Manager:  # the members of ResourceManager that the wrapper uses
        GLOBAL_LIMITS_UPDATE_INTERVAL_S = 1

        def __init__(self, cpus):
            self.cpus, self._global_limits_last_update_time, self.now = cpus, 0.0, 0.0

        def get_global_limits(self):  # refreshes (pops the next answer) when the interval has passed
            if self.now - self._global_limits_last_update_time >= self.GLOBAL_LIMITS_UPDATE_INTERVAL_S:
                self._global_limits_last_update_time = self.now
                self.limits = SimpleNamespace(cpu=self.cpus.pop(0))
            return self.limits

    executor._fast_until_budgeted(Manager)
    executor._fast_until_budgeted(Manager)  # wraps once
    Manager.GLOBAL_LIMITS_UPDATE_INTERVAL_S = 0.01
    m = Manager([0, 0, 0, 2, 4])
    m.now = 0.01
    assert m.get_global_limits().cpu == 0 and m.GLOBAL_LIMITS_UPDATE_INTERVAL_S == 0.02  # refreshed: doubled
    assert m.get_global_limits().cpu == 0 and m.GLOBAL_LIMITS_UPDATE_INTERVAL_S == 0.02  # cached: unchanged
    m.now = 0.04
    assert m.get_global_limits().cpu == 0 and m.GLOBAL_LIMITS_UPDATE_INTERVAL_S == 0.04
    m.now = 0.1
    assert m.get_global_limits().cpu == 0 and m.GLOBAL_LIMITS_UPDATE_INTERVAL_S == 0.08
    m.now = 0.2
    assert m.get_global_limits().cpu == 2 and m.GLOBAL_LIMITS_UPDATE_INTERVAL_S == 1  # budgeted: Ray's
    m.now = 1.2
    assert m.get_global_limits().cpu == 4 and m.GLOBAL_LIMITS_UPDATE_INTERVAL_S == 1
    assert Manager.GLOBAL_LIMITS_UPDATE_INTERVAL_S == 0.01 and Manager([0]).GLOBAL_LIMITS_UPDATE_INTERVAL_S == 0.01

    never = Manager([0] * 20)  # no CPU ever: the interval grows to Ray's and stays
    for step in range(1, 40):
        never.now = step * 0.1
        never.get_global_limits()
    assert never.GLOBAL_LIMITS_UPDATE_INTERVAL_S == 1 and len(never.cpus) > 10

    executor.tune_executor()
    assert ResourceManager.get_global_limits.vidray_fast_until_budgeted


def test_a_wait_for_all_returns_when_any_is_ready():
    """The executor's wait for all running tasks returns with the first ready one and whatever
    else is ready then; a wait for fewer, and the timeout, are Ray's."""
    from pipelines.data.executor import WakeOnAny

    class FakeRay:  # refs ready at the times given, the clock advanced by each wait
        ObjectRef = object

        def __init__(self, ready_at):
            self.ready_at, self.now, self.calls = ready_at, 0.0, []

        def wait(self, refs, *, num_returns, fetch_local, timeout):
            self.calls.append((len(refs), num_returns, timeout))
            due = sorted(self.ready_at[r] for r in refs)[num_returns - 1]
            self.now = max(self.now, min(due, self.now + (timeout if timeout is not None else due)))
            ready = [r for r in refs if self.ready_at[r] <= self.now][:num_returns]  # as Ray: at most num_returns
            return ready, [r for r in refs if r not in ready]

    fake = FakeRay({"a": 0.3, "b": 0.01, "c": 0.01, "d": 5.0})
    waits = WakeOnAny(fake)
    assert waits.ObjectRef is object
    ready, rest = waits.wait(["a", "b", "c", "d"], num_returns=4, fetch_local=False, timeout=0.05)
    assert sorted(ready) == ["b", "c"] and sorted(rest) == ["a", "d"] and fake.now == 0.01
    assert fake.calls == [(4, 1, 0.05), (3, 3, 0)]
    ready, rest = waits.wait(["a", "d"], num_returns=2, fetch_local=False, timeout=0.05)
    assert ready == [] and rest == ["a", "d"] and fake.now == pytest.approx(0.06)  # the turn still bounds it
    fake.calls.clear()
    assert waits.wait(["a", "d"], num_returns=1, fetch_local=False, timeout=1.0)[0] == ["a"]
    assert fake.calls == [(2, 1, 1.0)]
