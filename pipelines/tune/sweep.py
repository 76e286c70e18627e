"""The sweep driver behind ``jobs/tune.py``: a Ray Tune search over any registered method.

:func:`run_sweep`:

1. resolves the method's variant and ``--set`` overrides into the base job (as
   ``jobs/train.py`` does), the search space (the spec's :class:`SweepDefaults` plus
   ``--space``, checked against the config before anything starts), the metric and mode;
2. makes or checks the dataset once (:func:`pipelines.prep.ready.ensure_dataset`), so
   trials never race to render it;
3. opens the sweep's MLflow parent run and runs Tune over :func:`pipelines.tune.trial.run_trial`
   (the trial is only a driver: its actor asks for no CPU; concurrency comes from the
   cluster's CPUs, :mod:`pipelines.tune.resources`), with ASHA or HyperBand on
   :data:`~pipelines.tune.trial.TIME_ATTR` (:mod:`pipelines.tune.schedulers`) — or, with
   PBT, over :func:`pipelines.tune.pbt.run_pbt_trial`, which trains one phase in the trial's
   process and reports checkpoints to Tune — or ``Tuner.restore`` with ``--resume``;
4. records how each trial ended on its MLflow run, logs the results table and plot on the
   parent, and registers the best finished trial's encoders with the alias ``best``
   (:func:`pipelines.tune.tracking.promote_best`) when they win on the model's pinned evaluation
   suite (:mod:`pipelines.tune.gate`), then deletes the checkpoints nothing will
   read (:mod:`pipelines.tune.prune`).

Resuming (``--resume`` after a killed driver): Tune restores the searcher and the trials'
states (finished and stopped trials stay so, unfinished ones restart and their Ray Train
runs resume from their checkpoints); Tune does not restore the scheduler, so ASHA's rungs
are refilled from the stored results (:class:`~pipelines.tune.schedulers.ReplayingASHA`).
A method's ``SweepDefaults.variant_overrides`` edit the base job of a sweep of one variant
(e.g. more optimiser steps per epoch on ``debug``, so that ASHA's first rungs see trials that
differ).
"""

from __future__ import annotations

import dataclasses
import json
import time
from typing import Any

from ray.tune import Callback

from pipelines.config import ConfigError, apply_overrides
from pipelines.data.clock import close_clocks
from pipelines.io import storage
from pipelines.tune import resources, tracking
from pipelines.tune.cache import release_clip_cache, with_clip_cache
from pipelines.tune.schedulers import make_scheduler, stored_results
from pipelines.tune.search import check_search, make_search
from pipelines.tune.space import Domain, check_space, describe, load_space_file, parse_space, select_space
from pipelines.tune.trial import TIME_ATTR, TrialContext, run_trial

SCHEDULERS = ("asha", "hyperband", "pbt")
# What a trial's own actor asks for. It is only a driver, but Tune refuses an empty request;
# a token of logical memory, not of CPU: a CPU share would leave a 2-CPU machine short of the
# whole CPU a decode task needs beside a 1-CPU worker group (a hang, not an error).
TRIAL_RESOURCES = {"CPU": 0, "memory": 2**20}


