"""Temporal activity detection evaluation: whole videos through the network, Charades metrics.

Test protocol (seed 000 L442, L462; the SSDet / Coarse-Fine code): every video runs through the
network whole and fully convolutionally in time (no clip cropping): frames ``0, s, 2s, ...`` at
the detection stride ``s``, one centre view (short side scaled to the crop, centre crop), the
per-step logits interpolated linearly to every raw frame (:meth:`X3D.forward_frames`), then a
sigmoid. An ensemble (one model per augmentation, seed 000 L715-L723) scores the mean of its
models' sigmoids.

Metrics (:mod:`vidmodels.metrics`), all in %:

* ``map25`` / ``wap25``: the official ``Charades_v1_localize`` protocol, 25 equally spaced times
  per video (``t_j = (j - 1) L / 25`` with ``L`` the manifest's ``duration_s``), unweighted and
  class-weighted mean AP (the thesis' tables are likely the weighted one: report both);
* ``frame_map`` / ``frame_wap``: AP over every frame of every video (the ablation protocol);
* ``single_map`` / ``multi_map``: every-frame mAP on the frames with exactly one label and with
  more than one (Table 4.4e).

Counted, never dropped silently: ``videos`` scored, ``videos_failed`` (decode errors, each with
its reason in ``failures``), ``videos_background`` (no segments: every frame is background),
``classes_without_positives`` (left out of both means).
"""

from __future__ import annotations

import dataclasses
import json
from typing import Any, Callable, Sequence

import numpy as np
import torch

from pipelines.data import augment, sampling

ScoreFn = Callable[[torch.Tensor, int], torch.Tensor]  # (x_BCTHW, num_frames) -> logits (B, num_frames, K)


@dataclasses.dataclass(frozen=True)
class VideoResult:
    """One video's every-frame probabilities and labels."""

    video_id: str
    scores_NK: np.ndarray
    labels_NK: np.ndarray
    fps: float
    duration_s: float
    segments: list[dict]


@dataclasses.dataclass(frozen=True)
class DetectionEval:
    """Where and how to score.

    Attributes:
        manifest, split: the multi-action videos scored.
        num_classes: K.
        stride: frames between network steps (10 in the seed).
        crop_size: the centre crop (224; 64 at debug size).
        max_steps: at most this many network steps per video (longer videos are scored in
            consecutive chunks of it, each fully convolutional); bounds memory.
        limit: the split's first N videos only (validation during training).
        points: sampling times per video of the official protocol (25).
    """

    manifest: str
    split: str
    num_classes: int
    stride: int = 10
    crop_size: int = 224
    max_steps: int = 256
    limit: int | None = None
    points: int = 25


def rows_of(cfg: DetectionEval) -> list[dict[str, Any]]:
    """The split's manifest rows (``video_id``, ``uri``, ``num_frames``, ``fps``, ``duration_s``, ``segments``)."""
    from pipelines.io import manifest

    table = manifest.read_manifest(cfg.manifest)
    cols = ["video_id", "uri", "num_frames", "fps", "duration_s", "segments", "split"]
    rows = [r for r in table.select(cols).to_pylist() if r["split"] == cfg.split]
    return rows[:cfg.limit] if cfg.limit else rows


def centre_clip(uri: str, num_frames: int, cfg: DetectionEval) -> np.ndarray:
    """Frames ``0, s, 2s, ...`` of the video, one centre view: uint8 ``(T, S, S, 3)``."""
    from pipelines.io.video import read_frames

    frames = read_frames(uri, np.arange(0, num_frames, cfg.stride))
    crop = augment.center_crop_params(*frames.shape[1:3], out_size=cfg.crop_size)
    return augment.apply_crop(frames, crop)


@torch.no_grad()
def video_scores(score_fns: Sequence[ScoreFn], clip_THW3: np.ndarray, num_frames: int, cfg: DetectionEval,
                 device: torch.device) -> np.ndarray:
    """Every-frame probabilities ``(num_frames, K)``: the mean over ``score_fns`` of their sigmoids."""
    from pipelines.data.normalize import normalize_video

    x_BCTHW = normalize_video(torch.from_numpy(np.ascontiguousarray(clip_THW3))[None].to(device), "rgb")
    chunks = []
    for t0 in range(0, x_BCTHW.shape[2], cfg.max_steps):
        part = x_BCTHW[:, :, t0:t0 + cfg.max_steps]
        steps = part.shape[2]
        probs = torch.stack([fn(part, steps * cfg.stride).float().sigmoid() for fn in score_fns]).mean(0)
        chunks.append(probs[0])
    return torch.cat(chunks)[:num_frames].cpu().numpy()


