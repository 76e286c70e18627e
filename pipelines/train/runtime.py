"""Ray Train glue: the worker entry point and :func:`fit`.

:func:`train_loop_per_worker` is what every Ray Train worker runs: it sets up the
:class:`~pipelines.train.loop.WorkerState` from the latest checkpoint and runs
:func:`~pipelines.train.loop.run_epoch` / :func:`~pipelines.train.loop.end_epoch` until the
task's epochs are done. :func:`fit` starts the workers with a vidray
:class:`~pipelines.config.ScalingConfig`.

Resuming: ``FailureConfig(max_failures)`` restarts a failed worker group from the latest
checkpoint, and Ray Train V2 restores the checkpoint history of a run with the same
``name`` and ``storage_path``, so re-submitting a job resumes it.

:class:`FitOptions` are what a caller adds to every run without the method knowing: a
sweep's trial forwards reports to Ray Tune (a ``TuneReportCallback``) and caps the CPUs its
Ray Data pipeline may take (see :mod:`pipelines.tune`).
"""

from __future__ import annotations

import dataclasses
import logging
import os
from typing import Any

import torch

from pipelines.config import ScalingConfig
from pipelines.data.epochs import EpochStream
from pipelines.train.loop import SINKS, TrainTask, end_epoch, run_epoch, setup


@dataclasses.dataclass(frozen=True)
class FitOptions:
    """Additions to a Ray Train run that the caller, not the method, decides.

    Attributes:
        callbacks: ``ray.train.RunConfig`` callbacks (e.g. a ``TuneReportCallback`` subclass
            in a Tune trial); they must pickle (they run in the Train controller).
        data_cpus: Ray Data CPU limit of the run's datasets (``DataConfig`` execution
            options), so trials running side by side do not starve each other's trainers;
            ``None``: Ray's default (the cluster minus what Train reserved).
    """

    callbacks: tuple[Any, ...] = ()
    data_cpus: float | None = None


def train_loop_per_worker(config: dict[str, Any]) -> None:
    """Entry point of every Ray Train worker: ``config = {"task": TrainTask}``."""
    import ray.train
    import ray.train.torch

    task: TrainTask = config["task"]
    _quiet_report_logs()
    ctx = ray.train.get_context()
    rank, world = ctx.get_world_rank(), ctx.get_world_size()
    state = setup(task, ray.train.torch.get_device(), rank, world, ray.train.get_checkpoint())
    sink = SINKS[task.sink]()
    logger = _make_logger(task.tracking, rank)
    shard = ray.train.get_dataset_shard("train")
    clock = task.epoch_clock

    def start(epoch: int) -> None:  # before an execution of the dataset: it draws from `epoch` on
        if clock is not None and rank == 0:
            clock.set(epoch)
        _barrier(world)

    if task.epochs_span:
        shard = EpochStream(shard, task.loop.batch_size, start, agree=_agreement(world, state.device))
    while state.epoch < task.loop.epochs:
        if not task.epochs_span:
            start(state.epoch)
        stats = run_epoch(state, task, shard, sink, logger)
        end_epoch(state, task, stats, sink, logger)
    if logger:
        logger.detach()  # deliver what is buffered; the driver ends the run


def _quiet_report_logs() -> None:
    """Ray Train 2.60 logs every ``report`` call at INFO with the whole metrics dict; the loop's one
    line per epoch says what a person needs. ``VIDRAY_VERBOSE_TRAIN=1`` keeps Ray's lines."""
    if os.environ.get("VIDRAY_VERBOSE_TRAIN") == "1":
        return
    try:
        from ray.train.v2._internal.execution import context
    except ImportError:  # another Ray version: leave its logging alone
        return
    logging.getLogger(context.__file__).setLevel(logging.WARNING)  # that module's logger is named by its path


def _agreement(world: int, device: torch.device):
    """``agree(flag) -> bool``: whether every worker's ``flag`` is true (an all-reduce MIN); None for one worker."""
    if world == 1:
        return None

    def agree(flag: bool) -> bool:
        value = torch.tensor([int(flag)], device=device)
        torch.distributed.all_reduce(value, op=torch.distributed.ReduceOp.MIN)
        return bool(value.item())

    return agree


def _barrier(world: int) -> None:
    if world > 1 and torch.distributed.is_available() and torch.distributed.is_initialized():
        torch.distributed.barrier()


def _make_logger(tracking: dict | None, rank: int):
    if not tracking or rank != 0:
        return None
    from pipelines.tracking import RunLogger

    logger = RunLogger(tracking["experiment"], rank=rank, uri=tracking.get("uri"), flush_every_s=5.0)
    logger.start(tracking["run_name"])  # joins the RUNNING run the driver opened (resume rule)
    return logger


def fit(task: TrainTask, *, datasets: dict, scaling: ScalingConfig, run_name: str, storage_path: str,
        options: FitOptions | None = None):
    """Run :func:`train_loop_per_worker` on ``scaling.num_workers`` Ray Train workers; returns the Result.

    NCCL on GPUs, gloo on CPUs. Checkpoints go to ``storage_path/run_name`` (a local
    folder or an object-store URL); a run with the same name there resumes. ``options``:
    see :class:`FitOptions`.
    """
    import ray.train
    from ray.train.torch import TorchConfig, TorchTrainer

    from pipelines.io import storage

    path, filesystem = storage.ray_storage(storage_path)
    options = options or FitOptions()
    trainer = TorchTrainer(
        train_loop_per_worker, train_loop_config={"task": task}, datasets=datasets,
        dataset_config=_data_config(options.data_cpus),
        torch_config=TorchConfig(backend="nccl" if scaling.use_gpu else "gloo"),
        scaling_config=ray.train.ScalingConfig(num_workers=scaling.num_workers, use_gpu=scaling.use_gpu,
                                               resources_per_worker={"CPU": scaling.cpus_per_worker}),
        run_config=ray.train.RunConfig(
            name=run_name, storage_path=path, storage_filesystem=filesystem,
            failure_config=ray.train.FailureConfig(max_failures=task.loop.max_failures),
            checkpoint_config=ray.train.CheckpointConfig(num_to_keep=task.loop.keep_checkpoints),
            callbacks=list(options.callbacks) or None))
    return trainer.fit()


def _data_config(cpus: float | None):
    """Train's default ingest options, with the CPU limit ``cpus`` when given (None: Train's default config)."""
    if cpus is None:
        return None
    import ray.train

    execution = ray.train.DataConfig.default_ingest_options()
    execution.resource_limits = execution.resource_limits.copy(cpu=cpus)
    return ray.train.DataConfig(execution_options=execution)
