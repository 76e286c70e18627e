"""DPC/MemDPC's sample: a sequence of blocks of consecutive frames.

Columns (``N`` blocks of ``L`` frames, ``S`` crop)::

    blocks: uint8[B,N,L,S,S,3]; frame_idx: int64[B,N,L]; aug_caption: string
"""

from __future__ import annotations

import dataclasses

import numpy as np

from pipelines.data import augment, sampling
from pipelines.data.recipes.base import Columns, PreviewRow, Read, RecipeConfig, _small, clip_row


@dataclasses.dataclass(frozen=True)
class DPCRecipe(RecipeConfig):
    """``num_blocks`` blocks of ``clip_len`` frames at ``stride``, one augmentation over all blocks.

    Attributes:
        num_blocks: blocks per sample.
    """

    name = "dpc"
    num_blocks: int = 8

    def columns(self, num_classes: int | None) -> Columns:
        N, L, S = self.num_blocks, self.clip_len, self.crop_size
        return {"blocks": ("uint8", (N, L, S, S, 3)), "frame_idx": ("int64", (N, L)), "aug_caption": ("string", ())}

    def video_columns(self) -> dict[str, str]:
        return {"blocks": "rgb"}

    def sample(self, row: dict, rng: np.random.Generator, read: Read, num_classes: int | None) -> dict:
        idx_NL = sampling.block_sequence(row["num_frames"], rng, num_blocks=self.num_blocks, block_len=self.clip_len,
                                         stride=self.stride, short=self.short)
        frames = read(row["video_id"], row["uri"], idx_NL.reshape(-1))
        p = augment.sample_params(self.augment, rng, idx_NL.size, *frames.shape[1:3])
        blocks = augment.augment_clip(frames, p).reshape(*idx_NL.shape, self.crop_size, self.crop_size, 3)
        return {"blocks": blocks, "frame_idx": idx_NL, "aug_caption": p.caption()}

    def preview_rows(self, batch: dict, i: int, head: str, max_cols: int, max_views: int) -> list[PreviewRow]:
        cap = str(batch["aug_caption"][i]) if "aug_caption" in batch else ""
        return [clip_row([head, f"block {n}/{len(idx)} frames", cap if n == 0 else ""], block, idx, max_cols)
                for n, (block, idx) in enumerate(zip(batch["blocks"][i], batch["frame_idx"][i]))]

    def debug_size(self) -> "DPCRecipe":
        return dataclasses.replace(self, clip_len=3, stride=2, num_blocks=4, augment=_small(self.augment))


def preset() -> DPCRecipe:
    """DPC/MemDPC (seed 001 L412, L703): 8 blocks x 5 frames at stride 3, 128 px, frame-wise jitter;
    short videos loop (a frozen block would be trivially predictable)."""
    return DPCRecipe(clip_len=5, stride=3, num_blocks=8, short="loop", augment=augment.dpc())