def score_videos(score_fns: Sequence[ScoreFn], cfg: DetectionEval, device: torch.device | str = "cpu",
                 progress: Callable[[str], None] | None = None) -> tuple[list[VideoResult], list[dict]]:
    """Score every video of the split; returns the results and the failures (``video_id``, ``reason``)."""
    from pipelines.io.probe import MediaError

    results, failures = [], []
    for i, row in enumerate(rows_of(cfg)):
        try:
            clip = centre_clip(row["uri"], row["num_frames"], cfg)
        except MediaError as exc:
            failures.append({"video_id": row["video_id"], "uri": row["uri"], "reason": f"{exc.kind}: {exc}"})
            continue
        segments = [dict(s) for s in row["segments"] or []]
        scores = video_scores(score_fns, clip, row["num_frames"], cfg, torch.device(device))
        labels = sampling.segment_labels(np.arange(row["num_frames"]), row["fps"], segments,
                                         num_classes=cfg.num_classes)
        results.append(VideoResult(row["video_id"], scores, labels, row["fps"], row["duration_s"], segments))
        if progress:
            progress(f"scored {i + 1} videos")
    return results, failures


def detection_metrics(results: Sequence[VideoResult], cfg: DetectionEval, failures: Sequence[dict] = ()) -> dict:
    """The module docstring's metrics (in %) and counts, plus ``per_class`` AP arrays for plots."""
    from vidmodels.metrics import charades_map, frame_map, frame_map_by_label_count

    if not results:
        raise ValueError(f"no video of split {cfg.split!r} of {cfg.manifest} could be scored "
                         f"({len(failures)} failed: {[f['reason'] for f in failures][:3]})")
    scores_NK = np.concatenate([r.scores_NK for r in results])
    labels_NK = np.concatenate([r.labels_NK for r in results])
    every = frame_map(scores_NK, labels_NK)
    points = charades_map([r.scores_NK for r in results], [r.segments for r in results],
                          [r.duration_s for r in results], [r.fps for r in results], cfg.num_classes, n=cfg.points)
    by_count = frame_map_by_label_count(scores_NK, labels_NK)
    out = {"map25": 100 * points["map"], "wap25": 100 * points["wap"], "frame_map": 100 * every["map"],
           "frame_wap": 100 * every["wap"],
           **{f"{k}_map": 100 * v["map"] for k, v in by_count.items() if np.isfinite(v["map"])},
           "videos": float(len(results)), "videos_failed": float(len(failures)),
           "videos_background": float(sum(not r.segments for r in results)),
           "classes_without_positives": float(every["classes_without_positives"])}
    return {**out, "per_class_frame": every["per_class"], "per_class_25": points["per_class"],
            "failures": list(failures)}


@dataclasses.dataclass(frozen=True)
class DetectionValidator:
    """Per-epoch validation hook (``TrainTask.validate``): the metrics above on a few test videos."""

    cfg: DetectionEval

    def __call__(self, method: torch.nn.Module, epoch: int, device: torch.device) -> dict[str, float]:
        results, failures = score_videos([method.frame_logits], self.cfg, device)
        metrics = detection_metrics(results, self.cfg, failures)
        return {k: v for k, v in metrics.items() if isinstance(v, float)}


def summary_line(metrics: dict) -> str:
    """``MAP25 12.3  WAP25 14.0  frame mAP 11.2 (1 label 9.8, >1 13.1)  videos 9 (1 background, 0 failed)``."""
    parts = [f"MAP25 {metrics['map25']:.2f}", f"WAP25 {metrics['wap25']:.2f}", f"frame mAP {metrics['frame_map']:.2f}"]
    if "single_map" in metrics and "multi_map" in metrics:
        parts[-1] += f" (1 label {metrics['single_map']:.2f}, >1 {metrics['multi_map']:.2f})"
    parts.append(f"videos {int(metrics['videos'])} ({int(metrics['videos_background'])} all background, "
                 f"{int(metrics['videos_failed'])} failed)")
    return "  ".join(parts)


def to_json(metrics: dict) -> str:
    """The scalar metrics and the failures as JSON (per-class arrays left out)."""
    return json.dumps({k: (round(v, 3) if isinstance(v, float) else v) for k, v in metrics.items()
                       if not k.startswith("per_class")})
