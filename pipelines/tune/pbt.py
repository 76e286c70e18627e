"""Population-based training: segmented training inside the trial, checkpoints reported to Tune.

A ``--scheduler pbt`` trial is not a driver of Ray Train runs (:mod:`pipelines.tune.trial`):
it runs the shared loop itself (:func:`pipelines.train.loop.setup`, ``run_epoch``,
``end_epoch``), one worker in the trial's own process, with the ``"tune"`` report sink
(:class:`SegmentSink`), so that every epoch-end report hands Tune a checkpoint. That is
what PBT needs: when a trial falls in the lower quantile, Tune restarts it with the
mutated config of a top trial and that trial's latest checkpoint
(``ray.tune.get_checkpoint()``). The restarted trial (:func:`run_segment`):

1. builds the method, optimiser and LR schedule from *its own* (mutated) config;
2. loads the donor's weights, queues, optimiser moments, step counters and RNG, then puts
   its own hyperparameters back over the restored optimiser and LR schedule
   (:func:`restore_keeping_hyperparameters`: the optimiser state dict carries the donor's
   LR and weight decay, the scheduler its base LRs);
3. records the exploit on its MLflow phase run: MLflow refuses to overwrite a param, so a
   tag ``pbt_exploit_<epoch>`` (``{"donor", "changed": {key: [donor's, new]}, "checkpoint_sha256"}``,
   the last the digest of the donor's state file it loaded) and the
   metrics ``pbt/exploited`` and ``pbt/<key>`` (each searched value, at every segment's
   first epoch) say what happened; the run's params stay those it started with (changed
   keys are listed in the ``resume_changed_params`` tag);
4. trains the remaining epochs, then exports and registers its encoders as a phase does.

A checkpoint names the trial whose weights it holds (``pbt.json``: trial id, its values,
epoch, step, and the lineage of segments), which is how a restart tells an exploit from a
resume of its own checkpoint (Tune also pauses trials to let pending ones run).

Limits: one phase with no ``init_from`` (a one-phase method, or ``--stage`` of one that
starts from scratch), one worker; the trial actor holds the worker's CPUs (and GPU).
``Tuner.restore`` restores the trials but not PBT's state (as ASHA, the scheduler is
rebuilt), so a resumed PBT sweep perturbs from the trials' restored checkpoints onward.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import math
import os
from typing import Any

import torch

from pipelines.train.loop import RayTuneSink, WorkerState, restore_counters
from pipelines.tune.trial import EPOCH_REPORT_KEY, TIME_ATTR, TrialContext, trial_job

ORIGIN_FILE = "pbt.json"


def check_schedule(phases: list) -> None:
    """PBT trains one phase from scratch in the trial process (module docstring).

    Raises:
        ValueError: more than one phase, or a phase starting from another's encoders.
    """
    if len(phases) != 1 or phases[0].init_from:
        names = ", ".join(p.name for p in phases)
        raise ValueError(f"--scheduler pbt trains one phase that starts from scratch; this schedule has {names}"
                         f"{' (which starts from ' + str(phases[0].init_from) + ')' if len(phases) == 1 else ''}: "
                         f"choose one with --stage")


class SegmentSink(RayTuneSink):
    """The ``"tune"`` sink of a PBT trial: epoch-end reports only, with :data:`TIME_ATTR`, and a
    checkpoint that names the weights' origin (:data:`ORIGIN_FILE`).

    Step reports are dropped: Tune needs the sweep's metric in every result, and only epoch ends
    carry the validation metrics."""

    def __init__(self, phase: str, origin: dict[str, Any]) -> None:
        self.phase, self.origin = phase, origin

    def report(self, metrics: dict[str, Any], checkpoint_dir: str | None = None) -> None:
        if EPOCH_REPORT_KEY not in metrics:
            return
        if checkpoint_dir:
            origin = {**self.origin, "epoch": int(metrics["epoch"]), "step": int(metrics["step"])}
            with open(os.path.join(checkpoint_dir, ORIGIN_FILE), "w") as f:
                json.dump(origin, f)
        super().report({**metrics, TIME_ATTR: int(metrics["epoch"]), "phase": self.phase,
                        "pbt_origin": self.origin["lineage"][-1]["from"]}, checkpoint_dir)


def restore_keeping_hyperparameters(state: WorkerState, saved: dict[str, Any]) -> None:
    """Load ``saved`` (a loop checkpoint) into ``state`` but keep ``state``'s hyperparameters.

    Weights, buffers (queues), optimiser moments, epoch/step counters, the scheduler's position
    and the RNG come from ``saved``; each parameter group's LR, weight decay and other settings,
    and the schedule's base LRs, stay those ``state`` was built with; the current LR is the
    schedule's at the restored step.
    """
    own = [{k: v for k, v in g.items() if k != "params"} for g in state.optimizer.param_groups]
    base_lrs = list(state.scheduler.base_lrs)
    state.method.load_state_dict(saved["model"])
    state.optimizer.load_state_dict(saved["optimizer"])
    state.scheduler.load_state_dict(saved["scheduler"])
    state.scheduler.base_lrs = base_lrs
    step = state.scheduler.last_epoch
    for group, settings, base, factor in zip(state.optimizer.param_groups, own, base_lrs,
                                             state.scheduler.lr_lambdas):
        group.update(settings)
        group["lr"] = base * factor(step)
    state.scheduler._last_lr = [g["lr"] for g in state.optimizer.param_groups]  # what get_last_lr() reads
    restore_counters(state, saved)


def read_origin(checkpoint) -> dict[str, Any] | None:
    """The :data:`ORIGIN_FILE` of a Tune checkpoint, with ``sha256`` of its state file (None when absent)."""
    import hashlib

    from pipelines.train.checkpoint import CHECKPOINT_FILE

    with checkpoint.as_directory() as directory:
        path = os.path.join(directory, ORIGIN_FILE)
        if not os.path.exists(path):
            return None
        with open(path) as f:
            origin = json.load(f)
        with open(os.path.join(directory, CHECKPOINT_FILE), "rb") as f:
            return {**origin, "sha256": hashlib.file_digest(f, "sha256").hexdigest()}


def mutations(donor: dict[str, Any], values: dict[str, Any]) -> dict[str, list]:
    """``{key: [donor's value, this trial's]}`` for each searched key that differs."""
    return {k: [donor.get(k), v] for k, v in sorted(values.items()) if donor.get(k) != v}


def run_pbt_trial(config: dict[str, Any], ctx: TrialContext) -> None:
    """The Tune function trainable of a PBT sweep: ``config`` holds the (possibly mutated) values."""
    import ray.tune

    os.environ.update(ctx.env)  # this process's tracking store is the driver's
    trial_id = ray.tune.get_context().get_trial_id()
    run_segment(ctx, dict(config), trial_id, ray.tune.get_checkpoint(), report=True)


def run_segment(ctx: TrialContext, values: dict[str, Any], trial_id: str, checkpoint, *, report: bool) -> None:
    """Train trial ``trial_id`` from ``checkpoint`` (its own, a donor's, or None) to its last epoch,
    then export and register; ``report=False`` (no Tune session): only finish what is left."""
    from pipelines.data.clock import epoch_clock
    from pipelines.io import manifest
    from pipelines.methods import get_method
    from pipelines.train.loop import end_epoch, run_epoch, setup
    from pipelines.tune.trial import _registered

    spec = get_method(ctx.method)
    job = trial_job(ctx, values, trial_id)
    (phase,) = spec.schedule(job, ctx.stage)
    if _registered(job, [phase]):
        print(f"trial {trial_id}: {phase.name} is already registered; nothing to do", flush=True)
        return
    fingerprint = manifest.fingerprint(manifest.read_manifest(job.data.manifest))
    parent, logger = _open_runs(ctx, spec, job, phase, trial_id, fingerprint)
    clock = epoch_clock(f"vidray-epoch-{job.run_name}.{phase.name}")
    try:
        task, dataset, pipe = _task(spec, job, phase, clock, ctx.data_cpus)
        device = torch.device("cuda" if job.scaling.use_gpu and torch.cuda.is_available() else "cpu")
        state = setup(task, device, 0, 1)
        origin = _restore(state, checkpoint, values, trial_id, logger)
        sink = SegmentSink(phase.name, origin) if report else _NoSink()
        while state.epoch < task.loop.epochs:
            clock.set(state.epoch)
            end_epoch(state, task, run_epoch(state, task, dataset, sink, logger), sink, logger)
        _export(spec, job, phase, state.method, logger)
        pipe.write_quarantine()
        logger.end("FINISHED")
        parent.end("FINISHED")
    except BaseException:
        logger.end("FAILED")
        parent.end("FAILED")
        raise
    finally:
        clock.close()


class _NoSink:
    def report(self, metrics: dict[str, Any], checkpoint_dir: str | None = None) -> None:
        pass


def _open_runs(ctx: TrialContext, spec, job, phase, trial_id: str, fingerprint: str):
    """The trial's MLflow run and its phase run under it (both reused by name after a restart)."""
    from pipelines.config import flatten
    from pipelines.tracking import RunLogger

    parent = RunLogger(job.experiment)
    parent_id = parent.start(job.run_name, config=job, tags={
        "dataset_fingerprint": fingerprint, "vidray_method": spec.name, "vidray_sweep": ctx.sweep,
        "vidray_trial_id": trial_id, **({"mlflow.parentRunId": ctx.parent_run_id} if ctx.parent_run_id else {})})
    logger = RunLogger(job.experiment, flush_every_s=5.0)
    tags = {"dataset_fingerprint": fingerprint, "phase": phase.name, "vidray_method": spec.name,
            "vidray_run_name": job.run_name, **{k: str(v) for k, v in phase.params.items()},
            **({"mlflow.parentRunId": parent_id} if parent_id else {})}
    logger.start(f"{job.run_name}.{phase.name}", config={**flatten(job), "phase.epochs": phase.epochs}, tags=tags)
    return parent, logger


def _task(spec, job, phase, clock, data_cpus: float | None):
    """The phase's :class:`TrainTask` (one worker) and its dataset, read in this process."""
    import ray.data

    from pipelines.config import apply_overrides
    from pipelines.data.dataset import LoaderOptions, build_pipeline
    from pipelines.train.loop import TrainTask

    if data_cpus is not None:  # as FitOptions.data_cpus: trials side by side must not starve each other
        execution = ray.data.DataContext.get_current().execution_options
        execution.resource_limits = execution.resource_limits.copy(cpu=data_cpus)
    data, recipe_cfg = job.data, spec.recipe(job, phase)
    # The trial's own quarantine ledger: a ledger actor dies with the process that created it, and
    # trials side by side (or a trial restarted by PBT) would otherwise share one a dead trial owned.
    pipe = build_pipeline(data.manifest, recipe_cfg, data.split, seed=data.seed, epoch=clock, limit=data.limit,
                          options=LoaderOptions(strings=False, ledger_name=f"vidray-ledger-{job.run_name}",
                                               clip_cache=data.clip_cache))
    videos = len(pipe.inputs) - pipe.quarantined().num_rows
    per_step = job.loop.batch_size * max(1, job.loop.accumulate_steps)
    task = TrainTask(build_method=functools.partial(spec.build, job, phase, {}),
                     video_columns=recipe_cfg.video_columns(),
                     optim=apply_overrides(job.optim, phase.optim_overrides),
                     loop=dataclasses.replace(job.loop, epochs=phase.epochs),
                     steps_per_epoch=max(1, math.floor(videos / per_step)), name=phase.name,
                     validate=spec.validate(job, phase) if spec.validate else None, sink="tune")
    return task, pipe.dataset, pipe


def _restore(state: WorkerState, checkpoint, values: dict[str, Any], trial_id: str, logger) -> dict[str, Any]:
    """Load ``checkpoint`` (keeping this trial's hyperparameters), log the values and any exploit;
    returns the origin the next checkpoints carry."""
    from pipelines.train.checkpoint import load_checkpoint_state

    fresh = {"trial_id": trial_id, "values": values, "lineage": [{"from": trial_id, "epoch": 0}]}
    donor = read_origin(checkpoint) if checkpoint is not None else None
    if checkpoint is not None:
        restore_keeping_hyperparameters(state, load_checkpoint_state(checkpoint))
    numeric = {f"pbt/{k}": float(v) for k, v in values.items()
               if isinstance(v, (int, float)) and not isinstance(v, bool)}
    logger.log_metrics(numeric, step=state.epoch)
    if donor is None or donor["trial_id"] == trial_id:  # a fresh start, or a resume of its own checkpoint
        return {**fresh, "lineage": donor["lineage"]} if donor else fresh
    changed = mutations(donor["values"], values)
    logger.set_tags({f"pbt_exploit_{state.epoch}": json.dumps({"donor": donor["trial_id"], "changed": changed,
                                                               "checkpoint_sha256": donor["sha256"]})})
    logger.log_metrics({"pbt/exploited": 1.0}, step=state.epoch)
    print(f"trial {trial_id}: exploited {donor['trial_id']} at epoch {state.epoch} (step {state.step}); "
          f"changed {changed}", flush=True)
    return {**fresh, "lineage": [*donor["lineage"], {"from": donor["trial_id"], "epoch": state.epoch}]}


def _export(spec, job, phase, method: torch.nn.Module, logger) -> None:
    """Export and register the phase's encoders, as the phase runner does after a Ray Train run."""
    from pipelines.train.phases import _register, _work_dir

    work = _work_dir(job)
    for key, enc in spec.export(job, phase, method).items():
        _register(job, phase, key, enc, logger, work)


def complete_pbt_trial(ctx: TrialContext, values: dict[str, Any], trial_id: str, checkpoint) -> None:
    """Register trial ``trial_id``'s encoders from its last Tune checkpoint, in this process (no Tune
    session): what a driver killed after the trial's last report left undone."""
    run_segment(ctx, values, trial_id, checkpoint, report=False)
