"""DPC/MemDPC's sample: a sequence of blocks of consecutive frames, RGB or flow.

Columns (``N`` blocks of ``L`` frames, ``S`` crop)::

    blocks: uint8[B,N,L,S,S,3]; frame_idx: int64[B,N,L]; aug_caption: string

With ``modality="flow"`` the blocks are read from the manifest's ``flow_uri`` (the stored
uint8 encoding of :mod:`pipelines.prep.flow`: x, y, 0) and normalised as flow; the crop and
flip are drawn as for RGB (a flip negates x).
"""

from __future__ import annotations

import dataclasses
from typing import Literal

import numpy as np

from pipelines.data import augment, sampling
from pipelines.data.preview import flow_to_rgb
from pipelines.data.recipes.base import (
    Columns,
    PreviewRow,
    Read,
    RecipeConfig,
    Required,
    _small,
    clip_row,
)
from pipelines.data.recipes.coclr import FLOW


@dataclasses.dataclass(frozen=True)
class DPCRecipe(RecipeConfig):
    """``num_blocks`` blocks of ``clip_len`` frames at ``stride``, one augmentation over all blocks.

    Crop and flip are drawn once per sample (clip-consistent); colour jitter and greyscale
    in the scope ``augment.color_scope`` gives them (``"frame"`` for DPC/MemDPC, seed 001
    L394, L416, L703).

    Attributes:
        num_blocks: blocks per sample (8).
        modality: read RGB frames or the flow video (``flow_uri``, required then).
        flow_color: also apply the colour jitter and greyscale to flow frames (MemDPC's
            text applies them "for both the RGB and optical flow streams", L703; no flow
            code was released). Off by default: on the (x, y, 0) encoding they mix the
            motion components.
    """

    name = "dpc"
    num_blocks: int = 8
    modality: Literal["rgb", "flow"] = "rgb"
    flow_color: bool = False

    def columns(self, num_classes: int | None) -> Columns:
        N, L, S = self.num_blocks, self.clip_len, self.crop_size
        return {"blocks": ("uint8", (N, L, S, S, 3)), "frame_idx": ("int64", (N, L)), "aug_caption": ("string", ())}

    def video_columns(self) -> dict[str, str]:
        return {"blocks": self.modality}

    def required(self) -> tuple[Required, ...]:
        return (FLOW,) if self.modality == "flow" else ()

    def sample(self, row: dict, rng: np.random.Generator, read: Read, num_classes: int | None) -> dict:
        idx_NL = sampling.block_sequence(row["num_frames"], rng, num_blocks=self.num_blocks, block_len=self.clip_len,
                                         stride=self.stride, short=self.short)
        is_flow = self.modality == "flow"
        frames = read(row["video_id"], row["flow_uri"] if is_flow else row["uri"], idx_NL.reshape(-1))
        p = augment.sample_params(self.augment, rng, idx_NL.size, *frames.shape[1:3])
        clip = augment.augment_clip(frames, p, is_flow=is_flow)
        if is_flow and self.flow_color:
            clip = augment.apply_greyscale(augment.apply_color_jitter(clip, p.color), p.grey)
        blocks = clip.reshape(*idx_NL.shape, self.crop_size, self.crop_size, 3)
        return {"blocks": blocks, "frame_idx": idx_NL, "aug_caption": p.caption()}

    def preview_rows(self, batch: dict, i: int, head: str, max_cols: int, max_views: int) -> list[PreviewRow]:
        cap = str(batch["aug_caption"][i]) if "aug_caption" in batch else ""
        rows = []
        for n, (block, idx) in enumerate(zip(batch["blocks"][i], batch["frame_idx"][i])):
            if self.modality == "flow":
                block, _ = flow_to_rgb(block)
            rows.append(clip_row([head, f"{self.modality} block {n}/{len(idx)} frames", cap if n == 0 else ""],
                                 block, idx, max_cols))
        return rows

    def debug_size(self) -> DPCRecipe:
        """4 blocks x 3 frames at stride 2 (23 frames: the tiny synthetic clips have 24), 96 px.

        96 px, not the 64 of other recipes: R-2D3D downsamples by 32, so 64 px leaves a 2x2
        map, too small for the dense task's spatial negatives; 96 px gives 3x3.
        """
        small = dataclasses.replace(_small(self.augment), out_size=96)
        return dataclasses.replace(self, clip_len=3, stride=2, num_blocks=4, augment=small)


def preset() -> DPCRecipe:
    """DPC/MemDPC (seed 001 L412, L703): 8 blocks x 5 frames at stride 3, 128 px, frame-wise jitter and
    grey p=0.5 (DPC; MemDPC's spec sets 0.25); short videos loop (a frozen block would be trivially
    predictable)."""
    return DPCRecipe(clip_len=5, stride=3, num_blocks=8, short="loop", augment=augment.dpc())
