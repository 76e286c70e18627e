"""The per-worker training loop shared by every method, in small steps with explicit hooks.

A method is any ``nn.Module`` whose ``forward(batch)`` returns ``{"loss": scalar, **metrics}``
(optionally ``trainable_parameters()`` and ``param_groups()``). A worker:

1. :func:`setup` builds the method (``TrainTask.build_method``), its parameter groups
   and optimiser, the per-step LR schedule, restores the latest checkpoint, and wraps the
   model for DDP when there is more than one worker;
2. :func:`run_epoch` iterates the worker's dataset shard (``iter_torch_batches``), or takes the
   epoch's batches from an :class:`~pipelines.data.epochs.EpochStream` over an epoch-spanning
   shard (one Ray Data execution for several epochs, all workers taking as many batches); uint8
   batches are normalised on the device by the recipe's declared video columns
   (:mod:`pipelines.data.normalize`, so Arrow moves 4x fewer bytes); :func:`train_step`
   runs forward (bf16 autocast on CUDA) and backward, accumulating gradients over
   ``accumulate_steps`` batches before each optimiser and LR step;
3. every ``log_every_n_steps`` optimiser steps it reports loss, method metrics, lr,
   clips/s and the data-wait fraction to the report sink and, on rank 0, to MLflow;
4. :func:`end_epoch` averages each metric over the steps that reported it, runs the
   validation hook (``TrainTask.validate``, rank 0, e.g. detection mAP), prints one
   progress line, logs epoch metrics and reports a checkpoint
   (:mod:`pipelines.train.checkpoint`).

Data-plane telemetry: the pipeline's per-sample timing columns (:mod:`pipelines.data.telemetry`)
are taken out of every batch before the model sees it and summed per epoch; the epoch
metrics get ``epoch_data_decode_ms``, ``epoch_data_augment_ms``, ``epoch_data_arrow_ms``
(per clip, in the decode workers), ``epoch_data_read_kb`` (per clip) next to
``epoch_data_wait_frac``, and rank 0 logs ``plots/data_stages.png``, the epochs as stacked
bars (data-worker ms per clip by stage beside trainer ms per clip: data wait and step).

Report sinks (:data:`SINKS`): ``"train"`` calls ``ray.train.report`` (under Ray Tune, a
``TuneReportCallback`` forwards rank 0's reports to the trial); ``"tune"`` calls
``ray.tune.report`` for a loop run directly inside a Tune function trainable (one worker,
segmented training such as PBT).

Resuming: a checkpoint restores model, optimiser, scheduler, queue, counters and RNG. A
mid-epoch checkpoint also holds ``epoch_step``, the optimiser steps already taken in its epoch;
the resumed epoch draws its data again from the start and :func:`run_epoch` *skips* the first
``epoch_step * accumulate_steps`` batches of the shard without training on them, so the epoch
ends after its remaining steps: the run takes the planned number of optimiser steps and its LR
schedule ends where an uninterrupted run's does. Skipping (not training again on the first
batches) keeps the sample stream of an uninterrupted run: an epoch's samples are
``sample_rng(seed, epoch, video)`` in a fixed order (the build's; an epoch-spanning dataset's
execution restarts at the resumed epoch, in its order), and Ray's streaming split hands the
ordered blocks to the least-fed worker, so one worker, or workers sharing a node, see the same
batches again and skip exactly those they trained on. Workers on several nodes skip the right
number of batches but not always the same samples (Ray Train's shard locality prefers blocks
made on a worker's node). The cost is decoding the skipped batches once more. A checkpoint
without ``epoch_step`` (older runs) resumes its epoch from the start.

Tracking: rank 0's logger delivers what it buffered before a checkpoint is reported
(:meth:`pipelines.tracking.RunLogger.flush_if_reachable`): a checkpoint's metrics are in MLflow first.

Shape legend: ``B`` batch, ``T`` frames, ``H`` height, ``W`` width, ``C`` channels.
"""

from __future__ import annotations

