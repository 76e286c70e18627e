"""Training curves as a PNG, without pyplot (no global state, no GUI backend)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path


def plot_curves(history: Mapping[str, Sequence[float]] | Sequence[Mapping[str, float]],
                path: str | Path, xlabel: str = "epoch") -> Path:
    """One panel per series (``loss``, ``top1``, ``lr``...) to a PNG; returns its path."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    if not isinstance(history, Mapping):  # list of per-epoch dicts -> dict of series
        series: dict[str, list[float]] = {}
        for row in history:
            for key, value in row.items():
                series.setdefault(key, []).append(value)
        history = series
    keys = [k for k, v in history.items() if len(v)]
    fig = Figure(figsize=(4 * max(1, len(keys)), 3))  # no pyplot: no global state, no GUI backend
    FigureCanvasAgg(fig)
    for i, key in enumerate(keys):
        ax = fig.add_subplot(1, len(keys), i + 1)
        ax.plot(range(len(history[key])), history[key], marker="." if len(history[key]) < 50 else None)
        ax.set_title(key)
        ax.set_xlabel(xlabel)
        if key == "lr" or key.endswith("/lr"):
            ax.ticklabel_format(axis="y", style="sci", scilimits=(-2, 2))
        ax.grid(alpha=0.3)
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    return path
