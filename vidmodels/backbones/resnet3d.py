"""Video ResNets: R3D, R(2+1)D and DPC's R-2D3D, built from one residual block.

Legend: B batch, C channels, T time, H/W spatial, D embedding dim, K classes.

All three are ResNet-18/34 layouts of BasicBlocks (two 3x3 convs + identity or a
1x1x1 projection shortcut), bias-free convs, BatchNorm and ReLU; they differ in
the stem and in the conv used per stage:

- ``r3d_18``: full 3x3x3 convs; stem 3x7x7 stride (1,2,2), 64 ch; stages stride in
  T, H and W. 33,371,472 parameters with K=400.
- ``r2plus1d_18``: each 3x3x3 conv factorised into 1x3x3 (to ``M`` channels), BN,
  ReLU, 3x1x1, with ``M = (27 C_in C_out) // (9 C_in + 3 C_out)`` so the factorised
  conv has about the parameters of the full one (computed once per block from the
  block's input width and reused by its second conv). Stem 1x7x7 to 45 ch then
  3x1x1 to 64. 31,505,325 parameters with K=400.
- ``r2d3d_18`` / ``r2d3d_34`` (DPC, MemDPC encoder): res2 and res3 use 2D 1x3x3
  kernels and stride only in space; res4 and res5 use 3x3x3 kernels and stride in
  time too; widths 64/128/256/**256**, so D=256; stem 1x7x7 stride (1,2,2) + max-pool
  1x3x3 stride (1,2,2); the last block has no final ReLU (seed 001 L406-L408 and
  digest 1.3). A 5x128² block gives a 256x2x4x4 map. The thesis quotes 14.2M (R18)
  and 32.6M (R34) parameters (Table 2.4, seed 001 L502-L512). The headless encoders
  here have 14,057,536 and 32,422,208; with DPC's two-layer predictor φ (1x1 convs
  256→256→256, 131,584 parameters) they have 14,189,120 and 32,553,792, which round
  to exactly the quoted figures, so we read the thesis as counting encoder + φ. With
  a 400-way classifier instead (the summary's convention) they are 14.16M / 32.53M.

Reference:
    - [0] A Closer Look at Spatiotemporal Convolutions for Action Recognition, Tran et al., CVPR 2018
    - [1] Can Spatiotemporal 3D CNNs Retrace the History of 2D CNNs and ImageNet?, Hara et al., CVPR 2018
    - [2] Video Representation Learning by Dense Predictive Coding, Han et al., ICCV-W 2019
    - [3] Memory-augmented Dense Predictive Coding, Han et al., ECCV 2020
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, Protocol

import torch
from torch import nn

from vidmodels.backbones.base import VideoBackbone
from vidmodels.layers import ConvNormAct3d
from vidmodels.registry import register

NormLayer = Callable[[int], nn.Module]
ActLayer = Callable[[], nn.Module]


class ConvBuilder(Protocol):
    """A 3x3(x3) conv constructor; ``strides_time`` says whether ``stride`` applies to T."""

    strides_time: bool

    def __call__(self, in_ch: int, out_ch: int, *, stride: int, mid_ch: int, norm_layer: NormLayer, act_layer: ActLayer) -> nn.Module: ...


class Conv3x3x3(nn.Conv3d):
    """Full 3D conv, stride in T, H and W."""

    strides_time = True

    def __init__(self, in_ch: int, out_ch: int, *, stride: int, mid_ch: int, norm_layer: NormLayer, act_layer: ActLayer) -> None:
        super().__init__(in_ch, out_ch, 3, stride=stride, padding=1, bias=False)


class Conv1x3x3(nn.Conv3d):
    """Per-frame 2D conv (a 1x3x3 kernel), stride in H and W only."""

    strides_time = False

    def __init__(self, in_ch: int, out_ch: int, *, stride: int, mid_ch: int, norm_layer: NormLayer, act_layer: ActLayer) -> None:
        super().__init__(in_ch, out_ch, (1, 3, 3), stride=(1, stride, stride), padding=(0, 1, 1), bias=False)


class Conv2Plus1d(nn.Sequential):
    """(2+1)D conv: 1x3x3 to ``mid_ch``, norm, act, then 3x1x1; strides in T, H and W."""

    strides_time = True

    def __init__(self, in_ch: int, out_ch: int, *, stride: int, mid_ch: int, norm_layer: NormLayer, act_layer: ActLayer) -> None:
        super().__init__(
            ConvNormAct3d(in_ch, mid_ch, (1, 3, 3), (1, stride, stride), (0, 1, 1), norm_layer=norm_layer, act_layer=act_layer),
            nn.Conv3d(mid_ch, out_ch, (3, 1, 1), stride=(stride, 1, 1), padding=(1, 0, 0), bias=False),
        )


class BasicBlock3d(nn.Module):
    """Residual block ``act(x + bn(conv(act(bn(conv(x))))))`` with a 1x1x1 projection when shapes change.

    Args:
        in_ch: Input channels.
        out_ch: Output channels.
        stride: Spatial stride (and temporal, when ``conv_layer.strides_time``).
        conv_layer: The 3x3 conv builder of this stage.
        norm_layer: Norm constructor.
        act_layer: Activation constructor.
        final_act: Apply the activation after the addition (DPC drops it in the last block).
    """

    def __init__(
        self,
        in_ch: int,
        out_ch: int,
        *,
        stride: int,
        conv_layer: ConvBuilder,
        norm_layer: NormLayer,
        act_layer: ActLayer,
        final_act: bool = True,
    ) -> None:
        super().__init__()
        mid_ch = (in_ch * out_ch * 27) // (in_ch * 9 + 3 * out_ch)  # used by (2+1)D only
        kw = dict(mid_ch=mid_ch, norm_layer=norm_layer, act_layer=act_layer)
        self.conv1 = conv_layer(in_ch, out_ch, stride=stride, **kw)
        self.bn1 = norm_layer(out_ch)
        self.act1 = act_layer()
        self.conv2 = conv_layer(out_ch, out_ch, stride=1, **kw)
        self.bn2 = norm_layer(out_ch)
        self.act2 = act_layer() if final_act else nn.Identity()
        self.shortcut: nn.Module = nn.Identity()
        if stride != 1 or in_ch != out_ch:
            s = (stride if conv_layer.strides_time else 1, stride, stride)
            self.shortcut = nn.Sequential(nn.Conv3d(in_ch, out_ch, 1, stride=s, bias=False), norm_layer(out_ch))

    def forward(self, x_BCTHW: torch.Tensor) -> torch.Tensor:
        y = self.act1(self.bn1(self.conv1(x_BCTHW)))
        y = self.bn2(self.conv2(y))
        return self.act2(y + self.shortcut(x_BCTHW))


class ResNet3d(VideoBackbone):
    """A video ResNet with a given stem and one conv type per stage.

    Args:
        stem: Module mapping the input ``(B, C_in, T, H, W)`` to ``stem_out`` channels.
        stem_out: Output channels of ``stem``.
        conv_layers: Conv builder of each of the four stages.
        depths: Blocks per stage.
        widths: Output channels per stage.
        num_classes: Classifier size K; 0 for headless.
        drop_rate: Dropout before the classifier.
        final_act: Whether the very last block ends with an activation.
        norm_layer: Norm constructor.
        act_layer: Activation constructor.
    """

    def __init__(
        self,
        *,
        stem: nn.Module,
        stem_out: int,
        conv_layers: Sequence[ConvBuilder],
        depths: Sequence[int],
        widths: Sequence[int],
        num_classes: int = 0,
        drop_rate: float = 0.0,
        final_act: bool = True,
        norm_layer: NormLayer = nn.BatchNorm3d,
        act_layer: ActLayer = nn.ReLU,
    ) -> None:
        super().__init__()
        self.stem = stem
        stages: list[nn.Module] = []
        in_ch = stem_out
        for i, (conv_layer, depth, width) in enumerate(zip(conv_layers, depths, widths, strict=True)):
            blocks = []
            for j in range(depth):
                last = i == len(depths) - 1 and j == depth - 1
                blocks.append(
                    BasicBlock3d(
                        in_ch,
                        width,
                        stride=2 if (i > 0 and j == 0) else 1,
                        conv_layer=conv_layer,
                        norm_layer=norm_layer,
                        act_layer=act_layer,
                        final_act=final_act or not last,
                    )
                )
                in_ch = width
            stages.append(nn.Sequential(*blocks))
        self.stages = nn.Sequential(*stages)
        self.feature_map_dim = in_ch
        self._init_head(feature_dim=in_ch, num_classes=num_classes, drop_rate=drop_rate)
        self._init_weights()

    def _init_weights(self) -> None:
        for m in self.modules():
            if isinstance(m, nn.Conv3d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, nn.BatchNorm3d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)

    def forward_features(self, x_BCTHW: torch.Tensor) -> torch.Tensor:
        """``(B, C_in, T, H, W) -> (B, D, T', H', W')``."""
        return self.stages(self.stem(x_BCTHW))


def _r3d_stem(in_chans: int, width: int, norm_layer: NormLayer) -> nn.Module:
    return ConvNormAct3d(in_chans, width, (3, 7, 7), (1, 2, 2), (1, 3, 3), norm_layer=norm_layer)


def _r2plus1d_stem(in_chans: int, width: int, norm_layer: NormLayer) -> nn.Module:
    mid = width * 45 // 64
    return nn.Sequential(
        ConvNormAct3d(in_chans, mid, (1, 7, 7), (1, 2, 2), (0, 3, 3), norm_layer=norm_layer),
        ConvNormAct3d(mid, width, (3, 1, 1), 1, (1, 0, 0), norm_layer=norm_layer),
    )


def _r2d3d_stem(in_chans: int, width: int, norm_layer: NormLayer) -> nn.Module:
    return nn.Sequential(
        ConvNormAct3d(in_chans, width, (1, 7, 7), (1, 2, 2), (0, 3, 3), norm_layer=norm_layer),
        nn.MaxPool3d((1, 3, 3), stride=(1, 2, 2), padding=(0, 1, 1)),
    )


def create_r3d(
    *, depths: Sequence[int] = (2, 2, 2, 2), widths: Sequence[int] = (64, 128, 256, 512), in_chans: int = 3,
    num_classes: int = 0, drop_rate: float = 0.0, norm_layer: NormLayer = nn.BatchNorm3d,
) -> ResNet3d:
    """R3D: full 3D ResNet (Tran et al. 2018)."""
    return ResNet3d(
        stem=_r3d_stem(in_chans, widths[0], norm_layer), stem_out=widths[0], conv_layers=[Conv3x3x3] * 4,
        depths=depths, widths=widths, num_classes=num_classes, drop_rate=drop_rate, norm_layer=norm_layer,
    )


def create_r2plus1d(
    *, depths: Sequence[int] = (2, 2, 2, 2), widths: Sequence[int] = (64, 128, 256, 512), in_chans: int = 3,
    num_classes: int = 0, drop_rate: float = 0.0, norm_layer: NormLayer = nn.BatchNorm3d,
) -> ResNet3d:
    """R(2+1)D: every 3x3x3 conv factorised into 1x3x3 and 3x1x1 (Tran et al. 2018)."""
    return ResNet3d(
        stem=_r2plus1d_stem(in_chans, widths[0], norm_layer), stem_out=widths[0], conv_layers=[Conv2Plus1d] * 4,
        depths=depths, widths=widths, num_classes=num_classes, drop_rate=drop_rate, norm_layer=norm_layer,
    )


def create_r2d3d(
    *, depths: Sequence[int] = (2, 2, 2, 2), widths: Sequence[int] = (64, 128, 256, 256), in_chans: int = 3,
    num_classes: int = 0, drop_rate: float = 0.0, final_act: bool = False, norm_layer: NormLayer = nn.BatchNorm3d,
) -> ResNet3d:
    """R-2D3D: 2D kernels in res2-res3, 3D in res4-res5, final width 256 (DPC/MemDPC)."""
    return ResNet3d(
        stem=_r2d3d_stem(in_chans, widths[0], norm_layer), stem_out=widths[0],
        conv_layers=[Conv1x3x3, Conv1x3x3, Conv3x3x3, Conv3x3x3], depths=depths, widths=widths,
        num_classes=num_classes, drop_rate=drop_rate, final_act=final_act, norm_layer=norm_layer,
    )


_DEBUG = dict(depths=(1, 1, 1, 1), widths=(8, 16, 32, 32))


@register(input_size=(16, 112, 112), ref_params=33_371_472, ref_gmacs=40.70,
          ref_source="torchvision r3d_18 (params); 40.70 GMACs at 16x112² from torchvision's model card (GFLOPS column counts MACs)")
def r3d_18(*, num_classes: int = 0, **kwargs: Any) -> ResNet3d:
    """R3D-18 (Tran et al. 2018)."""
    return create_r3d(num_classes=num_classes, **kwargs)


@register(input_size=(16, 112, 112), ref_params=31_505_325, ref_gmacs=40.52,
          ref_source="torchvision r2plus1d_18 (params); 40.52 GMACs at 16x112² from torchvision's model card (MACs)")
def r2plus1d_18(*, num_classes: int = 0, **kwargs: Any) -> ResNet3d:
    """R(2+1)D-18 (Tran et al. 2018)."""
    return create_r2plus1d(num_classes=num_classes, **kwargs)


@register(input_size=(5, 128, 128), ref_params=14_200_000, ref_params_precision=100_000,
          ref_source="DPC thesis Table 2.4 '3D-ResNet18 (14.2M)' (seed 001 L502); headless + predictor φ = 14,189,120")
def r2d3d_18(*, num_classes: int = 0, **kwargs: Any) -> ResNet3d:
    """R-2D3D-18, the DPC/MemDPC encoder (D=256)."""
    return create_r2d3d(num_classes=num_classes, **kwargs)


@register(input_size=(5, 224, 224), ref_params=32_600_000, ref_params_precision=100_000,
          ref_source="DPC thesis Table 2.4 '3D-ResNet34 (32.6M)' (seed 001 L511); headless + predictor φ = 32,553,792")
def r2d3d_34(*, num_classes: int = 0, **kwargs: Any) -> ResNet3d:
    """R-2D3D-34, the DPC/MemDPC encoder at 224² (D=256)."""
    return create_r2d3d(depths=(3, 4, 6, 3), num_classes=num_classes, **kwargs)


@register(input_size=(4, 32, 32))
def r3d_debug(*, num_classes: int = 0, **kwargs: Any) -> ResNet3d:
    """Tiny R3D for tests."""
    return create_r3d(num_classes=num_classes, **{**_DEBUG, **kwargs})


@register(input_size=(4, 32, 32))
def r2plus1d_debug(*, num_classes: int = 0, **kwargs: Any) -> ResNet3d:
    """Tiny R(2+1)D for tests."""
    return create_r2plus1d(num_classes=num_classes, **{**_DEBUG, **kwargs})


@register(input_size=(5, 32, 32))
def r2d3d_debug(*, num_classes: int = 0, **kwargs: Any) -> ResNet3d:
    """Tiny R-2D3D for tests."""
    return create_r2d3d(num_classes=num_classes, **{**_DEBUG, **kwargs})