@dataclasses.dataclass(frozen=True)
class SweepConfig:
    """Everything ``jobs/tune.py`` takes (see its ``--help``)."""

    method: str
    variant: str = "debug"
    overrides: tuple[str, ...] = ()
    space: tuple[str, ...] = ()          # KEY=DOMAIN, added to (or replacing keys of) the default space
    space_file: str | None = None
    default_space: bool = True           # False: only the --space / --space-file keys
    num_samples: int = 4
    scheduler: str = "asha"
    search: str = "random"               # random (Tune's random/grid search) or optuna (pipelines.tune.search)
    metric: str | None = None            # default: the spec's SweepDefaults.metric
    mode: str | None = None
    grace_period: int = 1                # epochs before a trial can be stopped
    reduction_factor: float = 2.0
    perturbation_interval: int = 1       # PBT: epochs between exploit/explore decisions
    quantile_fraction: float = 0.25      # PBT: share of trials that exploit (and that are exploited)
    pbt_synch: bool = False              # PBT: every trial waits at each perturbation point for the others
    max_concurrent: int | None = None    # default: cluster CPUs / CPUs per trial
    data_cpus: float = 1.0
    stage: str | None = None
    name: str | None = None              # default: <run_name>-sweep
    seed: int | None = None              # of the search (random or optuna)
    max_failures: int = 1                # restarts of a failed trial (it resumes from its checkpoint)
    prune: bool = True                   # after the sweep, delete checkpoints nothing reads (pipelines.tune.prune)
    clip_cache: bool = True              # decode the dataset once for every trial (pipelines.tune.cache)
    clip_cache_dir: str | None = None    # default: <storage_path>/<sweep>.clip-cache (deleted after the sweep)
    clip_cache_gb: float = 8.0           # at most this much decoded video in the cache
    gate: bool = True                    # @best only for a win on the pinned eval suite (pipelines.tune.gate)
    gate_manifest: str | None = None     # the suite's manifest (default: the sweep's data manifest)
    gate_protocol: str | None = None     # retrieval (R@1) or linear (top1); default: the method's first of them
    repin_suite: bool = False            # replace the model's pinned suite by this sweep's
    resume: bool = False


@dataclasses.dataclass
class SweepResult:
    """What a sweep ended with: one row per trial, the best one and what was registered."""

    name: str
    metric: str
    mode: str
    parent_run_id: str | None
    rows: list[dict[str, Any]]
    best: dict[str, Any] | None
    registered: list[dict[str, Any]]


class SweepExists(ConfigError):
    """A sweep of that name is already stored and ``--resume`` was not given."""


@dataclasses.dataclass(frozen=True)
class Plan:
    """A sweep resolved from its :class:`SweepConfig`: what every later step reads."""

    cfg: SweepConfig
    spec: Any                    # MethodSpec
    job: Any                     # the base job: variant, overrides, absolute paths
    space: dict[str, Domain]
    metric: str
    mode: str

    @property
    def name(self) -> str:
        """``--name``, else ``<run_name>-sweep``."""
        return self.cfg.name or f"{self.job.run_name}-sweep"

    def phases(self) -> list:
        """The schedule a trial trains (may read the manifest: make the dataset first)."""
        return self.spec.schedule(self.job, self.cfg.stage)


def resolve(cfg: SweepConfig) -> Plan:
    """The checked :class:`Plan` of ``cfg``.

    Raises:
        ConfigError: unknown variant, scheduler or search, a bad override or space, a search the
            scheduler or space rules out (:func:`pipelines.tune.search.check_search`), no metric.
    """
    from pipelines.methods import get_method
    from pipelines.train.entry import resolve_paths
    from pipelines.tune.gate import check_gate

    spec = get_method(cfg.method)
    if cfg.variant not in spec.variants:
        raise ConfigError(f"unknown variant {cfg.variant!r} of {cfg.method}; known: {', '.join(spec.variants)}")
    if cfg.scheduler not in SCHEDULERS:
        raise ConfigError(_scheduler_message(cfg.scheduler))
    defaults = spec.sweep
    preset = tuple(defaults.variant_overrides.get(cfg.variant, ())) if defaults else ()
    job = resolve_paths(apply_overrides(spec.variants[cfg.variant](), (*preset, *cfg.overrides)))
    space, items = select_space(cfg.method, defaults, cfg.space, use_default=cfg.default_space)
    if cfg.space_file:
        space.update(load_space_file(cfg.space_file))
    space.update(parse_space(items))
    check_space(space, job)
    check_search(cfg.search, cfg.scheduler, space)
    check_gate(cfg)
    if cfg.scheduler == "pbt" and job.scaling.num_workers != 1:  # PBT trains in the trial's own process
        job = dataclasses.replace(job, scaling=dataclasses.replace(job.scaling, num_workers=1))
    metric = cfg.metric or (defaults.metric if defaults else None)
    mode = cfg.mode or (defaults.mode if defaults and metric == defaults.metric else None)
    if not metric or mode not in ("max", "min"):
        raise ConfigError(f"{cfg.method} declares no sweep metric for this setting: give --metric and --mode max|min")
    return Plan(cfg, spec, job, space, metric, mode)


