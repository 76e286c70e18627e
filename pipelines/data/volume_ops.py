"""Deterministic volume-augmentation ops (seed 000, chapter 4): Volume Freeze, MixUp and CutMix.

Each op is a pure function of its parameters: :func:`temporal_alpha` (the per-frame
weight of clip 1), :func:`cutmix_mask` and :func:`view_translation` (the CutMix spatial
mask and Transient View columns), and :func:`volume_freeze`, :func:`volume_mixup`,
:func:`volume_cutmix`. Parameter sampling and the Ray batch stage live in
:mod:`pipelines.data.volume_aug`, which re-exports these names.

Conventions: frame index ``t`` is 0-based; a clip has ``n`` frames; videos are
``(n, H, W, C)`` and frame-level labels ``(n, K)``. Mixed videos are computed in
float32; labels are float32. ``N`` output frames, ``H``/``W``/``C`` frame
height/width/channels, ``K`` classes.
"""

from __future__ import annotations

from typing import Literal

import numpy as np

CutMixMode = Literal["window", "view"]


# --------------------------------------------------------------------------- deterministic ops


def truncate01(x: np.ndarray) -> np.ndarray:
    """The seed's truncation operator ``T_[0,1]`` (L888-892): 1 if x >= 1, 0 if x < 0, else x."""
    return np.clip(x, 0.0, 1.0)


def temporal_alpha(n1: int, n2: int, r: int, *, smooth: bool = True) -> np.ndarray:
    """The per-frame weight of clip 1 (seed 000 L686), over ``N = max(n1, r + n2)`` frames.

    ``a[t] = T01((n1 - t) / (n1 - r))`` if ``n2 + r >= n1`` (clip1 -> clip2), else
    ``a[t] = T01(|n2 + 2r - 2t| / n2)`` (clip1 -> clip2 -> clip1). ``smooth=False`` is
    the "hard boundaries" ablation (Table 4.4b): ``a`` rounded to 0/1, halves up.

    Returns:
        a_N: float64 in [0, 1].

    Raises:
        ValueError: unless ``n1 >= 1``, ``n2 >= 1`` and ``0 <= r < n1`` (clips must overlap).
    """
    if n1 < 1 or n2 < 1 or not 0 <= r < n1:
        raise ValueError(f"need n1, n2 >= 1 and 0 <= r < n1, got n1={n1}, n2={n2}, r={r}")
    t = np.arange(max(n1, r + n2), dtype=np.float64)
    if n2 + r >= n1:
        a = truncate01((n1 - t) / (n1 - r))
    else:
        a = truncate01(np.abs(n2 + 2 * r - 2 * t) / n2)
    return a if smooth else (a >= 0.5).astype(np.float64)


def _place(x: np.ndarray, start: int, total: int) -> np.ndarray:
    """``out[t] = x[t - start]`` where ``0 <= t - start < len(x)``, zeros elsewhere; ``total`` rows, float32."""
    out = np.zeros((total, *x.shape[1:]), np.float32)
    stop = min(total, start + len(x))
    out[start:stop] = x[:stop - start]
    return out


def volume_freeze(video: np.ndarray, labels: np.ndarray, r: int, m: int) -> tuple[np.ndarray, np.ndarray]:
    """Freeze frame ``r`` for ``m`` frames (seed 000 L667, 0-based); the length stays ``n``.

    Output ``video[0:r]``, then ``video[r]`` repeated ``m`` times, then
    ``video[r+1 : n-m+1]`` (the overflow is dropped, L669). The frozen run is
    labelled background: all-zero rows (L658).

    Args:
        video: ``(n, H, W, C)``, any dtype (kept).
        labels: ``(n, K)``.

    Returns:
        (video ``(n, H, W, C)``, labels ``(n, K)`` float32).

    Raises:
        ValueError: unless ``0 <= r <= n - 2`` and ``2 <= m <= n - r``.
    """
    n = len(video)
    if not (0 <= r <= n - 2 and 2 <= m <= n - r):
        raise ValueError(f"need 0 <= r <= n-2 and 2 <= m <= n-r, got n={n}, r={r}, m={m}")
    idx = np.concatenate([np.arange(r), np.full(m, r), np.arange(r + 1, n - m + 1)])
    out_labels = labels[idx].astype(np.float32)
    out_labels[r:r + m] = 0.0
    return video[idx], out_labels


