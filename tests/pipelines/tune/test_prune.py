"""Pruning after a sweep, on a sweep's storage layout: stopped trials lose every checkpoint, finished
trials keep their latest (with a snapshot that matches), failed trials keep everything."""

from __future__ import annotations

import json

from pipelines.tune.prune import SNAPSHOT, prune_sweep


def _run(folder, names: list[str], indices: list[int] | None = None) -> None:
    for name in names:
        (folder / name).mkdir(parents=True)
        (folder / name / "state.pt").write_bytes(b"x" * 1000)
    if indices is not None:
        results = [{"checkpoint_dir_name": n, "metrics": {"epoch": i}} for n, i in zip(names, indices)]
        (folder / SNAPSHOT).write_text(json.dumps({"checkpoint_results": results, "checkpoint_report_indices": indices,
                                                   "latest_checkpoint_result": results[-1], "current_report_index": 9}))


def _names(folder) -> list[str]:
    return sorted(p.name for p in folder.iterdir()) if folder.exists() else []


def test_prune_sweep_keeps_what_a_resume_reads(tmp_path):
    trials, tune = tmp_path / "s.trials", tmp_path / "s"
    _run(trials / "s.t1.p1", ["checkpoint_a", "checkpoint_b"], [2, 4])    # finished
    _run(trials / "s.t1.p2", ["checkpoint_c"], [6])
    _run(trials / "s.t1/work/p1", ["enc"])
    _run(trials / "s.t2.p1", ["checkpoint_a", "checkpoint_b"], [2, 4])    # stopped early
    _run(trials / "s.t2/work/p1", ["enc"])
    _run(trials / "s.t3.p1", ["checkpoint_a", "checkpoint_b"], [2, 4])    # failed
    _run(trials / "s.t10.p1", ["checkpoint_a"], [2])                      # another trial, same prefix
    _run(tune / "run_trial_t1_0_lr=0.1", ["checkpoint_000000", "checkpoint_000001"])
    _run(tune / "run_trial_t2_1_lr=1.0", ["checkpoint_000000"])
    (tune / "run_trial_t2_1_lr=1.0" / "result.json").write_text("{}\n")
    rows = [{"trial_id": "t1", "status": "finished"}, {"trial_id": "t2", "status": "stopped_early"},
            {"trial_id": "t3", "status": "error"}, {"trial_id": "t10", "status": "finished"}]

    pruned = prune_sweep(str(tmp_path), "s", rows)

    assert _names(trials / "s.t1.p1") == ["checkpoint_b", SNAPSHOT]
    snapshot = json.loads((trials / "s.t1.p1" / SNAPSHOT).read_text())
    assert [r["checkpoint_dir_name"] for r in snapshot["checkpoint_results"]] == ["checkpoint_b"]
    assert snapshot["checkpoint_report_indices"] == [4] and snapshot["current_report_index"] == 9
    assert _names(trials / "s.t1.p2") == ["checkpoint_c", SNAPSHOT]
    assert _names(trials / "s.t1" / "work") == ["p1"]                      # a finished trial's work stays
    assert not (trials / "s.t2.p1").exists() and not (trials / "s.t2").exists()
    assert _names(trials / "s.t3.p1") == ["checkpoint_a", "checkpoint_b", SNAPSHOT]
    assert _names(trials / "s.t10.p1") == ["checkpoint_a", SNAPSHOT]
    assert _names(tune / "run_trial_t1_0_lr=0.1") == ["checkpoint_000001"]
    assert _names(tune / "run_trial_t2_1_lr=1.0") == ["result.json"]      # Tune's results stay
    assert (pruned.checkpoints, pruned.folders) == (1 + 2 + 1 + 1, 2) and pruned.bytes >= 5 * 1000

    again = prune_sweep(str(tmp_path), "s", rows)                          # nothing left to prune
    assert (again.checkpoints, again.folders) == (0, 0)


def test_a_run_without_a_readable_snapshot_keeps_its_checkpoints(tmp_path):
    _run(tmp_path / "s.trials" / "s.t1.p1", ["checkpoint_a", "checkpoint_b"])
    assert prune_sweep(str(tmp_path), "s", [{"trial_id": "t1", "status": "finished"}]).checkpoints == 0
    assert _names(tmp_path / "s.trials" / "s.t1.p1") == ["checkpoint_a", "checkpoint_b"]
