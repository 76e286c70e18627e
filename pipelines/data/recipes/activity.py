"""Activity-detection finetuning's sample: a strided window of a multi-action video, labels on every raw frame.

Seed 000 L733 (Charades finetuning): 16 frames at stride 10. The SSDet / Coarse-Fine code keeps
the labels of all raw frames the window spans (160 for 16 x 10) and interpolates the network's
16 per-step logits linearly to them (``align_corners=False``: step i sits at the centre of raw
frames ``[i s, (i + 1) s)``); so does this recipe: ``frame_labels`` covers the ``L = T * stride``
frames from the first sampled frame on, and ``frame_valid`` is 0 for the frames past the video's
end (a short video's clamped window), which the localisation loss ignores.

Columns (``T`` frames, ``S`` crop, ``L`` raw frames spanned, ``K`` classes)::

    rgb: uint8[B,T,S,S,3]; frame_labels: float32[B,L,K]; frame_valid: float32[B,L];
    frame_idx: int64[B,T]; aug_caption: string

Labels come from the manifest's ``segments`` (``start_s <= frame / fps <= end_s``, both ends
inclusive as the official Charades scorer); a video without segments is all background. A
malformed ``segments`` value (not JSON, a class outside ``[0, K)``, start after end) is a
:class:`~pipelines.io.probe.MediaError` of kind ``bad_annotation``: the video is quarantined with
the reason and counted, never silently dropped.
"""

from __future__ import annotations

import dataclasses
import json

import numpy as np

from pipelines.data import augment, sampling
from pipelines.data.recipes.base import (Columns, PreviewRow, Read, RecipeConfig, _small, frame_columns,
                                         labels_caption, media_error)


def parse_segments(row: dict, num_classes: int) -> list[dict]:
    """The item's segments, checked; raises ``MediaError("bad_annotation")`` naming what is wrong."""
    try:
        segments = json.loads(row.get("segments") or "[]")
        out = [{"label_index": int(s["label_index"]), "start_s": float(s["start_s"]), "end_s": float(s["end_s"])}
               for s in segments]
    except (ValueError, TypeError, KeyError) as exc:
        raise media_error("bad_annotation", row["uri"], f"unreadable segments: {exc}") from None
    for s in out:
        if not 0 <= s["label_index"] < num_classes:
            raise media_error("bad_annotation", row["uri"], f"segment class {s['label_index']} outside [0, {num_classes})")
        if s["start_s"] > s["end_s"] or not np.isfinite([s["start_s"], s["end_s"]]).all():
            raise media_error("bad_annotation", row["uri"], f"segment {s['start_s']}..{s['end_s']} s is not a span")
    return out


def window_labels(num_frames: int, fps: float, segments: list[dict], idx_T: np.ndarray, stride: int,
                  num_classes: int) -> tuple[np.ndarray, np.ndarray]:
    """Labels of every raw frame from ``idx_T[0]`` over ``T * stride`` frames, and their validity.

    Returns:
        (labels_LK float32, valid_L float32): frames at or past ``num_frames`` are invalid and all zero.
    """
    raw_L = idx_T[0] + np.arange(len(idx_T) * stride)
    valid_L = (raw_L < num_frames).astype(np.float32)
    labels_LK = sampling.segment_labels(np.minimum(raw_L, num_frames - 1), fps, segments, num_classes=num_classes)
    return labels_LK * valid_L[:, None], valid_L


@dataclasses.dataclass(frozen=True)
class ActivityRecipe(RecipeConfig):
    """A strided window of a multi-action video with per-raw-frame multi-hot labels."""

    name = "activity"
    needs_classes = True
    supports_device = True

    def span(self) -> int:
        """``L``, the raw frames one window's labels cover."""
        return self.clip_len * self.stride

    def columns(self, num_classes: int | None) -> Columns:
        T, L = self.clip_len, self.span()
        return {**self.view_columns("rgb", T), "frame_labels": ("float32", (L, num_classes)),
                "frame_valid": ("float32", (L,)), "frame_idx": ("int64", (T,)), "aug_caption": ("string", ())}

    def video_columns(self) -> dict[str, str]:
        return {"rgb": "rgb"}

    def sample(self, row: dict, rng: np.random.Generator, read: Read, num_classes: int | None) -> dict:
        segments = parse_segments(row, num_classes)
        n = row["num_frames"]
        idx = self.random_clip(n, rng)
        labels_LK, valid_L = window_labels(n, row["fps"], segments, idx, self.stride, num_classes)
        frames = read(row["video_id"], row["uri"], idx)
        p = augment.sample_params(self.augment, rng, len(idx), *frames.shape[1:3])
        return {**self.view("rgb", frames, p), "frame_labels": labels_LK, "frame_valid": valid_L,
                "frame_idx": idx, "aug_caption": p.caption()}

    def preview_rows(self, batch: dict, i: int, head: str, max_cols: int, max_views: int) -> list[PreviewRow]:
        idx = batch["frame_idx"][i]
        cols = frame_columns(len(idx), max_cols)
        captions = [f"f{idx[c]}" for c in cols]
        if "frame_labels" in batch:  # the label of the raw frame each sampled frame is
            captions = [f"{f} {labels_caption(batch['frame_labels'][i][c * self.stride])}"
                        for f, c in zip(captions, cols)]
        lines = [head, str(batch["aug_caption"][i]) if "aug_caption" in batch else ""]
        return [PreviewRow(lines, batch["rgb"][i][cols], captions)]

    def debug_size(self) -> "ActivityRecipe":
        return dataclasses.replace(self, clip_len=8, stride=2, augment=_small(self.augment))


def preset() -> ActivityRecipe:
    """Charades finetuning (seed 000 L733): 16 frames at stride 10, X3D crop to 224 with flip."""
    return ActivityRecipe(clip_len=16, stride=10, short="clamp", augment=augment.x3d_detection())
