"""Squeeze-and-excitation for 3D feature maps, with X3D's channel rounding."""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn


def round_width(width: float, multiplier: float = 1.0, *, min_width: int = 8, divisor: int = 8) -> int:
    """Rounds ``width * multiplier`` to a multiple of ``divisor`` (X3D/EfficientNet rule).

    Rounds to nearest, never below ``min_width``, and bumps up one ``divisor`` when
    rounding lost more than 10%.
    """
    width *= multiplier
    out = max(min_width, int(width + divisor / 2) // divisor * divisor)
    if out < 0.9 * width:
        out += divisor
    return int(out)


class SqueezeExcite3d(nn.Module):
    """Channel gating ``x * sigmoid(W2 act(W1 mean_THW(x)))``.

    The bottleneck width is ``round_width(channels * ratio)`` as in X3D.

    Args:
        channels: Input and output channels.
        ratio: Bottleneck ratio (X3D uses 1/16).
        act_layer: Activation between the two 1x1x1 convs.

    Shape:
        ``(B, C, T, H, W) -> (B, C, T, H, W)``.

    Reference:
        - [0] Squeeze-and-Excitation Networks, Hu et al., CVPR 2018
    """

    def __init__(self, channels: int, ratio: float = 0.0625, *, act_layer: Callable[[], nn.Module] = nn.ReLU) -> None:
        super().__init__()
        hidden = round_width(channels, ratio)
        self.fc1 = nn.Conv3d(channels, hidden, 1, bias=True)
        self.act = act_layer()
        self.fc2 = nn.Conv3d(hidden, channels, 1, bias=True)

    def forward(self, x_BCTHW: torch.Tensor) -> torch.Tensor:
        s_BC111 = x_BCTHW.mean((2, 3, 4), keepdim=True)
        s_BC111 = self.fc2(self.act(self.fc1(s_BC111)))
        return x_BCTHW * torch.sigmoid(s_BC111)
