"""The Ray Train runtime shared by every method: one per-worker loop, written once.

A method is any ``nn.Module`` from :mod:`vidmodels.methods` whose ``forward(batch)``
returns ``{"loss": scalar, **metrics}`` and which exposes ``trainable_parameters()``.
The loop:

1. takes the worker's dataset shard (``ray.train.get_dataset_shard("train")``) and
   iterates ``iter_torch_batches``; batches arrive as uint8 and are moved to the device
   and normalised there (:func:`normalize_batch`), so Arrow moves 4x fewer bytes;
2. runs the step (bf16 autocast on CUDA), clips gradients if asked, steps the optimiser
   and the per-step LR schedule;
3. reports metrics every ``log_every_n_steps`` (loss, method metrics, lr, clips/s, the
   fraction of step time spent waiting for data) to Ray Train and, on rank 0, to MLflow;
4. checkpoints every epoch and every ``checkpoint_every_n_steps``: model (with its
   MoCo queues and momentum encoder: they are buffers/submodules of the method),
   optimiser, scheduler, epoch/step and RNG states, in one file written atomically by
   Ray Train's checkpoint persistence, loaded with ``torch.load(weights_only=True)``.

Resuming: ``FailureConfig(max_failures)`` restarts a failed worker group from the latest
checkpoint, and Ray Train V2 restores the checkpoint history of a run with the same
``name`` and ``storage_path``, so re-submitting a job resumes it. Model, optimiser,
scheduler, queue and step counters resume exactly; the data of a partly done epoch is
re-drawn from that epoch's start (sample identity is ``(seed, epoch, video)``, so it
is the same clips in a different order) and the epoch runs to its full length again.

Shape legend: ``B`` batch, ``T`` frames, ``H`` height, ``W`` width, ``C`` channels.
"""

from __future__ import annotations

import dataclasses
import math
import os
import random
import tempfile
import time
from typing import Any, Callable, Iterator

import numpy as np
import torch
from torch import nn

CHECKPOINT_FILE = "state.pt"
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


@dataclasses.dataclass
class OptimConfig:
    """Optimiser and LR schedule (defaults: CoCLR's Adam, lr 1e-3, wd 1e-5)."""

    optimizer: str = "adam"          # adam | adamw | sgd
    lr: float = 1e-3
    weight_decay: float = 1e-5
    momentum: float = 0.9            # sgd only
    schedule: str = "cosine"         # cosine | step | constant
    warmup_epochs: float = 0.0
    milestones: tuple[int, ...] = ()  # step schedule: epochs where lr *= gamma
    gamma: float = 0.1
    grad_clip: float = 0.0           # 0: off


@dataclasses.dataclass
class LoopConfig:
    """How long and how to train, log and checkpoint."""

    epochs: int = 10
    batch_size: int = 8              # per worker
    log_every_n_steps: int = 10      # also Ray Train reports: keep them >= ~2 s apart (see the loop)
    checkpoint_every_n_steps: int = 0  # 0: once per epoch only
    keep_checkpoints: int = 2
    max_failures: int = 2
    seed: int = 0


