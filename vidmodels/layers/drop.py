"""Stochastic depth (drop path) for residual branches."""

from __future__ import annotations

import torch
from torch import nn


class DropPath(nn.Module):
    """Drops whole residual branches per sample with probability ``p`` (training only).

    Reference:
        - [0] Deep Networks with Stochastic Depth, Huang et al., ECCV 2016
    """

    def __init__(self, p: float = 0.0) -> None:
        super().__init__()
        self.p = p

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.p == 0.0 or not self.training:
            return x
        keep = 1.0 - self.p
        mask = x.new_empty((x.shape[0],) + (1,) * (x.ndim - 1)).bernoulli_(keep)
        return x * mask / keep

    def extra_repr(self) -> str:
        return f"p={self.p}"
