"""pipelines.data.executor: Ray Data's executor tuned in the processes that run it."""

from __future__ import annotations


def test_the_executor_sees_the_cluster_soon(monkeypatch):
    """Ray Data's resource limits refresh every 0.1 s in a process that builds or executes a
    pipeline (Ray's default, 1 s, leaves one CPU idle for the first second of an execution);
    ``VIDRAY_RAY_DATA_LIMITS_REFRESH_S=0`` keeps Ray's own setting."""
    from ray.data._internal.execution.resource_manager import ResourceManager

    from pipelines.data import executor

    monkeypatch.setattr(ResourceManager, "GLOBAL_LIMITS_UPDATE_INTERVAL_S", 1)
    monkeypatch.setenv(executor.ENV, "0")
    assert executor.tune_executor() is None and ResourceManager.GLOBAL_LIMITS_UPDATE_INTERVAL_S == 1
    monkeypatch.delenv(executor.ENV)
    assert executor.tune_executor() == 0.1 and ResourceManager.GLOBAL_LIMITS_UPDATE_INTERVAL_S == 0.1
