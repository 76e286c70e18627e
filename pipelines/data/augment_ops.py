"""The ``apply_*`` half of :mod:`pipelines.data.augment`: deterministic ops on uint8 ``(T, H, W, C)`` clips.

Re-exported by :mod:`pipelines.data.augment` (import them from there). Each op is written
as a few OpenCV calls on preallocated outputs instead of numpy float temporaries over the
whole clip: per-frame ``cv2.resize`` into the output, one ``cv2.flip`` on the
``(T*H, W, C)`` view; brightness, contrast and saturation as one 3x4 ``cv2.transform`` per
frame after a cast where contrast cannot clip (``c <= 1``), else as a per-frame lookup table
(uint8 -> float32) and a 3x3 ``cv2.transform``; hue in float HSV,
luma grey with ``cvtColor`` and a per-frame float ``sepFilter2D`` with GaussianBlur's taps.
The semantics are those of the numpy reference kept in ``bench/augment_reference.py``: crop,
flip and blur give identical bytes; colour jitter computes in float32 and rounds once at the
end as the reference does, and luma grey uses OpenCV's fixed-point weights ((9798, 19235, 3735) / 2^15 in 5.0),
so both are within 1 grey level of it (tests/pipelines/data/test_augment_reference.py).

OpenCV runs each call on its own thread pool; the data plane already runs one worker
per CPU, so callers there should set ``cv2.setNumThreads(1)`` (bench/augment.py does).

Shape legend: ``T`` frames, ``H`` height, ``W`` width, ``C`` channels.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Iterator, NamedTuple

import cv2
import numpy as np

if TYPE_CHECKING:  # the dataclasses live in augment.py, which imports this module
    from pipelines.data.augment import (
        BlurParams,
        ColorJitterParams,
        CropParams,
        GreyscaleParams,
    )

LUMA = np.array([0.299, 0.587, 0.114], np.float32)  # ITU-R 601, as torchvision's rgb_to_grayscale
_L0, _L1, _L2 = LUMA.tolist()
_V256 = np.arange(256, dtype=np.float32)
_CHUNK_PIXELS = 1 << 16  # jitter ~65,536 px at a time (5 frames of 112 px); 2x-8x larger chunks measured no faster,
# and 1-2 frame chunks about the same (bench/RESULTS.md)


# --------------------------------------------------------------------------- geometry


def apply_crop(frames_THWC: np.ndarray, p: CropParams) -> np.ndarray:
    """Crop every frame with the same box and resize (``cv2.INTER_LINEAR``) to ``(out_h, out_w)``.

    INTER_LINEAR is used for up- and down-scaling alike (half-pixel centres, replicated
    box border, no antialiasing; OpenCV turns an exact 2x reduction into INTER_AREA, which
    gives the same 2x2 mean).

    Returns:
        frames_THWC: ``(T, out_h, out_w, C)``, same dtype.
    """
    box = frames_THWC[:, p.y0:p.y0 + p.h, p.x0:p.x0 + p.w]
    if (p.h, p.w) == (p.out_h, p.out_w):
        return np.ascontiguousarray(box)
    T, C = frames_THWC.shape[0], frames_THWC.shape[3]
    out_THWC = np.empty((T, p.out_h, p.out_w, C), frames_THWC.dtype)
    for t in range(T):
        out = cv2.resize(box[t], (p.out_w, p.out_h), dst=out_THWC[t], interpolation=cv2.INTER_LINEAR)
        if C == 1:  # cv2 drops a single channel and may then not write into dst
            out_THWC[t, ..., 0] = out
    return out_THWC


def apply_hflip(frames_THWC: np.ndarray, flip: bool, *, is_flow: bool = False) -> np.ndarray:
    """Mirror left-right; on a flow clip also negate x-flow (channel 0: ``x -> 255 - x``)."""
    if not flip:
        return frames_THWC
    T, H, W, C = frames_THWC.shape
    out_THWC = np.empty((T, H, W, C), frames_THWC.dtype)  # C order, whatever the input's
    cv2.flip(np.ascontiguousarray(frames_THWC).reshape(T * H, W, C), 1, dst=out_THWC.reshape(T * H, W, C))
    if is_flow:
        out_THWC[..., 0] = 255 - out_THWC[..., 0]
    return out_THWC


# --------------------------------------------------------------------------- colour


def _grey_mean(frame_HWC: np.ndarray) -> float:
    """Mean luma grey of one RGB frame (uint8 or float32)."""
    r, g, b, _ = cv2.mean(frame_HWC)
    return _L0 * r + _L1 * g + _L2 * b


def _cast_brightened(frame_HWC: np.ndarray, b: float, x_HWC: np.ndarray) -> np.ndarray:
    """The uint8 frame cast into float32 ``x_HWC`` and, for ``b > 1``, cut at ``255 / b``: ``b``
    times it is the brightened frame, clip included (``min(b x, 255) = b min(x, 255 / b)``)."""
    np.copyto(x_HWC, frame_HWC)
    if b > 1:
        cv2.min(x_HWC, (255.0 / b,) * 4, dst=x_HWC)
    return x_HWC


def _bc_luts(frames_THWC: np.ndarray, b_T: np.ndarray, c_T: np.ndarray) -> np.ndarray:
    """Brightness then contrast of each frame as a 256-entry float32 table, ``(T, 256)``; only the
    frames with ``c > 1`` (contrast may clip) read theirs, the others take :meth:`_Jitter.affine`.

    Contrast blends with the mean grey of the *brightened* frame: for ``b <= 1`` nothing clips
    and that mean is ``b`` times the frame's; otherwise it is ``b`` times the mean of
    ``min(x, 255 / b)``.
    """
    lut_T256 = np.clip(_V256 * b_T.astype(np.float32)[:, None], 0, 255)
    m_T, tmp_HWC = np.zeros(len(b_T), np.float32), None
    for t in np.flatnonzero(c_T > 1).tolist():
        b = float(b_T[t])
        if b > 1:
            tmp_HWC = np.empty(frames_THWC.shape[1:], np.float32) if tmp_HWC is None else tmp_HWC
            m_T[t] = b * _grey_mean(_cast_brightened(frames_THWC[t], b, tmp_HWC))
        else:
            m_T[t] = b * _grey_mean(frames_THWC[t])
    c_T1, m_T1 = c_T.astype(np.float32)[:, None], m_T[:, None]
    return np.clip((lut_T256 - m_T1) * c_T1 + m_T1, 0, 255)


def _saturation_matrices(s_T: np.ndarray) -> np.ndarray:
    """``x -> (x - grey) * s + grey`` (``grey = LUMA . x``) as one 3x3 matrix per frame, ``(T, 3, 3)`` float64.

    Each maps grey to itself (the luma weights sum to 1), so ``S (c y + (1 - c) m) = c S y + (1 - c) m``.
    """
    s_T11 = s_T.astype(np.float64)[:, None, None]
    grey_33 = np.outer(np.ones(3), LUMA.astype(np.float64))
    return s_T11 * np.eye(3) + (1 - s_T11) * grey_33


def _runs(vals: list[Any]) -> list[tuple[int, int, Any]]:
    """``(start, stop, value)`` of each run of equal values (one run for a clip-wise draw)."""
    runs: list[tuple[int, int, Any]] = []
    for i, v in enumerate(vals):
        if runs and runs[-1][2] == v:
            runs[-1] = (runs[-1][0], i + 1, v)
        else:
            runs.append((i, i + 1, v))
    return runs


def _chunks(frames: list[int], K: int) -> Iterator[tuple[int, int]]:
    """``(start, stop)`` of each run of consecutive ``frames``, cut into even pieces of at most ``K``."""
    start = prev = frames[0]
    for t in [*frames[1:], -1]:
        if t != prev + 1:
            n = prev + 1 - start
            pieces = -(-n // K)
            yield from ((start + j * n // pieces, start + (j + 1) * n // pieces) for j in range(pieces))
            start = t
        prev = t


def apply_color_jitter(frames_THWC: np.ndarray, p: ColorJitterParams) -> np.ndarray:
    """Brightness, contrast, saturation, then hue, each clipped to [0, 255]; RGB uint8 in and out.

    torchvision's definitions (blend with black, with the frame's mean grey, with the
    pixel's grey; hue rotated in HSV). Unlike torchvision the order is fixed rather
    than shuffled per draw. Computed in float32 and rounded once, as the reference, in chunks
    of frames (:data:`_CHUNK_PIXELS`) through two float32 buffers.
    """
    T, H, W, C = frames_THWC.shape
    b_T, c_T, s_T, h_T = p.brightness_T, p.contrast_T, p.saturation_T, p.hue_T
    on = np.flatnonzero((b_T != 1) | (c_T != 1) | (s_T != 1) | (h_T != 0)).tolist()
    if len(on) < T or not on:  # frames the draw left alone stay exact (and a clip of no frames)
        out_THWC = np.array(frames_THWC, order="C")
        if not on:
            return out_THWC
    else:
        out_THWC = np.empty((T, H, W, C), frames_THWC.dtype)
    K = max(1, min(T, _CHUNK_PIXELS // (H * W)))
    x_KHWC = np.empty((K, H, W, C), np.float32)
    sat_T33, c_list = _saturation_matrices(s_T), c_T.tolist()
    affine_T34 = np.zeros((T, 3, 4), np.float32)  # b c S | contrast's offset, set per frame
    affine_T34[:, :, :3] = (b_T.astype(np.float64) * c_T)[:, None, None] * sat_T33
    job = _Jitter(frames_THWC, out_THWC, _bc_luts(frames_THWC, b_T, c_T) if max(c_list) > 1 else None,
                  sat_T33.astype(np.float32), affine_T34, b_T.tolist(), c_list, s_T.tolist(),
                  (360.0 * np.mod(h_T.astype(np.float64), 1.0)).tolist(),  # HSV2RGB wraps >= 360
                  x_KHWC, np.empty_like(x_KHWC))
    for a, z in _chunks(on, K):
        job.chunk(a, z)
    return out_THWC


class _Jitter(NamedTuple):
    """One clip's jitter: its tables and matrices per frame, and the two float32 chunk buffers."""

    frames_THWC: np.ndarray
    out_THWC: np.ndarray
    lut_T256: np.ndarray | None
    sat_T33: np.ndarray
    affine_T34: np.ndarray  # (b c S | offset) per frame; the offset column is filled by affine()
    b_T: list[float]
    c_T: list[float]
    s_T: list[float]
    shift_T: list[float]
    x_KHWC: np.ndarray
    hsv_KHWC: np.ndarray

    def affine(self, t: int, x_HWC: np.ndarray) -> None:
        """Frame ``t`` (``c <= 1``) through saturation in one 3x4 ``cv2.transform``.

        Nothing clips between brightness and saturation here except brightness's own clip
        (:func:`_cast_brightened`, ``x'``): so ``S (c b x' + (1 - c) m) = (b c S) x' + (1 - c) m``
        with ``m`` the brightened frame's mean grey.
        """
        b, c = self.b_T[t], self.c_T[t]
        _cast_brightened(self.frames_THWC[t], b, x_HWC)
        m_34 = self.affine_T34[t]
        if c != 1:
            m_34[:, 3] = (1 - c) * b * _grey_mean(x_HWC)
        cv2.transform(x_HWC, m_34, dst=x_HWC)

    def chunk(self, a: int, z: int) -> None:
        """Jitter frames ``a:z`` into ``out_THWC``."""
        n, (H, W, C) = z - a, self.frames_THWC.shape[1:]
        x_nHWC, hsv_nHWC = self.x_KHWC[:n], self.hsv_KHWC[:n]
        for i in range(n):
            if self.c_T[a + i] > 1:  # contrast may clip: the exact table, saturation below
                cv2.LUT(self.frames_THWC[a + i], self.lut_T256[a + i], dst=x_nHWC[i])
            else:
                self.affine(a + i, x_nHWC[i])
        s_n = self.s_T[a:z]
        for i, j, (s, table) in _runs(list(zip(s_n, [c > 1 for c in self.c_T[a:z]]))):
            if table and s != 1:  # the affine frames had theirs in the matrix
                view = x_nHWC[i:j].reshape(-1, W, C)
                cv2.transform(view, self.sat_T33[a + i], dst=view)
        if max(s_n) > 1:  # s <= 1 blends two values in [0, 255]: nothing to clip
            np.clip(x_nHWC, 0, 255, out=x_nHWC)
        flat, hsv = x_nHWC.reshape(n * H, W, C), hsv_nHWC.reshape(n * H, W, C)
        shift_n = self.shift_T[a:z]
        if any(shift_n):  # float HSV is scale-free (V = max): no need to go to [0, 1]
            cv2.cvtColor(flat, cv2.COLOR_RGB2HSV, dst=hsv)
            for i, j, h in _runs(shift_n):
                if h:
                    view = hsv_nHWC[i:j].reshape(-1, W, C)
                    cv2.add(view, (h, 0.0, 0.0, 0.0), dst=view)
            cv2.cvtColor(hsv, cv2.COLOR_HSV2RGB, dst=flat)
        cv2.convertScaleAbs(flat, dst=self.out_THWC[a:z].reshape(n * H, W, C))


