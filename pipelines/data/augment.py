"""Clip augmentations: pure functions on uint8 ``(T, H, W, C)`` arrays, randomness sampled apart.

Each op has a ``sample_*`` function (``rng`` -> a small frozen parameter dataclass) and
an ``apply_*`` function (arrays + parameters -> arrays, deterministic). Where the
parameters are drawn states the op's *consistency scope*:

* per clip: crop, flip and blur take one draw per clip (seed 001 L416, L703, L971);
* per clip, block or frame: colour jitter and greyscale take ``scope="clip"`` (CoCLR,
  L971), ``"block"`` or ``"frame"`` (DPC/MemDPC, L394, L416: frame-wise jitter and
  greyscale disrupt the optical-flow shortcut);
* per view pair: CoCLR's two clips call :func:`sample_params` twice, i.e. their
  parameters are independent (:func:`sample_view_pair`).

Outputs stay uint8 (colour ops round and clip): batches travel through Arrow as uint8
(4x smaller than float32) and :func:`normalize` runs on the training worker.

Optical flow is stored as 3 uint8 channels (seed 001 L703, L971): channel 0 = x-flow,
1 = y-flow, truncated to +-20 px and mapped linearly from [-20, 20] to [0, 255]
(zero motion = 127.5, stored as 128), channel 2 = 0. A horizontal flip therefore maps
x -> 255 - x (exact negation in that encoding). A flow clip gets the same
:class:`CropParams` as its RGB clip and is assumed to be stored at the same H x W; its
values are not rescaled when the crop is resized (the authors treat flow JPEGs as images).

Shape legend: ``T`` frames, ``H`` height, ``W`` width, ``C`` channels, ``B`` batch.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any, Literal

import numpy as np

# The apply_* half lives in augment_ops (this file's size); re-exported so callers import augment only.
from pipelines.data.augment_ops import (
    apply_blur,
    apply_color_jitter,
    apply_crop,
    apply_greyscale,
    apply_hflip,
)

Scope = Literal["clip", "block", "frame"]
_IDENTITY_41 = np.array([[1.0], [1.0], [1.0], [0.0]])  # brightness, contrast, saturation, hue of no jitter
IMAGENET_MEAN = (0.485, 0.456, 0.406)  # Normalize() of the DPC and CoCLR code
IMAGENET_STD = (0.229, 0.224, 0.225)


# --------------------------------------------------------------------------- helpers


def _group_ids(num_frames: int, scope: Scope, block_len: int) -> np.ndarray:
    """Which parameter draw each frame uses: all 0 (clip), ``t // block_len`` (block) or ``t``."""
    t = np.arange(num_frames)
    if scope == "clip":
        return np.zeros(num_frames, np.int64)
    if scope == "block":
        return t // block_len
    if scope == "frame":
        return t
    raise ValueError(f"scope must be 'clip', 'block' or 'frame', got {scope!r}")


# --------------------------------------------------------------------------- crop


@dataclasses.dataclass(frozen=True)
class CropParams:
    """Crop box ``[y0:y0+h, x0:x0+w]`` of the source frame, resized to ``out_h x out_w``."""

    y0: int
    x0: int
    h: int
    w: int
    out_h: int
    out_w: int