import contextlib
import dataclasses
import itertools
import sys
import tempfile
import time
from typing import Any, Callable

import torch
from torch import nn

from pipelines.data import telemetry
from pipelines.data.clock import EpochClock
from pipelines.data.epochs import epoch_batches
from pipelines.data.normalize import normalize_batch
from pipelines.train.checkpoint import load_checkpoint_state, rng_state, save_state, set_rng_state
from pipelines.train.optim import OptimConfig, lr_factor, make_optimizer, param_groups

Validator = Callable[[nn.Module, int, torch.device], dict[str, float]]


@dataclasses.dataclass
class LoopConfig:
    """How long and how to train, log and checkpoint."""

    epochs: int = 10
    batch_size: int = 8              # per worker
    accumulate_steps: int = 1        # batches per optimiser step (effective batch = batch_size x this x workers)
    log_every_n_steps: int = 10      # also Ray Train reports: keep them >= ~2 s apart (see run_epoch)
    checkpoint_every_n_steps: int = 0  # 0: once per epoch only
    keep_checkpoints: int = 2
    max_failures: int = 2
    seed: int = 0


@dataclasses.dataclass
class TrainTask:
    """What every worker trains (``train_loop_config={"task": TrainTask(...)}``); picklable.

    Attributes:
        build_method: zero-argument callable returning the method, already initialised
            (e.g. with the encoders of an earlier phase).
        video_columns: the recipe's ``video_columns()`` (column -> normalisation).
        steps_per_epoch: optimiser steps per epoch, for the LR schedule.
        name: shown in progress lines (the phase).
        validate: per-epoch validation hook run on rank 0 with the unwrapped method in
            eval mode: ``(method, epoch, device) -> {metric: value}``, logged as ``val/...``.
        tracking: ``experiment``, ``run_name``, ``uri`` of the MLflow run the driver opened.
        epoch_clock: the epoch clock the data pipeline reads (:class:`pipelines.data.clock.EpochClock`);
            rank 0 sets it before each execution of the dataset.
        epochs_span: the dataset is epoch-spanning (``LoaderOptions.span_epochs``): a worker
            reads its epochs from one :class:`~pipelines.data.epochs.EpochStream`.
        sink: ``"train"`` or ``"tune"`` (module docstring).
        device_plan: the recipe's ``device_plan()`` when it augments on the training device
            (``augment_on="device"``): each batch is augmented there before normalisation.
        crop_size: the recipe's crop size ``S`` (the output of device-side augmentation).
    """

    build_method: Callable[[], nn.Module]
    video_columns: dict[str, str]
    optim: OptimConfig = dataclasses.field(default_factory=OptimConfig)
    loop: LoopConfig = dataclasses.field(default_factory=LoopConfig)
    steps_per_epoch: int = 1
    name: str = "train"
    validate: Validator | None = None
    tracking: dict | None = None
    epoch_clock: EpochClock | None = None
    epochs_span: bool = False
    sink: str = "train"
    device_plan: dict | None = None
    crop_size: int = 0


@dataclasses.dataclass
class WorkerState:
    """Everything a worker carries from step to step."""

    method: nn.Module                 # unwrapped (checkpoints, validation)
    model: nn.Module                  # DDP-wrapped when world > 1
    optimizer: torch.optim.Optimizer
    scheduler: Any
    device: torch.device
    rank: int
    world: int
    epoch: int = 0
    step: int = 0                     # optimiser steps
    epoch_step: int = 0               # optimiser steps taken in the current epoch (resume point)
    micro: int = 0                    # batches since the last optimiser step
    stage_history: list = dataclasses.field(default_factory=list)  # per epoch, for the data-stage plot


@dataclasses.dataclass
class Window:
    """Wall time of a logging window split into waiting for data and computing."""

    wait_s: float = 0.0
    step_s: float = 0.0
    clips: int = 0

    def summary(self, world: int) -> dict[str, float]:
        total = self.wait_s + self.step_s
        return {"clips_per_s": world * self.clips / total if total else 0.0,
                "data_wait_frac": self.wait_s / total if total else 0.0}


