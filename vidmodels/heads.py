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

__all__ = ["ConvPredictor", "LinearClassifier", "PerFrameHead", "ProjectionMLP", "TemporalClassifier", "interpolate_time"]


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


def interpolate_time(logits_BTK: torch.Tensor, num_frames: int, *, align_corners: bool = False) -> torch.Tensor:
    """Linear interpolation of per-step logits along time: ``(B, T, K) -> (B, num_frames, K)``.

    ``align_corners=False`` (the default) is what SSDet ``train_x3d_charades_loc.py`` and
    Coarse-Fine ``train_coarse_fineFEAT.py`` do (``F.interpolate(logits, tl, mode='linear')``):
    step i sits at the centre of its span of ``num_frames / T`` frames and the half spans at
    both ends take the first / last step's value. ``align_corners=True`` maps the first and
    last step onto the first and last frame, as Coarse-Fine's stage-1 ``train_fine.py`` does.
    """
    if num_frames == logits_BTK.shape[1]:
        return logits_BTK
    if logits_BTK.shape[1] == 1:
        return logits_BTK.expand(-1, num_frames, -1)
    out_BKT = F.interpolate(logits_BTK.transpose(1, 2), size=num_frames, mode="linear", align_corners=align_corners)
    return out_BKT.transpose(1, 2)


class PerFrameHead(nn.Module):
    """The detection head of SSDet / Coarse-Fine [2]: per time step, spatial mean -> fc1 (no bias) -> ReLU
    -> dropout -> fc2.

    X3D-M's conv5 has C = 432 channels and fc1 maps them to 2048, as X3D's own ``head_proj``
    (so K400 weights of ``head_proj`` load into ``fc1``); fc2 gives K logits per step.

    Args:
        in_dim: Channels C of the feature map.
        num_classes: Number of classes K.
        hidden_dim: Width D of fc1 (2048).
        drop_rate: Dropout before fc2 (0.5).

    Shape:
        ``(B, C, T, H, W) -> (B, T, K)``, or ``(B, num_frames, K)`` interpolated linearly.
    """

    def __init__(self, in_dim: int, num_classes: int, *, hidden_dim: int = 2048, drop_rate: float = 0.5) -> None:
        super().__init__()
        self.fc1 = nn.Linear(in_dim, hidden_dim, bias=False)
        self.act = nn.ReLU()
        self.dropout = nn.Dropout(drop_rate)
        self.fc2 = nn.Linear(hidden_dim, num_classes)

    def forward(self, x_BCTHW: torch.Tensor, num_frames: int | None = None, *, pre_logits: bool = False) -> torch.Tensor:
        z_BTD = self.act(self.fc1(x_BCTHW.mean((3, 4)).transpose(1, 2)))
        if pre_logits:
            return z_BTD
        logits_BTK = self.fc2(self.dropout(z_BTD))
        return logits_BTK if num_frames is None else interpolate_time(logits_BTK, num_frames)

    def reset_classifier(self, num_classes: int) -> None:
        """A new fc2 with ``num_classes`` outputs (fine-tuning from pretraining's K)."""
        self.fc2 = nn.Linear(self.fc2.in_features, num_classes)


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
