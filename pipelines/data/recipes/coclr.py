"""CoCLR's sample: two clips of one video, RGB and the aligned flow clip sharing crop and flip.

Columns (``T`` frames, ``S`` crop)::

    rgb_0, rgb_1, flow_0, flow_1: uint8[B,T,S,S,3]; frame_idx_0, frame_idx_1: int64[B,T];
    aug_caption_0, aug_caption_1: string

Flow columns hold the stored uint8 encoding of :mod:`pipelines.prep.flow` (x, y, 0).
"""

from __future__ import annotations

import dataclasses

import numpy as np

from pipelines.data import augment
from pipelines.data.preview import flow_to_rgb
from pipelines.data.recipes.base import (Columns, PreviewRow, Read, RecipeConfig, Required, clip_row, frame_columns,
                                         media_error)

FLOW_FIX = "run jobs/flow.py --manifest <dataset>, or see its stage='flow' quarantine record"


def make_flow(manifest_url: str) -> None:
    """Compute the flow videos of a (synthetic debug) dataset: :func:`pipelines.prep.ready.add_flow`."""
    from pipelines.prep.ready import add_flow

    add_flow(manifest_url)


FLOW = Required("flow_uri", FLOW_FIX, make_flow)


@dataclasses.dataclass(frozen=True)
class CoCLRRecipe(RecipeConfig):
    """``num_clips`` clips at independent random offsets; with ``with_flow``, the aligned flow clip
    read with the same indices and given the same crop and flip as each RGB clip.

    Attributes:
        num_clips: views per sample (2).
        with_flow: also read the manifest's ``flow_uri`` (required then).
    """

    name = "coclr"
    num_clips: int = 2
    with_flow: bool = True

    def columns(self, num_classes: int | None) -> Columns:
        T, S = self.clip_len, self.crop_size
        cols: Columns = {}
        for v in range(self.num_clips):
            cols[f"rgb_{v}"] = ("uint8", (T, S, S, 3))
            if self.with_flow:
                cols[f"flow_{v}"] = ("uint8", (T, S, S, 3))
            cols[f"frame_idx_{v}"] = ("int64", (T,))
            cols[f"aug_caption_{v}"] = ("string", ())
        return cols

    def video_columns(self) -> dict[str, str]:
        out = {f"rgb_{v}": "rgb" for v in range(self.num_clips)}
        if self.with_flow:
            out.update({f"flow_{v}": "flow" for v in range(self.num_clips)})
        return out

    def required(self) -> tuple[Required, ...]:
        return (FLOW,) if self.with_flow else ()

    def sample(self, row: dict, rng: np.random.Generator, read: Read, num_classes: int | None) -> dict:
        idx_VT = [self.random_clip(row["num_frames"], rng) for _ in range(self.num_clips)]
        flat = np.concatenate(idx_VT)
        rgb = read(row["video_id"], row["uri"], flat)
        flow = read(row["video_id"], row["flow_uri"], flat) if self.with_flow else None
        if flow is not None and flow.shape[1:3] != rgb.shape[1:3]:
            raise media_error("flow_mismatch", row["flow_uri"],
                              f"flow frames {flow.shape[1:3]} differ from RGB frames {rgb.shape[1:3]}")
        T, (H, W) = self.clip_len, rgb.shape[1:3]
        out = {}
        for v, idx in enumerate(idx_VT):
            p = augment.sample_params(self.augment, rng, T, H, W)
            clip = slice(v * T, (v + 1) * T)
            if flow is not None:
                out[f"rgb_{v}"], out[f"flow_{v}"] = augment.augment_pair(rgb[clip], flow[clip], p)
            else:
                out[f"rgb_{v}"] = augment.augment_clip(rgb[clip], p)
            out[f"frame_idx_{v}"], out[f"aug_caption_{v}"] = idx, p.caption()
        return out

    def preview_rows(self, batch: dict, i: int, head: str, max_cols: int, max_views: int) -> list[PreviewRow]:
        rows = []
        for v in range(self.num_clips):
            idx = batch[f"frame_idx_{v}"][i]
            cap = str(batch[f"aug_caption_{v}"][i]) if f"aug_caption_{v}" in batch else ""
            rows.append(clip_row([head, f"rgb_{v}", cap], batch[f"rgb_{v}"][i], idx, max_cols))
            if f"flow_{v}" in batch:
                cols = frame_columns(len(idx), max_cols)
                rgb, top = flow_to_rgb(batch[f"flow_{v}"][i][cols])
                rows.append(PreviewRow([head, f"flow_{v} (same crop/flip as rgb_{v})",
                                        f"colour wheel: hue=direction, max |flow| {top:.1f} px"], rgb,
                                       [f"f{idx[c]}" for c in cols]))
        return rows


def preset() -> CoCLRRecipe:
    """CoCLR (seed 001 L971): two clips of 32 frames at stride 1 at random offsets, RGB and the
    aligned flow clip sharing crop and flip, 128 px, CoCLR augmentations (clip-wise)."""
    return CoCLRRecipe(clip_len=32, stride=1, short="pad", augment=augment.coclr())