def volume_mixup(v1: np.ndarray, l1: np.ndarray, v2: np.ndarray, l2: np.ndarray, r: int,
                 smooth: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """Blend clip 2, shifted by ``r``, into clip 1 with a per-frame alpha (seed 000 L679-686).

    ``out[t] = a[t] v1[t] + (1 - a[t]) v2[t - r]`` with ``v1`` zero past ``n1`` and
    ``v2[t - r]`` zero outside ``0 <= t - r < n2``; labels likewise (soft labels).

    Returns:
        (video ``(N, H, W, C)`` float32, labels ``(N, K)`` float32), ``N = max(n1, r + n2)``.
    """
    a = temporal_alpha(len(v1), len(v2), r, smooth=smooth).astype(np.float32)
    N = len(a)
    a_v = a.reshape(-1, *([1] * (v1.ndim - 1)))
    video = a_v * _place(v1, 0, N) + (1 - a_v) * _place(v2, r, N)
    labels = a[:, None] * _place(l1, 0, N) + (1 - a[:, None]) * _place(l2, r, N)
    return video, labels


def cutmix_mask(a_N: np.ndarray, width: int, *, mode: CutMixMode, delta: float) -> np.ndarray:
    """Column profile of the spatial mask (seed 000 L898-902); constant down each column.

    ``M[t][:, j] = 1`` if ``j < w_t - delta``, ``0`` if ``j >= w_t + delta``, else
    ``(w_t + delta - j) / (2 delta)``, with ``w_t = floor(W a[t])`` ("window") or
    ``floor(W / 2)`` ("view"). Clip 1 is on the left. (The seed's text calls its floor
    "round to the nearest integer" (L904); we follow the brief's floor.) In "window"
    mode the split therefore moves right-to-left as ``a`` falls, the mirror image of
    Fig. 4.6's "left to right"; with random flips the two are equivalent.

    Returns:
        M_NW: float32 in [0, 1].
    """
    if mode == "window":
        w = np.floor(width * np.asarray(a_N, np.float64))
    elif mode == "view":
        w = np.full(len(a_N), float(width // 2))
    else:
        raise ValueError(f"mode must be 'window' or 'view', got {mode!r}")
    j = np.arange(width, dtype=np.float64)[None, :]
    w = w[:, None]
    ramp = (w + delta - j) / (2 * delta) if delta > 0 else np.zeros_like(j + w)
    return np.where(j < w - delta, 1.0, np.where(j >= w + delta, 0.0, ramp)).astype(np.float32)


def view_translation(num_frames: int, width: int) -> tuple[np.ndarray, np.ndarray]:
    """Source columns for Transient View: each clip's content sweeps across its half window.

    The seed (L699, L707) moves each clip "within the constant window from
    left-to-right, in time" but gives no schedule. We use a constant-speed sweep: with
    ``w = floor(W / 2)`` and ``s = (n - 1 - t) / (n - 1)`` (1 at the first frame, 0 at
    the last; ``s = 0`` when ``n = 1``), output column ``j`` of frame ``t`` shows

    * clip 1 column ``clip(j + round((W - w) s), 0, W - 1)``,
    * clip 2 column ``clip(j - w + round(w s), 0, W - 1)``,

    rounding halves up. Clip 1's left window thus starts on its right part and ends
    on its left part (content moving right by ``W - w`` px); clip 2's window starts on
    its own right part (where it would be anyway) and ends on its left part. Over the
    clip each window has seen the clip's full width. Columns past the edge repeat it
    (only visible inside the ``2 delta`` transition band).

    Returns:
        (cols1_NW, cols2_NW): int64 source columns.
    """
    w = width // 2
    t = np.arange(num_frames, dtype=np.float64)[:, None]
    s = (num_frames - 1 - t) / (num_frames - 1) if num_frames > 1 else np.zeros_like(t)
    j = np.arange(width)[None, :]
    off1 = np.floor((width - w) * s + 0.5).astype(np.int64)
    off2 = np.floor(w * s + 0.5).astype(np.int64)
    return np.clip(j + off1, 0, width - 1), np.clip(j - w + off2, 0, width - 1)


def volume_cutmix(v1: np.ndarray, l1: np.ndarray, v2: np.ndarray, l2: np.ndarray, r: int,
                  mode: CutMixMode, delta: float, *, overlap_only: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """Cut clip 2 (shifted by ``r``) into clip 1 behind a moving or fixed vertical split (L703-709).

    ``out[t] = M[t] v1[t] + (1 - M[t]) v2[t - r]`` with :func:`cutmix_mask` and the
    padding/shift of :func:`volume_mixup`; labels ``|M[t]| l1[t] + (1 - |M[t]|) l2[t - r]``
    where ``|M|`` is the mask's mean, so each frame's label mass equals its pixel mass.

    ``mode="window"``: ``w_t`` follows :func:`temporal_alpha`. ``mode="view"``: a
    half/half split over the whole clip with no shift (``r = 0``, ``n1 == n2``; L707)
    and each clip translated across its window (:func:`view_translation`). Its label
    weight is ``|M| = (floor(W/2) + 1/2) / W`` for even ``W``, within ``1/(2W)`` of the
    seed's 0.5 (L709), which keeps labels equal to pixel mass.

    ``overlap_only=True`` leaves frames outside the temporal overlap unmasked
    (``M[t] = a[t]``, i.e. pure clip 1 or clip 2), the seed's "within the overlapping
    region" (L896). The default follows the formula literally, under which such frames
    keep a ``delta``-wide ramp at the frame edge that blends with zero padding.

    Returns:
        (video ``(N, H, W, C)`` float32, labels ``(N, K)`` float32), ``N = max(n1, r + n2)``.

    Raises:
        ValueError: for view mode with ``r != 0`` or ``n1 != n2``.
    """
    n1, n2, width = len(v1), len(v2), v1.shape[2]
    if mode == "view" and (r != 0 or n1 != n2):
        raise ValueError(f"view mode needs r == 0 and n1 == n2, got r={r}, n1={n1}, n2={n2}")
    a = temporal_alpha(n1, n2, r)
    M = cutmix_mask(a, width, mode=mode, delta=delta)
    N = len(a)
    if overlap_only:
        outside = (np.arange(N) < r) | (np.arange(N) >= min(n1, r + n2))
        M[outside] = a[outside, None]
    p1, p2 = _place(v1, 0, N), _place(v2, r, N)
    if mode == "view":
        cols1, cols2 = view_translation(N, width)
        p1 = np.take_along_axis(p1, cols1[:, None, :, None], axis=2)
        p2 = np.take_along_axis(p2, cols2[:, None, :, None], axis=2)
    M_v = M[:, None, :, None]
    area = M.mean(axis=1)[:, None]
    labels = area * _place(l1, 0, N) + (1 - area) * _place(l2, r, N)
    return M_v * p1 + (1 - M_v) * p2, labels
