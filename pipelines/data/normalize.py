"""Normalisation of video columns on the training device, by the kind each recipe declares.

Batches travel as uint8 ``(..., T, H, W, 3)`` (4x fewer bytes than float through Arrow and
the object store) and are normalised where they are consumed. A recipe's
``video_columns()`` maps each video column to one of :data:`NORMALIZERS`:

* ``"rgb"``: ``(x / 255 - mean) / std`` with ImageNet mean/std, the DPC and CoCLR code's
  normalisation;
* ``"flow"``: the stored uint8 flow encoding of :mod:`pipelines.prep.flow` (128 = no
  motion, ±20 px at 0 / 255) mapped to ``x / 127.5 - 1`` in [-1, 1]; the third channel
  (stored as 128) becomes 0, and flow encoders read the first two.

Output layout is ``(..., C, T, H, W)``; other columns are moved to the device as they are.
"""

from __future__ import annotations

from typing import Any, Callable

import torch

from pipelines.data.augment import IMAGENET_MEAN, IMAGENET_STD


def _rgb(x: torch.Tensor) -> torch.Tensor:
    shape = (3,) + (1,) * 3
    mean = torch.tensor(IMAGENET_MEAN, device=x.device).view(shape) * 255
    std = torch.tensor(IMAGENET_STD, device=x.device).view(shape) * 255
    return (x - mean) / std


def _flow(x: torch.Tensor) -> torch.Tensor:
    return x / 127.5 - 1.0


NORMALIZERS: dict[str, Callable[[torch.Tensor], torch.Tensor]] = {"rgb": _rgb, "flow": _flow}


def normalize_video(x_THW3: torch.Tensor, kind: str) -> torch.Tensor:
    """uint8 ``(..., T, H, W, C)`` -> float ``(..., C, T, H, W)`` normalised as ``kind``.

    Raises:
        ValueError: an unknown kind.
    """
    if kind not in NORMALIZERS:
        raise ValueError(f"unknown normalisation {kind!r}; choose one of {', '.join(NORMALIZERS)}")
    return NORMALIZERS[kind](x_THW3.movedim(-1, -4).float()).contiguous()


def normalize_batch(batch: dict[str, Any], video_columns: dict[str, str], device: torch.device) -> dict[str, Any]:
    """Move a batch to ``device`` and normalise its declared video columns there.

    Args:
        video_columns: ``column -> kind`` (a recipe's ``video_columns()``); a declared
            column missing from the batch is ignored (a method may drop streams).

    Raises:
        ValueError: a declared video column that is not a uint8 tensor of rank >= 5.
    """
    out: dict[str, Any] = {}
    for key, value in batch.items():
        if not isinstance(value, torch.Tensor):
            out[key] = value
            continue
        value = value.to(device, non_blocking=True)
        if key in video_columns:
            if value.dtype != torch.uint8 or value.dim() < 5:
                raise ValueError(f"video column {key!r} must be uint8 (B, ..., T, H, W, C); got {value.dtype} "
                                 f"{tuple(value.shape)}")
            value = normalize_video(value, video_columns[key])
        out[key] = value
    return out
