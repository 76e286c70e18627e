"""Clip augmentation on the training device: the CPU path of :mod:`pipelines.data.augment` in torch.

With a recipe's ``augment_on="device"`` the data plane draws the parameters as before
(``augment.sample_params``, same generator, same order: a sample is the same whichever side
augments it) but ships the decoded frames (uint8, at the decoded size) plus the parameters as
small per-clip columns named ``<prefix>aug_*`` (:func:`column_specs`, :func:`params_to_row`);
the training step calls :func:`augment_batch` with the recipe's :class:`DevicePlan` per video
column (or :func:`apply_on_device` per column), then ``normalize_batch`` as before.

Semantics are those of ``augment_clip`` / ``augment_pair`` (crop, flip with x-flow negation,
brightness, contrast, saturation, hue, greyscale, blur), with OpenCV's integer arithmetic
emulated where the CPU path is integer:

* crop + resize: ``cv2.INTER_LINEAR`` on uint8, for up- and down-scaling alike (no INTER_AREA
  and no antialiasing: the CPU path never uses them): half-pixel centres, the box's border
  replicated, 11-bit weights and OpenCV's SIMD row blend
  ``((b0 * (S0 >> 4)) >> 16 + (b1 * (S1 >> 4)) >> 16 + 2) >> 2``. ``F.interpolate(mode="bilinear",
  align_corners=False)`` samples at the same points but rounds differently (and would need one
  call per crop box).
* luma grey: OpenCV 5's fixed point ``(9798 R + 19235 G + 3735 B + 2^14) >> 15``.
* blur: OpenCV's bit-exact uint8 Gaussian (8-bit kernel taps summing to 256, reflect-101
  border, rows then columns, ``(sum + 2^15) >> 16``).
* colour jitter: float32 as the CPU path, rounded once (half to even).

Measured against the CPU path (tests/pipelines/data/test_device_augment.py): crop, flip, grey and
blur identical bytes; jitter within one level on < 0.01 % of values (hue included).

All arithmetic is elementwise (no matmul or convolution, hence no TF32 on a GPU). Assumption:
the clips of a batch share T and the decoded H x W (one dataset's short-side resize, e.g.
UCF-101's 171 x 128); their crop boxes, flips and colour factors differ. Datasets with mixed
aspect ratios ship frames zero-padded to one canvas (:func:`pad_to_canvas`), which changes no
output. The kernel width of the blur is read from the batch's largest sigma (one scalar
device-to-host copy). Temporaries: several 32-bit copies of the batch (not measured on a GPU yet).

Shape legend: ``B`` clips, ``T`` frames, ``H x W`` decoded size, ``S`` output side (``P x Q``
when not square), ``C`` channels (3), ``K`` blur taps.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, NamedTuple

import numpy as np
import torch

from pipelines.data.augment_ops import blur_ksize
from pipelines.data.augment_ops import gaussian_taps as gaussian_taps_np

if TYPE_CHECKING:
    from pipelines.data.augment import ClipAugParams

# (name, dtype, per-row shape with "T" for the clip's frames)
COLUMNS: tuple[tuple[str, str, tuple], ...] = (
    ("aug_crop", "int32", (4,)),            # y0, x0, h, w of the crop box in the decoded frame
    ("aug_flip", "uint8", ()),              # 1: mirror left-right
    ("aug_brightness", "float32", ("T",)),  # per-frame jitter factors (identity 1, 1, 1, 0)
    ("aug_contrast", "float32", ("T",)),
    ("aug_saturation", "float32", ("T",)),
    ("aug_hue", "float32", ("T",)),
    ("aug_grey", "uint8", ("T",)),          # 1: frame turned grey
    ("aug_grey_channel", "int8", ("T",)),   # -1 luma, else the channel copied
    ("aug_blur_sigma", "float64", ()),      # 0: no blur (float64: the kernel width is ceil(3 sigma))
)
_LUMA_FIXED = (9798, 19235, 3735)  # OpenCV 5 RGB2GRAY weights, / 2^15
_LUMA = (0.299, 0.587, 0.114)


# --------------------------------------------------------------------------- columns


def column_specs(num_frames: int, prefix: str = "") -> dict[str, tuple[str, tuple[int, ...]]]:
    """The parameter columns as a recipe declares them: ``prefix + name -> (dtype, per-row shape)``."""
    return {prefix + name: (dtype, tuple(num_frames if d == "T" else d for d in shape))
            for name, dtype, shape in COLUMNS}


def params_to_row(p: ClipAugParams, prefix: str = "") -> dict[str, np.ndarray]:
    """One clip's parameters as the values of one row of :func:`column_specs`."""
    c = p.crop
    row = {"aug_crop": np.array([c.y0, c.x0, c.h, c.w], np.int32), "aug_flip": np.uint8(p.flip),
           "aug_brightness": p.color.brightness_T.astype(np.float32),
           "aug_contrast": p.color.contrast_T.astype(np.float32),
           "aug_saturation": p.color.saturation_T.astype(np.float32),
           "aug_hue": p.color.hue_T.astype(np.float32), "aug_grey": p.grey.grey_T.astype(np.uint8),
           "aug_grey_channel": p.grey.channel_T.astype(np.int8), "aug_blur_sigma": np.float64(p.blur.sigma)}
    return {prefix + k: v for k, v in row.items()}