def check_metric(plan: Plan, phases: list) -> None:
    """Refuse a ``val_*`` metric when no phase has a validation hook (e.g. ``proxy.every=0``): every
    trial would fail on its first report. Called once the dataset exists (a hook may read it).

    Raises:
        ConfigError: naming the setting that turns the hook on.
    """
    if not plan.metric.startswith("val_"):
        return
    if plan.spec.validate is None or not all(plan.spec.validate(plan.job, p) for p in phases):
        hint = " (--set proxy.every=N turns on its kNN proxy)" if hasattr(plan.job, "proxy") else ""
        raise ConfigError(f"{plan.metric} comes from {plan.spec.name}'s validation hook, which is off for some "
                          f"phase of this config{hint}; or rank trials on another --metric")


def check_schedule(plan: Plan, phases: list) -> None:
    """PBT trains one phase from scratch (:func:`pipelines.tune.pbt.check_schedule`).

    Raises:
        ConfigError: a schedule PBT cannot train.
    """
    if plan.cfg.scheduler == "pbt":
        from pipelines.tune.pbt import check_schedule as check_pbt

        try:
            check_pbt(phases)
        except ValueError as exc:
            raise ConfigError(str(exc)) from None


def _scheduler_message(name: str) -> str:
    return f"unknown scheduler {name!r}; choose one of {', '.join(SCHEDULERS)}"


def _tracking_env() -> dict[str, str]:
    from pipelines.tracking import home, tracking_uri

    return {"MLFLOW_TRACKING_URI": tracking_uri(), "VIDRAY_HOME": str(home())}


class SweepCallback(Callback):
    """Tune callback (driver side): releases stopped trials' placement groups, closes their MLflow runs.

    Plain attributes only: Tune pickles it with the experiment and uses it again after a restore.
    """

    def __init__(self, sweep: str, experiment: str, max_t: int) -> None:
        self.sweep, self.experiment, self.max_t = sweep, experiment, max_t
        self._last_release = 0.0

    def on_step_end(self, iteration: int, trials: list, **info: Any) -> None:
        if time.monotonic() - self._last_release > 5.0:  # a stopped trial's controller dies a little later
            self._last_release = time.monotonic()
            resources.release_orphaned_groups()

    def on_trial_complete(self, iteration: int, trials: list, trial, **info: Any) -> None:
        epochs = _epochs(trial)
        self._closed(trial, "finished" if epochs >= self.max_t else "stopped_early", epochs)

    def on_trial_error(self, iteration: int, trials: list, trial, **info: Any) -> None:
        self._closed(trial, "error", _epochs(trial))

    def _closed(self, trial, status: str, epochs: int) -> None:
        resources.release_orphaned_groups()
        if status != "finished":
            close_clocks(f"vidray-epoch-{self.sweep}.{trial.trial_id}.")
        try:
            tracking.close_trial(self.experiment, self.sweep, trial.trial_id, status, epochs)
        except Exception as exc:  # noqa: BLE001 - bookkeeping must not end the sweep
            print(f"could not record trial {trial.trial_id} in MLflow: {exc}", flush=True)


def _epochs(trial) -> int:
    """Epochs the trial trained: its last result, or what it stored before a restore (a restarted
    finished trial reports nothing new; cf. :func:`pipelines.tune.results.trial_rows`)."""
    stored = [r.get(TIME_ATTR, 0) for r in stored_results(trial)]
    return int(max([(trial.last_result or {}).get(TIME_ATTR, 0), *stored]))


