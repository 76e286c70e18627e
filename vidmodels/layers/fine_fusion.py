"""Multi-stage Fusion of Coarse-Fine Networks: Fine-stream context aligned to the Coarse frames.

Legend: B batch, C channels, T fine frames (T'), J coarse steps (αT + 1 after Grid Pool),
H/W spatial, K classes, L fusion levels (res2..res5).

Thesis L370-392, L426, and the authors' code (``x3d_coarse.RewightLayer``, ``MixingLayer``,
``Gaussian``; ``isMixing=learnedMixing=True`` as in ``train_coarse_fineFEAT.py``):

1. gate: ``X̄_t = g(X)_t·X_t`` with g = 1×1 conv - ReLU - 1×1 conv (1 channel) - σ,
   one weight per fine (t, h, w);
2. coarse-centric Gaussians ``G_tj = exp(−(t − μ_j)²/2σ²)``, normalised to peak 1 over the
   fine frames, centred on the Coarse positions (``μ_j = T_c·c_j + offset`` in fine-frame
   units) with ``σ = (valid fine frames)/8``;
3. normalised aggregation with the validity mask m:
   ``X̂_j = Σ_t m_t g_t G_tj X_t / (Σ_t m_t g_t G_tj + 1e−6)``: T' → J;
4. per level, conv - ReLU - conv gives a bias and a scale map (``C_l`` channels each);
5. at each fusion point the L maps are adaptively max-pooled to the Coarse feature's
   size and concatenated (24+48+96+192 = 360 channels for X3D-M); a 1×1 conv gives
   ``B`` and a 1×1 conv + σ gives ``A``: ``X̂^C = A ⊙ X̃^C + B``;
6. late fusion: the same on the conv5 features, spatially averaged, gives K-dim ``A``
   (σ) and ``B`` applied to the logits.

The contraction in step 3 is a batched matmul (``C·T'·J·H·W`` MACs per level); the
authors compute it as a broadcast product and a sum, which module-based FLOP counters
do not see. It sits in :class:`GaussianAggregate` so that a counter can report it apart.

``fusion_dims="C"`` (Table 3.3b) fuses channel vectors only: the Fine features are
spatially max-pooled and averaged over the valid (gated) frames without Gaussians, and
``A``/``B`` broadcast over time and space.

Reference:
    - [0] Coarse-Fine Networks for Temporal Activity Detection in Videos, Kahatapitiya & Ryoo, CVPR 2021
      (seed 000, Ch. 3; code: kkahatapitiya/Coarse-Fine-Networks ``x3d_coarse.py``)
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["FineLevelEncoder", "FusionMix", "GaussianAggregate", "MultiStageFusion", "gaussian_aggregate", "gaussian_weights"]

FusionDims = Literal["CTHW", "C"]


def gaussian_weights(mu_BJ: torch.Tensor, sigma_B: torch.Tensor, T: int) -> torch.Tensor:
    """Coarse-centric Gaussians over the fine frames, each column normalised to peak 1.

    ``G_tj = exp(−(t − μ_j)²/(2σ² + 1e−16))`` for t = 0..T−1, divided by its discrete
    maximum over t (the authors' normalisation; the thesis's 1/√(2πσ²) cancels).

    Args:
        mu_BJ: Centres in fine-frame units, ``(B, J)``.
        sigma_B: Widths, ``(B,)`` (the authors use valid fine frames / 8).
        T: Number of fine frames T'.

    Returns:
        ``G_BTJ``, ``(B, T, J)``.
    """
    t_1T1 = torch.arange(T, device=mu_BJ.device, dtype=mu_BJ.dtype)[None, :, None]
    d2_BTJ = (t_1T1 - mu_BJ[:, None, :]) ** 2
    G_BTJ = torch.exp(-d2_BTJ / (2 * sigma_B[:, None, None] ** 2 + 1e-16))
    return G_BTJ / (G_BTJ.amax(dim=1, keepdim=True) + 1e-16)


def gaussian_aggregate(x_BCTHW: torch.Tensor, w_BTHW: torch.Tensor, G_BTJ: torch.Tensor, eps: float = 1e-6) -> torch.Tensor:
    """``X̂_j = Σ_t w_t G_tj X_t / (Σ_t w_t G_tj + eps)`` per channel and location.

    Args:
        x_BCTHW: Fine features ``(B, C, T, H, W)``.
        w_BTHW: Per-frame weights ``m_t·g_t`` (mask times gate), ``(B, T, H, W)``.
        G_BTJ: Gaussians ``(B, T, J)``.
        eps: Added to the denominator (1e−6 as the authors).

    Returns:
        ``(B, C, J, H, W)``; a feature constant over t comes back unchanged (up to eps).
    """
    num_BCJHW = torch.einsum("bcthw,btj->bcjhw", x_BCTHW * w_BTHW[:, None], G_BTJ)
    den_BJHW = torch.einsum("bthw,btj->bjhw", w_BTHW, G_BTJ)
    return num_BCJHW / (den_BJHW[:, None] + eps)


class GaussianAggregate(nn.Module):
    """Parameter-free module around :func:`gaussian_aggregate` (lets FLOP counters isolate it)."""

    def forward(self, x_BCTHW: torch.Tensor, w_BTHW: torch.Tensor, G_BTJ: torch.Tensor) -> torch.Tensor:
        return gaussian_aggregate(x_BCTHW, w_BTHW, G_BTJ)


def _pointwise_mlp(in_ch: int, out_ch: int, drop_rate: float) -> nn.Sequential:
    return nn.Sequential(nn.Conv3d(in_ch, in_ch, 1), nn.ReLU(), nn.Dropout(drop_rate), nn.Conv3d(in_ch, out_ch, 1))


def _resize_hw(x_BCTHW: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Adaptive spatial max pool to ``size`` (nearest upsampling when ``size`` is larger)."""
    B, C, T, H, W = x_BCTHW.shape
    if (H, W) == tuple(size):
        return x_BCTHW
    return F.adaptive_max_pool2d(x_BCTHW.reshape(B, C * T, H, W), size).reshape(B, C, T, *size)


