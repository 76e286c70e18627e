"""``jobs/tune.py`` end to end: a 2-trial ASHA sweep whose driver is killed mid-sweep, then ``--resume``.

One sweep covers both checks of issue 13 (debug sizes, ~2 minutes on 2 cores):

* the driver (a subprocess joining the session's Ray cluster as its own job) is SIGKILLed
  once the first trial has finished; ``--resume`` in this process completes the sweep: 2
  child runs under one parent, no duplicates, the finished trial not trained again;
* early stopping is visible and deterministic: the space is ``grid(1e-3, 1)`` over the
  learning rate, one trial at a time, so the ``lr=1`` trial (training loss ~50 against
  ~1.3) is stopped at ASHA's first rung, whose only other result was recorded before the
  kill (the replayed rungs of :class:`pipelines.tune.schedulers.ReplayingASHA`);
* the best trial's encoder gets ``@best`` and ``jobs/registry.py get`` loads it.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.scripts import ROOT, load_script

pytestmark = pytest.mark.slow


def _argv(tmp: Path, data: Path, name: str) -> list[str]:
    sets = [f"data.manifest={data / 'ucf101'}", f"storage_path={tmp / 'runs'}",
            "model_name=tune-e2e", "loop.epochs=2", "scaling.num_workers=1", "data.limit=8", "val_split=none"]
    return ["--method", "supervised", "--variant", "debug", "--num-samples", "1", "--name", name,
            "--no-default-space", "--space", "optim.lr=grid(1e-3, 1.0)", "--metric", "epoch_loss",
            "--mode", "min", "--max-concurrent", "1", *[a for s in sets for a in ("--set", s)]]


def _trial_runs(name: str) -> list:
    from pipelines.tune.tracking import trial_runs

    try:
        return trial_runs("supervised", name)
    except Exception:  # noqa: BLE001 - the server is there; the experiment may not be yet
        return []


def _kill_after_first_trial(proc: subprocess.Popen, name: str, log: Path, timeout_s: float = 400) -> None:
    """SIGKILL the driver's process group once a trial finished (its callback tagged the run)."""
    deadline = time.time() + timeout_s
    while time.time() < deadline and proc.poll() is None:
        if any(r.data.tags.get("vidray_trial_status") == "finished" for r in _trial_runs(name)):
            break
        time.sleep(0.5)  # one MLflow search: the sooner the kill, the less of the next trial is thrown away
    assert proc.poll() is None, "the sweep ended before it could be killed:\n" + log.read_text()[-3000:]
    assert time.time() < deadline, "no trial finished in time:\n" + log.read_text()[-3000:]
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait(timeout=60)


