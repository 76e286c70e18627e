"""Heads that sit on top of the backbones.

Legend: B batch, D embedding dim, K classes, T time, H/W spatial, C channels.

Reference:
    - [0] Self-supervised Co-training for Video Representation Learning (CoCLR), Han et al., NeurIPS 2020
    - [1] Video Representation Learning by Dense Predictive Coding (DPC), Han et al., ICCV-W 2019
    - [2] Coarse-Fine Networks for Temporal Activity Detection in Videos, Kahatapitiya & Ryoo, CVPR 2021
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["ProjectionMLP", "LinearClassifier", "TemporalClassifier", "ConvPredictor"]


class ProjectionMLP(nn.Module):
    """SimCLR/CoCLR projection head ``Linear(D, D_h) -> ReLU -> Linear(D_h, D_out)``.

    CoCLR applies two 1x1x1 convolutions 1024→1024→128 to the pooled S3D feature;
    on a pooled vector those are exactly these linear layers (with bias).

    Args:
        in_dim: Input embedding dim D (1024 for S3D).
        hidden_dim: Hidden width.
        out_dim: Output dim (CoCLR/MoCo use 128).
        act_layer: Hidden activation.

    Shape:
        ``(B, D) -> (B, out_dim)``; a feature map ``(B, D, T, H, W)`` is mean-pooled first.
    """

    def __init__(
        self,
        in_dim: int = 1024,
        hidden_dim: int = 1024,
        out_dim: int = 128,
        *,
        act_layer: Callable[[], nn.Module] = nn.ReLU,
    ) -> None:
        super().__init__()
        self.fc1 = nn.Linear(in_dim, hidden_dim)
        self.act = act_layer()
        self.fc2 = nn.Linear(hidden_dim, out_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        z_BD = x.flatten(2).mean(-1) if x.ndim > 2 else x
        return self.fc2(self.act(self.fc1(z_BD)))


class LinearClassifier(nn.Module):
    """Dropout then a linear layer; ``num_classes=0`` makes it the identity.

    Args:
        in_dim: Input embedding dim D.
        num_classes: Number of classes K (0 for no classifier).
        drop_rate: Dropout probability before the linear layer.

    Shape:
        ``(B, D) -> (B, K)``, or ``(B, D)`` unchanged when ``num_classes == 0``.
    """

    def __init__(self, in_dim: int, num_classes: int, *, drop_rate: float = 0.0) -> None:
        super().__init__()
        self.in_dim = in_dim
        self.num_classes = num_classes
        self.dropout = nn.Dropout(drop_rate)
        self.fc = nn.Linear(in_dim, num_classes) if num_classes > 0 else nn.Identity()

    def forward(self, z_BD: torch.Tensor) -> torch.Tensor:
        if self.num_classes == 0:
            return z_BD
        return self.fc(self.dropout(z_BD))


class TemporalClassifier(nn.Module):
    """Per-frame classifier for temporal detection: spatial pool, then a shared linear map per step.

    X3D keeps the temporal resolution, so each time step of the feature map gets
    logits; these can be linearly interpolated to the input frame rate (Coarse-Fine
    interpolates stride-10 predictions to every frame).

    Args:
        in_dim: Channels C of the feature map.
        num_classes: Number of classes K.
        drop_rate: Dropout before the classifier (0.5 in Coarse-Fine).

    Shape:
        ``(B, C, T, H, W) -> (B, T_out, K)`` with ``T_out = num_frames or T``.
    """

    def __init__(self, in_dim: int, num_classes: int, *, drop_rate: float = 0.5) -> None:
        super().__init__()
        self.dropout = nn.Dropout(drop_rate)
        self.fc = nn.Linear(in_dim, num_classes)

    def forward(self, x_BCTHW: torch.Tensor, num_frames: int | None = None) -> torch.Tensor:
        z_BTC = x_BCTHW.mean((3, 4)).transpose(1, 2)
        logits_BTK = self.fc(self.dropout(z_BTC))
        if num_frames is not None and num_frames != logits_BTK.shape[1]:
            logits_BKT = F.interpolate(logits_BTK.transpose(1, 2), size=num_frames, mode="linear", align_corners=False)
            logits_BTK = logits_BKT.transpose(1, 2)
        return logits_BTK


class ConvPredictor(nn.Module):
    """DPC/MemDPC prediction function φ: ``Conv1x1 -> ReLU -> Conv1x1`` on a 2D map.

    Args:
        in_dim: Input channels (256 for R-2D3D).
        hidden_dim: Hidden channels.
        out_dim: Output channels (D for DPC, memory size k for MemDPC).

    Shape:
        ``(B, C, H, W) -> (B, out_dim, H, W)``.
    """

    def __init__(self, in_dim: int = 256, hidden_dim: int = 256, out_dim: int = 256) -> None:
        super().__init__()
        self.net = nn.Sequential(
            nn.Conv2d(in_dim, hidden_dim, 1), nn.ReLU(inplace=True), nn.Conv2d(hidden_dim, out_dim, 1)
        )

    def forward(self, x_BCHW: torch.Tensor) -> torch.Tensor:
        return self.net(x_BCHW)
