"""Evaluation's sample: every test view of one video (``k`` windows x crops), decoded once.

Columns (``V = num_clips * spatial_crops`` views, ``k`` windows, ``T`` frames, ``S`` crop)::

    views: uint8[B,V,T,S,S,3] (view v = window v // spatial_crops, crop v % spatial_crops);
    frame_idx: int64[B,k,T]; video_labels: float32[B,K] (multi-hot of label_index and segments)
"""

from __future__ import annotations

import dataclasses
import json
from typing import Literal

import numpy as np

from pipelines.data import augment, sampling
from pipelines.data.recipes.base import (Columns, PreviewRow, Read, RecipeConfig, Required, _small, frame_columns,
                                         labels_caption)
from pipelines.data.recipes.coclr import FLOW


@dataclasses.dataclass(frozen=True)
class EvalRecipe(RecipeConfig):
    """``num_clips`` evenly spaced windows x ``spatial_crops`` crops of frames resized to short side ``S``.

    Attributes:
        num_clips: temporal windows ``k``.
        spatial_crops: crops per window (1, 3 or 10).
        modality: read the views from the RGB video (``"rgb"``) or from its flow video
            (``"flow"``, manifest ``flow_uri``; views hold the stored uint8 flow encoding and
            flipped crops negate x), to evaluate a flow encoder.
    """

    name = "eval"
    needs_classes = True
    num_clips: int = 10
    spatial_crops: int = 3
    modality: Literal["rgb", "flow"] = "rgb"

    def columns(self, num_classes: int | None) -> Columns:
        V, T, S = self.num_clips * self.spatial_crops, self.clip_len, self.crop_size
        return {"views": ("uint8", (V, T, S, S, 3)), "frame_idx": ("int64", (self.num_clips, T)),
                "video_labels": ("float32", (num_classes,))}

    def video_columns(self) -> dict[str, str]:
        return {"views": self.modality}

    def required(self) -> tuple[Required, ...]:
        return (FLOW,) if self.modality == "flow" else ()

    def sample(self, row: dict, rng: np.random.Generator, read: Read, num_classes: int | None) -> dict:
        idx_kT = sampling.eval_windows(row["num_frames"], num_clips=self.num_clips, length=self.clip_len,
                                       stride=self.stride, short=self.short)
        is_flow = self.modality == "flow"
        frames = read(row["video_id"], row["flow_uri"] if is_flow else row["uri"], idx_kT.reshape(-1))
        H, W = frames.shape[1:3]
        S, scale = self.crop_size, self.crop_size / min(frames.shape[1:3])
        rh, rw = max(S, round(H * scale)), max(S, round(W * scale))
        frames = augment.apply_crop(frames, augment.CropParams(0, 0, H, W, rh, rw))
        boxes_S4, flips_S = sampling.spatial_crops(rh, rw, S, self.spatial_crops)
        views = []
        for clip in frames.reshape(self.num_clips, self.clip_len, rh, rw, 3):
            for (y, x, h, w), flip in zip(boxes_S4, flips_S):
                views.append(augment.apply_hflip(clip[:, y:y + h, x:x + w], flip, is_flow=is_flow))
        labels_K = np.zeros(num_classes, np.float32)
        for s in json.loads(row["segments"]):
            labels_K[s["label_index"]] = 1.0
        if row["label_index"] >= 0:
            labels_K[row["label_index"]] = 1.0
        return {"views": np.stack(views), "frame_idx": idx_kT, "video_labels": labels_K}

    def preview_rows(self, batch: dict, i: int, head: str, max_cols: int, max_views: int) -> list[PreviewRow]:
        views, idx_kT, S = batch["views"][i], batch["frame_idx"][i], self.spatial_crops
        labels = labels_caption(batch["video_labels"][i]) if "video_labels" in batch else ""
        rows = []
        for v in frame_columns(len(views), max_views):
            idx = idx_kT[v // S]
            cols = frame_columns(len(idx), max_cols)
            rows.append(PreviewRow([head, f"view {v}: window {v // S}, crop {v % S}", f"video labels {labels}"],
                                   views[v][cols], [f"f{idx[c]}" for c in cols]))
        return rows

    def debug_size(self) -> "EvalRecipe":
        return dataclasses.replace(self, clip_len=8, num_clips=2, augment=_small(self.augment))


def preset() -> EvalRecipe:
    """Multi-view evaluation: ``k = 10`` evenly spaced windows of 32 frames x 3 crops of 128 px after
    resizing the short side to 128 (SlowFast/X3D "k x 3 views"). Deterministic, unshuffled."""
    return EvalRecipe(clip_len=32, stride=1, num_clips=10, spatial_crops=3, short="pad",
                      augment=augment.AugmentConfig(out_size=128), shuffle=False)
