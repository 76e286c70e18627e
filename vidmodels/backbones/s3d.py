"""S3D: Inception-v1 with separable 3D convolutions, the CoCLR backbone.

Legend: B batch, C channels, T time, H/W spatial, D embedding dim (1024), K classes.

Layout (Xie et al. 2018, Fig. 2; no feature gating unless ``gating=True``): a
separable 7x7x7 stem with stride 2 in all axes, a 1x1x1 and a separable 3x3x3
conv, then nine Inception blocks whose 3x3 branches are separable (1x3x3 then
3x1x1), with max-pools between stages. Every conv is bias-free and followed by
BatchNorm and ReLU. BatchNorm uses PyTorch's defaults (eps 1e-5, momentum 0.1), as the CoCLR
authors' ``backbone/s3dg.py`` does; ``s3d_tf`` keeps the TF reference's eps 1e-3 and momentum
1e-3 (decay 0.999). The classifier
is dropout and a linear map 1024→K with bias after global average pooling; the
reference applies a 1x1x1 conv before averaging, which for global pooling is the
same map with the same 1024·K + K parameters. With K=400 the network has
8,320,048 parameters, as the widely used reference implementation. A 32x128²
clip (CoCLR) gives a 1024x4x4x4 feature map.

Reference:
    - [0] Rethinking Spatiotemporal Feature Learning: Speed-Accuracy Trade-offs in
      Video Classification (S3D), Xie et al., ECCV 2018
    - [1] Self-supervised Co-training for Video Representation Learning (CoCLR),
      Han et al., NeurIPS 2020 (seed 001, L971)
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from vidmodels.backbones.base import VideoBackbone
from vidmodels.layers import ConvNormAct3d
from vidmodels.registry import register

NormLayer = Callable[[int], nn.Module]

# Inception blocks: (b0_out, b1_mid, b1_out, b2_mid, b2_out, b3_out); input widths follow.
# "pool" inserts the max-pool of the given kernel/stride between blocks (Inception-v1 3b..5c).
_INCEPTION_CFG: list[tuple[int, ...] | str] = [
    (64, 96, 128, 16, 32, 32),  # 3b
    (128, 128, 192, 32, 96, 64),  # 3c
    "pool3",
    (192, 96, 208, 16, 48, 64),  # 4b
    (160, 112, 224, 24, 64, 64),  # 4c
    (128, 128, 256, 24, 64, 64),  # 4d
    (112, 144, 288, 32, 64, 64),  # 4e
    (256, 160, 320, 32, 128, 128),  # 4f
    "pool2",
    (256, 160, 320, 32, 128, 128),  # 5b
    (384, 192, 384, 48, 128, 128),  # 5c
]


class SepConv3d(nn.Sequential):
    """Separable ``k x k x k`` conv: spatial ``1 x k x k`` then temporal ``k x 1 x 1``, each with BN-ReLU."""

    def __init__(self, in_ch: int, out_ch: int, kernel_size: int, stride: int, *, norm_layer: NormLayer) -> None:
        p = kernel_size // 2
        super().__init__(
            ConvNormAct3d(in_ch, out_ch, (1, kernel_size, kernel_size), (1, stride, stride), (0, p, p), norm_layer=norm_layer),
            ConvNormAct3d(out_ch, out_ch, (kernel_size, 1, 1), (stride, 1, 1), (p, 0, 0), norm_layer=norm_layer),
        )


class SelfGating(nn.Module):
    """S3D-G feature gating ``x * sigmoid(W mean_THW(x) + b)``."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.fc = nn.Linear(channels, channels)

    def forward(self, x_BCTHW: torch.Tensor) -> torch.Tensor:
        g_BC = torch.sigmoid(self.fc(x_BCTHW.mean((2, 3, 4))))
        return x_BCTHW * g_BC[:, :, None, None, None]


class SepInception3d(nn.Module):
    """Inception block with separable 3x3x3 branches; outputs are concatenated.

    Shape:
        ``(B, in_ch, T, H, W) -> (B, out_ch, T, H, W)`` with ``out_ch = b0 + b1 + b2 + b3``.
    """

    def __init__(self, in_ch: int, widths: tuple[int, ...], *, norm_layer: NormLayer, gating: bool) -> None:
        super().__init__()
        b0, b1m, b1, b2m, b2, b3 = widths
        self.out_ch = b0 + b1 + b2 + b3
        self.branch0 = ConvNormAct3d(in_ch, b0, 1, norm_layer=norm_layer)
        self.branch1 = nn.Sequential(
            ConvNormAct3d(in_ch, b1m, 1, norm_layer=norm_layer), SepConv3d(b1m, b1, 3, 1, norm_layer=norm_layer)
        )
        self.branch2 = nn.Sequential(
            ConvNormAct3d(in_ch, b2m, 1, norm_layer=norm_layer), SepConv3d(b2m, b2, 3, 1, norm_layer=norm_layer)
        )
        self.branch3 = nn.Sequential(
            nn.MaxPool3d(3, stride=1, padding=1), ConvNormAct3d(in_ch, b3, 1, norm_layer=norm_layer)
        )
        self.gates = nn.ModuleList(SelfGating(c) for c in (b0, b1, b2, b3)) if gating else None

    def forward(self, x_BCTHW: torch.Tensor) -> torch.Tensor:
        outs = [self.branch0(x_BCTHW), self.branch1(x_BCTHW), self.branch2(x_BCTHW), self.branch3(x_BCTHW)]
        if self.gates is not None:
            outs = [g(o) for g, o in zip(self.gates, outs, strict=True)]
        return torch.cat(outs, dim=1)


