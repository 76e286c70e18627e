"""X3D: expanded 3D networks (channel-wise 3x3x3 bottlenecks, squeeze-excitation, swish).

Legend: B batch, C channels, T time, H/W spatial, D embedding dim (2048), K classes.

Layout (Feichtenhofer, CVPR 2020, Table 1; the PySlowFast/pytorchvideo reference):

- stem ("conv1"): 1x3x3 conv stride (1,2,2) to ``round_width(12, γ_w)`` = 24 channels,
  then a channel-wise 5x1x1 temporal conv, one BN and ReLU;
- res2..res5: bottleneck blocks ``1x1x1 (C→γ_b C) - BN - ReLU - 3x3x3 channel-wise
  - BN - [SE 1/16] - swish - 1x1x1 (→C) - BN`` plus the shortcut, then ReLU. Widths
  ``round_width(12·2^s, γ_w)`` = 24/48/96/192, inner widths ``int(γ_b·C)`` =
  54/108/216/432 with γ_b=2.25; depths ``ceil(γ_d·[1, 2, 5, 3])``: γ_d=2.2 gives
  [3, 5, 11, 7] (XS, S, M) and γ_d=5.0 gives [5, 10, 25, 15] (L). SE on every other
  block (the 1st, 3rd, ... of each stage). The first block of every stage strides
  2 in space; time is never downsampled, so per-frame outputs come naturally.
- conv5: 1x1x1 to 432 (γ_b·192), BN, ReLU -> this is ``forward_features``;
- head: global average pool, 1x1x1 (here: linear, no bias) 432→2048, ReLU,
  dropout 0.5, linear 2048→K. ``feature_dim`` is 2048 (``pre_logits``).

XS, S and M are the same network (3,794,322 parameters with K=400) evaluated at
4x160², 13x160² and 16x256² (M is trained at 16x224²); L has 6,153,432. These
equal the pytorchvideo model zoo's 3.79M / 6.15M. The X3D paper's Table 3 lists
3.76M / 6.08M; the gap is almost exactly the BatchNorm affine parameters
(31,464 for XS/S/M and 66,312 for L), which that count leaves out: 3,762,858
-> 3.76M and 6,087,120 -> 6.08M (truncated). Depths come from ceil(γ_d·base):
γ_d=5.0 gives [5, 10, 25, 15] for L (depths [2, 5, 13, 8] would give 4.07M, not 6.15M).

Multiply-adds (``torch.utils.flop_counter`` FLOPs / 2; the paper's "FLOPs" are
multiply-adds): XS 0.605 G @4x160² (paper 0.60), S 1.963 @13x160² (1.96), M 4.732
@16x224² (4.73) and 6.181 @16x256² (Table 4: 6.2), L 18.368 @16x312² (18.37) and
24.764 @16x356² (Table 4: 24.8).

Reference:
    - [0] X3D: Expanding Architectures for Efficient Video Recognition, Feichtenhofer, CVPR 2020
    - [1] Coarse-Fine Networks for Temporal Activity Detection in Videos, Kahatapitiya & Ryoo, CVPR 2021
      (seed 000, Table 3.1, X3D-M per stream)
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import nn

from vidmodels.backbones.base import VideoBackbone
from vidmodels.layers import ConvNormAct3d, DropPath, SqueezeExcite3d, round_width
from vidmodels.registry import register

NormLayer = Callable[[int], nn.Module]
ActLayer = Callable[[], nn.Module]


class X3DStem(nn.Module):
    """1x3x3 conv stride (1,2,2), channel-wise kxx1x1 temporal conv, norm, act.

    Shape:
        ``(B, C_in, T, H, W) -> (B, width, T, H/2, W/2)``.
    """

    def __init__(self, in_chans: int, width: int, *, temporal_kernel: int, norm_layer: NormLayer, act_layer: ActLayer) -> None:
        super().__init__()
        self.conv_xy = nn.Conv3d(in_chans, width, (1, 3, 3), stride=(1, 2, 2), padding=(0, 1, 1), bias=False)
        self.conv_t = nn.Conv3d(
            width, width, (temporal_kernel, 1, 1), padding=(temporal_kernel // 2, 0, 0), groups=width, bias=False
        )
        self.norm = norm_layer(width)
        self.act = act_layer()

    def forward(self, x_BCTHW: torch.Tensor) -> torch.Tensor:
        return self.act(self.norm(self.conv_t(self.conv_xy(x_BCTHW))))


class X3DBottleneck(nn.Module):
    """X3D residual bottleneck with a channel-wise 3x3x3 conv; see the module docstring.

    Args:
        in_ch: Input channels.
        inner_ch: Expanded channels of the channel-wise conv.
        out_ch: Output channels.
        stride: Spatial stride of the channel-wise conv (and of the shortcut).
        se_ratio: Squeeze-excitation ratio; 0 disables SE.
        norm_layer: Norm constructor.
        act_layer: Activation after the first conv and after the addition.
        inner_act_layer: Activation after the channel-wise conv (swish).
        drop_path: Stochastic-depth probability of the residual branch.
    """

    def __init__(
        self,
        in_ch: int,
        inner_ch: int,
        out_ch: int,
        *,
        stride: int,
        se_ratio: float,
        norm_layer: NormLayer,
        act_layer: ActLayer,
        inner_act_layer: ActLayer,
        drop_path: float = 0.0,
    ) -> None:
        super().__init__()
        self.conv_a = ConvNormAct3d(in_ch, inner_ch, 1, norm_layer=norm_layer, act_layer=act_layer)
        self.conv_b = ConvNormAct3d(
            inner_ch, inner_ch, 3, (1, stride, stride), groups=inner_ch, norm_layer=norm_layer, act_layer=None
        )
        self.se = SqueezeExcite3d(inner_ch, se_ratio) if se_ratio > 0 else nn.Identity()
        self.act_b = inner_act_layer()
        self.conv_c = ConvNormAct3d(inner_ch, out_ch, 1, norm_layer=norm_layer, act_layer=None)
        self.drop_path = DropPath(drop_path)
        self.shortcut: nn.Module = nn.Identity()
        if stride != 1 or in_ch != out_ch:
            self.shortcut = ConvNormAct3d(in_ch, out_ch, 1, (1, stride, stride), norm_layer=norm_layer, act_layer=None)
        self.act = act_layer()

    def forward(self, x_BCTHW: torch.Tensor) -> torch.Tensor:
        y = self.act_b(self.se(self.conv_b(self.conv_a(x_BCTHW))))
        y = self.conv_c(y)
        return self.act(self.shortcut(x_BCTHW) + self.drop_path(y))


class X3D(VideoBackbone):
    """X3D backbone; see the module docstring.

    Args:
        num_classes: Classifier size K; 0 for headless (returns the 2048-d embedding).
        in_chans: Input channels.
        width_factor: γ_w, multiplier of the base widths 12/12/24/48/96 (2.0 for XS-L).
        depth_factor: γ_d, multiplier of the base depths [1, 2, 5, 3] (2.2 for XS-M, 5.0 for L).
        bottleneck_factor: γ_b, inner expansion of every bottleneck (2.25).
        head_dim: Width of the head's 1x1x1 projection (2048).
        se_ratio: Squeeze-excitation ratio (1/16).
        stem_temporal_kernel: Kernel of the stem's channel-wise temporal conv (5).
        drop_rate: Dropout before the classifier (0.5).
        drop_path_rate: Maximum stochastic depth, linearly increased over blocks.
        norm_layer: Norm constructor.
        act_layer: Main activation (ReLU).
        inner_act_layer: Activation after the channel-wise conv (swish = SiLU).
    """

    def __init__(
        self,
        *,
        num_classes: int = 0,
        in_chans: int = 3,
        width_factor: float = 2.0,
        depth_factor: float = 2.2,
        bottleneck_factor: float = 2.25,
        head_dim: int = 2048,
        se_ratio: float = 0.0625,
        stem_temporal_kernel: int = 5,
        base_depths: Sequence[int] = (1, 2, 5, 3),
        drop_rate: float = 0.5,
        drop_path_rate: float = 0.0,
        norm_layer: NormLayer = nn.BatchNorm3d,
        act_layer: ActLayer = nn.ReLU,
        inner_act_layer: ActLayer = nn.SiLU,
    ) -> None:
        super().__init__()
        stem_ch = round_width(12, width_factor)
        self.stem = X3DStem(in_chans, stem_ch, temporal_kernel=stem_temporal_kernel, norm_layer=norm_layer, act_layer=act_layer)
        depths = [int(math.ceil(depth_factor * d)) for d in base_depths]
        n = sum(depths)
        dpr = [drop_path_rate * i / max(n - 1, 1) for i in range(n)]
        stages, in_ch, k = [], stem_ch, 0
        for s, depth in enumerate(depths):
            out_ch = round_width(12 * 2**s, width_factor)
            inner_ch = int(bottleneck_factor * out_ch)
            blocks = []
            for j in range(depth):
                blocks.append(
                    X3DBottleneck(
                        in_ch, inner_ch, out_ch, stride=2 if j == 0 else 1, se_ratio=se_ratio if j % 2 == 0 else 0.0,
                        norm_layer=norm_layer, act_layer=act_layer, inner_act_layer=inner_act_layer, drop_path=dpr[k],
                    )
                )
                in_ch, k = out_ch, k + 1
            stages.append(nn.Sequential(*blocks))
        self.stages = nn.Sequential(*stages)
        self.depths = depths
        self.feature_map_dim = int(bottleneck_factor * in_ch)
        self.conv5 = ConvNormAct3d(in_ch, self.feature_map_dim, 1, norm_layer=norm_layer, act_layer=act_layer)
        self.head_proj = nn.Linear(self.feature_map_dim, head_dim, bias=False)
        self.head_act = act_layer()
        self._init_head(feature_dim=head_dim, num_classes=num_classes, drop_rate=drop_rate)
        self._init_weights()

    def _init_weights(self) -> None:
        for m in self.modules():
            if isinstance(m, nn.Conv3d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
        for m in self.modules():
            if isinstance(m, X3DBottleneck):  # zero-init the last BN: blocks start as identities
                nn.init.zeros_(m.conv_c[1].weight)

    def forward_features(self, x_BCTHW: torch.Tensor) -> torch.Tensor:
        """``(B, C_in, T, H, W) -> (B, 432, T, H/32, W/32)`` (conv5 output)."""
        return self.conv5(self.stages(self.stem(x_BCTHW)))

    def pool(self, x_BCTHW: torch.Tensor) -> torch.Tensor:
        """Global average pool, then the head's 1x1x1 projection and ReLU: ``-> (B, 2048)``."""
        return self.head_act(self.head_proj(x_BCTHW.mean((2, 3, 4))))

    def forward_frames(self, x_BCTHW: torch.Tensor, num_frames: int | None = None) -> torch.Tensor:
        """Per-frame logits for temporal detection: ``(B, C_in, T, H, W) -> (B, T, K)``.

        X3D keeps the temporal resolution, so each input step gets logits from the same head
        as :meth:`forward` applied without the temporal mean: spatial mean -> ``head_proj``
        (432 -> 2048, no bias) -> ReLU -> dropout -> fc, the per-frame head of the SSDet and
        Coarse-Fine code. ``num_frames`` interpolates the logits linearly in time to that many
        frames as their code does (``F.interpolate(mode="linear")``, ``align_corners=False``:
        16 steps of a stride-10 clip onto its 160 raw frames, each step at the centre of its 10).
        """
        from vidmodels.heads import interpolate_time

        if self.num_classes == 0:
            raise ValueError("forward_frames needs a classifier: build with num_classes > 0")
        z_BTD = self.head_act(self.head_proj(self.forward_features(x_BCTHW).mean((3, 4)).transpose(1, 2)))
        logits_BTK = self.head(z_BTD)
        return logits_BTK if num_frames is None else interpolate_time(logits_BTK, num_frames)


