"""Grid Pool and Grid Unpool: learned non-uniform temporal resampling of Coarse-Fine Networks.

Legend: B batch, C channels, T input frames, A = αT confidences, S = A + 1 sampled
positions, H/W spatial, K classes.

Grid Pool (thesis Eq. 3.1-3.2, L345-364): a confidence net h gives p ∈ (0,1)^A; where p
is high the sampling grid is dense. The thesis writes ``q_t = T·Σ_{i≤t}(1−p_i)/Σ_i(1−p_i)``
for t = 1..A, i.e. A positions. The authors' code (``x3d_coarse.GridPoolLayer``) prepends
a zero and samples at ``s = (T−1)·c`` with ``c = [0, cumsum(1−p)/Σ(1−p)]`` through
``grid_sample(align_corners=True)``: **A + 1 positions, both ends included**. We follow
the code; the Table 3.2 / 3.3d FLOPs (16.53 GMACs for 33 frames out of 128) confirm it.

Grid Unpool (L366): for every input frame t, find its fractional index r_t among the
sampled positions (the inverse of the piecewise-linear map j → s_j) and resample the
per-position logits there. The code computes ``s*_k = c⁻¹(k/A)`` at A + 1 uniform
targets, resamples the logits at index A·s*_k and then upsamples linearly to 4A = T
frames (``align_corners=True``); we evaluate the inverse directly at each of the T
frames, which folds those two linear steps into one. Both are exact on signals linear
in time, for any p: ``grid_unpool(f(s), s, T) = f(0..T−1)``.

Reference:
    - [0] Coarse-Fine Networks for Temporal Activity Detection in Videos, Kahatapitiya & Ryoo, CVPR 2021
      (seed 000, Ch. 3; code: kkahatapitiya/Coarse-Fine-Networks ``x3d_coarse.py``)
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

__all__ = ["ConfidenceNet", "grid_pool", "grid_pool_positions", "grid_unpool"]


def grid_pool_positions(p_BA: torch.Tensor, T: int) -> torch.Tensor:
    """Sampling positions of Grid Pool, in input-frame units.

    ``c = [0, cumsum(1 − p)/Σ(1 − p)]``, ``s = (T − 1)·c``: S = A + 1 positions from 0 to
    T − 1 inclusive, with gaps ``s_i − s_{i−1} ∝ 1 − p_i``; uniform p gives
    ``s_k = k(T − 1)/A`` (uniform striding).

    Args:
        p_BA: Confidences in (0, 1), ``(B, A)``.
        T: Temporal length of the sequence being pooled.

    Returns:
        Positions ``s_BS``, ``(B, A + 1)``, non-decreasing.
    """
    w_BA = 1.0 - p_BA
    c_BA = torch.cumsum(w_BA, dim=1) / (w_BA.sum(dim=1, keepdim=True) + 1e-16)
    c_BS = torch.cat([torch.zeros_like(c_BA[:, :1]), c_BA], dim=1)
    return (T - 1) * c_BS


def _lerp_time(x_BCTHW: torch.Tensor, s_BS: torch.Tensor) -> torch.Tensor:
    """Linear interpolation of ``x`` along T at fractional indices ``s`` (clamped to [0, T−1])."""
    B, T = x_BCTHW.shape[0], x_BCTHW.shape[2]
    if T == 1:
        return x_BCTHW.expand(-1, -1, s_BS.shape[1], -1, -1)
    s_BS = s_BS.clamp(0, T - 1)
    i0_BS = s_BS.detach().floor().long().clamp(0, T - 2)
    frac_BS = (s_BS - i0_BS.to(s_BS.dtype)).to(x_BCTHW.dtype)
    b_B1 = torch.arange(B, device=x_BCTHW.device)[:, None]
    # Advanced indices around a slice put the indexed dims first: (B, S, C, H, W).
    x0_BSCHW = x_BCTHW[b_B1, :, i0_BS]
    x1_BSCHW = x_BCTHW[b_B1, :, i0_BS + 1]
    out_BSCHW = x0_BSCHW + frac_BS[:, :, None, None, None] * (x1_BSCHW - x0_BSCHW)
    return out_BSCHW.permute(0, 2, 1, 3, 4)


def grid_pool(x_BCTHW: torch.Tensor, p_BA: torch.Tensor) -> torch.Tensor:
    """Grid Pool: ``X̃ = I(X, s)``, linear interpolation in time at ``s = grid_pool_positions(p, T)``.

    Equivalent to the authors' ``grid_sample(x, grid, align_corners=True)`` with an identity
    spatial grid; gather + lerp is cheaper and differentiable w.r.t. p through the
    interpolation weights (the floor indices carry no gradient, as in ``grid_sample``).

    Args:
        x_BCTHW: Features ``(B, C, T, H, W)`` (the Coarse stream after res2).
        p_BA: Confidences ``(B, A)`` from :class:`ConfidenceNet`.

    Returns:
        Pooled features ``(B, C, A + 1, H, W)``, at ``grid_pool_positions(p_BA, T)``.
    """
    return _lerp_time(x_BCTHW, grid_pool_positions(p_BA, x_BCTHW.shape[2]))


def grid_unpool(logits_BSK: torch.Tensor, s_BS: torch.Tensor, T: int) -> torch.Tensor:
    """Grid Unpool: resample per-position values back onto the T input frames.

    For frame t, ``j = max{j : s_j ≤ t}`` and ``r_t = j + (t − s_j)/(s_{j+1} − s_j)`` is its
    fractional index among the sampled positions; the output is the values linearly
    interpolated at ``r_t``. Frames outside ``[s_0, s_{S−1}]`` take the edge value (never
    the case for Grid Pool positions, which span [0, T − 1]; used for strided or pooled
    baselines whose positions are fixed).

    Args:
        logits_BSK: Values at the sampled positions, ``(B, S, K)``.
        s_BS: Non-decreasing positions in input-frame units, ``(B, S)``.
        T: Number of input frames.

    Returns:
        ``(B, T, K)``.
    """
    B, S, _ = logits_BSK.shape
    if S == 1:
        return logits_BSK.expand(-1, T, -1)
    t_BT = torch.arange(T, device=s_BS.device, dtype=s_BS.dtype).expand(B, T).contiguous()
    j_BT = (torch.searchsorted(s_BS.detach().contiguous(), t_BT, right=True) - 1).clamp(0, S - 2)
    s0_BT, s1_BT = s_BS.gather(1, j_BT), s_BS.gather(1, j_BT + 1)
    frac_BT = ((t_BT - s0_BT) / (s1_BT - s0_BT).clamp_min(1e-6)).clamp(0, 1)
    l0_BTK = logits_BSK.gather(1, j_BT[..., None].expand(-1, -1, logits_BSK.shape[2]))
    l1_BTK = logits_BSK.gather(1, (j_BT + 1)[..., None].expand(-1, -1, logits_BSK.shape[2]))
    return l0_BTK + frac_BT[..., None].to(logits_BSK.dtype) * (l1_BTK - l0_BTK)


class ConfidenceNet(nn.Module):
    """The confidence net h of Grid Pool: ``p = σ(0.5·z)``, one value per 4 frames.

    As the authors' code (the thesis gives only "3 strided convolutions, temporal stride 4,
    spatial stride 8, spatial average, sigmoid", L424):
    ``Conv3d(C→C, 3³, stride 2) - BN - ReLU - Conv3d(C→C, 3³, stride 2) - BN - ReLU -
    Conv3d(C→1, 1×3², stride (1,2,2)) - spatial mean - σ(0.5·z)``, convs with bias
    (31,465 parameters at C = 24). With padding 1 a k3 stride-2 conv maps T to ⌈T/2⌉, so
    A = ⌈⌈T/2⌉/2⌉ = T/4 exactly when 4 | T (α = 1/4).

    Args:
        channels: Channels C of the pooled feature (24 for X3D-M after res2).
        norm_layer: Norm constructor.

    Shape:
        ``(B, C, T, H, W) -> (B, ⌈T/4⌉)``.
    """

    def __init__(self, channels: int, *, norm_layer: Callable[[int], nn.Module] = nn.BatchNorm3d) -> None:
        super().__init__()
        self.conv1 = nn.Conv3d(channels, channels, 3, stride=2, padding=1)
        self.norm1 = norm_layer(channels)
        self.conv2 = nn.Conv3d(channels, channels, 3, stride=2, padding=1)
        self.norm2 = norm_layer(channels)
        self.conv3 = nn.Conv3d(channels, 1, (1, 3, 3), stride=(1, 2, 2), padding=(0, 1, 1))
        self.act = nn.ReLU()

    def forward(self, x_BCTHW: torch.Tensor) -> torch.Tensor:
        h = self.act(self.norm1(self.conv1(x_BCTHW)))
        h = self.act(self.norm2(self.conv2(h)))
        z_BA = self.conv3(h).mean((1, 3, 4))
        return torch.sigmoid(0.5 * z_BA)