@dataclasses.dataclass
class EpochStats:
    """Sums and counts of each metric over the steps that reported it, and the epoch's totals."""

    sums: dict[str, float] = dataclasses.field(default_factory=dict)
    counts: dict[str, int] = dataclasses.field(default_factory=dict)
    steps: int = 0
    window: Window = dataclasses.field(default_factory=Window)
    total: Window = dataclasses.field(default_factory=Window)
    data: telemetry.StageTotals = dataclasses.field(default_factory=telemetry.StageTotals)
    started: float = dataclasses.field(default_factory=time.perf_counter)

    def add(self, scalars: dict[str, float]) -> None:
        for k, v in scalars.items():
            self.sums[k] = self.sums.get(k, 0.0) + v
            self.counts[k] = self.counts.get(k, 0) + 1

    def means(self) -> dict[str, float]:
        return {k: v / self.counts[k] for k, v in self.sums.items()}


# ----------------------------------------------------------------------------- report sinks


class RayTrainSink:
    """``ray.train.report``: metrics from every rank, the checkpoint from rank 0."""

    def report(self, metrics: dict[str, Any], checkpoint_dir: str | None = None) -> None:
        import ray.train

        checkpoint = ray.train.Checkpoint.from_directory(checkpoint_dir) if checkpoint_dir else None
        ray.train.report(metrics, checkpoint=checkpoint)


class RayTuneSink:
    """``ray.tune.report`` from a loop run inside a Tune function trainable (one worker)."""

    def report(self, metrics: dict[str, Any], checkpoint_dir: str | None = None) -> None:
        import ray.tune

        checkpoint = ray.tune.Checkpoint.from_directory(checkpoint_dir) if checkpoint_dir else None
        ray.tune.report(metrics, checkpoint=checkpoint)


SINKS: dict[str, type] = {"train": RayTrainSink, "tune": RayTuneSink}


# ----------------------------------------------------------------------------- steps


def setup(task: TrainTask, device: torch.device, rank: int, world: int, checkpoint=None) -> WorkerState:
    """Build the method, optimiser and schedule on ``device``; restore ``checkpoint`` if given."""
    torch.manual_seed(task.loop.seed + rank)
    method = task.build_method().to(device)
    optimizer = make_optimizer(param_groups(method, task.optim), task.optim)
    steps = max(1, int(task.steps_per_epoch))
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda s: lr_factor(s, steps, task.loop.epochs, task.optim))
    state = WorkerState(method, method, optimizer, scheduler, device, rank, world)
    if checkpoint is not None:
        saved = load_checkpoint_state(checkpoint)
        method.load_state_dict(saved["model"])
        optimizer.load_state_dict(saved["optimizer"])
        scheduler.load_state_dict(saved["scheduler"])
        restore_counters(state, saved)
    if world > 1:
        import ray.train.torch

        state.model = ray.train.torch.prepare_model(method)
    return state


def restore_counters(state: WorkerState, saved: dict[str, Any]) -> None:
    """Epoch, step, steps into the epoch and the RNG from a checkpoint written by :func:`report_checkpoint`."""
    state.epoch, state.step = int(saved["epoch"]), int(saved["step"])
    state.epoch_step = int(saved.get("epoch_step", 0))  # absent in older checkpoints: redo the epoch
    set_rng_state(saved["rng"])


