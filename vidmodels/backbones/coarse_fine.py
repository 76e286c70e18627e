"""The registered Coarse-Fine Network: a :class:`~vidmodels.methods.coarse_fine.CoarseFine` (any mode)
scoring whole videos from one tensor, as ``coarse_fine_x3d`` in the backbone registry, so a registered
model loads with :func:`vidmodels.create_backbone` wherever ``vidmodels`` is imported.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from vidmodels.heads import interpolate_time
from vidmodels.methods.coarse_fine import ALPHA_INV, CoarseFine, CoarseFineConfig
from vidmodels.registry import list_backbones, register

BACKBONE = "coarse_fine_x3d"


class CoarseFineBackbone(nn.Module):
    """A :class:`CoarseFine` (any mode) scoring whole videos from one tensor; what is registered.

    Legend: B batch, C channels, T steps, H/W spatial, K classes.

    Args:
        num_classes: K (>= 1).
        fine_frames: T', the Fine stream's cap: a longer input's Fine stream is its centred T' steps.
        **cfg: :class:`CoarseFineConfig` fields (``arch``, ``mode``, ``pool``, ``fusion_dims`` ...).
    """

    def __init__(self, *, num_classes: int, fine_frames: int = 128, **cfg: Any) -> None:
        super().__init__()
        self.net = CoarseFine(CoarseFineConfig(num_classes=num_classes, **cfg))
        self.num_classes, self.fine_frames = num_classes, fine_frames

    def forward_frames(self, x_BCTHW: torch.Tensor, num_frames: int | None = None) -> torch.Tensor:
        """``(B, C, T, H, W) -> (B, T, K)`` per-step logits, or ``(B, num_frames, K)`` interpolated."""
        T = x_BCTHW.shape[2]
        if T < ALPHA_INV:  # avg/max pooling need 4 steps: repeat the last one, drop its logits
            x_BCTHW = torch.cat([x_BCTHW, x_BCTHW[:, :, -1:].expand(-1, -1, ALPHA_INV - T, -1, -1)], 2)
        fine, offset_B = None, None
        if self.net.fusion is not None:
            f0 = max(0, (x_BCTHW.shape[2] - self.fine_frames) // 2)
            fine = x_BCTHW[:, :, f0:f0 + self.fine_frames]
            offset_B = x_BCTHW.new_full((x_BCTHW.shape[0],), -float(f0))
        logits_BTK = self.net(x_BCTHW, fine, None, offset_B)[:, :T]
        return logits_BTK if num_frames is None else interpolate_time(logits_BTK, num_frames)

    def forward(self, x_BCTHW: torch.Tensor) -> torch.Tensor:
        """``(B, K)``: the max over time of the per-frame logits (the video-level score of ``L_cls``)."""
        return self.forward_frames(x_BCTHW).amax(1)


def coarse_fine_x3d(*, num_classes: int = 0, **kwargs: Any) -> CoarseFineBackbone:
    """Coarse-Fine Network (or a baseline) of two X3D streams; ``num_classes`` must be >= 1."""
    return CoarseFineBackbone(num_classes=num_classes, **kwargs)


if BACKBONE not in list_backbones():  # a module reload must not register twice
    register(BACKBONE, input_size=(128, 224, 224), ref_gmacs=73.37,
             ref_source="seed 000 Table 3.2: Coarse-Fine, 128 frames at 224² (paper-accounted)")(coarse_fine_x3d)