def params_to_columns(params: list[ClipAugParams], prefix: str = "") -> dict[str, np.ndarray]:
    """The parameters of a batch of clips as columns (``B`` rows of :func:`column_specs`).

    Raises:
        ValueError: clips with different output sizes or frame counts (a batch is one tensor).
    """
    if len({(p.crop.out_h, p.crop.out_w, len(p.color.brightness_T)) for p in params}) > 1:
        raise ValueError("all clips of a batch need the same output size and number of frames")
    rows = [params_to_row(p) for p in params]
    return {prefix + name: np.stack([r[name] for r in rows]) for name, _, _ in COLUMNS}


def select_columns(batch: dict[str, torch.Tensor], prefix: str = "") -> dict[str, torch.Tensor]:
    """The ``prefix``-named parameter columns of a batch, under the names :func:`apply_on_device` reads."""
    return {name: batch[prefix + name] for name, _, _ in COLUMNS}


def pad_to_canvas(frames_THWC: np.ndarray, height: int, width: int) -> np.ndarray:
    """Zero-pad decoded frames at the bottom and right to a fixed ``height x width`` canvas.

    For datasets whose decoded frames differ in size (Kinetics: one short side, many aspect
    ratios): a batch is one tensor, and padding changes nothing, because every op reads only
    inside the clip's crop box (the resize replicates the box's own border).

    Raises:
        ValueError: a frame larger than the canvas.
    """
    T, H, W, C = frames_THWC.shape
    if H > height or W > width:
        raise ValueError(f"frames of {H}x{W} do not fit a {height}x{width} canvas")
    out = np.zeros((T, height, width, C), frames_THWC.dtype)
    out[:, :H, :W] = frames_THWC
    return out


class DevicePlan(NamedTuple):
    """How the training step augments one video column: whose parameters (the ``prefix`` of their
    columns; a flow clip names its RGB clip's), flow or RGB, and whether colour ops apply."""

    prefix: str
    is_flow: bool = False
    photometric: bool | None = None


def augment_batch(batch: dict[str, Any], plan: dict[str, DevicePlan], *, out_size: int | tuple[int, int],
                  device: torch.device | str) -> dict[str, Any]:
    """A batch with each planned video column moved to ``device`` and augmented there; the
    parameter columns are dropped, everything else is left as it is (``normalize_batch`` follows).
    """
    prefixes = {d.prefix for d in plan.values()}
    out = {k: v for k, v in batch.items() if not any(k.startswith(p + "aug_") for p in prefixes)}
    for column, d in plan.items():
        cols = {k: v.to(device, non_blocking=True) for k, v in select_columns(batch, d.prefix).items()}
        out[column] = apply_on_device(batch[column].to(device, non_blocking=True), cols, out_size=out_size,
                                      is_flow=d.is_flow, photometric=d.photometric)
    return out


# --------------------------------------------------------------------------- the ops