def train_step(state: WorkerState, task: TrainTask, batch: dict[str, Any]) -> dict[str, float] | None:
    """Forward and backward of one batch; an optimiser step every ``accumulate_steps`` batches.

    Returns the batch's scalar outputs when an optimiser step was taken, else ``None``.
    """
    accumulate = max(1, task.loop.accumulate_steps)
    state.micro += 1
    last = state.micro == accumulate
    state.model.train()
    sync = contextlib.nullcontext() if last or not hasattr(state.model, "no_sync") else state.model.no_sync()
    autocast = (torch.autocast("cuda", dtype=torch.bfloat16) if state.device.type == "cuda"
                else contextlib.nullcontext())
    if task.device_plan:  # augmentation on the training device (pipelines.data.device_augment)
        from pipelines.data.device_augment import augment_batch

        batch = augment_batch(batch, task.device_plan, out_size=task.crop_size, device=state.device)
    with sync:
        with autocast:
            out = state.model(normalize_batch(batch, task.video_columns, state.device))
        (out["loss"] / accumulate).backward()
    if not last:
        return None
    if task.optim.grad_clip:
        torch.nn.utils.clip_grad_norm_([p for g in state.optimizer.param_groups for p in g["params"]],
                                       task.optim.grad_clip)
    state.optimizer.step()
    state.optimizer.zero_grad(set_to_none=True)
    state.scheduler.step()
    state.step, state.epoch_step, state.micro = state.step + 1, state.epoch_step + 1, 0
    return {k: float(v.detach()) if isinstance(v, torch.Tensor) else float(v)
            for k, v in out.items() if _is_scalar(v)}


def run_epoch(state: WorkerState, task: TrainTask, shard, sink, logger) -> EpochStats:
    """One pass over the worker's shard: steps, window metrics every ``log_every_n_steps``.

    An epoch resumed from a mid-epoch checkpoint (``state.epoch_step > 0``) first skips the
    batches its steps already consumed (module docstring, "Resuming").
    """
    loop, stats = task.loop, EpochStats()
    batches = epoch_batches(shard, state.epoch, loop.batch_size)
    skip_consumed(state, task, batches)
    t_mark = time.perf_counter()
    for batch in batches:
        t_data = time.perf_counter()
        scalars = train_step(state, task, stats.data.take(batch))  # timing columns never reach the model
        t_end = time.perf_counter()
        for w in (stats.window, stats.total):
            w.wait_s += t_data - t_mark
            w.step_s += t_end - t_data
            w.clips += _batch_size(batch)
        t_mark = t_end
        if scalars is None:
            continue
        stats.steps += 1
        stats.add(scalars)
        if state.step % loop.log_every_n_steps:
            continue
        metrics = {**scalars, "lr": state.scheduler.get_last_lr()[0], "epoch": state.epoch, "step": state.step,
                   **stats.window.summary(state.world)}
        if logger:
            logger.log_metrics({f"train/{k}": v for k, v in metrics.items()}, step=state.step)
        stats.window = Window()
        if loop.checkpoint_every_n_steps and state.step % loop.checkpoint_every_n_steps == 0:
            report_checkpoint(state, sink, metrics, logger)
        else:
            sink.report(metrics)
        # Ray Train 2.60 drains each worker's report queue every RAY_TRAIN_HEALTH_CHECK_INTERVAL_S,
        # so a report can block: that time is neither data wait nor compute of the next window.
        t_mark = time.perf_counter()
    return stats


def skip_consumed(state: WorkerState, task: TrainTask, batches) -> int:
    """Draw and drop the batches of the ``state.epoch_step`` optimiser steps already taken this epoch.

    Returns how many batches were dropped (fewer when the shard ends first).
    """
    wanted = state.epoch_step * max(1, task.loop.accumulate_steps)
    skipped = sum(1 for _ in itertools.islice(batches, wanted))
    if wanted and state.rank == 0:
        sys.stdout.write(f"[{task.name}] epoch {state.epoch + 1}: resuming at its step {state.epoch_step} "
                         f"(global step {state.step}); skipped the {skipped} batches already trained on\n")
        sys.stdout.flush()
    return skipped