def run_sweep(cfg: SweepConfig) -> SweepResult:
    """Run (or with ``cfg.resume`` continue) the sweep; see the module docstring.

    Raises:
        ConfigError: a bad setting, or :class:`SweepExists`.
    """
    import ray

    from pipelines.cluster import init_ray, job_package_warning
    from pipelines.prep.ready import ensure_dataset, ensure_phase_data
    from pipelines.tune.results import finish

    plan = resolve(_settings(cfg))
    if warning := job_package_warning(plan.job.storage_path, "the sweep and its trials' checkpoints"):
        print(warning, flush=True)
    init_ray()
    ensure_dataset(plan.job.data, [])  # a schedule may read the manifest (supervised: its classes)
    phases = plan.phases()
    ensure_phase_data(plan.spec, plan.job, phases)  # every phase's dataset, with what its recipe needs (flow)
    check_metric(plan, phases)
    check_schedule(plan, phases)
    restoring = _restorable(plan)
    plan = dataclasses.replace(plan, job=with_clip_cache(plan.cfg, plan.spec, plan.job, phases, plan.name))
    parent, parent_id = _open_parent(plan)
    try:
        cluster_cpus = float(ray.cluster_resources().get("CPU", 1))
        concurrency = plan.cfg.max_concurrent or resources.max_concurrent_trials(plan.job, plan.cfg.data_cpus,
                                                                                 cluster_cpus)
        ctx = TrialContext(method=plan.spec.name, job=plan.job, sweep=plan.name, parent_run_id=parent_id,
                           env=_tracking_env(), stage=plan.cfg.stage, data_cpus=plan.cfg.data_cpus,
                           segmented=plan.cfg.scheduler == "pbt")
        max_t = sum(p.epochs for p in phases)
        preset = plan.spec.sweep.variant_overrides.get(plan.cfg.variant, ()) if plan.spec.sweep else ()
        if preset:
            print(f"sweep of {plan.cfg.variant}: the method's sweep settings {' '.join(preset)}", flush=True)
        print(f"sweep {plan.name}: {plan.spec.name}/{plan.cfg.variant}, {plan.cfg.num_samples} sample(s) of "
              f"{describe(plan.space)}, {plan.cfg.scheduler} on {plan.metric} ({plan.mode}) over {max_t} epoch(s), "
              f"{concurrency} trial(s) at a time{' (resumed)' if restoring else ''}", flush=True)
        grid = _tuner(plan, ctx, restoring, concurrency, max_t).fit()
        result = finish(plan, ctx, grid, phases, parent)
        release_clip_cache(plan.cfg, plan.job, plan.name)
    except BaseException:
        parent.end("FAILED")
        raise
    finally:
        resources.release_orphaned_groups()
        close_clocks(f"vidray-epoch-{plan.name}.")
    parent.end("FINISHED")
    return result


def _restorable(plan: Plan) -> bool:
    """Whether Tune stored this sweep; refuses one stored without ``--resume``."""
    from ray import tune

    _, filesystem = storage.ray_storage(plan.job.storage_path)
    path = storage.join(plan.job.storage_path, plan.name)
    stored = tune.Tuner.can_restore(path, storage_filesystem=filesystem)
    if stored and not plan.cfg.resume:
        raise SweepExists(f"a sweep named {plan.name!r} is stored at {path}: add --resume to continue it, "
                          f"or --name for a new one")
    if plan.cfg.resume and not stored:
        print(f"nothing stored at {path} to resume: starting the sweep", flush=True)
    return stored