def apply_on_device(frames_BxHWC: torch.Tensor, columns: dict[str, torch.Tensor], *,
                    out_size: int | tuple[int, int], is_flow: bool = False, photometric: bool | None = None,
                    dtype: torch.dtype = torch.uint8) -> torch.Tensor:
    """``augment_clip`` (``augment_pair`` for a flow clip) on a batch, on the batch's device.

    Args:
        frames_BxHWC: uint8 decoded frames, RGB or the stored flow encoding, ``(B, T, H, W, C)``
            or with several frame dimensions (DPC's ``(B, N, L, H, W, C)``: ``T = N * L``).
        columns: :func:`params_to_columns` as tensors (any device; moved to the frames').
        out_size: the crop size ``S`` (or ``(P, Q)``), as in the parameters' ``CropParams``.
        is_flow: a flip also negates x-flow; no colour ops unless ``photometric``.
        photometric: colour jitter, grey and blur (default: not ``is_flow``; ``True`` for
            ``augment_pair(..., flow_photometric=True)``'s flow clip).
        dtype: ``torch.uint8``, or a float dtype holding the same integer values (what
            ``normalize`` converts to anyway).

    Returns:
        frames_BxPQC: ``(B, ..., P, Q, C)``, as the CPU path's output.
    """
    P, Q = (out_size, out_size) if isinstance(out_size, int) else out_size
    lead, (H, W, C) = frames_BxHWC.shape[:-3], frames_BxHWC.shape[-3:]
    x = frames_BxHWC.reshape(lead[0], -1, H, W, C)
    col = {k: v.to(frames_BxHWC.device) for k, v in columns.items()}
    x = crop_resize(x, col["aug_crop"], P, Q)
    x = hflip(x, col["aug_flip"], is_flow=is_flow)
    if (not is_flow) if photometric is None else photometric:
        x = color_jitter(x, col["aug_brightness"], col["aug_contrast"], col["aug_saturation"], col["aug_hue"])
        x = greyscale(x, col["aug_grey"], col["aug_grey_channel"])
        x = blur(x, col["aug_blur_sigma"])
    return x.to(dtype).reshape(*lead, P, Q, C)


def _linear_taps(src_B: torch.Tensor, n: int, *, clamp_weight: bool) -> tuple[torch.Tensor, ...]:
    """OpenCV's INTER_LINEAR taps from ``src_B`` pixels to ``n``: both source indices and 11-bit weights, ``(B, n)``.

    Outside the source OpenCV clamps the columns' weights to the edge pixel, but only the rows'
    indices (the rows' weights still blend the edge row with itself, rounding differently).
    """
    dst = torch.arange(n, dtype=torch.float64, device=src_B.device)
    scale_B1 = 1.0 / (n / src_B.to(torch.float64))[:, None]
    f = ((dst + 0.5) * scale_B1 - 0.5).to(torch.float32)
    i = torch.floor(f)
    f = f - i
    last_B1 = (src_B - 1)[:, None].to(torch.float32)
    if clamp_weight:
        f = torch.where((i < 0) | (i >= last_B1), torch.zeros_like(f), f)
    i0 = torch.minimum(torch.clamp(i, min=0), last_B1)
    i1 = torch.minimum(torch.clamp(i + 1, min=0), last_B1)
    w0, w1 = torch.round((1 - f) * 2048), torch.round(f * 2048)
    return i0.to(torch.int64), i1.to(torch.int64), w0.to(torch.int32), w1.to(torch.int32)


def crop_resize(x_BTHWC: torch.Tensor, crop_B4: torch.Tensor, P: int, Q: int) -> torch.Tensor:
    """Each clip's box ``(y0, x0, h, w)`` resized to ``P x Q`` as uint8 ``cv2.resize(INTER_LINEAR)``; int32 out."""
    B, T, _, W, C = x_BTHWC.shape
    y0, x0, h, w = (crop_B4[:, k].to(torch.int64) for k in range(4))
    iy, iy1, by0, by1 = _linear_taps(h, P, clamp_weight=False)
    ix, ix1, bx0, bx1 = _linear_taps(w, Q, clamp_weight=True)
    x = x_BTHWC.to(torch.int32)

    def rows(i_BP: torch.Tensor) -> torch.Tensor:  # (B, T, P, W, C)
        return x.gather(2, (y0[:, None] + i_BP).view(B, 1, P, 1, 1).expand(B, T, P, W, C))

    def cols(r: torch.Tensor, i_BQ: torch.Tensor) -> torch.Tensor:  # (B, T, P, Q, C)
        return r.gather(3, (x0[:, None] + i_BQ).view(B, 1, 1, Q, 1).expand(B, T, P, Q, C))

    a0, a1 = bx0.view(B, 1, 1, Q, 1), bx1.view(B, 1, 1, Q, 1)
    r0, r1 = rows(iy), rows(iy1)
    s0 = cols(r0, ix) * a0 + cols(r0, ix1) * a1  # the row pass: exact, pixel x 2^11
    s1 = cols(r1, ix) * a0 + cols(r1, ix1) * a1
    b0, b1 = by0.view(B, 1, P, 1, 1), by1.view(B, 1, P, 1, 1)
    out = (((b0 * (s0 >> 4)) >> 16) + ((b1 * (s1 >> 4)) >> 16) + 2) >> 2
    return out.clamp_(0, 255)