def test_sweep_killed_then_resumed_stops_early_and_registers_best(ray_cluster, mlflow_server, debug_data, tmp_path,
                                                                  monkeypatch, capsys):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", mlflow_server)
    name = f"tune-e2e-{tmp_path.name}"
    # The driver joins the session's cluster as its own Ray job, as under `ray job submit`.
    env = {**os.environ, "RAY_ADDRESS": ray_cluster.get_runtime_context().gcs_address, "PYTHONUNBUFFERED": "1"}
    log = tmp_path / "driver.log"
    with open(log, "w") as out:
        proc = subprocess.Popen([sys.executable, "jobs/tune.py", *_argv(tmp_path, debug_data, name)], cwd=ROOT,
                                env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
        _kill_after_first_trial(proc, name, log)
    finished_before = {r.data.tags["vidray_trial_id"] for r in _trial_runs(name)
                       if r.data.tags.get("vidray_trial_status") == "finished"}
    assert len(finished_before) == 1  # killed mid-sweep

    tune_job = load_script("jobs/tune.py")
    assert tune_job.main([*_argv(tmp_path, debug_data, name), "--resume"]) == 0
    out = capsys.readouterr().out
    assert "(resumed)" in out
    # the clip cache: decoded once before the kill (8 videos), read by every trial, deleted at the end
    assert "8 file(s) ready (0 decoded now, 8 already there)" in out
    assert "decoded now" in log.read_text() and not (tmp_path / "runs" / f"{name}.clip-cache").exists()

    runs = _trial_runs(name)
    trial_ids = [r.data.tags["vidray_trial_id"] for r in runs]
    assert len(runs) == 2 and len(set(trial_ids)) == 2, trial_ids  # one child run per trial, no duplicates
    from pipelines.tune.tracking import client

    parents = [r for r in client().search_runs([runs[0].info.experiment_id],
                                               filter_string="tags.vidray_sweep_parent = 'true'")
               if r.info.run_name == name]
    assert len(parents) == 1 and parents[0].info.status == "FINISHED"
    assert {r.data.tags["mlflow.parentRunId"] for r in runs} == {parents[0].info.run_id}
    status = {r.data.tags["vidray_trial_id"]: r.data.tags["vidray_trial_status"] for r in runs}
    assert sorted(status.values()) == ["finished", "stopped_early"], status
    stopped = [r for r in runs if r.data.tags["vidray_trial_status"] == "stopped_early"]
    assert all(r.data.tags["vidray_trial_epochs"] == "1" and r.info.status == "KILLED" for r in stopped)
    assert {float(r.data.params["optim.lr"]) for r in stopped} == {1.0}

    for run in runs:  # pruned after the sweep: a stopped trial's Train runs are gone, a finished one keeps its last
        trial_runs = list((tmp_path / "runs" / f"{name}.trials").glob(f"{name}.{run.data.tags['vidray_trial_id']}.*"))
        if run.data.tags["vidray_trial_status"] == "stopped_early":
            assert not trial_runs
        else:
            assert trial_runs and all(len([c for c in r.glob("checkpoint_*") if c.is_dir()]) == 1 for r in trial_runs)

    for trial_id in finished_before:  # not trained again: Tune holds its two epoch results only
        (result_file,) = (tmp_path / "runs" / name).glob(f"*{trial_id}*/result.json")
        assert len(result_file.read_text().splitlines()) == 2

    assert tune_job.main(_argv(tmp_path, debug_data, name)) == 2  # a stored sweep is not silently started again
    registry = load_script("jobs/registry.py")
    assert registry.main(["get", "tune-e2e-rgb@best", "--out", str(tmp_path / "best")]) == 0
    version = client().get_model_version_by_alias("tune-e2e-rgb", "best")
    assert version.tags["vidray_sweep"] == name and status[version.tags["vidray_trial_id"]] == "finished"
    # the gate ran the real evaluation: the first holder of @best, its suite pinned on the model
    assert version.tags["vidray_best_decision"].startswith("promoted: no holder of @best; retrieval R@1"), version.tags
    assert 0.0 <= float(version.tags["vidray_gate_score"]) <= 100.0
    suite = json.loads(client().get_registered_model("tune-e2e-rgb").tags["vidray_eval_suite"])
    assert suite["protocol"] == "retrieval" and suite["fingerprint"] == version.tags["dataset_fingerprint"]
    assert json.loads((tmp_path / "runs" / f"{name}.sweep.json").read_text())["scheduler"] == "asha"


def test_pbt_exploited_trial_continues_from_the_donors_checkpoint(ray_cluster, mlflow_server, debug_data, tmp_path,
                                                                   monkeypatch, capsys):
    """Two PBT trials side by side, ``lr`` 1e-3 and 1.0 (training loss ~1.3 against ~50), synchronous PBT
    perturbing at epoch 2 of 3: the weak one loads the strong one's checkpoint (the digest it logs is that
    file's) and goes on from its epoch and step; the exploit is tagged on its MLflow run. (That a restore
    keeps the donor's weights and moments under the trial's own hyperparameters is
    tests/pipelines/tune/test_pbt.py.)"""
    import hashlib

    from pipelines.train.checkpoint import load_state
    from pipelines.tune.tracking import client

    monkeypatch.setenv("MLFLOW_TRACKING_URI", mlflow_server)
    name = f"pbt-e2e-{tmp_path.name}"
    sets = [f"data.manifest={debug_data / 'ucf101'}", f"storage_path={tmp_path / 'runs'}",
            "model_name=pbt-e2e", "loop.epochs=3", "data.limit=4", "val_split=none"]
    argv = ["--method", "supervised", "--variant", "debug", "--num-samples", "1", "--name", name,
            "--no-default-space", "--space", "optim.lr=grid(1e-3, 1.0)", "--metric", "epoch_loss", "--mode", "min",
            "--scheduler", "pbt", "--pbt-synch", "--perturbation-interval", "2", "--quantile-fraction", "0.5",
            "--max-concurrent", "2", "--keep-checkpoints",
            *[a for s in sets for a in ("--set", s)]]
    assert load_script("jobs/tune.py").main(argv) == 0
    assert re.search(r"trial \S+: exploited \S+ at epoch 2", capsys.readouterr().out)

    folders: dict[str, list[Path]] = {}  # a trial restarted with a new config may get a new folder
    for f in (tmp_path / "runs" / name).glob("run_pbt_trial_*"):
        folders.setdefault("_".join(f.name.split("_")[3:5]), []).append(f)

    def checkpoints(trial: str) -> dict[int, Path]:  # epoch -> its latest checkpoint folder
        found = sorted((d for f in folders[trial] for d in f.glob("checkpoint_*")), key=lambda d: d.stat().st_mtime)
        return {json.loads((d / "pbt.json").read_text())["epoch"]: d for d in found}

    exploits = []  # (exploited trial, donor, epoch of the donor's checkpoint, epoch of the trial's next one)
    for trial in folders:
        for epoch, ckpt in checkpoints(trial).items():
            lineage = json.loads((ckpt / "pbt.json").read_text())["lineage"]
            exploits += [(trial, hop["from"], hop["epoch"], epoch) for hop in lineage[1:] if hop["from"] != trial]
    assert exploits, "no trial exploited another"
    trial, donor, at, after = min(exploits, key=lambda e: e[3])
    assert (at, after) == (2, 3)  # the first checkpoint the exploited trial wrote after loading the donor's
    donors = load_state(str(checkpoints(donor)[at]))
    mine = load_state(str(checkpoints(trial)[after]))
    assert (mine["epoch"], mine["step"]) == (donors["epoch"] + 1, donors["step"] + 1)  # 4 videos, batch 4

    run = client().search_runs([client().get_experiment_by_name("supervised").experiment_id],
                               filter_string=f"attributes.run_name = '{name}.{trial}.supervised'")[0]
    tag = json.loads(run.data.tags[f"pbt_exploit_{at}"])
    digest = hashlib.sha256((checkpoints(donor)[at] / "state.pt").read_bytes()).hexdigest()
    assert tag["donor"] == donor and tag["checkpoint_sha256"] == digest
    assert run.data.metrics["pbt/exploited"] == 1.0