def apply_greyscale(frames_THWC: np.ndarray, p: GreyscaleParams) -> np.ndarray:
    """Replace the selected frames by their grey image (luma or one channel), replicated to 3 channels."""
    if not p.grey_T.any():
        return frames_THWC
    out_THWC = frames_THWC.copy()
    for t in np.flatnonzero(p.grey_T):
        ch = int(p.channel_T[t])
        if ch >= 0:
            grey_HW = cv2.extractChannel(out_THWC[t], ch)
        else:
            grey_HW = cv2.cvtColor(out_THWC[t], cv2.COLOR_RGB2GRAY)
        cv2.cvtColor(grey_HW, cv2.COLOR_GRAY2RGB, dst=out_THWC[t])
    return out_THWC


# --------------------------------------------------------------------------- blur


def blur_ksize(sigma: float) -> int:
    """Kernel size of a blur of ``sigma``: ``2 * ceil(3 sigma) + 1``."""
    return 2 * int(np.ceil(3 * sigma)) + 1


def gaussian_taps(sigma: float) -> np.ndarray:
    """OpenCV's bit-exact uint8 Gaussian kernel in 1/256, ``(blur_ksize(sigma),)`` int32 summing to 256.

    ``getGaussianKernelBitExact`` then ``getGaussianKernelFixedPoint_ED``: the taps
    ``exp(-j^2 / (2 sigma^2))`` summed from the outside in, scaled to 256 with error diffusion
    from the outer taps, the centre taking the rest. Sigma 0 gives the identity ``[256]``.
    """
    if sigma <= 0:
        return np.array([256], np.int32)
    R = blur_ksize(sigma) // 2
    t = np.exp((2 * np.arange(-R, 0, dtype=np.float64)) ** 2 * (-0.125 / (sigma * sigma)))  # OpenCV's x = 2 j
    total = 0.0
    for v in t.tolist():
        total += v
    mul1, err, left = 1 / (2 * total + 1), 0.0, []
    for v in t.tolist():
        adj = v * mul1 * 256 + err
        left.append(round(adj))  # half to even, as OpenCV's softdouble
        err = adj - left[-1]
    return np.array(left + [256 - 2 * sum(left)] + left[::-1], np.int32)


