"""The loop's steps and hooks without a cluster: gradient accumulation, parameter groups,
the validation hook, the report sink, progress lines, checkpoint resume (also from the
middle of an epoch) and metrics delivered to MLflow before each checkpoint."""

import dataclasses

import pytest
import torch
from torch import nn

from pipelines.train.checkpoint import load_state
from pipelines.train.loop import LoopConfig, TrainTask, end_epoch, progress_line, run_epoch, setup
from pipelines.train.optim import OptimConfig, param_groups


class Linear(nn.Module):
    """Regresses ``label_index`` from the mean of the (normalised) ``rgb`` clip."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.backbone = nn.Linear(1, 1)
        self.head = nn.Linear(1, 1)

    def forward(self, batch):
        x = batch["rgb"].mean(dim=(1, 2, 3, 4)).unsqueeze(1)
        loss = ((self.head(self.backbone(x)).squeeze(1) - batch["label_index"].float()) ** 2).mean()
        return {"loss": loss, "half": torch.tensor(0.5)}


class Shard:
    """What ``ray.train.get_dataset_shard`` gives the loop: ``iter_torch_batches``."""

    def __init__(self, n: int = 8) -> None:
        g = torch.Generator().manual_seed(1)
        self.rgb = torch.randint(0, 256, (n, 2, 4, 4, 3), generator=g, dtype=torch.uint8)
        self.labels = torch.arange(n) % 3

    def iter_torch_batches(self, batch_size: int, drop_last: bool):
        for s in range(0, len(self.labels) - batch_size + 1, batch_size):
            yield {"rgb": self.rgb[s:s + batch_size], "label_index": self.labels[s:s + batch_size]}


class ListSink:
    def __init__(self) -> None:
        self.reports: list[tuple[dict, str | None]] = []
        self.states: list[dict] = []

    def report(self, metrics, checkpoint_dir=None):
        self.reports.append((dict(metrics), checkpoint_dir))
        if checkpoint_dir:
            self.states.append(load_state(checkpoint_dir))


def _task(**kw) -> TrainTask:
    loop = kw.pop("loop", LoopConfig(epochs=2, batch_size=2, log_every_n_steps=1))
    return TrainTask(build_method=Linear, video_columns={"rgb": "rgb"}, optim=OptimConfig(lr=0.1, schedule="constant"),
                     loop=loop, steps_per_epoch=4, name="toy", **kw)


def test_gradient_accumulation_equals_the_large_batch():
    big = _task(loop=LoopConfig(epochs=1, batch_size=4, log_every_n_steps=1))
    acc = _task(loop=LoopConfig(epochs=1, batch_size=2, accumulate_steps=2, log_every_n_steps=1))
    states = []
    for task in (big, acc):
        state = setup(task, torch.device("cpu"), 0, 1)
        stats = run_epoch(state, task, Shard(8), ListSink(), None)
        states.append(state)
        assert state.step == 2 and stats.steps == 2
    for a, b in zip(states[0].method.parameters(), states[1].method.parameters()):
        torch.testing.assert_close(a, b)


def test_lr_mults_make_parameter_groups():
    groups = param_groups(Linear(), OptimConfig(lr=0.1, lr_mults=("head.=10",)))
    assert sorted((g["name"], g["lr"], len(g["params"])) for g in groups) == [("default", 0.1, 2), ("head.", 1.0, 2)]
    with pytest.raises(ValueError, match="name_prefix=multiplier"):
        param_groups(Linear(), OptimConfig(lr_mults=("head",)))


def test_validation_hook_sink_progress_line_and_resume(capsys):
    calls = []

    def validate(method, epoch, device):
        calls.append((epoch, method.training))
        return {"top1": 50.0 + epoch}

    task, sink = _task(validate=validate), ListSink()
    state = setup(task, torch.device("cpu"), 0, 1)
    for _ in range(task.loop.epochs):
        end_epoch(state, task, run_epoch(state, task, Shard(8), sink, None), sink, None)
    assert calls == [(1, False), (2, False)]  # rank 0, eval mode, after each epoch
    epochs = [m for m, ckpt in sink.reports if ckpt]
    assert [m["val_top1"] for m in epochs] == [51.0, 52.0] and epochs[-1]["epoch_half"] == 0.5
    assert len([m for m, ckpt in sink.reports if not ckpt]) == 8  # one window report per step
    out = capsys.readouterr().out.splitlines()
    assert out[0].startswith("[toy] epoch 1/2  step 4  loss ") and "val_top1 51" in out[0] and "data-wait" in out[0]
    # resume from the last checkpoint: counters and weights come back
    saved = sink.states[-1]
    assert (saved["epoch"], saved["step"]) == (2, 8)

    class Ckpt:
        def __init__(self, state):
            self.state = state

    import pipelines.train.loop as loop_mod

    orig = loop_mod.load_checkpoint_state
    loop_mod.load_checkpoint_state = lambda c: c.state
    try:
        again = setup(dataclasses.replace(task, loop=dataclasses.replace(task.loop, epochs=3)), torch.device("cpu"),
                      0, 1, checkpoint=Ckpt(saved))
    finally:
        loop_mod.load_checkpoint_state = orig
    assert (again.epoch, again.step) == (2, 8)
    torch.testing.assert_close(again.method.head.weight, state.method.head.weight)


def test_progress_line_is_one_readable_line():
    line = progress_line(_task(), {"epoch": 1, "step": 4, "epoch_loss": 0.25, "epoch_steps": 4,
                                   "epoch_clips_per_s": 12.5, "epoch_data_wait_frac": 0.3}, 3.2)
    assert line == "[toy] epoch 1/2  step 4  loss 0.25  clips/s 12.5  data-wait 30%  3s"


class Crash(RuntimeError):
    """The worker dies (raised by :class:`CrashingSink`)."""


class CrashingSink(ListSink):
    """A :class:`ListSink` whose worker dies when it reports ``crash_at_step``."""

    def __init__(self, crash_at_step: int) -> None:
        super().__init__()
        self.crash_at_step = crash_at_step

    def report(self, metrics, checkpoint_dir=None):
        if metrics.get("step") == self.crash_at_step and not checkpoint_dir:
            raise Crash(f"killed at step {self.crash_at_step}")
        super().report(metrics, checkpoint_dir)


def _train(state, task, shard, sink, logger=None):
    """What ``train_loop_per_worker`` does on one worker: the remaining epochs."""
    while state.epoch < task.loop.epochs:
        end_epoch(state, task, run_epoch(state, task, shard, sink, logger), sink, logger)


@pytest.mark.parametrize("accumulate", [1, 2])
def test_a_resume_from_a_mid_epoch_checkpoint_ends_like_an_uninterrupted_run(accumulate, monkeypatch, capsys):
    # 4 optimiser steps per epoch, 2 epochs, a checkpoint every 3 steps: the last one before the
    # crash at step 7 is mid-epoch 2 (step 6, 2 steps into the epoch).
    loop = LoopConfig(epochs=2, batch_size=2, accumulate_steps=accumulate, log_every_n_steps=1,
                      checkpoint_every_n_steps=3)
    task = dataclasses.replace(_task(loop=loop), optim=OptimConfig(lr=0.1, schedule="cosine"))
    shard = Shard(4 * 2 * accumulate)
    whole = setup(task, torch.device("cpu"), 0, 1)
    _train(whole, task, shard, ListSink())
    assert whole.step == 8

    crashing = CrashingSink(crash_at_step=7)
    with pytest.raises(Crash):
        _train(setup(task, torch.device("cpu"), 0, 1), task, shard, crashing)
    saved = crashing.states[-1]
    assert (saved["epoch"], saved["step"]) == (1, 6)

    import pipelines.train.loop as loop_mod

    monkeypatch.setattr(loop_mod, "load_checkpoint_state", lambda checkpoint: checkpoint)
    resumed, sink = setup(task, torch.device("cpu"), 0, 1, checkpoint=saved), ListSink()
    _train(resumed, task, shard, sink)
    assert [m["step"] for m, ckpt in sink.reports if "epoch_steps" not in m] == [7, 8]  # not 7..10
    assert sink.reports[-1][0]["epoch_steps"] == 4
    assert saved["epoch_step"] == 2 and sink.states[-1]["epoch_step"] == 0  # in the epoch; none after its end
    assert (resumed.epoch, resumed.step) == (whole.epoch, whole.step) == (2, 8)
    assert resumed.scheduler.get_last_lr() == pytest.approx(whole.scheduler.get_last_lr())  # cosine's end: 0
    assert resumed.scheduler.get_last_lr()[0] == pytest.approx(0.0, abs=1e-12)
    for a, b in zip(resumed.method.parameters(), whole.method.parameters()):
        torch.testing.assert_close(a, b)  # the same batches: the skipped ones were those trained on
    assert f"resuming at its step 2 (global step 6); skipped the {2 * accumulate} batches" in capsys.readouterr().out


def test_every_metric_is_in_mlflow_before_its_checkpoint(tmp_path, monkeypatch):
    from mlflow import MlflowClient

    from pipelines.tracking import RunLogger, tracking_uri

    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.setenv("VIDRAY_HOME", str(tmp_path))  # the embedded sqlite store, in tmp_path
    logger = RunLogger("checkpoint-flush", flush_every_s=3600.0)  # the periodic flush never comes
    run_id = logger.start("run")
    client, seen = MlflowClient(tracking_uri()), []

    class Sink(ListSink):
        def report(self, metrics, checkpoint_dir=None):
            if checkpoint_dir:  # what MLflow holds when the checkpoint is reported
                seen.append((metrics["step"], sorted(m.step for m in client.get_metric_history(run_id, "train/loss"))))
            super().report(metrics, checkpoint_dir)

    task = _task(loop=LoopConfig(epochs=2, batch_size=2, log_every_n_steps=1, checkpoint_every_n_steps=3))
    _train(setup(task, torch.device("cpu"), 0, 1), task, Shard(8), Sink(), logger)
    assert [step for step, _ in seen] == [3, 4, 6, 8]
    for step, delivered in seen:
        assert delivered == list(range(1, step + 1)), (step, delivered)
    assert logger.end()
