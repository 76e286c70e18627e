"""The Ray Train runtime: a worker killed mid-epoch resumes from a mid-epoch checkpoint with the
planned number of steps, and a re-submitted run with the same name continues where it stopped;
on 2 gloo workers with one Ray Data execution per epoch, and on one worker with an
epoch-spanning dataset (:mod:`pipelines.data.epochs`: batches never mix epochs, and a
restarted run's execution begins at its resumed epoch). The workers' agreement on an epoch's
batches is checked in ``tests/pipelines/data/test_epochs.py``."""

import dataclasses
import os
import sys
from pathlib import Path

import cloudpickle
import numpy as np
import pytest
import torch
from torch import nn

from pipelines.config import ScalingConfig
from pipelines.train.checkpoint import load_checkpoint_state
from pipelines.train.loop import LoopConfig, TrainTask
from pipelines.train.optim import OptimConfig
from pipelines.train.runtime import fit

pytestmark = pytest.mark.slow
cloudpickle.register_pickle_by_value(sys.modules[__name__])  # Ray workers unpickle this module's classes


class ToyMethod(nn.Module):
    """Regresses the label from the mean pixel; logs every step it trains and can crash once."""

    def __init__(self, log_path: str, crash_at_step: int | None) -> None:
        super().__init__()
        self.w = nn.Linear(1, 1)
        self.log_path, self.crash_at_step = log_path, crash_at_step
        self.register_buffer("steps", torch.zeros((), dtype=torch.long))  # part of the checkpoint

    def forward(self, batch):
        self.steps += 1
        import ray.train

        if ray.train.get_context().get_world_rank() == 0:
            if "epoch_seen" in batch:  # the epoch the rows were drawn for (epoch-spanning toy data)
                with open(self.log_path + ".epochs", "a") as f:
                    f.write(" ".join(str(int(e)) for e in batch["epoch_seen"]) + "\n")
            with open(self.log_path, "a") as f:
                f.write(f"{int(self.steps)}\n")
            marker = self.log_path + ".crashed"
            if self.crash_at_step == int(self.steps) and not os.path.exists(marker):
                open(marker, "w").close()
                os._exit(1)  # a worker dies mid-epoch
        x = batch["rgb_0"].mean(dim=(1, 2, 3, 4)).unsqueeze(1)
        loss = ((self.w(x).squeeze(1) - batch["label_index"].float()) ** 2).mean()
        return {"loss": loss}


def _build(log_path, crash_at_step):
    return ToyMethod(log_path, crash_at_step)


def _dataset(ray, n=16):
    rng = np.random.default_rng(0)
    items = [{"rgb_0": rng.integers(0, 255, (2, 4, 4, 3), dtype=np.uint8), "label_index": i % 2} for i in range(n)]
    return ray.data.from_items(items)


class _SpanRows:
    """Toy ``span_stage``: descriptor rows ``(offset, i)`` to row ``i`` of epoch ``clock + offset``."""

    def __init__(self, clock, total: int) -> None:
        self.clock, self.total = clock, total

    def __call__(self, batch):
        base = self.clock.get()
        epochs = base + batch["offset"]
        keep = epochs < self.total
        rng = np.random.default_rng(int(base))
        n = int(keep.sum())
        return {"rgb_0": rng.integers(0, 255, (n, 2, 4, 4, 3), dtype=np.uint8),
                "label_index": batch["i"][keep] % 2, "epoch": epochs[keep], "epoch_seen": epochs[keep]}


def _span_dataset(ray, clock, total: int, n=16, span=2):
    descs = [{"offset": k, "i": i} for k in range(span) for i in range(n)]
    return ray.data.from_items(descs, override_num_blocks=span * n // 2).map_batches(
        _SpanRows(clock, total), batch_size=None)


def _steps(log_path):
    return [int(x) for x in Path(log_path).read_text().split()]


@pytest.mark.parametrize("span", [False, True], ids=["per_epoch", "epoch_spanning"])
def test_worker_crash_resumes_from_checkpoint_and_resubmission_continues(ray_cluster, tmp_path, span):
    import functools

    from pipelines.data.clock import epoch_clock

    log_path = str(tmp_path / "steps.log")
    clock = epoch_clock(f"vidray-test-clock-{tmp_path.name}") if span else None
    # 16 rows / (2 workers x batch 2, or 1 x 4) = 4 steps per epoch; checkpoints at every epoch end and every 5 steps;
    # crash at step 7: the latest checkpoint is step 5's, one step into epoch 2
    # as run_phase: several workers re-execute the dataset each epoch, one worker spans epochs
    workers, batch = (1, 4) if span else (2, 2)
    kwargs = dict(scaling=ScalingConfig(num_workers=workers, use_gpu=False, cpus_per_worker=0.5), run_name="toy",
                  storage_path=str(tmp_path / "runs"))
    task = TrainTask(build_method=functools.partial(_build, log_path, 7), video_columns={"rgb_0": "rgb"},
                     optim=OptimConfig(lr=0.01), steps_per_epoch=4,
                     loop=LoopConfig(epochs=3, batch_size=batch, log_every_n_steps=1, checkpoint_every_n_steps=5,
                                     max_failures=1), epoch_clock=clock, epochs_span=span)
    data = (lambda total: _span_dataset(ray_cluster, clock, total)) if span else (lambda _: _dataset(ray_cluster))
    result = fit(task, datasets={"train": data(3)}, **kwargs)
    assert result.error is None
    steps = _steps(log_path)
    assert os.path.exists(log_path + ".crashed")
    restart = steps.index(6, steps.index(7))  # after the crash at step 7, training restarted ...
    assert steps[:7] == list(range(1, 8)) and steps[restart:] == list(range(6, 13))  # ... from step 5's checkpoint
    state = load_checkpoint_state(result.checkpoint)  # epoch 2 skipped its first batch: 12 steps, not 13
    assert (state["epoch"], state["step"], int(state["model"]["steps"])) == (3, 12, 12)

    if not span:  # resubmission (the checkpoint found by run name) does not depend on it: checked once, below
        return
    # rank 0's batches, in order: one epoch each, the resumed epoch again after the crash
    seen = [{int(e) for e in line.split()} for line in Path(log_path + ".epochs").read_text().splitlines()]
    assert all(len(epochs) == 1 for epochs in seen)
    seen = [epochs.pop() for epochs in seen]
    assert seen[:7] == [0] * 4 + [1] * 3 and seen[restart:] == [1] * 3 + [2] * 4

    Path(log_path).unlink()
    task = dataclasses.replace(task, build_method=functools.partial(_build, log_path, None),
                               loop=LoopConfig(epochs=4, batch_size=batch, log_every_n_steps=1, max_failures=0))
    again = fit(task, datasets={"train": data(4)}, **kwargs)
    assert again.error is None
    assert _steps(log_path) == [13, 14, 15, 16]  # the same run name resumed at epoch 3, step 12
    assert load_checkpoint_state(again.checkpoint)["epoch"] == 4
    clock.close()