def apply_blur(frames_THWC: np.ndarray, p: BlurParams) -> np.ndarray:
    """Separable Gaussian blur of every frame, kernel size ``2 * ceil(3 sigma) + 1``, reflect-101 borders.

    Bit-exact with OpenCV's uint8 ``GaussianBlur`` (fixed point: :func:`gaussian_taps`, then
    ``(sum + 2^15) >> 16``) for 2.4x less CPU at sigma 2: ``sepFilter2D`` with those taps / 256
    into float32, where every partial sum is a multiple of 2^-16 below 256.5 and so exact,
    offset by 0.5 and truncated (``GaussianBlur`` rounds ties up; a float-to-uint8 rounding would not).
    """
    if p.sigma <= 0:
        return frames_THWC
    k_K1 = (gaussian_taps(p.sigma) / 256).astype(np.float32)[:, None]
    src_THWC = np.ascontiguousarray(frames_THWC)
    out_THWC = np.empty(src_THWC.shape, src_THWC.dtype)
    sum_HWC = np.empty(src_THWC.shape[1:], np.float32)
    for t in range(len(src_THWC)):
        out = cv2.sepFilter2D(src_THWC[t], cv2.CV_32F, k_K1, k_K1, dst=sum_HWC, delta=0.5,
                              borderType=cv2.BORDER_REFLECT_101)
        np.copyto(out_THWC[t], out.reshape(sum_HWC.shape), casting="unsafe")  # truncation = floor (>= 0)
    return out_THWC
