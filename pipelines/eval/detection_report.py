"""After a detection schedule: score the registered detectors on whole test videos, draw, log.

For every finetuning phase the registered ``<model_name>-detector@finetune_<p>`` is loaded (safely,
:func:`pipelines.tracking.load_registered_model`) and scored by :mod:`pipelines.eval.detection`;
an ensemble schedule also scores the mean of its detectors' sigmoids. Each phase's MLflow run gets
``test/<metric>`` (``test_ensemble/<metric>`` for the ensemble), a per-class AP bar chart and a
timeline of a few test videos (true segments under the predicted probabilities), and the table is
printed.
"""

from __future__ import annotations

import os
import tempfile
from typing import Any, Sequence

import numpy as np

from pipelines.eval.detection import VideoResult, detection_metrics, score_videos, summary_line


def class_names(manifest_url: str, num_classes: int) -> list[str]:
    """Class names from the manifest's labels and segments (``c<k>`` where none is recorded)."""
    from pipelines.io import manifest

    table = manifest.read_manifest(manifest_url)
    names: dict[int, str] = {}
    for label, index in zip(table.column("label").to_pylist(), table.column("label_index").to_pylist()):
        if index is not None and label:
            names[index] = label
    for segs in table.column("segments").to_pylist():
        for s in segs or []:
            if s.get("label"):
                names.setdefault(s["label_index"], s["label"])
    return [names.get(k, f"c{k}") for k in range(num_classes)]


def plot_class_ap(per_class_K: np.ndarray, names: Sequence[str], title: str):
    """Bar chart of per-class AP (%); classes without positives are marked, not drawn as 0."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    k = len(names)
    fig, ax = plt.subplots(figsize=(max(4.0, 0.35 * k + 1.5), 3.2))
    ap = np.nan_to_num(np.asarray(per_class_K, float) * 100, nan=0.0)
    missing = ~np.isfinite(np.asarray(per_class_K, float))
    ax.bar(range(k), ap, color=np.where(missing, "lightgrey", "tab:blue"))
    for i in np.flatnonzero(missing):
        ax.text(i, 1, "no pos.", rotation=90, ha="center", va="bottom", fontsize=6)
    ax.set_xticks(range(k), names, rotation=90, fontsize=6)
    ax.set_ylabel("AP (%)")
    ax.set_ylim(0, 100)
    ax.set_title(title, fontsize=9)
    fig.tight_layout()
    return fig


def plot_timelines(results: Sequence[VideoResult], names: Sequence[str], title: str, max_videos: int = 3):
    """Per video: predicted probabilities (heat map, classes x frames) with the true segments outlined."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    shown = list(results)[:max_videos]
    k = len(names)
    fig, axes = plt.subplots(len(shown), 1, figsize=(8, 0.9 + 0.22 * k * len(shown)), squeeze=False)
    for ax, r in zip(axes[:, 0], shown):
        ax.imshow(r.scores_NK.T, aspect="auto", cmap="Blues", vmin=0, vmax=1, interpolation="nearest")
        for c, (t0, t1) in _true_spans(r.labels_NK):
            ax.add_patch(matplotlib.patches.Rectangle((t0 - 0.5, c - 0.45), t1 - t0, 0.9, fill=False,
                                                      edgecolor="tab:red", linewidth=1.0))
        ax.set_yticks(range(k), names, fontsize=6)
        ax.set_title(f"{r.video_id}: predicted (blue) vs true (red)", fontsize=8)
        ax.set_xlabel("frame", fontsize=7)
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    return fig


def _true_spans(labels_NK: np.ndarray):
    """``(class, (first frame, end frame))`` of every run of positive frames."""
    for c in range(labels_NK.shape[1]):
        on = np.concatenate([[0], labels_NK[:, c] > 0, [0]]).astype(np.int8)
        starts, ends = np.flatnonzero(np.diff(on) == 1), np.flatnonzero(np.diff(on) == -1)
        yield from ((c, (s, e)) for s, e in zip(starts, ends))


def log_detection(run_id: str | None, prefix: str, metrics: dict, results: Sequence[VideoResult],
                  names: Sequence[str]) -> None:
    """``<prefix>/<metric>`` and the two plots on ``run_id`` (nothing when tracking is off)."""
    if not run_id:
        return
    from mlflow import MlflowClient

    from pipelines.tracking import tracking_uri

    client = MlflowClient(tracking_uri=tracking_uri())
    for key, value in metrics.items():
        if isinstance(value, float) and np.isfinite(value):
            client.log_metric(run_id, f"{prefix}/{key}", value)
    with tempfile.TemporaryDirectory() as tmp:
        for name, fig in ((f"{prefix}_class_ap.png", plot_class_ap(metrics["per_class_frame"], names,
                                                                    f"{prefix}: every-frame AP per class")),
                          (f"{prefix}_timeline.png", plot_timelines(results, names, prefix))):
            path = os.path.join(tmp, name)
            fig.savefig(path, dpi=100)
            client.log_artifact(run_id, path, "eval")


def report(job, done: Sequence[dict[str, Any]]) -> dict[str, dict]:
    """Score every registered detector of ``done`` (and their ensemble), log and print; returns the metrics."""
    import torch

    from pipelines.methods.detection import eval_config, phases
    from pipelines.tracking import load_registered_model

    fine = {p.name: p for p in phases(job) if p.name.startswith("finetune_")}
    rows = [r for r in done if r["phase"] in fine and r["model"]]
    if not rows:
        print("no detector registered (tracking off?): nothing to evaluate", flush=True)
        return {}
    cfg = eval_config(job, fine[rows[0]["phase"]], split="test")
    names = class_names(cfg.manifest, cfg.num_classes)
    fns, out = [], {}
    for row in rows:
        module, _ = load_registered_model(f"models:/{row['model']}@{row['alias']}")
        fns.append(module.forward_frames)
        out[row["phase"]] = _score_and_log([module.forward_frames], cfg, row["run_id"], "test", names)
    if len(fns) > 1:
        out["ensemble"] = _score_and_log(fns, cfg, rows[0]["run_id"], "test_ensemble", names)
    print(f"\ntest split of {cfg.manifest} (whole videos, stride {cfg.stride}, centre {cfg.crop_size} px):")
    for name, m in out.items():
        print(f"  {name:<18} {summary_line(m)}")
    torch.set_grad_enabled(True)
    return out


def _score_and_log(fns, cfg, run_id, prefix, names) -> dict:
    results, failures = score_videos(fns, cfg)
    for f in failures:
        print(f"  not scored: {f['video_id']} ({f['reason']})", flush=True)
    metrics = detection_metrics(results, cfg, failures)
    log_detection(run_id, prefix, metrics, results, names)
    return metrics
