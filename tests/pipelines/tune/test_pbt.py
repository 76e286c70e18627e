"""PBT's segments without a cluster: an exploited trial continues from the donor's weights, moments and
step, under its own hyperparameters, and says so; PBT's settings and the schedules it refuses."""

from __future__ import annotations

import dataclasses
import json
import shutil

import pytest
import torch

from pipelines.config import ConfigError
from pipelines.train.loop import LoopConfig, end_epoch, run_epoch, setup
from pipelines.train.optim import OptimConfig, lr_factor
from pipelines.tune import pbt
from pipelines.tune.schedulers import FinalPBT, make_scheduler
from pipelines.tune.space import Grid, LogUniform
from pipelines.tune.sweep import SweepConfig, check_schedule, resolve
from pipelines.tune.trial import TIME_ATTR
from tests.pipelines.train.test_loop import Shard, _task


class _Logger:
    def __init__(self) -> None:
        self.metrics, self.tags = [], {}

    def log_metrics(self, metrics, step=None):
        self.metrics.append((dict(metrics), step))

    def set_tags(self, tags):
        self.tags.update(tags)

    def log_artifact(self, *args, **kwargs):
        pass


@pytest.fixture
def tune_reports(monkeypatch, tmp_path):
    """``ray.tune.report`` outside a Tune session: results and copies of their checkpoints."""
    import ray.tune

    reports = []

    def report(metrics, checkpoint=None):
        kept = None
        if checkpoint is not None:
            kept = ray.tune.Checkpoint.from_directory(shutil.copytree(checkpoint.path, tmp_path / f"c{len(reports)}"))
        reports.append((dict(metrics), kept))

    monkeypatch.setattr(ray.tune, "report", report)
    return reports


def _trial(lr: float, wd: float):
    task = dataclasses.replace(_task(loop=LoopConfig(epochs=3, batch_size=2, log_every_n_steps=1)),
                               optim=OptimConfig(lr=lr, weight_decay=wd, schedule="cosine"))
    return task, setup(task, torch.device("cpu"), 0, 1)


def _epoch(state, task, sink, logger) -> None:
    end_epoch(state, task, run_epoch(state, task, Shard(8), sink, logger), sink, logger)


def test_an_exploited_trial_continues_from_the_donors_weights_under_its_own_hyperparameters(tune_reports):
    donor_task, donor = _trial(lr=0.1, wd=0.0)
    origin = pbt._restore(donor, None, {"optim.lr": 0.1, "optim.weight_decay": 0.0}, "A", _Logger())
    sink = pbt.SegmentSink("toy", origin)
    _epoch(donor, donor_task, sink, None)
    metrics, checkpoint = tune_reports[-1]
    assert len(tune_reports) == 1 and checkpoint is not None  # the 4 step reports are not Tune results
    assert (metrics[TIME_ATTR], metrics["phase"], metrics["pbt_origin"]) == (1, "toy", "A")

    values = {"optim.lr": 0.05, "optim.weight_decay": 1e-3}
    task, state = _trial(lr=0.05, wd=1e-3)
    initial = [p.detach().clone() for p in state.method.parameters()]
    logger = _Logger()
    origin = pbt._restore(state, checkpoint, values, "B", logger)
    for mine, theirs, before in zip(state.method.parameters(), donor.method.parameters(), initial):
        torch.testing.assert_close(mine, theirs)  # the donor's trained weights, not this trial's initial ones
        assert not torch.equal(mine, before)
    assert (state.epoch, state.step) == (donor.epoch, donor.step) == (1, 4)
    for p, q in zip(state.method.parameters(), donor.method.parameters()):  # Adam's moments came along
        torch.testing.assert_close(state.optimizer.state[p]["exp_avg"], donor.optimizer.state[q]["exp_avg"])
    group = state.optimizer.param_groups[0]
    assert group["weight_decay"] == 1e-3 and group["initial_lr"] == 0.05  # this trial's, not the donor's
    assert group["lr"] == pytest.approx(0.05 * lr_factor(4, 4, 3, task.optim))
    assert state.scheduler.get_last_lr() == [g["lr"] for g in state.optimizer.param_groups]
    exploit = json.loads(logger.tags["pbt_exploit_1"])
    assert exploit["donor"] == "A" and len(exploit.pop("checkpoint_sha256")) == 64
    assert exploit == {"donor": "A", "changed": {"optim.lr": [0.1, 0.05], "optim.weight_decay": [0.0, 0.001]}}
    assert ({"pbt/exploited": 1.0}, 1) in logger.metrics and ({"pbt/optim.lr": 0.05, "pbt/optim.weight_decay": 1e-3},
                                                               1) in logger.metrics
    assert origin["lineage"] == [{"from": "A", "epoch": 0}, {"from": "A", "epoch": 1}]

    _epoch(state, task, pbt.SegmentSink("toy", origin), None)  # the next segment goes on from step 4
    metrics, checkpoint = tune_reports[-1]
    assert (metrics[TIME_ATTR], metrics["step"], metrics["pbt_origin"]) == (2, 8, "A")
    assert state.optimizer.param_groups[0]["lr"] == pytest.approx(0.05 * lr_factor(8, 4, 3, task.optim))

    # Tune restarts a trial from its own checkpoint too (paused to let a pending one run): no exploit.
    _, again = _trial(lr=0.05, wd=1e-3)
    quiet = _Logger()
    pbt._restore(again, checkpoint, values, "B", quiet)
    assert not quiet.tags and (again.epoch, again.step) == (2, 8)
    for p, q in zip(again.method.parameters(), state.method.parameters()):
        torch.testing.assert_close(p, q)


def test_pbt_mutates_the_space_and_never_perturbs_a_trial_at_its_last_epoch():
    scheduler = make_scheduler("pbt", max_t=3, grace_period=1, reduction_factor=2, perturbation_interval=1,
                               space={"optim.lr": LogUniform(1e-4, 1e-2), "method.dropout": Grid((0.1, 0.5))})
    assert isinstance(scheduler, FinalPBT)
    assert scheduler._hyperparam_mutations["method.dropout"] == [0.1, 0.5]
    assert scheduler.on_trial_result(None, object(), {TIME_ATTR: 3, "m": 1.0}) == "CONTINUE"


def test_pbt_takes_one_phase_from_scratch_with_one_worker():
    plan = resolve(SweepConfig(method="coclr", scheduler="pbt", stage="infonce_rgb"))
    assert plan.job.scaling.num_workers == 1
    check_schedule(plan, plan.phases())
    with pytest.raises(ConfigError, match="choose one with --stage"):
        check_schedule(resolve(SweepConfig(method="coclr", scheduler="pbt")), plan.spec.schedule(plan.job))
    cycle = resolve(SweepConfig(method="coclr", scheduler="pbt", stage="coclr_rgb_c1"))
    with pytest.raises(ConfigError, match="starts from"):
        check_schedule(cycle, cycle.phases())


def test_mutations_name_what_changed():
    assert pbt.mutations({"a": 1, "b": 2}, {"a": 1, "b": 3}) == {"b": [2, 3]}
    assert dataclasses.is_dataclass(SweepConfig) and SweepConfig(method="x").perturbation_interval == 1
