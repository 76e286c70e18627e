"""Coarse-Fine Networks' sample: a Coarse clip and the Fine stream around it, from ONE decode of one video.

Seed 000 Ch. 3 (L420-L440; the authors' ``charades_coarse_fine_2stream.py``): the Coarse stream
trains on ``T`` frames at stride ``s`` (64 x 10), the Fine stream sees the whole video at the same
stride, at most ``T'`` frames (128), padded to ``T'`` with a validity mask; multi-stage fusion
centres its Gaussians on ``mu_j = T c_j + offset``, where ``offset`` is the Coarse clip's start in
Fine frames. Labels are those of every raw frame the Coarse clip spans (``L = T s``, as the
``activity`` recipe), with ``frame_valid`` 0 past the video's end.

Sampling, in stride units: a sub-stride phase ``j`` in ``[0, s)`` puts a grid ``g_k = j + s k``
(``N`` steps inside the video) under both streams. The Coarse clip starts at a uniform step
``o_c`` in ``[0, N - T]``; the Fine window is ``T'`` steps from a uniform ``o_f`` with the Coarse
clip inside it (``max(0, o_c + T - T') <= o_f <= min(o_c, N - T')``; ``o_f = 0`` when the whole
video fits, as for >90 % of Charades). So Coarse frame ``i`` *is* Fine frame ``offset + i``
(``offset = o_c - o_f``), the frames both streams need are the Fine window's, and they are read
with one ``read`` call. [EXT] The authors draw the two starts separately in raw frames and floor
their difference; on a common grid it is exact. Past the video's end the Coarse clip repeats the
last grid frame (``clamp``); the Fine stream is padded with the ImageNet mean colour (0 after
normalisation, as the authors' zero-padded tensors) and ``fine_valid`` 0.

Augmentation is clip-consistent across both streams: one short-side scale, crop box and flip
(``augment.x3d_detection``) is drawn and applied once to the decoded frames, then sliced into the
two streams; a spatial location means the same pixels in both, which the fusion relies on (the
authors' ``randomize_parameters`` once per item, applied to both clips).

Columns (``T`` Coarse frames, ``F`` = ``T'`` Fine frames, ``S`` crop, ``L = T s``, ``K`` classes)::

    rgb: uint8[B,T,S,S,3]; fine: uint8[B,F,S,S,3]; fine_valid: float32[B,F]; offset: float32[B];
    frame_labels: float32[B,L,K]; frame_valid: float32[B,L]; frame_idx: int64[B,T];
    fine_idx: int64[B,F] (-1 on padding); aug_caption: string

Malformed ``segments`` are a ``MediaError`` of kind ``bad_annotation`` (quarantined and counted),
as in :mod:`pipelines.data.recipes.activity`.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from pipelines.data import augment
from pipelines.data.augment import IMAGENET_MEAN
from pipelines.data.recipes.activity import parse_segments, window_labels
from pipelines.data.recipes.base import (Columns, PreviewRow, Read, RecipeConfig, _small, clip_row, frame_columns,
                                         labels_caption)

PAD_RGB = np.round(np.array(IMAGENET_MEAN) * 255).astype(np.uint8)  # 0 after "rgb" normalisation


def grid_windows(num_frames: int, clip_len: int, fine_len: int, stride: int,
                 rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, int]:
    """Frame indices of the Coarse clip and of the Fine window's real frames, and the offset.

    Returns:
        ``(coarse_T, fine_N, offset)``: ``coarse_T[i] == fine_N[offset + i]`` for every Coarse
        frame before the video's end (later ones repeat the last grid frame); ``len(fine_N) <= fine_len``.

    Raises:
        ValueError: ``clip_len > fine_len`` or a non-positive size.
    """
    if not 1 <= clip_len <= fine_len or stride < 1 or num_frames < 1:
        raise ValueError(f"need 1 <= clip_len ({clip_len}) <= fine_len ({fine_len}), stride >= 1, frames >= 1")
    phase = int(rng.integers(0, min(stride, num_frames)))
    steps = (num_frames - phase + stride - 1) // stride  # grid frames inside the video
    o_c = int(rng.integers(0, max(0, steps - clip_len) + 1))
    lo, hi = max(0, o_c + clip_len - fine_len), min(o_c, max(0, steps - fine_len))
    o_f = int(rng.integers(lo, hi + 1))
    grid = phase + stride * np.arange(steps, dtype=np.int64)
    coarse = grid[np.minimum(o_c + np.arange(clip_len), steps - 1)]
    return coarse, grid[o_f:o_f + fine_len], o_c - o_f


@dataclasses.dataclass(frozen=True)
class CoarseFineRecipe(RecipeConfig):
    """Coarse clip (``clip_len`` = T at ``stride``) + Fine stream (``fine_len`` = T') of one video."""

    name = "coarse_fine"
    needs_classes = True
    fine_len: int = 128

    def span(self) -> int:
        """``L``, the raw frames the Coarse clip's labels cover."""
        return self.clip_len * self.stride

    def columns(self, num_classes: int | None) -> Columns:
        T, F, S, L = self.clip_len, self.fine_len, self.crop_size, self.span()
        return {"rgb": ("uint8", (T, S, S, 3)), "fine": ("uint8", (F, S, S, 3)), "fine_valid": ("float32", (F,)),
                "offset": ("float32", ()), "frame_labels": ("float32", (L, num_classes)),
                "frame_valid": ("float32", (L,)), "frame_idx": ("int64", (T,)), "fine_idx": ("int64", (F,)),
                "aug_caption": ("string", ())}

    def video_columns(self) -> dict[str, str]:
        return {"rgb": "rgb", "fine": "rgb"}

    def sample(self, row: dict, rng: np.random.Generator, read: Read, num_classes: int | None) -> dict:
        segments = parse_segments(row, num_classes)
        n = row["num_frames"]
        coarse_T, fine_N, offset = grid_windows(n, self.clip_len, self.fine_len, self.stride, rng)
        labels_LK, valid_L = window_labels(n, row["fps"], segments, coarse_T, self.stride, num_classes)
        union = np.union1d(coarse_T, fine_N)  # == fine_N; kept general
        frames = read(row["video_id"], row["uri"], union)  # the one decode of this sample
        p = augment.sample_params(self.augment, rng, len(union), *frames.shape[1:3])
        clip = augment.augment_clip(frames, p)  # one crop box and flip for both streams
        F, N = self.fine_len, len(fine_N)
        fine = np.empty((F, *clip.shape[1:]), np.uint8)
        fine[:N], fine[N:] = clip[np.searchsorted(union, fine_N)], PAD_RGB
        return {"rgb": clip[np.searchsorted(union, coarse_T)], "fine": fine,
                "fine_valid": (np.arange(F) < N).astype(np.float32), "offset": np.float32(offset),
                "frame_labels": labels_LK, "frame_valid": valid_L, "frame_idx": coarse_T,
                "fine_idx": np.concatenate([fine_N, np.full(F - N, -1, np.int64)]), "aug_caption": p.caption()}

    def preview_rows(self, batch: dict, i: int, head: str, max_cols: int, max_views: int) -> list[PreviewRow]:
        idx, cols = batch["frame_idx"][i], frame_columns(len(batch["frame_idx"][i]), max_cols)
        captions = [f"f{idx[c]}" for c in cols]
        if "frame_labels" in batch:  # the label of the raw frame each sampled frame is
            captions = [f"{f} {labels_caption(batch['frame_labels'][i][c * self.stride])}"
                        for f, c in zip(captions, cols)]
        aug = str(batch["aug_caption"][i]) if "aug_caption" in batch else ""
        coarse = PreviewRow([head, f"Coarse, from Fine frame {float(batch['offset'][i]):g}; {aug}"],
                            batch["rgb"][i][cols], captions)
        n = max(1, int(batch["fine_valid"][i].sum()))
        fine = clip_row([head, f"Fine: {n} of {self.fine_len} frames real"], batch["fine"][i][:n],
                        batch["fine_idx"][i][:n], max_cols)
        return [coarse, fine]

    def debug_size(self) -> "CoarseFineRecipe":
        return dataclasses.replace(self, clip_len=8, fine_len=16, stride=2, augment=_small(self.augment))


def preset() -> CoarseFineRecipe:
    """Charades (seed 000 L420-L440): Coarse 64 frames, Fine <= 128 frames, both at stride 10, 224 crop, flip."""
    return CoarseFineRecipe(clip_len=64, fine_len=128, stride=10, short="clamp", augment=augment.x3d_detection())
