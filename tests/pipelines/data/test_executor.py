"""pipelines.data.executor: Ray Data's executor tuned in the processes that run it."""

from __future__ import annotations


def test_the_executor_sees_the_cluster_and_ended_tasks_soon(monkeypatch):
    """Resource limits refresh every 0.1 s (Ray's 1 s left one CPU idle for an execution's first
    second) and the scheduling loop turns every 0.05 s (Ray's 0.1 s left a CPU idle after each
    task); an environment variable set to 0 keeps Ray's own value."""
    from ray.data._internal.execution import streaming_executor_state
    from ray.data._internal.execution.resource_manager import ResourceManager

    from pipelines.data import executor

    monkeypatch.setattr(ResourceManager, "GLOBAL_LIMITS_UPDATE_INTERVAL_S", 1)
    monkeypatch.setattr(streaming_executor_state, "WAIT_FOR_TASK_COMPLETION_TIMEOUT_S", 0.1)
    monkeypatch.setenv("VIDRAY_RAY_DATA_LIMITS_REFRESH_S", "0")
    assert executor.tune_executor() == {"WAIT_FOR_TASK_COMPLETION_TIMEOUT_S": 0.05}
    assert ResourceManager.GLOBAL_LIMITS_UPDATE_INTERVAL_S == 1
    assert streaming_executor_state.WAIT_FOR_TASK_COMPLETION_TIMEOUT_S == 0.05
    monkeypatch.delenv("VIDRAY_RAY_DATA_LIMITS_REFRESH_S")
    monkeypatch.setenv("VIDRAY_RAY_DATA_TURN_S", "0.02")
    assert executor.tune_executor() == {"GLOBAL_LIMITS_UPDATE_INTERVAL_S": 0.1, "WAIT_FOR_TASK_COMPLETION_TIMEOUT_S": 0.02}
    assert ResourceManager.GLOBAL_LIMITS_UPDATE_INTERVAL_S == 0.1


def test_decode_workers_do_not_import_torch():
    """A decode worker imports the stage module and every recipe (to unpickle its config): none of
    them may pull in torch, which costs a new worker ~2 s of CPU and ~220 MB of RSS before its first read."""
    import subprocess
    import sys

    code = ("import sys, pipelines.data.tasks, pipelines.data.recipes; "
            "print(sorted(m for m in ('torch', 'mlflow') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip() == "[]", out.stdout
