"""The sweep's parts that need no cluster: settings, schedulers, concurrency, best trial, the @best gate."""

from __future__ import annotations

import json
from types import SimpleNamespace

import pyarrow.fs
import pytest

from pipelines.config import ConfigError
from pipelines.methods import get_method
from pipelines.tune import resources
from pipelines.tune.results import best_row
from pipelines.tune.schedulers import ReplayingASHA, make_scheduler, stored_results
from pipelines.tune.search import make_search
from pipelines.tune.space import Choice, LogUniform, RandInt, Uniform
from pipelines.tune.sweep import SweepConfig, _save_settings, _settings, resolve
from pipelines.tune.tracking import gate
from pipelines.tune.trial import TIME_ATTR, epoch_offsets


def test_resolve_takes_the_method_default_and_adds_the_command_line():
    plan = resolve(SweepConfig(method="supervised", space=("method.dropout=choice(0.1, 0.3)",),
                               overrides=("loop.epochs=3",)))
    assert set(plan.space) == {"optim.lr", "optim.weight_decay", "method.dropout"}
    assert (plan.metric, plan.mode, plan.job.loop.epochs) == ("val_top1", "max", 3)
    assert plan.name == "supervised-debug-sweep" and plan.job.storage_path.startswith("/")
    only = resolve(SweepConfig(method="supervised", default_space=False, space=("optim.lr=grid(1e-3, 1e-2)",),
                               metric="epoch_loss", mode="min"))
    assert list(only.space) == ["optim.lr"] and only.mode == "min"


@pytest.mark.parametrize("cfg, message", [
    (SweepConfig(method="supervised", scheduler="median"), "unknown scheduler"),
    (SweepConfig(method="supervised", metric="epoch_loss"), "--mode"),
    (SweepConfig(method="supervised", variant="huge"), "unknown variant"),
    (SweepConfig(method="supervised", space=("optim.mommentum=uniform(0, 1)",)), "did you mean .momentum."),
    (SweepConfig(method="supervised", search="bayes"), "unknown search 'bayes'"),
    (SweepConfig(method="supervised", search="optuna", space=("method.dropout=grid(0.1, 0.3)",)),
     r"cannot search grid domains \(method.dropout\): give them as choice\(...\) instead, or use --search random"),
    (SweepConfig(method="supervised", search="optuna", scheduler="pbt"),
     "--scheduler pbt explores the space by itself .* use --search random with pbt, or --scheduler asha"),
])
def test_resolve_refuses(cfg, message):
    with pytest.raises(ConfigError, match=message):
        resolve(cfg)


def test_epoch_offsets_make_the_time_attribute_monotone_over_phases():
    spec = get_method("coclr")
    job = spec.variants["debug"]()
    offsets = epoch_offsets(spec.schedule(job), "r")
    assert offsets == {"r.infonce_rgb": 0, "r.infonce_flow": 1, "r.coclr_rgb_c1": 2, "r.coclr_flow_c1": 3}


def test_max_concurrent_trials_from_the_cluster_cpus():
    job = get_method("supervised").variants["debug"]()  # 2 workers x 0.5 CPU
    assert resources.trial_cpus(job, 1.0) == 2.0
    assert resources.max_concurrent_trials(job, 1.0, cluster_cpus=2) == 1
    assert resources.max_concurrent_trials(job, 1.0, cluster_cpus=9) == 4
    assert resources.max_concurrent_trials(job, 1.0, cluster_cpus=1) == 1


def _trial(tmp_path, trial_id: str, results: list[dict], staged: list[dict] | None = None):
    """A trial whose stored ``result.json`` holds ``results`` and whose driver staging copy, if any,
    ``staged`` (both end in a line cut by a kill)."""
    folders = {where: tmp_path / where / trial_id for where in ("storage", "staging")}
    for where, lines in (("storage", results), ("staging", staged)):
        if lines is not None:
            folders[where].mkdir(parents=True)
            (folders[where] / "result.json").write_text("".join(json.dumps(r) + "\n" for r in lines) + '{"cut by a')
    storage = SimpleNamespace(trial_fs_path=str(folders["storage"]), storage_filesystem=pyarrow.fs.LocalFileSystem(),
                              trial_driver_staging_path=str(folders["staging"]))
    return SimpleNamespace(trial_id=trial_id, storage=storage)


