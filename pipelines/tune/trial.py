"""One trial of a sweep: a Tune function trainable that runs the method's phases on Ray Train.

Ray 2.60 runs Train V2, where ``Tuner(TorchTrainer(...))`` is refused: a trial is a function
that builds and fits the trainer itself (Ray's ``train_tune_interop.py``), here through the
phase runner (:func:`pipelines.train.phases.run_phases`), so a trial trains, logs and
registers exactly as ``jobs/train.py`` does. What a sweep adds:

* the trial's config: the sweep's base job with the sampled values set through the typed
  config parser (:func:`pipelines.tune.space.apply_trial`);
* deterministic names from the Tune trial id, which ``Tuner.restore`` keeps: the job's
  run ``<sweep>.<trial_id>`` (Ray Train runs ``<sweep>.<trial_id>.<phase>`` under
  ``<storage>/<sweep>.trials``), so a trial restarted after a paused trial, a crash or a
  killed driver resumes each phase from its last checkpoint and skips finished phases;
  the MLflow run of the same name is reused (RunLogger's resume rule), never duplicated;
* its own registered model names, ``<model_name>-<trial_id>-<key>``: concurrent trials
  must not move each other's phase aliases, which later phases start from;
* :class:`EpochReports`, a ``TuneReportCallback`` that forwards rank 0's *epoch-end*
  reports only (the loop's step reports lack the validation metric, and Tune refuses a
  result without the metric) and adds :data:`TIME_ATTR`.
"""

from __future__ import annotations

import dataclasses
import os
from typing import Any

from ray.tune.integration.ray_train import TuneReportCallback

from pipelines.train.runtime import FitOptions

TIME_ATTR = "trial_epoch"
"""Epochs a trial has trained, over all its phases (equals ``epoch`` for one-phase methods).

The scheduler's time attribute: Tune's own ``training_iteration`` counts reports and
restarts from 1 after ``Tuner.restore``, while the epoch comes from the checkpoint."""

EPOCH_REPORT_KEY = "epoch_steps"
"""A key only :func:`pipelines.train.loop.end_epoch`'s reports carry."""


@dataclasses.dataclass(frozen=True)
class TrialContext:
    """What every trial of a sweep shares (passed with ``tune.with_parameters``).

    Attributes:
        method: registered method name.
        job: the resolved base job (variant, ``--set`` overrides, absolute paths).
        sweep: the sweep's name.
        parent_run_id: the sweep's MLflow run (trial runs are nested under it), or None.
        env: ``MLFLOW_TRACKING_URI`` / ``VIDRAY_HOME`` of the driver: a trial process joining
            a running cluster does not inherit the driver's environment.
        stage: train only this phase of the schedule.
        data_cpus: Ray Data CPU limit per Train run.
        segmented: PBT: the trial trains in its own process and reports checkpoints to Tune
            (:mod:`pipelines.tune.pbt`) instead of driving Ray Train runs.
    """

    method: str
    job: Any
    sweep: str
    parent_run_id: str | None
    env: dict[str, str]
    stage: str | None = None
    data_cpus: float | None = None
    segmented: bool = False


def trial_job(ctx: TrialContext, values: dict[str, Any], trial_id: str) -> Any:
    """The base job with ``values`` applied and the trial's own run name, model name and storage."""
    from pipelines.io import storage
    from pipelines.tune.space import apply_trial

    job = apply_trial(ctx.job, values)
    return dataclasses.replace(job, run_name=f"{ctx.sweep}.{trial_id}", model_name=f"{ctx.job.model_name}-{trial_id}",
                               storage_path=storage.join(ctx.job.storage_path, f"{ctx.sweep}.trials"))


def epoch_offsets(phases: list, run_name: str) -> dict[str, int]:
    """Ray Train run name of each phase -> epochs of the phases before it (:data:`TIME_ATTR`)."""
    out, done = {}, 0
    for phase in phases:
        out[f"{run_name}.{phase.name}"] = done
        done += phase.epochs
    return out


class EpochReports(TuneReportCallback):
    """Forwards rank 0's epoch-end reports to the Tune trial, with :data:`TIME_ATTR` and the phase.

    Runs in the Ray Train controller; Ray's callback puts the dict on the trial's queue.
    Checkpoints are not forwarded (Ray's callback adds only their path): resuming is Ray
    Train's, by run name.
    """

    def __init__(self, offsets: dict[str, int]) -> None:
        super().__init__()  # raises outside a Tune session
        self.offsets = offsets

    def after_report(self, run_context, metrics: list[dict[str, Any]], checkpoint) -> None:
        first = metrics[0]  # the first reporting rank, rank 0 (ray.train.v2 report_handler)
        if EPOCH_REPORT_KEY not in first:
            return
        name = run_context.run_config.name
        forwarded = {**first, TIME_ATTR: self.offsets.get(name, 0) + int(first["epoch"]),
                     "phase": name.rsplit(".", 1)[-1]}
        super().after_report(run_context, [forwarded, *metrics[1:]], checkpoint)


def _run(ctx: TrialContext, values: dict[str, Any], trial_id: str, *, report: bool) -> None:
    """Run the trial's job through the phase runner; ``report``: forward epoch reports to Tune."""
    from pipelines.methods import get_method
    from pipelines.train.phases import run_phases

    spec = get_method(ctx.method)
    job = trial_job(ctx, values, trial_id)
    if _registered(job, spec.schedule(job, ctx.stage)):
        # Tune restarts a trial whose completion it had not yet saved when its driver died:
        # a new job run now would duplicate the trial's (FINISHED runs are never reused).
        print(f"trial {trial_id}: every phase is already registered; nothing to do", flush=True)
        return
    tags = {"vidray_sweep": ctx.sweep, "vidray_trial_id": trial_id,
            **({"mlflow.parentRunId": ctx.parent_run_id} if ctx.parent_run_id else {})}
    callbacks = (EpochReports(epoch_offsets(spec.schedule(job, ctx.stage), job.run_name)),) if report else ()
    run_phases(spec, job, stage=ctx.stage, tags=tags, options=FitOptions(callbacks=callbacks, data_cpus=ctx.data_cpus))


def _registered(job, phases: list) -> bool:
    """Whether every phase registered what it registers, under this job's run name."""
    from pipelines.train.phases import finished_version

    return all(p.registers for p in phases) and all(
        finished_version(job, p.name, key) for p in phases for key in p.registers)


def run_trial(config: dict[str, Any], ctx: TrialContext) -> None:
    """The Tune function trainable: ``config`` holds the sampled ``{dotted key: value}``."""
    import ray.tune

    os.environ.update(ctx.env)  # this process's tracking store is the driver's
    _run(ctx, config, ray.tune.get_context().get_trial_id(), report=True)


def complete_trial(ctx: TrialContext, values: dict[str, Any], trial_id: str) -> None:
    """Run trial ``trial_id``'s job again in this process (no Tune session): finished phases are
    skipped, the others resume from their checkpoints; used to finish a trial's registration."""
    _run(ctx, values, trial_id, report=False)
