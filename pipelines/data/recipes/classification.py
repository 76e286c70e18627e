"""Supervised sample: one clip with its video label (finetuning, linear probes, supervised baselines).

Columns (``T`` frames, ``S`` crop)::

    rgb: uint8[B,T,S,S,3]; frame_idx: int64[B,T]; aug_caption: string
"""

from __future__ import annotations

import dataclasses

import numpy as np

from pipelines.data import augment
from pipelines.data.recipes.base import Columns, PreviewRow, Read, RecipeConfig, clip_row


@dataclasses.dataclass(frozen=True)
class ClassificationRecipe(RecipeConfig):
    """One clip at a random offset; rows without a video label are excluded (``no_label``)."""

    name = "classification"
    supports_device = True

    def columns(self, num_classes: int | None) -> Columns:
        T = self.clip_len
        return {**self.view_columns("rgb", T), "frame_idx": ("int64", (T,)), "aug_caption": ("string", ())}

    def video_columns(self) -> dict[str, str]:
        return {"rgb": "rgb"}

    def exclude(self, item: dict) -> tuple[str, str] | None:
        if item["label_index"] < 0:
            return "no_label", f"recipe {self.name!r} needs a video label and this row has none"
        return super().exclude(item)

    def sample(self, row: dict, rng: np.random.Generator, read: Read, num_classes: int | None) -> dict:
        idx = self.random_clip(row["num_frames"], rng)
        frames = read(row["video_id"], row["uri"], idx)
        p = augment.sample_params(self.augment, rng, len(idx), *frames.shape[1:3])
        return {**self.view("rgb", frames, p), "frame_idx": idx, "aug_caption": p.caption()}

    def preview_rows(self, batch: dict, i: int, head: str, max_cols: int, max_views: int) -> list[PreviewRow]:
        cap = str(batch["aug_caption"][i]) if "aug_caption" in batch else ""
        return [clip_row([head, cap], batch["rgb"][i], batch["frame_idx"][i], max_cols)]


def preset() -> ClassificationRecipe:
    """Fine-tuning / linear probe: one clip of 32 frames, 128 px, resized crop, flip and clip-wise
    colour jitter (no blur or grey), with the video label."""
    return ClassificationRecipe(clip_len=32, stride=1, short="pad",
                                augment=dataclasses.replace(augment.coclr(), grey_p=0.0, blur_p=0.0))