def test_replaying_asha_refills_its_rungs_from_stored_results_and_lets_finished_trials_end(tmp_path):
    scheduler = make_scheduler("asha", max_t=2, grace_period=1, reduction_factor=2)
    assert isinstance(scheduler, ReplayingASHA)
    scheduler.set_search_properties("epoch_loss", "min")
    # A trial that finished before the driver was killed: its epoch-1 loss fills the rung again.
    scheduler.on_trial_add(None, _trial(tmp_path, "t0", [{TIME_ATTR: 1, "epoch_loss": 1.3},
                                                          {TIME_ATTR: 2, "epoch_loss": 1.2}]))
    worse = _trial(tmp_path, "t1", [])
    scheduler.on_trial_add(None, worse)
    assert scheduler.on_trial_result(None, worse, {TIME_ATTR: 1, "epoch_loss": 50.0}) == "STOP"
    better = _trial(tmp_path, "t2", [])
    scheduler.on_trial_add(None, better)
    assert scheduler.on_trial_result(None, better, {TIME_ATTR: 1, "epoch_loss": 1.0}) == "CONTINUE"
    # Its last epoch: Tune's ASHA would stop it before it registered its encoders.
    assert scheduler.on_trial_result(None, better, {TIME_ATTR: 2, "epoch_loss": 0.9}) == "CONTINUE"


def test_replaying_asha_reads_results_the_killed_driver_staged_but_had_not_synced(tmp_path):
    """Tune stages ``result.json`` on the driver and syncs it to storage later; a driver killed right
    after a trial finished leaves the stored copy empty, and a restore on the same node must replay
    the staged one (without it the next worse trial passed the rung unopposed)."""
    scheduler = make_scheduler("asha", max_t=2, grace_period=1, reduction_factor=2)
    scheduler.set_search_properties("epoch_loss", "min")
    finished = [{TIME_ATTR: 1, "epoch_loss": 1.3}, {TIME_ATTR: 2, "epoch_loss": 1.2}]
    scheduler.on_trial_add(None, _trial(tmp_path, "t0", [], staged=finished))
    worse = _trial(tmp_path, "t1", [])
    scheduler.on_trial_add(None, worse)
    assert scheduler.on_trial_result(None, worse, {TIME_ATTR: 1, "epoch_loss": 50.0}) == "STOP"
    assert stored_results(_trial(tmp_path, "t2", finished[:1], staged=finished)) == finished
    assert stored_results(_trial(tmp_path, "t3", finished, staged=None)) == finished


def test_best_row_only_among_trials_that_finished():
    rows = [{"trial_id": "a", "status": "stopped_early", "m": 0.9}, {"trial_id": "b", "status": "finished", "m": 0.5},
            {"trial_id": "c", "status": "finished", "m": 0.7}, {"trial_id": "d", "status": "error", "m": None}]
    assert best_row(rows, "m", "max")["trial_id"] == "c"
    assert best_row(rows, "m", "min")["trial_id"] == "b"
    assert best_row(rows[:1], "m", "max") is None


def test_best_gate_keeps_a_better_holder_scored_on_the_same_metric_and_data():
    holder = SimpleNamespace(version="3", tags={"vidray_best_metric": "val_top1", "vidray_best_value": "80.0",
                                                "dataset_fingerprint": "fp"})
    assert gate(None, metric="val_top1", mode="max", value=1.0, fingerprint="fp")[0]
    assert gate(holder, metric="val_top1", mode="max", value=90.0, fingerprint="fp")[0]
    kept, why = gate(holder, metric="val_top1", mode="max", value=80.0, fingerprint="fp")
    assert not kept and "kept v3" in why
    assert gate(holder, metric="val_top1", mode="max", value=1.0, fingerprint="other")[0]
    assert gate(holder, metric="epoch_loss", mode="min", value=9.0, fingerprint="fp")[0]


def test_epoch_reports_forward_only_epoch_ends_with_the_trial_epoch():
    """What the loop reports, through the callback a trial gives Ray Train (no Tune session needed)."""
    import torch

    from pipelines.train.loop import end_epoch, run_epoch, setup
    from pipelines.tune.trial import EpochReports
    from tests.pipelines.train.test_loop import ListSink, Shard, _task

    task, sink = _task(), ListSink()
    state = setup(task, torch.device("cpu"), 0, 1)
    for _ in range(task.loop.epochs):
        end_epoch(state, task, run_epoch(state, task, Shard(8), sink, None), sink, None)
    forwarded = []
    callback = EpochReports.__new__(EpochReports)  # its __init__ insists on a Tune session
    callback.offsets = {"run.p2": 3}
    callback._training_actor_item_queue = SimpleNamespace(put=forwarded.append)
    context = SimpleNamespace(run_config=SimpleNamespace(name="run.p2"))
    for metrics, _ in sink.reports:
        callback.after_report(context, [metrics], None)
    assert len(sink.reports) == 10 and len(forwarded) == 2  # 8 step reports are not forwarded
    assert [(m[TIME_ATTR], m["phase"]) for m in forwarded] == [(4, "p2"), (5, "p2")]


