"""CoCLR's sample: two views of one video, RGB and the aligned flow clip sharing their augmentation.

View regime (``view_regime``). ``"authors"`` (default; the CoCLR code's ``TransformController``
in ``main_coclr.py``, not described in the thesis): with probability 1/2 one clip at a random
offset augmented twice, once strongly and once with crop and flip only (which view gets the
strong one is drawn); else two clips at independent random offsets, each strongly augmented
with probability ``strong_p`` (0.3), else crop and flip only. ``"two_clips"``: two clips at
independent offsets, both strongly augmented (vidray's earlier regime; the thesis's wording
"two clips"). Strong = the recipe's ``augment`` (crop, flip, colour jitter, grey, blur);
with ``flow_photometric`` (the authors' code) the flow view gets the same photometric ops as
its RGB view.

Columns (``T`` frames, ``S`` crop)::

    rgb_0, rgb_1, flow_0, flow_1: uint8[B,T,S,S,3]; frame_idx_0, frame_idx_1: int64[B,T];
    aug_caption_0, aug_caption_1: string

Flow columns hold the stored uint8 encoding of :mod:`pipelines.prep.flow` (x, y, 0).
"""

from __future__ import annotations

import dataclasses
from typing import Literal

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
        num_clips: views per sample (2; the ``authors`` regime needs 2).
        with_flow: also read the manifest's ``flow_uri`` (required then).
        view_regime: ``"authors"`` or ``"two_clips"`` (module docstring).
        strong_p: ``authors`` regime: probability that a view of the two-clip case is strong.
        flow_photometric: give flow views the photometric ops of their RGB view (the authors').
    """

    name = "coclr"
    num_clips: int = 2
    with_flow: bool = True
    view_regime: Literal["authors", "two_clips"] = "authors"
    strong_p: float = 0.3
    flow_photometric: bool = True

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

    def view_plan(self, rng: np.random.Generator) -> tuple[list[int], list[bool]]:
        """For each view, which clip it shows and whether it is strongly augmented."""
        if self.view_regime == "two_clips" or self.num_clips != 2:
            return list(range(self.num_clips)), [True] * self.num_clips
        if self.view_regime != "authors":
            raise ValueError(f"view_regime must be 'authors' or 'two_clips', got {self.view_regime!r}")
        if rng.random() < 0.5:  # one clip, augmented twice: one strong view, one crop + flip
            strong_first = bool(rng.random() < 0.5)
            return [0, 0], [strong_first, not strong_first]
        return [0, 1], [bool(rng.random() < self.strong_p), bool(rng.random() < self.strong_p)]

    def sample(self, row: dict, rng: np.random.Generator, read: Read, num_classes: int | None) -> dict:
        clip_of, strong = self.view_plan(rng)
        idx_CT = [self.random_clip(row["num_frames"], rng) for _ in range(max(clip_of) + 1)]
        flat = np.concatenate(idx_CT)  # a clip shown twice is decoded once
        rgb = read(row["video_id"], row["uri"], flat)
        flow = read(row["video_id"], row["flow_uri"], flat) if self.with_flow else None
        if flow is not None and flow.shape[1:3] != rgb.shape[1:3]:
            raise media_error("flow_mismatch", row["flow_uri"],
                              f"flow frames {flow.shape[1:3]} differ from RGB frames {rgb.shape[1:3]}")
        T, (H, W) = self.clip_len, rgb.shape[1:3]
        weak = dataclasses.replace(self.augment, jitter_p=0.0, grey_p=0.0, blur_p=0.0)
        out = {}
        for v, (c, is_strong) in enumerate(zip(clip_of, strong)):
            p = augment.sample_params(self.augment if is_strong else weak, rng, T, H, W)
            clip = slice(c * T, (c + 1) * T)
            if flow is not None:
                out[f"rgb_{v}"], out[f"flow_{v}"] = augment.augment_pair(
                    rgb[clip], flow[clip], p, flow_photometric=self.flow_photometric)
            else:
                out[f"rgb_{v}"] = augment.augment_clip(rgb[clip], p)
            out[f"frame_idx_{v}"] = idx_CT[c]
            out[f"aug_caption_{v}"] = f"clip {c} {'strong' if is_strong else 'crop+flip'}: {p.caption()}"
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