def sample_resized_crop(rng: np.random.Generator, height: int, width: int, *, out_size: int,
                        area: tuple[float, float] = (0.2, 1.0),
                        ratio: tuple[float, float] = (3 / 4, 4 / 3)) -> CropParams:
    """Random area/aspect crop resized to ``out_size`` (torchvision RandomResizedCrop rule).

    Up to 10 attempts draw an area fraction uniformly in ``area`` and a log-uniform
    aspect ratio in ``ratio``; if none fits, the largest centred square is used.
    """
    log_ratio = (math.log(ratio[0]), math.log(ratio[1]))
    for _ in range(10):
        target = height * width * rng.uniform(*area)
        aspect = math.exp(rng.uniform(*log_ratio))
        w = round(math.sqrt(target * aspect))
        h = round(math.sqrt(target / aspect))
        if 0 < w <= width and 0 < h <= height:
            y0 = int(rng.integers(0, height - h + 1))
            x0 = int(rng.integers(0, width - w + 1))
            return CropParams(y0, x0, h, w, out_size, out_size)
    side = min(height, width)
    return CropParams((height - side) // 2, (width - side) // 2, side, side, out_size, out_size)


def sample_scale_crop(rng: np.random.Generator, height: int, width: int, *,
                      short_side: tuple[int, int] = (256, 320), crop: int = 224) -> CropParams:
    """Short-side scale jitter then a random ``crop x crop`` (X3D/SlowFast; seed 000 L440, L727).

    The short side is drawn uniformly (integers) in ``short_side``; the crop is
    expressed as the equivalent box in source pixels, so resizing happens once.
    """
    scale = int(rng.integers(short_side[0], short_side[1] + 1)) / min(height, width)
    side_h = min(height, int(round(crop / scale)))
    side_w = min(width, int(round(crop / scale)))
    y0 = int(rng.integers(0, height - side_h + 1))
    x0 = int(rng.integers(0, width - side_w + 1))
    return CropParams(y0, x0, side_h, side_w, crop, crop)


def center_crop_params(height: int, width: int, *, out_size: int,
                       short_side: int | None = None) -> CropParams:
    """Deterministic centre crop: ``out_size`` after scaling the short side to ``short_side`` (default ``out_size``)."""
    scale = (short_side or out_size) / min(height, width)
    side = min(height, width, int(round(out_size / scale)))
    return CropParams((height - side) // 2, (width - side) // 2, side, side, out_size, out_size)


# --------------------------------------------------------------------------- flip


def sample_flip(rng: np.random.Generator, p: float = 0.5) -> bool:
    """One horizontal-flip decision for the whole clip."""
    return bool(rng.random() < p)


# --------------------------------------------------------------------------- colour


@dataclasses.dataclass(frozen=True, eq=False)
class ColorJitterParams:
    """Per-frame factors; a frame left unjittered has the identity ``(1, 1, 1, 0)``.

    Attributes:
        brightness_T, contrast_T, saturation_T: float32 multiplicative factors.
        hue_T: float32 hue shift as a fraction of the hue circle, in ``[-0.5, 0.5]``.
    """

    brightness_T: np.ndarray
    contrast_T: np.ndarray
    saturation_T: np.ndarray
    hue_T: np.ndarray


def sample_color_jitter(rng: np.random.Generator, num_frames: int, *, scope: Scope = "clip",
                        block_len: int = 5, brightness: float = 0.4, contrast: float = 0.4,
                        saturation: float = 0.4, hue: float = 0.1, p: float = 0.8) -> ColorJitterParams:
    """Draw jitter factors once per clip, block or frame (torchvision ColorJitter ranges).

    Factors are uniform in ``[max(0, 1 - s), 1 + s]`` and the hue shift in ``[-hue, hue]``;
    each draw is applied with probability ``p`` (else identity), so with ``scope="clip"``
    this is CoCLR's ``RandomApply(ColorJitter, p)`` and with ``"frame"`` DPC's
    frame-wise jitter.
    """
    groups = _group_ids(num_frames, scope, block_len)
    G = int(groups[-1]) + 1 if num_frames else 0
    lo_41 = np.array([[max(0.0, 1 - brightness)], [max(0.0, 1 - contrast)], [max(0.0, 1 - saturation)], [-hue]])
    hi_41 = np.array([[1 + brightness], [1 + contrast], [1 + saturation], [hue]])
    u_5G = rng.random((5, G))  # in order: G draws of each factor, of the hue, of the decision
    draws_4G = lo_41 + (hi_41 - lo_41) * u_5G[:4]  # = rng.uniform(lo, hi, G) per row, bit for bit
    draws_4G[:, u_5G[4] >= p] = _IDENTITY_41
    b, c, s, h = draws_4G.astype(np.float32)[:, groups]
    return ColorJitterParams(b, c, s, h)


@dataclasses.dataclass(frozen=True, eq=False)
class GreyscaleParams:
    """Per-frame greyscale decisions.

    Attributes:
        grey_T: bool, frames turned grey.
        channel_T: int8, ``-1`` for luma grey, else the RGB channel copied to all three
            (the DPC code's "channel splitting" grey).
    """

    grey_T: np.ndarray
    channel_T: np.ndarray


def sample_greyscale(rng: np.random.Generator, num_frames: int, *, scope: Scope = "clip", block_len: int = 5,
                     p: float = 0.2, mode: Literal["luma", "channel"] = "luma") -> GreyscaleParams:
    """Grey decisions (and, for ``mode="channel"``, which channel) per clip, block or frame."""
    groups = _group_ids(num_frames, scope, block_len)
    G = int(groups[-1]) + 1 if num_frames else 0
    grey = rng.random(G) < p
    channel = rng.integers(0, 3, G) if mode == "channel" else np.full(G, -1)
    return GreyscaleParams(grey[groups], channel[groups].astype(np.int8))


# --------------------------------------------------------------------------- blur


@dataclasses.dataclass(frozen=True)
class BlurParams:
    """Gaussian blur standard deviation in pixels; ``0`` means no blur."""

    sigma: float


def sample_blur(rng: np.random.Generator, *, p: float = 0.5,
                sigma: tuple[float, float] = (0.1, 2.0)) -> BlurParams:
    """One blur decision and sigma for the whole clip (CoCLR: p=0.5, sigma in [0.1, 2])."""
    s = rng.uniform(*sigma)  # drawn either way, so later draws do not depend on the decision
    return BlurParams(float(s) if rng.random() < p else 0.0)


# --------------------------------------------------------------------------- composition


@dataclasses.dataclass(frozen=True)
class AugmentConfig:
    """Strengths of one method's clip augmentation; presets below follow the seeds and the authors' code."""

    out_size: int = 128
    crop: Literal["resized", "scale"] = "resized"
    crop_area: tuple[float, float] = (0.2, 1.0)
    crop_ratio: tuple[float, float] = (3 / 4, 4 / 3)
    short_side: tuple[int, int] = (256, 320)
    flip_p: float = 0.5
    jitter_p: float = 0.8
    brightness: float = 0.4
    contrast: float = 0.4
    saturation: float = 0.4
    hue: float = 0.1
    grey_p: float = 0.2
    grey_mode: Literal["luma", "channel"] = "luma"
    color_scope: Scope = "clip"
    block_len: int = 5
    blur_p: float = 0.5
    blur_sigma: tuple[float, float] = (0.1, 2.0)


def coclr() -> AugmentConfig:
    """CoCLR (seed 001 L971; CoCLR ``main_nce.py``): resized crop (area 0.2-1) to 128, flip,
    ColorJitter(0.4, 0.4, 0.4, 0.1) with p=0.8, grey p=0.2, blur sigma 0.1-2 with p=0.5, all clip-wise."""
    return AugmentConfig()


def dpc() -> AugmentConfig:
    """DPC/MemDPC (seed 001 L416, L703; DPC ``main.py``): clip-wise resized crop (area 0.5-1, the
    K400 setting) to 128 and flip; frame-wise ColorJitter(0.5, 0.5, 0.5, 0.25) always on and
    frame-wise channel-split grey with p=0.5; no blur."""
    return AugmentConfig(crop_area=(0.5, 1.0), jitter_p=1.0, brightness=0.5, contrast=0.5, saturation=0.5,
                         hue=0.25, grey_p=0.5, grey_mode="channel", color_scope="frame", blur_p=0.0)


def x3d_detection() -> AugmentConfig:
    """Seed 000 (L440, L727): short side in [256, 320], random 224 crop, flip; no colour ops, no blur."""
    return AugmentConfig(out_size=224, crop="scale", jitter_p=0.0, grey_p=0.0, blur_p=0.0)


@dataclasses.dataclass(frozen=True, eq=False)
class ClipAugParams:
    """Everything :func:`augment_clip` needs to reproduce one clip's augmentation."""

    crop: CropParams
    flip: bool
    color: ColorJitterParams
    grey: GreyscaleParams
    blur: BlurParams

    def caption(self) -> str:
        """A one-line summary for previews."""
        c = self.crop
        return (f"crop y{c.y0} x{c.x0} {c.h}x{c.w}->{c.out_h}x{c.out_w} flip={int(self.flip)} "
                f"jitter={int((self.color.brightness_T != 1).sum())}/{len(self.color.brightness_T)}f "
                f"grey={int(self.grey.grey_T.sum())}f blur={self.blur.sigma:.2f}")


def sample_params(cfg: AugmentConfig, rng: np.random.Generator, num_frames: int, height: int,
                  width: int) -> ClipAugParams:
    """Draw all of one clip's augmentation parameters, each op in the scope ``cfg`` gives it."""
    if cfg.crop == "resized":
        crop = sample_resized_crop(rng, height, width, out_size=cfg.out_size, area=cfg.crop_area,
                                   ratio=cfg.crop_ratio)
    else:
        crop = sample_scale_crop(rng, height, width, short_side=cfg.short_side, crop=cfg.out_size)
    flip = sample_flip(rng, cfg.flip_p)
    color = sample_color_jitter(rng, num_frames, scope=cfg.color_scope, block_len=cfg.block_len,
                                brightness=cfg.brightness, contrast=cfg.contrast,
                                saturation=cfg.saturation, hue=cfg.hue, p=cfg.jitter_p)
    grey = sample_greyscale(rng, num_frames, scope=cfg.color_scope, block_len=cfg.block_len,
                            p=cfg.grey_p, mode=cfg.grey_mode)
    return ClipAugParams(crop, flip, color, grey, sample_blur(rng, p=cfg.blur_p, sigma=cfg.blur_sigma))


def sample_view_pair(cfg: AugmentConfig, rng: np.random.Generator, num_frames: int, height: int,
                     width: int) -> tuple[ClipAugParams, ClipAugParams]:
    """Independent parameters for the two views of a pair (CoCLR's two clips)."""
    return (sample_params(cfg, rng, num_frames, height, width),
            sample_params(cfg, rng, num_frames, height, width))


def augment_clip(frames_THWC: np.ndarray, params: ClipAugParams, *, is_flow: bool = False) -> np.ndarray:
    """Crop, flip, colour jitter, greyscale, blur; uint8 in and out.

    For ``is_flow=True`` only the geometric ops run (crop, and flip with x-flow
    negation): colour ops on (x, y, 0) flow channels have no meaning as colour, and
    blur is an RGB augmentation in CoCLR. (MemDPC jittered flow too, seed 001 L703; a
    caller who wants that can call :func:`apply_color_jitter` on the flow clip.)

    Args:
        frames_THWC: uint8 RGB, or flow encoded as in the module docstring.

    Returns:
        frames_THWC: uint8 ``(T, out_h, out_w, C)``.
    """
    x = apply_crop(frames_THWC, params.crop)
    x = apply_hflip(x, params.flip, is_flow=is_flow)
    if is_flow:
        return x
    x = apply_color_jitter(x, params.color) if _jitters(params.color) else x
    x = apply_greyscale(x, params.grey)
    return apply_blur(x, params.blur)


def augment_pair(rgb_THWC: np.ndarray, flow_THWC: np.ndarray, params: ClipAugParams, *,
                 flow_photometric: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """An RGB clip and its flow clip with the same crop and flip (same H x W assumed).

    ``flow_photometric``: also give the flow clip the RGB clip's colour jitter, greyscale and
    blur, treating the stored flow encoding as an image, as the CoCLR authors' code does (it
    transforms the RGB and flow frames of a view as one sequence); the x-flow is still negated
    by a flip.
    """
    if rgb_THWC.shape[1:3] != flow_THWC.shape[1:3]:
        raise ValueError(f"RGB {rgb_THWC.shape} and flow {flow_THWC.shape} differ in H x W")
    flow = augment_clip(flow_THWC, params, is_flow=True)
    if flow_photometric:
        flow = apply_color_jitter(flow, params.color) if _jitters(params.color) else flow
        flow = apply_blur(apply_greyscale(flow, params.grey), params.blur)
    return augment_clip(rgb_THWC, params), flow


def _jitters(p: ColorJitterParams) -> bool:
    return bool((p.brightness_T != 1).any() or (p.contrast_T != 1).any()
                or (p.saturation_T != 1).any() or (p.hue_T != 0).any())


def normalize(x_BTHWC: Any, mean: tuple[float, ...] = IMAGENET_MEAN,
              std: tuple[float, ...] = IMAGENET_STD) -> Any:
    """uint8 ``(B, T, H, W, C)`` torch tensor -> float32 ``(B, C, T, H, W)``, ``(x / 255 - mean) / std``.

    Runs on the training worker (after ``iter_torch_batches``, ideally on the GPU), so
    batches cross Arrow and the network as uint8. Written with tensor methods only, so
    this module does not import torch.
    """
    x = x_BTHWC.float().div_(255.0)
    x = x.sub_(x.new_tensor(mean)).div_(x.new_tensor(std))
    return x.permute(0, 4, 1, 2, 3).contiguous()