def test_trial_rows_prefer_the_stored_results_over_an_older_restored_state():
    """A finished trial whose completion Tune had not saved before its driver died: restored from an
    older state (epoch 1), restarted, it reports nothing new; its stored results say epoch 2."""
    import pandas as pd

    from pipelines.tune.results import trial_rows

    restored = SimpleNamespace(metrics={"trial_id": "t0", TIME_ATTR: 1, "epoch_loss": 1.5}, error=None,
                               config={"optim.lr": 1e-3}, metrics_dataframe=pd.DataFrame(
                                   {TIME_ATTR: [1, 2], "epoch_loss": [1.5, 1.3], "trial_id": ["t0", "t0"]}))
    stopped = SimpleNamespace(metrics={"trial_id": "t1", TIME_ATTR: 1, "epoch_loss": 50.0}, error=None,
                              config={"optim.lr": 1.0}, metrics_dataframe=None)
    rows = trial_rows([restored, stopped], {"optim.lr": None}, "epoch_loss", max_t=2, runs={"t0": "r0"})
    assert [(r["trial_id"], r["status"], r["epochs"], r["epoch_loss"], r["run_id"]) for r in rows] == [
        ("t0", "finished", 2, 1.3, "r0"), ("t1", "stopped_early", 1, 50.0, None)]


def test_search_random_is_tunes_generator_and_optuna_is_limited_to_the_concurrency():
    from ray.tune.search import BasicVariantGenerator, ConcurrencyLimiter
    from ray.tune.search.optuna import OptunaSearch

    random = make_search("random", metric="val_top1", mode="max", seed=0, max_concurrent=3)
    assert isinstance(random, BasicVariantGenerator) and random.max_concurrent == 3
    optuna = make_search("optuna", metric="val_top1", mode="max", seed=0, max_concurrent=3)
    assert isinstance(optuna, ConcurrencyLimiter) and optuna.max_concurrent == 3
    assert isinstance(optuna.searcher, OptunaSearch) and (optuna.metric, optuna.mode) == ("val_top1", "max")


def _inside(domain, value) -> bool:
    if isinstance(domain, Choice):
        return value in domain.values
    if isinstance(domain, RandInt):
        return isinstance(value, int) and domain.low <= value < domain.high
    assert isinstance(domain, (Uniform, LogUniform))
    return domain.low <= value <= domain.high


def test_optuna_suggests_values_inside_the_space_tune_hands_it():
    """What Tune does with ``param_space`` (no cluster): the searcher converts the domains, then suggests."""
    plan = resolve(SweepConfig(method="supervised", search="optuna",
                               space=("method.label_smoothing=choice(0.0, 0.1)", "loop.batch_size=randint(2, 5)")))
    search = make_search("optuna", metric=plan.metric, mode=plan.mode, seed=0, max_concurrent=2)
    assert search.set_search_properties(plan.metric, plan.mode, {k: d.to_tune() for k, d in plan.space.items()})
    for i in range(6):
        values = search.suggest(f"t{i}")
        assert set(values) == set(plan.space) and all(_inside(plan.space[k], v) for k, v in values.items())
        search.on_trial_complete(f"t{i}", {plan.metric: float(i), "training_iteration": 1})


def test_saved_settings_bring_the_search_back_on_resume(tmp_path):
    started = SweepConfig(method="supervised", search="optuna", seed=3, overrides=(f"storage_path={tmp_path}",))
    _save_settings(resolve(started))
    resumed = _settings(SweepConfig(method="supervised", overrides=(f"storage_path={tmp_path}",), resume=True))
    assert (resumed.search, resumed.seed, resumed.resume) == ("optuna", 3, True)


def test_optuna_refuses_a_choice_among_sequences():
    from pipelines.tune.search import check_search
    from pipelines.tune.space import Choice

    with pytest.raises(ConfigError, match="schedule.pred_steps chooses among sequences"):
        check_search("optuna", "asha", {"schedule.pred_steps": Choice(((2,), (3,)))})
    check_search("random", "asha", {"schedule.pred_steps": Choice(((2,), (3,)))})