def make_optimizer(params: Iterator[nn.Parameter], cfg: OptimConfig) -> torch.optim.Optimizer:
    params = [p for p in params if p.requires_grad]
    if cfg.optimizer == "adam":
        return torch.optim.Adam(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    if cfg.optimizer == "adamw":
        return torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    if cfg.optimizer == "sgd":
        return torch.optim.SGD(params, lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay)
    raise ValueError(f"unknown optimizer {cfg.optimizer!r}; choose adam, adamw or sgd")


def lr_factor(step: int, steps_per_epoch: int, epochs: int, cfg: OptimConfig) -> float:
    """Multiplier of the base LR at ``step``: linear warm-up, then cosine / step / constant."""
    epoch = step / max(1, steps_per_epoch)
    if cfg.warmup_epochs and epoch < cfg.warmup_epochs:
        return (epoch + 1 / max(1, steps_per_epoch)) / cfg.warmup_epochs
    if cfg.schedule == "constant":
        return 1.0
    if cfg.schedule == "step":
        return cfg.gamma ** sum(epoch >= m for m in cfg.milestones)
    if cfg.schedule == "cosine":
        span = max(1e-8, epochs - cfg.warmup_epochs)
        progress = min(1.0, (epoch - cfg.warmup_epochs) / span)
        return 0.5 * (1 + math.cos(math.pi * progress))
    raise ValueError(f"unknown schedule {cfg.schedule!r}; choose cosine, step or constant")


def normalize_batch(batch: dict[str, Any], device: torch.device) -> dict[str, Any]:
    """Move a batch to ``device`` and normalise its clips there.

    ``rgb*`` / ``views`` columns: uint8 ``(B, T, H, W, 3)`` -> float ``(B, 3, T, H, W)``,
    ImageNet mean/std (the DPC and CoCLR code's normalisation). ``flow*``: uint8 ->
    ``x / 127.5 - 1`` in [-1, 1] (128 = zero motion). Other tensors are moved as they
    are; non-tensors (strings) are kept.
    """
    out: dict[str, Any] = {}
    for key, value in batch.items():
        if not isinstance(value, torch.Tensor):
            out[key] = value
            continue
        value = value.to(device, non_blocking=True)
        if value.dtype == torch.uint8 and value.dim() >= 5 and key.startswith(("rgb", "flow", "views")):
            x = value.movedim(-1, -4).float()  # (..., T, H, W, C) -> (..., C, T, H, W)
            if key.startswith("flow"):
                x = x / 127.5 - 1.0
            else:
                shape = (3,) + (1,) * 3
                mean = torch.tensor(IMAGENET_MEAN, device=device).view(shape) * 255
                std = torch.tensor(IMAGENET_STD, device=device).view(shape) * 255
                x = (x - mean) / std
            out[key] = x.contiguous()
        else:
            out[key] = value
    return out


# ----------------------------------------------------------------------------- checkpoints


def rng_state() -> dict[str, Any]:
    """Python, numpy and torch RNG states as tensors and plain types (loadable with weights_only)."""
    np_state = np.random.get_state()
    return {"python": random.getstate(), "torch": torch.get_rng_state(),
            "numpy": (np_state[0], torch.from_numpy(np_state[1].astype(np.int64)), *np_state[2:])}


def set_rng_state(state: dict[str, Any]) -> None:
    random.setstate(tuple(tuple(s) if isinstance(s, list) else s for s in state["python"]))
    torch.set_rng_state(state["torch"])
    kind, keys, *rest = state["numpy"]
    np.random.set_state((kind, keys.numpy().astype(np.uint32), *rest))


def save_state(directory: str, state: dict[str, Any]) -> str:
    """Write ``state`` to ``directory/state.pt`` via a temporary file and a rename (atomic)."""
    path = os.path.join(directory, CHECKPOINT_FILE)
    tmp = path + ".tmp"
    torch.save(state, tmp)
    os.replace(tmp, path)
    return path


def load_state(directory: str, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Load a checkpoint written by :func:`save_state`; never unpickles arbitrary objects."""
    return torch.load(os.path.join(directory, CHECKPOINT_FILE), map_location=map_location, weights_only=True)


def load_checkpoint_state(checkpoint) -> dict[str, Any]:
    """The state dict inside a ``ray.train.Checkpoint``."""
    with checkpoint.as_directory() as directory:
        return load_state(directory)


# ----------------------------------------------------------------------------- the loop


@dataclasses.dataclass
class StepTimer:
    """Splits wall time into waiting for data and computing, per logging window."""

    wait_s: float = 0.0
    step_s: float = 0.0
    clips: int = 0

    def summary(self, world_size: int) -> dict[str, float]:
        total = self.wait_s + self.step_s
        return {"clips_per_s": world_size * self.clips / total if total else 0.0,
                "data_wait_frac": self.wait_s / total if total else 0.0}


def _batch_size(batch: dict[str, Any]) -> int:
    for value in batch.values():
        if isinstance(value, torch.Tensor):
            return int(value.shape[0])
    return 0


def _unwrap(model: nn.Module) -> nn.Module:
    return model.module if hasattr(model, "module") else model


def train_loop_per_worker(config: dict[str, Any]) -> None:
    """Entry point of every Ray Train worker (``TorchTrainer(train_loop_per_worker=...)``).

    ``config`` keys: ``build_method`` (a picklable zero-argument callable returning the
    method module, already initialised, e.g. with the encoders of a previous stage), ``optim`` (:class:`OptimConfig`),
    ``loop`` (:class:`LoopConfig`), ``steps_per_epoch`` (for the LR schedule),
    ``epoch_clock`` (optional name of the :func:`epoch_clock` actor the data pipeline
    reads), and ``tracking`` (optional: ``experiment``, ``run_name``, ``uri`` of the MLflow
    run the driver opened; rank 0 logs its step and epoch metrics there).
    """
    import ray.train
    import ray.train.torch

    ctx = ray.train.get_context()
    rank, world = ctx.get_world_rank(), ctx.get_world_size()
    optim_cfg: OptimConfig = config["optim"]
    loop: LoopConfig = config["loop"]
    device = ray.train.torch.get_device()
    torch.manual_seed(loop.seed + rank)
    method: nn.Module = config["build_method"]()
    method.to(device)
    params = list(method.trainable_parameters()) if hasattr(method, "trainable_parameters") else list(method.parameters())
    optimizer = make_optimizer(iter(params), optim_cfg)
    steps_per_epoch = max(1, int(config["steps_per_epoch"]))
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda s: lr_factor(s, steps_per_epoch, loop.epochs, optim_cfg))
    epoch, step = 0, 0
    checkpoint = ray.train.get_checkpoint()
    if checkpoint is not None:
        state = load_checkpoint_state(checkpoint)
        method.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        epoch, step = int(state["epoch"]), int(state["step"])
        set_rng_state(state["rng"])
    model = ray.train.torch.prepare_model(method) if world > 1 else method
    logger = _make_logger(config.get("tracking"), rank)
    autocast = torch.autocast("cuda", dtype=torch.bfloat16) if device.type == "cuda" else _nullcontext()
    shard = ray.train.get_dataset_shard("train")
    clock = _clock(config.get("epoch_clock"))
    while epoch < loop.epochs:
        if clock is not None and rank == 0:
            ray.get(clock.set.remote(epoch))
        _barrier(world)
        epoch_steps, epoch_metrics, epoch_counts = 0, {}, {}
        timer, t_mark = StepTimer(), time.perf_counter()
        for batch in shard.iter_torch_batches(batch_size=loop.batch_size, drop_last=True):
            t_data = time.perf_counter()
            batch = normalize_batch(batch, device)
            model.train()
            with autocast:
                out = model(batch)
            loss = out["loss"]
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            if optim_cfg.grad_clip:
                torch.nn.utils.clip_grad_norm_(params, optim_cfg.grad_clip)
            optimizer.step()
            scheduler.step()
            step += 1
            epoch_steps += 1
            t_end = time.perf_counter()
            timer.wait_s += t_data - t_mark
            timer.step_s += t_end - t_data
            timer.clips += _batch_size(batch)
            t_mark = t_end
            scalars = {k: float(v.detach()) if isinstance(v, torch.Tensor) else float(v)
                       for k, v in out.items() if _is_scalar(v)}
            for k, v in scalars.items():  # a method may report a metric on some steps only
                epoch_metrics[k] = epoch_metrics.get(k, 0.0) + v
                epoch_counts[k] = epoch_counts.get(k, 0) + 1
            if step % loop.log_every_n_steps == 0:
                metrics = {**scalars, "lr": scheduler.get_last_lr()[0], "epoch": epoch, "step": step,
                           **timer.summary(world)}
                if logger:
                    logger.log_metrics({f"train/{k}": v for k, v in metrics.items()}, step=step)
                timer = StepTimer()
                if loop.checkpoint_every_n_steps and step % loop.checkpoint_every_n_steps == 0:
                    _report(metrics, method, optimizer, scheduler, epoch, step, rank, final=False)
                else:
                    ray.train.report(metrics)
                # Ray Train 2.60 drains each worker's report queue every ~2 s, so a report can
                # block: that time is neither data wait nor compute of the next window.
                t_mark = time.perf_counter()
        epoch += 1
        means = {f"epoch_{k}": v / epoch_counts[k] for k, v in epoch_metrics.items()}
        metrics = {**means, "epoch": epoch, "step": step, "epoch_steps": epoch_steps,
                   "lr": scheduler.get_last_lr()[0]}
        if logger:
            logger.log_metrics({f"epoch/{k}": v for k, v in metrics.items()}, step=epoch)
        _report(metrics, method, optimizer, scheduler, epoch, step, rank, final=epoch == loop.epochs)
    if logger:
        logger.detach()  # deliver what is buffered; the driver ends the run


def _report(metrics, method, optimizer, scheduler, epoch, step, rank, *, final: bool) -> None:
    """``ray.train.report`` with a checkpoint written by rank 0 (the others report metrics only)."""
    import ray.train

    if rank != 0:
        ray.train.report(metrics)
        return
    state = {"model": _unwrap(method).state_dict(), "optimizer": optimizer.state_dict(),
             "scheduler": scheduler.state_dict(), "epoch": epoch, "step": step, "rng": rng_state()}
    with tempfile.TemporaryDirectory(prefix="vidray-ckpt-") as directory:
        save_state(directory, state)
        ray.train.report(metrics, checkpoint=ray.train.Checkpoint.from_directory(directory))


def _is_scalar(value: Any) -> bool:
    return isinstance(value, (int, float)) or (isinstance(value, torch.Tensor) and value.numel() == 1)


class _nullcontext:
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


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


def _clock(name: str | None):
    if not name:
        return None
    import ray

    return ray.get_actor(name)


Builder = Callable[[], nn.Module]


def epoch_clock(name: str, epoch: int = 0):
    """Get or create the named actor that tells the data pipeline which epoch is running.

    The training loop's rank 0 sets it at the start of every epoch, after a barrier, so
    every map task of an epoch draws its clips from ``sample_rng(seed, epoch, video)``.
    """
    import ray

    @ray.remote(num_cpus=0)
    class EpochClock:
        def __init__(self, value: int) -> None:
            self.value = value

        def set(self, value: int) -> None:
            self.value = value

        def get(self) -> int:
            return self.value

    return EpochClock.options(name=name, get_if_exists=True, lifetime="detached").remote(epoch)


def fit(*, build_method: Builder, datasets: dict, optim: OptimConfig, loop: LoopConfig, num_workers: int,
        use_gpu: bool, cpus_per_worker: float, run_name: str, storage_path: str, steps_per_epoch: int,
        tracking: dict | None = None, clock_name: str | None = None):
    """Run :func:`train_loop_per_worker` on ``num_workers`` Ray Train workers; returns the Result.

    NCCL on GPUs, gloo on CPUs. Checkpoints go to ``storage_path/run_name`` (a local
    folder or an object-store URL); a run with the same name there resumes.
    """
    import ray.train
    from ray.train.torch import TorchConfig, TorchTrainer

    from pipelines.io import storage

    fs, path = storage.get_fs(storage_path)
    filesystem = None
    if storage.protocol(storage_path) == "file":
        path = os.path.abspath(path)
    else:
        import pyarrow.fs

        filesystem = pyarrow.fs.PyFileSystem(pyarrow.fs.FSSpecHandler(fs))
    config = {"build_method": build_method, "optim": optim, "loop": loop,
              "steps_per_epoch": steps_per_epoch, "tracking": tracking, "epoch_clock": clock_name}
    trainer = TorchTrainer(
        train_loop_per_worker, train_loop_config=config, datasets=datasets,
        torch_config=TorchConfig(backend="nccl" if use_gpu else "gloo"),
        scaling_config=ray.train.ScalingConfig(num_workers=num_workers, use_gpu=use_gpu,
                                               resources_per_worker={"CPU": cpus_per_worker}),
        run_config=ray.train.RunConfig(
            name=run_name, storage_path=path, storage_filesystem=filesystem,
            failure_config=ray.train.FailureConfig(max_failures=loop.max_failures),
            checkpoint_config=ray.train.CheckpointConfig(num_to_keep=loop.keep_checkpoints)))
    return trainer.fit()