_X3D_XSM_SRC = (
    "params: pytorchvideo model zoo 3.79M (paper Table 3: 3.76M, without BN affine); "
    "MACs: X3D paper (FLOPs there are multiply-adds)"
)


@register(input_size=(4, 160, 160), ref_params=3_790_000, ref_params_precision=10_000, ref_gmacs=0.60, ref_source=_X3D_XSM_SRC + ", Table 3 XS 0.60G @4x160²")
def x3d_xs(*, num_classes: int = 0, **kwargs: Any) -> X3D:
    """X3D-XS (same network as S and M; 4x160² input)."""
    return X3D(num_classes=num_classes, **kwargs)


@register(input_size=(13, 160, 160), ref_params=3_790_000, ref_params_precision=10_000, ref_gmacs=1.96, ref_source=_X3D_XSM_SRC + ", Table 3 S 1.96G @13x160²")
def x3d_s(*, num_classes: int = 0, **kwargs: Any) -> X3D:
    """X3D-S (13x160² input)."""
    return X3D(num_classes=num_classes, **kwargs)


@register(input_size=(16, 256, 256), ref_params=3_790_000, ref_params_precision=10_000, ref_gmacs=6.2, ref_gmacs_precision=0.1,
          ref_source=_X3D_XSM_SRC + ", Table 4 M 6.2G @16x256² test size (Table 3: 4.73G @16x224²)")