def hflip(x_BTHWC: torch.Tensor, flip_B: torch.Tensor, *, is_flow: bool = False) -> torch.Tensor:
    """Mirror the flagged clips left-right; for flow also ``x -> 255 - x`` on channel 0."""
    flipped = x_BTHWC.flip(3)
    if is_flow:
        flipped = torch.cat([255 - flipped[..., :1], flipped[..., 1:]], dim=-1)
    return torch.where(flip_B.bool().view(-1, 1, 1, 1, 1), flipped, x_BTHWC)


def _luma(x: torch.Tensor) -> torch.Tensor:
    return x[..., 0] * _LUMA[0] + x[..., 1] * _LUMA[1] + x[..., 2] * _LUMA[2]


def color_jitter(x_BTHWC: torch.Tensor, b_BT: torch.Tensor, c_BT: torch.Tensor, s_BT: torch.Tensor,
                 h_BT: torch.Tensor) -> torch.Tensor:
    """Brightness, contrast (with the brightened frame's mean grey), saturation, hue; rounded once.

    Frames whose factors are the identity pass unchanged.
    """
    x = x_BTHWC.to(torch.float32)
    b, c, s = (v.to(torch.float32)[:, :, None, None, None] for v in (b_BT, c_BT, s_BT))
    y = torch.clamp(x * b, 0, 255)
    m = _luma(y).mean(dim=(2, 3))[:, :, None, None, None]
    y = torch.where(c != 1, torch.clamp((y - m) * c + m, 0, 255), y)
    grey = _luma(y)[..., None]
    y = torch.where(s != 1, torch.clamp((y - grey) * s + grey, 0, 255), y)
    shift_BT11 = (360.0 * torch.remainder(h_BT.to(torch.float64), 1.0)).to(torch.float32)[:, :, None, None]
    y = torch.where(shift_BT11[..., None] != 0, _hue_shift(y, shift_BT11), y)  # as the CPU path: no HSV round trip
    on = ((b_BT != 1) | (c_BT != 1) | (s_BT != 1) | (h_BT != 0))[:, :, None, None, None]
    return torch.where(on, torch.round(y).clamp_(0, 255).to(x_BTHWC.dtype), x_BTHWC)


def _hue_shift(rgb: torch.Tensor, shift_deg: torch.Tensor) -> torch.Tensor:
    """Rotate hue by ``shift_deg`` in [0, 360) with OpenCV's float RGB <-> HSV formulas."""
    r, g, b = rgb.unbind(-1)
    v = torch.maximum(torch.maximum(r, g), b)
    diff = v - torch.minimum(torch.minimum(r, g), b)
    s = diff / (v.abs() + 1.1920929e-07)  # FLT_EPSILON
    k = 60.0 / (diff + 1.1920929e-07)
    h = torch.where(v == r, (g - b) * k, torch.where(v == g, (b - r) * k + 120.0, (r - g) * k + 240.0))
    h = torch.where(h < 0, h + 360.0, h) + shift_deg
    h = torch.fmod(h * (6.0 / 360.0), 6.0)
    sector = torch.floor(h)
    f = h - sector
    bad = (sector < 0) | (sector >= 6)
    sector, f = torch.where(bad, 0.0, sector).to(torch.int64), torch.where(bad, 0.0, f)
    tab = torch.stack([v, v * (1 - s), v * (1 - s * f), v * (1 - s * (1 - f))], dim=-1)
    # (r, g, b) entries of the table per sector (OpenCV's sector_data, RGB order).
    idx = torch.tensor([[0, 3, 1], [2, 0, 1], [1, 0, 3], [1, 2, 0], [3, 1, 0], [0, 1, 2]], device=rgb.device)
    out = tab.gather(-1, idx[sector])
    return torch.where((s == 0)[..., None], rgb, out)