class S3D(VideoBackbone):
    """S3D (optionally S3D-G) backbone; see the module docstring.

    Args:
        num_classes: Classifier size K; 0 for a headless backbone.
        in_chans: Input channels (3 RGB; 2 or 3 for optical flow).
        width_mult: Multiplier on every width (1.0 is the published network).
        drop_rate: Dropout before the classifier (0.2 in the reference, 0.5 in CoCLR's finetuning).
        gating: Adds S3D-G self-gating after every Inception branch.
        bn_momentum: Momentum of the default BN's running statistics (0.1, PyTorch's and
            the CoCLR code's; the TF reference's 1e-3 needs thousands of steps before
            eval-mode outputs mean anything).
        bn_eps: Epsilon of the default BN (1e-5 as the CoCLR code; TF: 1e-3).
        norm_layer: Norm constructor; default BN with ``bn_eps`` and ``bn_momentum``.
    """

    def __init__(
        self,
        *,
        num_classes: int = 0,
        in_chans: int = 3,
        width_mult: float = 1.0,
        drop_rate: float = 0.2,
        gating: bool = False,
        bn_momentum: float = 0.1,
        bn_eps: float = 1e-5,
        norm_layer: NormLayer | None = None,
    ) -> None:
        super().__init__()
        norm_layer = norm_layer or functools.partial(nn.BatchNorm3d, eps=bn_eps, momentum=bn_momentum)

        def w(c: int) -> int:
            return max(4, int(round(c * width_mult)))

        layers: list[nn.Module] = [
            SepConv3d(in_chans, w(64), 7, 2, norm_layer=norm_layer),  # conv1: 7x7x7 / 2
            nn.MaxPool3d((1, 3, 3), stride=(1, 2, 2), padding=(0, 1, 1)),
            ConvNormAct3d(w(64), w(64), 1, norm_layer=norm_layer),  # conv2: 1x1x1
            SepConv3d(w(64), w(192), 3, 1, norm_layer=norm_layer),  # conv3: 3x3x3
            nn.MaxPool3d((1, 3, 3), stride=(1, 2, 2), padding=(0, 1, 1)),
        ]
        ch = w(192)
        for cfg in _INCEPTION_CFG:
            if cfg == "pool3":
                layers.append(nn.MaxPool3d(3, stride=2, padding=1))
            elif cfg == "pool2":
                layers.append(nn.MaxPool3d(2, stride=2))
            else:
                block = SepInception3d(ch, tuple(w(c) for c in cfg), norm_layer=norm_layer, gating=gating)
                layers.append(block)
                ch = block.out_ch
        self.features = nn.Sequential(*layers)
        self.feature_map_dim = ch
        self._init_head(feature_dim=ch, num_classes=num_classes, drop_rate=drop_rate)

    def forward_features(self, x_BCTHW: torch.Tensor) -> torch.Tensor:
        """``(B, C_in, T, H, W) -> (B, 1024, T/8, H/32, W/32)``."""
        return self.features(x_BCTHW)


@register(
    input_size=(16, 224, 224),
    ref_params=8_320_048,
    ref_gmacs=17.98,
    ref_source="torchvision S3D: 8,320,048 params, 17.979 'GFLOPS' (= MACs) at 16x224² (model card)",
)
def s3d(*, num_classes: int = 0, **kwargs: Any) -> S3D:
    """S3D as used by CoCLR (1024-d features, PyTorch BN defaults as the authors' code)."""
    return S3D(num_classes=num_classes, **kwargs)


@register(input_size=(16, 224, 224), ref_params=8_320_048)
def s3d_tf(*, num_classes: int = 0, **kwargs: Any) -> S3D:
    """S3D with the TF reference's BatchNorm (eps 1e-3, momentum 1e-3), for ported TF weights."""
    return S3D(num_classes=num_classes, **{"bn_eps": 1e-3, "bn_momentum": 1e-3, **kwargs})


@register(input_size=(8, 32, 32))
def s3d_debug(*, num_classes: int = 0, **kwargs: Any) -> S3D:
    """S3D with 1/8 widths (128-d features), for tests and CPU demos.

    Its BN running statistics use momentum 0.1 (as ``s3d``; not the TF reference's 1e-3): debug
    runs last tens to hundreds of steps, after which a 1e-3 average still holds ~80 % of
    its initial (0, 1) statistics and every eval-mode output (evaluation, CoCLR's frozen
    other-modality encoder) is meaningless (measured on the demo data: a supervised flow
    classifier at 35 % test top-1 in train mode predicted one class in eval mode).
    """
    return S3D(num_classes=num_classes, **{"width_mult": 0.125, "bn_momentum": 0.1, **kwargs})