def end_epoch(state: WorkerState, task: TrainTask, stats: EpochStats, sink, logger) -> dict[str, float]:
    """Epoch means, validation, the progress line, epoch metrics and the epoch's checkpoint."""
    state.epoch, epoch_steps, state.epoch_step = state.epoch + 1, state.epoch_step, 0
    metrics = {f"epoch_{k}": v for k, v in stats.means().items()}  # a resumed epoch: its steps after the resume
    metrics.update(epoch=state.epoch, step=state.step, epoch_steps=epoch_steps,
                   lr=state.scheduler.get_last_lr()[0], **{f"epoch_{k}": v for k, v in
                                                           stats.total.summary(state.world).items()})
    metrics.update({f"epoch_{k}": v for k, v in telemetry.epoch_metrics(stats.data).items()})
    if task.validate is not None and state.rank == 0:
        state.method.eval()
        with torch.no_grad():
            metrics.update({f"val_{k}": float(v) for k, v in task.validate(state.method, state.epoch,
                                                                          state.device).items()})
    if state.rank == 0:  # not print(): Ray Train's patched print would emit the line twice
        sys.stdout.write(progress_line(task, metrics, time.perf_counter() - stats.started) + "\n")
        sys.stdout.flush()
    if logger:
        logger.log_metrics({f"epoch/{k}": v for k, v in metrics.items()}, step=state.epoch)
        log_stage_plot(state, stats, metrics, logger)
    report_checkpoint(state, sink, metrics, logger)
    return metrics


def log_stage_plot(state: WorkerState, stats: EpochStats, metrics: dict[str, float], logger) -> None:
    """Add this epoch to the data-stage history and log ``plots/data_stages.png`` (rank 0's logger)."""
    data = {k.removeprefix("epoch_"): v for k, v in metrics.items() if k.startswith("epoch_data_")}
    state.stage_history.append(telemetry.history_row(data, stats.total.wait_s, stats.total.step_s,
                                                     stats.total.clips))
    with tempfile.TemporaryDirectory(prefix="vidray-plot-") as directory:
        logger.log_artifact(telemetry.plot_stages(state.stage_history, f"{directory}/data_stages.png"), "plots")


def progress_line(task: TrainTask, m: dict[str, float], seconds: float) -> str:
    """``[infonce_rgb] epoch 2/6  step 30  loss 3.2104  top1 0.412  clips/s 25.1  data-wait 31%  12s``."""
    parts = [f"[{task.name}] epoch {int(m['epoch'])}/{task.loop.epochs}", f"step {int(m['step'])}"]
    for key, value in m.items():
        if key.startswith(("epoch_", "val_")) and key not in {"epoch_steps", "epoch_clips_per_s"} \
                and not key.startswith("epoch_data_"):
            parts.append(f"{key.removeprefix('epoch_')} {value:.4g}")
    parts += [f"clips/s {m.get('epoch_clips_per_s', 0):.1f}",
              f"data-wait {100 * m.get('epoch_data_wait_frac', 0):.0f}%"]
    if "epoch_data_decode_ms" in m:
        parts.append("decode/aug/arrow ms " + "/".join(f"{m[f'epoch_data_{s}_ms']:.1f}" for s in telemetry.STAGES))
    parts.append(f"{seconds:.0f}s")
    return "  ".join(parts)


def report_checkpoint(state: WorkerState, sink, metrics: dict[str, Any], logger=None) -> None:
    """Report ``metrics`` with a checkpoint written by rank 0 (the others report metrics only).

    Rank 0's ``logger`` first delivers its buffered metrics (module docstring, "Tracking").
    """
    if state.rank != 0:
        sink.report(metrics)
        return
    if logger is not None:
        logger.flush_if_reachable()
    saved = {"model": state.method.state_dict(), "optimizer": state.optimizer.state_dict(),
             "scheduler": state.scheduler.state_dict(), "epoch": state.epoch, "step": state.step,
             "epoch_step": state.epoch_step, "rng": rng_state()}
    with tempfile.TemporaryDirectory(prefix="vidray-ckpt-") as directory:
        save_state(directory, saved)
        sink.report(metrics, directory)


def _is_scalar(value: Any) -> bool:
    return isinstance(value, (int, float)) or (isinstance(value, torch.Tensor) and value.numel() == 1)


def _batch_size(batch: dict[str, Any]) -> int:
    return next((int(v.shape[0]) for v in batch.values() if isinstance(v, torch.Tensor)), 0)
