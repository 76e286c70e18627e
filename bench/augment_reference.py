"""The reference augmentation: the numpy ``apply_*`` of :mod:`pipelines.data.augment` before the OpenCV rewrite.

This is the documented semantics, kept verbatim in one place: ``tests/pipelines/data/
test_augment_reference.py`` checks the fast path against it (within 1 grey level) and
``bench/augment.py`` times both. Parameters are the dataclasses of :mod:`pipelines.data.augment`
(their sampling did not change). Not for production use: float32 temporaries over the whole clip.

Shape legend: ``T`` frames, ``H`` height, ``W`` width, ``C`` channels.
"""

from __future__ import annotations

import cv2
import numpy as np

from pipelines.data.augment import (
    BlurParams,
    ClipAugParams,
    ColorJitterParams,
    CropParams,
    GreyscaleParams,
)

_LUMA = np.array([0.299, 0.587, 0.114], np.float32)  # ITU-R 601, as torchvision's rgb_to_grayscale
_CV_MAX_CHANNELS = 128  # CV_CN_MAX: 128 in OpenCV 5 (512 in 4.x); frames are stacked in chunks of at most this


def _map_frames_cv2(frames_THWC: np.ndarray, fn) -> np.ndarray:
    """Apply a per-image cv2 op to all frames at once by stacking frames along channels."""
    T, H, W, C = frames_THWC.shape
    stacked_HWX = np.ascontiguousarray(frames_THWC.transpose(1, 2, 0, 3).reshape(H, W, T * C))
    step = _CV_MAX_CHANNELS - _CV_MAX_CHANNELS % C
    parts = [fn(np.ascontiguousarray(stacked_HWX[..., i:i + step])) for i in range(0, T * C, step)]
    parts = [p[..., None] if p.ndim == 2 else p for p in parts]  # cv2 drops a single channel
    out = np.concatenate(parts, axis=-1)
    return np.ascontiguousarray(out.reshape(out.shape[0], out.shape[1], T, C).transpose(2, 0, 1, 3))


def _to_uint8(x: np.ndarray) -> np.ndarray:
    return np.clip(np.rint(x), 0, 255).astype(np.uint8)


def apply_crop(frames_THWC: np.ndarray, p: CropParams) -> np.ndarray:
    """Crop every frame with the same box and resize (bilinear) to ``(out_h, out_w)``."""
    box = frames_THWC[:, p.y0:p.y0 + p.h, p.x0:p.x0 + p.w]
    if (p.h, p.w) == (p.out_h, p.out_w):
        return np.ascontiguousarray(box)
    return _map_frames_cv2(box, lambda x: cv2.resize(x, (p.out_w, p.out_h), interpolation=cv2.INTER_LINEAR))


def apply_hflip(frames_THWC: np.ndarray, flip: bool, *, is_flow: bool = False) -> np.ndarray:
    """Mirror left-right; on a flow clip also negate x-flow (channel 0: ``x -> 255 - x``)."""
    if not flip:
        return frames_THWC
    out = np.ascontiguousarray(frames_THWC[:, :, ::-1])
    if is_flow:
        out[..., 0] = 255 - out[..., 0]
    return out


def apply_color_jitter(frames_THWC: np.ndarray, p: ColorJitterParams) -> np.ndarray:
    """Brightness, contrast, saturation, then hue, each clipped to [0, 255]; RGB uint8 in and out."""
    x = frames_THWC.astype(np.float32)
    b, c, s = (v.reshape(-1, 1, 1, 1) for v in (p.brightness_T, p.contrast_T, p.saturation_T))
    x = np.clip(x * b, 0, 255)
    mean_T111 = (x @ _LUMA).mean(axis=(1, 2)).reshape(-1, 1, 1, 1)
    x = np.clip((x - mean_T111) * c + mean_T111, 0, 255)
    grey_THW1 = (x @ _LUMA)[..., None]
    x = np.clip((x - grey_THW1) * s + grey_THW1, 0, 255)
    if np.any(p.hue_T != 0):
        T, H, W, _ = x.shape
        hsv = cv2.cvtColor((x / 255.0).reshape(T * H, W, 3), cv2.COLOR_RGB2HSV).reshape(T, H, W, 3)
        hsv[..., 0] = (hsv[..., 0] + 360.0 * p.hue_T.reshape(-1, 1, 1)) % 360.0
        x = cv2.cvtColor(hsv.reshape(T * H, W, 3), cv2.COLOR_HSV2RGB).reshape(T, H, W, 3) * 255.0
    return _to_uint8(x)


def apply_greyscale(frames_THWC: np.ndarray, p: GreyscaleParams) -> np.ndarray:
    """Replace the selected frames by their grey image, replicated to 3 channels."""
    if not p.grey_T.any():
        return frames_THWC
    out = frames_THWC.copy()
    sel = np.flatnonzero(p.grey_T)
    luma = _to_uint8(frames_THWC[sel].astype(np.float32) @ _LUMA)
    ch = p.channel_T[sel].astype(np.int64)
    picked = np.take_along_axis(frames_THWC[sel], np.maximum(ch, 0).reshape(-1, 1, 1, 1), axis=3)[..., 0]
    grey = np.where((ch >= 0).reshape(-1, 1, 1), picked, luma)
    out[sel] = grey[..., None]
    return out


def apply_blur(frames_THWC: np.ndarray, p: BlurParams) -> np.ndarray:
    """Separable Gaussian blur of every frame; kernel size ``2 * ceil(3 sigma) + 1``, reflected borders."""
    if p.sigma <= 0:
        return frames_THWC
    k = 2 * int(np.ceil(3 * p.sigma)) + 1
    return _map_frames_cv2(frames_THWC, lambda x: cv2.GaussianBlur(x, (k, k), p.sigma))


def _jitters(p: ColorJitterParams) -> bool:
    return bool(np.any(p.brightness_T != 1) or np.any(p.contrast_T != 1)
                or np.any(p.saturation_T != 1) or np.any(p.hue_T != 0))


def augment_clip(frames_THWC: np.ndarray, params: ClipAugParams, *, is_flow: bool = False) -> np.ndarray:
    """Crop, flip, colour jitter, greyscale, blur (geometric ops only for flow); uint8 in and out."""
    x = apply_crop(frames_THWC, params.crop)
    x = apply_hflip(x, params.flip, is_flow=is_flow)
    if is_flow:
        return x
    x = apply_color_jitter(x, params.color) if _jitters(params.color) else x
    x = apply_greyscale(x, params.grey)
    return apply_blur(x, params.blur)


def augment_pair(rgb_THWC: np.ndarray, flow_THWC: np.ndarray, params: ClipAugParams, *,
                 flow_photometric: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """An RGB clip and its flow clip with the same crop and flip (same H x W assumed)."""
    if rgb_THWC.shape[1:3] != flow_THWC.shape[1:3]:
        raise ValueError(f"RGB {rgb_THWC.shape} and flow {flow_THWC.shape} differ in H x W")
    flow = augment_clip(flow_THWC, params, is_flow=True)
    if flow_photometric:
        flow = apply_color_jitter(flow, params.color) if _jitters(params.color) else flow
        flow = apply_blur(apply_greyscale(flow, params.grey), params.blur)
    return augment_clip(rgb_THWC, params), flow
