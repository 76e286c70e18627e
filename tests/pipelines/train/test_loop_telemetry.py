"""The loop takes the pipeline's telemetry columns out of every batch, reports them per epoch
and logs the data-stage plot."""

import torch
from torch import nn

from pipelines.data import telemetry
from pipelines.train.loop import LoopConfig, TrainTask, end_epoch, progress_line, run_epoch, setup
from pipelines.train.optim import OptimConfig


class Strict(nn.Module):
    """Fails if a telemetry column reaches it."""

    def __init__(self) -> None:
        super().__init__()
        self.w = nn.Linear(1, 1)

    def forward(self, batch):
        assert not set(batch) & set(telemetry.COLUMNS), sorted(batch)
        x = batch["rgb"].mean(dim=(1, 2, 3, 4)).unsqueeze(1)
        return {"loss": (self.w(x) ** 2).mean()}


class TimedShard:
    """Batches as the pipeline yields them: video, label and the four telemetry columns."""

    def iter_torch_batches(self, batch_size: int, drop_last: bool):
        for _ in range(3):
            yield {"rgb": torch.zeros((batch_size, 2, 4, 4, 3), dtype=torch.uint8),
                   "label_index": torch.zeros(batch_size, dtype=torch.int64),
                   "t_decode_ms": torch.full((batch_size,), 4.0), "t_augment_ms": torch.full((batch_size,), 2.0),
                   "t_arrow_ms": torch.full((batch_size,), 0.5),
                   "bytes_read": torch.full((batch_size,), 2048, dtype=torch.int64)}


class Sink:
    def __init__(self) -> None:
        self.reports = []

    def report(self, metrics, checkpoint_dir=None):
        self.reports.append(dict(metrics))


class Logger:
    def __init__(self) -> None:
        self.metrics, self.artifacts = [], []

    def log_metrics(self, metrics, step=None):
        self.metrics.append(dict(metrics))

    def log_artifact(self, path, artifact_path=None, name=None):
        self.artifacts.append((open(path, "rb").read(8), artifact_path, str(path).rsplit("/", 1)[-1]))

    def flush_if_reachable(self):
        return True


def test_telemetry_becomes_epoch_metrics_and_a_plot(capsys):
    task = TrainTask(build_method=Strict, video_columns={"rgb": "rgb"}, optim=OptimConfig(lr=0.1),
                     loop=LoopConfig(epochs=2, batch_size=2, log_every_n_steps=1), steps_per_epoch=3, name="t")
    state, sink, logger = setup(task, torch.device("cpu"), 0, 1), Sink(), Logger()
    for _ in range(2):
        metrics = end_epoch(state, task, run_epoch(state, task, TimedShard(), sink, logger), sink, logger)
    assert metrics["epoch_data_decode_ms"] == 4.0 and metrics["epoch_data_augment_ms"] == 2.0
    assert metrics["epoch_data_arrow_ms"] == 0.5 and metrics["epoch_data_read_kb"] == 2.0
    assert 0.0 <= metrics["epoch_data_wait_frac"] <= 1.0
    assert "epoch/epoch_data_decode_ms" in logger.metrics[-1]
    assert [a[1:] for a in logger.artifacts] == [("plots", "data_stages.png")] * 2
    assert logger.artifacts[0][0].startswith(b"\x89PNG")
    assert len(state.stage_history) == 2 and state.stage_history[-1]["decode"] == 4.0
    assert "decode/aug/arrow ms 4.0/2.0/0.5" in capsys.readouterr().out


def test_no_telemetry_no_data_metrics():
    totals = telemetry.StageTotals()
    batch = {"rgb": torch.zeros(2)}
    assert totals.take(batch) is batch and telemetry.epoch_metrics(totals) == {}
    line = progress_line(TrainTask(build_method=Strict, video_columns={}), {"epoch": 1, "step": 1}, 1.0)
    assert "decode" not in line
