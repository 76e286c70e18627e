"""Detection pretraining's sample: a dense window with per-frame labels, then volume augmentation.

Columns (``T`` frames, ``S`` crop, ``K`` classes)::

    rgb: uint8[B,T,S,S,3]; frame_labels: float32[B,T,K]; frame_idx: int64[B,T]; aug_caption: string
    with volume augmentation (a batch stage, :mod:`pipelines.data.volume_aug`):
    aug_kind: string, aug_partner/aug_freeze_{r,m}/aug_{mixup,cutmix}_{r,n1,n2}: int64,
    aug_cutmix_mode: string, aug_delta: float32, aug_smooth: bool
"""

from __future__ import annotations

import dataclasses
import json

import numpy as np

from pipelines.data import augment, sampling
from pipelines.data.recipes.base import (BatchStage, Columns, PreviewRow, Read, RecipeConfig, _small, frame_columns,
                                         labels_caption)
from pipelines.data.volume_aug import VolumeAugConfig, VolumeParams, params_to_columns


@dataclasses.dataclass(frozen=True)
class DetectionRecipe(RecipeConfig):
    """A dense window; labels from segments, else the video label on every frame (seed 000 L646).

    Attributes:
        volume: volume augmentations as a batch stage; ``None`` for none.
        volume_batch_size: clips paired within one volume-augmentation batch.
    """

    name = "detection"
    needs_classes = True
    supports_device = True
    volume: VolumeAugConfig | None = None
    volume_batch_size: int = 8

    def columns(self, num_classes: int | None) -> Columns:
        T = self.clip_len
        return {**self.view_columns("rgb", T), "frame_labels": ("float32", (T, num_classes)),
                "frame_idx": ("int64", (T,)), "aug_caption": ("string", ())}

    def video_columns(self) -> dict[str, str]:
        return {"rgb": "rgb"}

    def sample(self, row: dict, rng: np.random.Generator, read: Read, num_classes: int | None) -> dict:
        segments = json.loads(row["segments"])
        idx, labels_TK = sampling.dense_window(row["num_frames"], row["fps"], segments, rng, length=self.clip_len,
                                               stride=self.stride, num_classes=num_classes, short=self.short)
        if not segments and row["label_index"] >= 0:
            labels_TK = sampling.replicate_label(row["label_index"], self.clip_len, num_classes=num_classes)
        frames = read(row["video_id"], row["uri"], idx)
        p = augment.sample_params(self.augment, rng, len(idx), *frames.shape[1:3])
        return {**self.view("rgb", frames, p), "frame_labels": labels_TK, "frame_idx": idx,
                "aug_caption": p.caption()}

    def batch_stage(self, num_classes: int | None) -> BatchStage | None:
        if self.volume is None:
            return None
        if self.augment_on == "device":
            raise ValueError("volume augmentation edits augmented clips in the data plane: use augment_on=cpu "
                             "with a volume policy, or volume=None with augment_on=device")
        from pipelines.data.volume_aug import volume_augment_batch

        example = params_to_columns([VolumeParams()])
        added = {k: ("string" if v.dtype == object else str(v.dtype), ()) for k, v in example.items()}
        return BatchStage(volume_augment_batch, self.volume_batch_size, {"cfg": self.volume}, added)

    def preview_rows(self, batch: dict, i: int, head: str, max_cols: int, max_views: int) -> list[PreviewRow]:
        lines = [head, str(batch["aug_caption"][i]) if "aug_caption" in batch else ""]
        if "aug_kind" in batch:
            lines.append(_volume_caption(batch, i))
        idx = batch["frame_idx"][i]
        cols = frame_columns(len(idx), max_cols)
        captions = [f"f{idx[c]}" for c in cols]
        if "frame_labels" in batch:
            captions = [f"{f} {labels_caption(batch['frame_labels'][i][c])}" for f, c in zip(captions, cols)]
        return [PreviewRow(lines, batch["rgb"][i][cols], captions)]

    def debug_size(self) -> "DetectionRecipe":
        return dataclasses.replace(self, clip_len=8, stride=2, volume_batch_size=4, augment=_small(self.augment))


def _volume_caption(batch: dict, i: int) -> str:
    kind = str(batch["aug_kind"][i])
    parts = [f"volume {kind}"]
    if "freeze" in kind:
        parts.append(f"freeze r={batch['aug_freeze_r'][i]} m={batch['aug_freeze_m'][i]}")
    for op in ("mixup", "cutmix"):
        if op in kind:
            parts.append(f"{op} with #{batch['aug_partner'][i]} r={batch[f'aug_{op}_r'][i]} "
                         f"n1={batch[f'aug_{op}_n1'][i]} n2={batch[f'aug_{op}_n2'][i]}")
    if "cutmix" in kind:
        parts.append(f"mode={batch['aug_cutmix_mode'][i]} delta={batch['aug_delta'][i]:g}")
    return "; ".join(parts)


def preset() -> DetectionRecipe:
    """Detection pretraining (seed 000 L727): 16 frames at stride 5, per-frame labels from segments
    (or the video label copied to every frame), X3D crop to 224, volume augmentations."""
    return DetectionRecipe(clip_len=16, stride=5, short="clamp", augment=augment.x3d_detection(),
                           volume=VolumeAugConfig(), volume_batch_size=8)
