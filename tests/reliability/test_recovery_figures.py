"""``bench/reliability.py``'s node-failure accounting on hand-made event logs (no cluster)."""

from __future__ import annotations

from tests.reliability.conftest import load_bench


def _report(t: float, step: int, checkpoint: bool = False) -> dict:
    return {"event": "report", "t": t, "step": step, "checkpoint": checkpoint, "epoch_end": step == 12}


def test_the_old_groups_late_reports_are_not_the_resumed_runs():
    """The killed node's group still reported step 8 after the kill (until its health check failed),
    then the new group resumed from step 4's checkpoint: its first report is step 6."""
    events = [{"event": "group_started", "t": 0.0, "ranks": {"0": "a", "1": "b"}},
              _report(1.0, 2), _report(2.0, 4, checkpoint=True), _report(3.0, 6),
              _report(10.5, 8),  # killed at 10.0
              {"event": "worker_exception", "t": 12.8, "ranks": {"0": "health check"}},
              {"event": "group_started", "t": 27.2, "ranks": {"0": "b", "1": "b"}},
              _report(40.0, 6), _report(41.0, 8), _report(42.0, 10), _report(43.0, 12),
              {"event": "driver_done", "t": 44.0}]
    out = load_bench()._recovery_figures(events, killed_at=10.0, steps_per_epoch=12, epochs=1)
    assert (out["last_reported_step_before_kill"], out["checkpoint_step_restored"], out["steps_lost"]) == (6, 4, 2)
    assert out["old_group_steps_after_kill"] == [8]
    assert out["first_step_after_restart"] == 6 and out["recover_s"] == 30.0
    assert (out["detect_s"], out["regroup_s"]) == (2.8, 17.2)
    assert out["final_step"] == out["planned_steps"] == 12 and out["extra_steps_run"] == 0 and out["finished"]
    assert out["restarted_placement"] == {"0": "b", "1": "b"} and out["group_starts"] == 2
