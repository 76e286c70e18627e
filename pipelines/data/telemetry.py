"""Per-stage telemetry of the data plane: columns the decode tasks add, sums the trainer takes.

Decode tasks (:mod:`pipelines.data.tasks`, with ``LoaderOptions(telemetry=True)``, the
default) add one value per sample (:data:`COLUMNS`):

* ``t_decode_ms``: wall time of the sample's reads (its ``read_frames`` calls);
* ``t_augment_ms``: the rest of the sample's wall time (index sampling, augmentation);
* ``t_arrow_ms``: the samples' copies into the block's buffer and its Arrow conversion, divided by its rows;
* ``bytes_read``: bytes the worker process read from files during the sample's reads
  (``rchar`` of ``/proc/self/io``; 0 where there is none).

The training loop (:mod:`pipelines.train.loop`) pops them from every batch before the model
sees it (:meth:`StageTotals.take`), and reports per epoch, per clip
(:func:`epoch_metrics`): ``data_decode_ms``, ``data_augment_ms``, ``data_arrow_ms``,
``data_read_kb``, next to the loop's own ``data_wait_frac``; :func:`plot_stages` draws the
epochs as stacked bars. Data-worker time per clip and trainer time per clip side by side
show which stage bounds training: a high data wait with decode the largest bar is
"decode-bound". The time Ray spends moving blocks to the trainer and turning them into
tensors is inside the trainer's data wait. A ``batch_stage`` (e.g. volume augmentation)
is not in these columns. A materialised dataset repeats the telemetry of the pass that
made it.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

COLUMNS: dict[str, tuple[str, tuple]] = {"t_decode_ms": ("float32", ()), "t_augment_ms": ("float32", ()),
                                         "t_arrow_ms": ("float32", ()), "bytes_read": ("int64", ())}
STAGES = ("decode", "augment", "arrow")  # data-worker stages, bottom to top of the bars


def read_bytes() -> int:
    """Bytes this process has read so far (``rchar``: file reads, page cache included); 0 if unknown."""
    try:
        with open("/proc/self/io", "rb") as f:
            return int(f.readline().split()[1])  # the first line is "rchar: N"
    except (OSError, IndexError, ValueError):
        return 0


@dataclasses.dataclass
class StageTotals:
    """Sums of the telemetry columns over the batches of an epoch."""

    decode_ms: float = 0.0
    augment_ms: float = 0.0
    arrow_ms: float = 0.0
    bytes_read: float = 0.0
    clips: int = 0

    def take(self, batch: dict[str, Any]) -> dict[str, Any]:
        """Remove the telemetry columns from ``batch`` (in place) and add their sums; returns ``batch``."""
        values = {name: batch.pop(name) for name in COLUMNS if name in batch}
        if "t_decode_ms" in values:
            self.clips += len(values["t_decode_ms"])
            for name, value in values.items():
                attr = name.removeprefix("t_")
                setattr(self, attr, getattr(self, attr) + float(value.sum()))
        return batch


def epoch_metrics(totals: StageTotals) -> dict[str, float]:
    """Per-clip means of an epoch (``{}`` when no batch carried telemetry)."""
    if not totals.clips:
        return {}
    n = totals.clips
    return {"data_decode_ms": totals.decode_ms / n, "data_augment_ms": totals.augment_ms / n,
            "data_arrow_ms": totals.arrow_ms / n, "data_read_kb": totals.bytes_read / n / 1024}


def history_row(metrics: Mapping[str, float], wait_s: float, step_s: float, clips: int) -> dict[str, float]:
    """One epoch of :func:`plot_stages`: data-worker ms per clip by stage, trainer ms per clip."""
    per_clip = 1000 / clips if clips else 0.0
    row = {stage: metrics.get(f"data_{stage}_ms", 0.0) for stage in STAGES}
    row.update(wait=wait_s * per_clip, step=step_s * per_clip)
    return row


def plot_stages(history: Sequence[Mapping[str, float]], path: str | Path) -> Path:
    """Stacked bars per epoch: data-worker ms per clip (decode, augment, Arrow) and trainer ms per
    clip (data wait, step); the title names the largest data stage and the last data wait."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(9, 3.4))  # no pyplot: no global state, no GUI backend
    FigureCanvasAgg(fig)
    epochs = list(range(1, len(history) + 1))
    panels = ((STAGES, "data workers: ms per clip"), (("wait", "step"), "trainer: ms per clip"))
    for i, (keys, title) in enumerate(panels):
        ax = fig.add_subplot(1, 2, i + 1)
        bottom = [0.0] * len(history)
        for key in keys:
            values = [row.get(key, 0.0) for row in history]
            ax.bar(epochs, values, bottom=bottom, label=key)
            bottom = [b + v for b, v in zip(bottom, values)]
        ax.set_title(title)
        ax.set_xlabel("epoch")
        ax.set_xticks(epochs if len(epochs) <= 20 else epochs[::max(1, len(epochs) // 10)])
        ax.legend(fontsize=8)
        ax.grid(alpha=0.3, axis="y")
    fig.suptitle(_headline(history[-1]) if history else "no epochs", fontsize=10)
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    return path


def _headline(row: Mapping[str, float]) -> str:
    total = row.get("wait", 0.0) + row.get("step", 0.0)
    wait = row.get("wait", 0.0) / total if total else 0.0
    largest = max(STAGES, key=lambda s: row.get(s, 0.0))
    return f"last epoch: data wait {100 * wait:.0f}% of trainer time; largest data stage: {largest}"