class FineLevelEncoder(nn.Module):
    """One Fine level: gate g, Gaussian aggregation onto the Coarse steps, bias and scale maps.

    Args:
        in_ch: Channels of the Fine features at this level.
        out_ch: Channels of the bias and scale maps (``C_l``, or K for the late level).
        gate: Use the gate g (Table 3.3c "self-attention" mask); False weights by m only.
        pooled: Average the aggregated features spatially (the late, logit level).
        sigmoid_scale: σ on the scale map (late level; intermediate scales are mixed first).
        drop_rate: Dropout between the two convs of each map (0.5 at the late level).
        fusion_dims: ``"CTHW"`` or ``"C"`` (channel vectors, no Gaussians).

    Shape:
        ``(B, C, T', H', W') -> ((B, out_ch, J, h, w), (B, out_ch, J, h, w))``; J = 1 and
        h = w = 1 when ``fusion_dims == "C"``, h = w = 1 when ``pooled``.
    """

    def __init__(
        self,
        in_ch: int,
        out_ch: int,
        *,
        gate: bool = True,
        pooled: bool = False,
        sigmoid_scale: bool = False,
        drop_rate: float = 0.0,
        fusion_dims: FusionDims = "CTHW",
    ) -> None:
        super().__init__()
        self.gate = nn.Sequential(nn.Conv3d(in_ch, in_ch, 1), nn.ReLU(), nn.Conv3d(in_ch, 1, 1)) if gate else None
        self.aggregate = GaussianAggregate()
        self.bias = _pointwise_mlp(in_ch, out_ch, drop_rate)
        self.scale = _pointwise_mlp(in_ch, out_ch, drop_rate)
        self.pooled, self.sigmoid_scale, self.fusion_dims = pooled, sigmoid_scale, fusion_dims

    def forward(
        self, f_BCTHW: torch.Tensor, G_BTJ: torch.Tensor, m_BT: torch.Tensor, size: tuple[int, int] | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        if self.fusion_dims == "C":
            f_BCTHW = f_BCTHW.amax((3, 4), keepdim=True)
            G_BTJ = torch.ones_like(G_BTJ[:, :, :1])
        elif size is not None:
            f_BCTHW = _resize_hw(f_BCTHW, size)
        B, _, T, H, W = f_BCTHW.shape
        w_BTHW = m_BT[:, :, None, None].to(f_BCTHW.dtype).expand(B, T, H, W)
        if self.gate is not None:
            w_BTHW = w_BTHW * torch.sigmoid(self.gate(f_BCTHW))[:, 0]
        x_BCJHW = self.aggregate(f_BCTHW, w_BTHW, G_BTJ)
        if self.pooled:
            x_BCJHW = x_BCJHW.mean((3, 4), keepdim=True)
        scale = self.scale(x_BCJHW)
        return self.bias(x_BCJHW), torch.sigmoid(scale) if self.sigmoid_scale else scale


class FusionMix(nn.Module):
    """One fusion point: ``X̂ = σ(f^A(⊕_l S_l)) ⊙ X + f^B(⊕_l B_l)``, the maps pooled to X's size.

    Args:
        in_ch: Sum of the level widths (360 for X3D-M).
        out_ch: Channels of the Coarse feature at this point.

    Shape:
        ``(B, out_ch, J, h, w) -> (B, out_ch, J, h, w)``.
    """

    def __init__(self, in_ch: int, out_ch: int) -> None:
        super().__init__()
        self.to_bias = nn.Conv3d(in_ch, out_ch, 1)
        self.to_scale = nn.Conv3d(in_ch, out_ch, 1)

    def forward(self, x_BCJHW: torch.Tensor, biases: Sequence[torch.Tensor], scales: Sequence[torch.Tensor]) -> torch.Tensor:
        # Channel vectors ("C" fusion: every map 1x1x1) broadcast over J, h, w instead.
        size = (1, 1) if all(m.shape[2:] == (1, 1, 1) for m in biases) else tuple(x_BCJHW.shape[3:])
        b = self.to_bias(torch.cat([_resize_hw(m, size) for m in biases], dim=1))
        a = torch.sigmoid(self.to_scale(torch.cat([_resize_hw(m, size) for m in scales], dim=1)))
        return a * x_BCJHW + b


class MultiStageFusion(nn.Module):
    """All Fine levels, the fusion points after Grid Pool and res3-res5, and late fusion.

    Args:
        fine_dims: Fine channels per level (res2..res5: 24, 48, 96, 192 for X3D-M).
        coarse_dims: Coarse channels at each fusion point (the same for equal backbones).
        late_dim: Fine conv5 channels (432).
        num_classes: K.
        gate: Use the gate g.
        fusion_dims: ``"CTHW"`` (default) or ``"C"``.
        late_drop_rate: Dropout inside the late-fusion convs (0.5).
    """

    def __init__(
        self,
        fine_dims: Sequence[int],
        coarse_dims: Sequence[int],
        late_dim: int,
        num_classes: int,
        *,
        gate: bool = True,
        fusion_dims: FusionDims = "CTHW",
        late_drop_rate: float = 0.5,
    ) -> None:
        super().__init__()
        kw = {"gate": gate, "fusion_dims": fusion_dims}
        self.levels = nn.ModuleList(FineLevelEncoder(c, c, **kw) for c in fine_dims)
        self.mixes = nn.ModuleList(FusionMix(sum(fine_dims), c) for c in coarse_dims)
        self.late = FineLevelEncoder(
            late_dim, num_classes, pooled=True, sigmoid_scale=True, drop_rate=late_drop_rate, **kw
        )

    def encode(
        self, feats: Sequence[torch.Tensor], G_BTJ: torch.Tensor, m_BT: torch.Tensor, sizes: Sequence[tuple[int, int]]
    ) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        """Bias and scale maps of every level, level l at the Coarse size ``sizes[l]``."""
        maps = [enc(f, G_BTJ, m_BT, size) for enc, f, size in zip(self.levels, feats, sizes, strict=True)]
        return [b for b, _ in maps], [s for _, s in maps]

    def mix(self, i: int, x_BCJHW: torch.Tensor, biases: list[torch.Tensor], scales: list[torch.Tensor]) -> torch.Tensor:
        """Fusion point ``i`` (0: after Grid Pool, 1-3: after res3-res5)."""
        return self.mixes[i](x_BCJHW, biases, scales)

    def fuse_logits(self, logits_BJK: torch.Tensor, f_BCTHW: torch.Tensor, G_BTJ: torch.Tensor, m_BT: torch.Tensor) -> torch.Tensor:
        """Late fusion ``A ⊙ logits + B`` with K-dim A, B from the Fine conv5 features."""
        b_BKJ11, a_BKJ11 = self.late(f_BCTHW, G_BTJ, m_BT)
        b_BJK, a_BJK = b_BKJ11[:, :, :, 0, 0].transpose(1, 2), a_BKJ11[:, :, :, 0, 0].transpose(1, 2)
        return a_BJK * logits_BJK + b_BJK