def greyscale(x_BTHWC: torch.Tensor, grey_BT: torch.Tensor, channel_BT: torch.Tensor) -> torch.Tensor:
    """Flagged frames -> OpenCV's fixed-point luma, or one channel, on all three channels."""
    xi = x_BTHWC.to(torch.int32)
    luma = (xi[..., 0] * _LUMA_FIXED[0] + xi[..., 1] * _LUMA_FIXED[1] + xi[..., 2] * _LUMA_FIXED[2] + (1 << 14)) >> 15
    ch = channel_BT.to(torch.int64).clamp(min=0)[:, :, None, None, None].expand(*xi.shape[:-1], 1)
    picked = xi.gather(-1, ch)[..., 0]
    grey = torch.where((channel_BT >= 0)[:, :, None, None], picked, luma)[..., None].expand_as(xi)
    return torch.where(grey_BT.bool()[:, :, None, None, None], grey.to(x_BTHWC.dtype), x_BTHWC)


def gaussian_taps(sigma_B: torch.Tensor, K: int) -> torch.Tensor:
    """:func:`~pipelines.data.augment_ops.gaussian_taps` of each clip, centred in ``K`` taps (zeros outside),
    ``(B, K)`` int32 on ``sigma_B``'s device (sigma 0: the identity). Built on the host: one copy of ``B`` sigmas.
    """
    taps_BK = np.zeros((len(sigma_B), K), np.int32)
    for b, sigma in enumerate(sigma_B.cpu().tolist()):
        taps = gaussian_taps_np(sigma)
        taps_BK[b, K // 2 - len(taps) // 2:K // 2 + len(taps) // 2 + 1] = taps
    return torch.from_numpy(taps_BK).to(sigma_B.device)


def _reflect101(n: int, R: int, device: torch.device) -> torch.Tensor:
    """Indices of ``-R .. n - 1 + R`` mirrored into ``0 .. n - 1`` without repeating the edge (cv2's default)."""
    i = torch.arange(-R, n + R, device=device)
    if n == 1:
        return torch.zeros_like(i)
    period = 2 * (n - 1)
    i = torch.remainder(i, period)
    return torch.where(i >= n, period - i, i)


def blur(x_BTHWC: torch.Tensor, sigma_B: torch.Tensor) -> torch.Tensor:
    """Per-clip Gaussian blur as OpenCV's bit-exact uint8 GaussianBlur; clips with sigma 0 pass unchanged."""
    B, _, H, W, _ = x_BTHWC.shape
    sigma = sigma_B.cpu()  # the one device-to-host copy
    R = blur_ksize(float(sigma.max())) // 2 if len(sigma) else 0
    if R == 0:
        return x_BTHWC
    taps_BK = gaussian_taps(sigma, 2 * R + 1).to(x_BTHWC.device)
    xi = x_BTHWC.to(torch.int32)
    rows = xi.index_select(3, _reflect101(W, R, xi.device))
    acc = torch.zeros_like(xi)
    for k in range(2 * R + 1):  # rows: pixel x 2^8, exact
        acc += taps_BK[:, k].view(B, 1, 1, 1, 1) * rows[:, :, :, k:k + W]
    cols = acc.index_select(2, _reflect101(H, R, xi.device))
    out = torch.zeros_like(xi)
    for k in range(2 * R + 1):  # columns: pixel x 2^16, exact (< 2^24)
        out += taps_BK[:, k].view(B, 1, 1, 1, 1) * cols[:, :, k:k + H]
    out = (out + (1 << 15)) >> 16
    return torch.where((sigma_B > 0).view(B, 1, 1, 1, 1), out.clamp_(0, 255).to(x_BTHWC.dtype), x_BTHWC)