def x3d_m(*, num_classes: int = 0, **kwargs: Any) -> X3D:
    """X3D-M, the backbone of seed 000's Coarse-Fine and detection pretraining (16x256² test input)."""
    return X3D(num_classes=num_classes, **kwargs)


@register(input_size=(16, 356, 356), ref_params=6_150_000, ref_params_precision=10_000, ref_gmacs=24.8, ref_gmacs_precision=0.1,
          ref_source="params: pytorchvideo model zoo 6.15M (paper Table 3: 6.08M, without BN affine); "
          "MACs: X3D paper Table 4 L 24.8G @16x356² test size (Table 3: 18.37G @16x312²)")
def x3d_l(*, num_classes: int = 0, **kwargs: Any) -> X3D:
    """X3D-L (depth factor 5.0; 16x356² test input)."""
    return X3D(num_classes=num_classes, **{"depth_factor": 5.0, **kwargs})


@register(input_size=(4, 32, 32))
def x3d_debug(*, num_classes: int = 0, **kwargs: Any) -> X3D:
    """Tiny X3D for tests (widths 8-24, depths [1, 1, 2, 2], 64-d head)."""
    return X3D(num_classes=num_classes, **{"width_factor": 0.5, "depth_factor": 0.4, "head_dim": 64, **kwargs})