def _tuner(plan: Plan, ctx: TrialContext, restoring: bool, concurrency: int, max_t: int):
    """A new ``Tuner``, or the stored one (``Tuner.restore``: unfinished and errored trials resume)."""
    from ray import tune

    trainable = _trainable(ctx)
    path, filesystem = storage.ray_storage(plan.job.storage_path)
    if restoring:
        return tune.Tuner.restore(storage.join(plan.job.storage_path, plan.name), trainable,
                                  resume_unfinished=True, resume_errored=True, storage_filesystem=filesystem)
    _save_settings(plan)
    cfg = plan.cfg
    scheduler = make_scheduler(cfg.scheduler, max_t=max_t, grace_period=cfg.grace_period,
                               reduction_factor=cfg.reduction_factor, space=plan.space,
                               perturbation_interval=cfg.perturbation_interval,
                               quantile_fraction=cfg.quantile_fraction, synch=cfg.pbt_synch)
    search = make_search(cfg.search, metric=plan.metric, mode=plan.mode, seed=cfg.seed, max_concurrent=concurrency)
    return tune.Tuner(
        trainable, param_space={k: d.to_tune() for k, d in plan.space.items()},
        tune_config=tune.TuneConfig(metric=plan.metric, mode=plan.mode, scheduler=scheduler,
                                    num_samples=cfg.num_samples, search_alg=search),
        run_config=tune.RunConfig(name=plan.name, storage_path=path, storage_filesystem=filesystem,
                                  callbacks=[SweepCallback(plan.name, plan.job.experiment, max_t)],
                                  failure_config=tune.FailureConfig(max_failures=cfg.max_failures), verbose=1))


def _trainable(ctx: TrialContext):
    """The trial function with its resources: a driver of Ray Train runs asks for nothing (a token of
    memory); a PBT trial trains in its own process and holds its one worker's CPUs and GPU."""
    from ray import tune

    if not ctx.segmented:
        return tune.with_resources(tune.with_parameters(run_trial, ctx=ctx), dict(TRIAL_RESOURCES))
    from pipelines.tune.pbt import run_pbt_trial

    scaling = ctx.job.scaling
    return tune.with_resources(tune.with_parameters(run_pbt_trial, ctx=ctx),
                               {**TRIAL_RESOURCES, "CPU": scaling.cpus_per_worker, "GPU": int(scaling.use_gpu)})


def _settings_url(job, name: str) -> str:
    return storage.join(job.storage_path, f"{name}.sweep.json")


def _save_settings(plan: Plan) -> None:
    storage.makedirs(plan.job.storage_path)
    with storage.open_url(_settings_url(plan.job, plan.name), "w") as f:
        json.dump(dataclasses.asdict(plan.cfg), f, indent=2)


def _settings(cfg: SweepConfig) -> SweepConfig:
    """With ``resume``, the settings the sweep was started with (saved beside it), so a resumed
    trial trains what it started with whatever the command line says now."""
    if not cfg.resume:
        return cfg
    plan = resolve(cfg)
    url = _settings_url(plan.job, plan.name)
    if not storage.exists(url):
        return cfg
    saved = json.loads(storage.read_text(url))
    stored = SweepConfig(**{k: tuple(v) if isinstance(v, list) else v for k, v in saved.items()})
    stored = dataclasses.replace(stored, resume=True)
    changed = [f.name for f in dataclasses.fields(cfg) if getattr(cfg, f.name) != getattr(stored, f.name)]
    if changed:
        print(f"resuming with the sweep's own settings; ignoring the new {', '.join(changed)}", flush=True)
    return stored


def _open_parent(plan: Plan):
    """The sweep's MLflow run (reused after a killed driver): settings, space and base config as params."""
    from pipelines.config import flatten
    from pipelines.tracking import RunLogger

    params = {**{f"sweep.{k}": v for k, v in dataclasses.asdict(plan.cfg).items() if k not in ("space", "resume")},
              **{f"space.{k}": v for k, v in describe(plan.space).items()}, "sweep.metric": plan.metric,
              "sweep.mode": plan.mode, **{f"base.{k}": v for k, v in flatten(plan.job).items()}}
    parent = RunLogger(plan.job.experiment)
    parent_id = parent.start(plan.name, config=params, tags={"vidray_sweep": plan.name,
                                                             "vidray_method": plan.spec.name,
                                                             "vidray_sweep_parent": "true"})
    return parent, parent_id
