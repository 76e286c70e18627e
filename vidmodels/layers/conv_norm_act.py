"""Conv3d -> norm -> activation, the unit most CNN backbones here are made of."""

from __future__ import annotations

from collections.abc import Callable

from torch import nn

_Triple = int | tuple[int, int, int]


class ConvNormAct3d(nn.Sequential):
    """Bias-free ``Conv3d`` followed by a norm layer and an optional activation.

    Args:
        in_ch: Input channels.
        out_ch: Output channels.
        kernel_size: Kernel, ``(kT, kH, kW)`` or an int.
        stride: Stride, ``(sT, sH, sW)`` or an int.
        padding: Padding; ``None`` gives "same" padding ``k // 2`` per axis.
        groups: Convolution groups (``groups=in_ch`` is channel-wise).
        norm_layer: Norm constructor taking the channel count.
        act_layer: Activation constructor, or ``None`` for no activation.

    Shape:
        ``(B, in_ch, T, H, W) -> (B, out_ch, T', H', W')``.
    """

    def __init__(
        self,
        in_ch: int,
        out_ch: int,
        kernel_size: _Triple = 1,
        stride: _Triple = 1,
        padding: _Triple | None = None,
        *,
        groups: int = 1,
        norm_layer: Callable[[int], nn.Module] = nn.BatchNorm3d,
        act_layer: Callable[[], nn.Module] | None = nn.ReLU,
    ) -> None:
        k = (kernel_size,) * 3 if isinstance(kernel_size, int) else tuple(kernel_size)
        if padding is None:
            padding = tuple(ki // 2 for ki in k)
        layers: list[nn.Module] = [
            nn.Conv3d(in_ch, out_ch, k, stride=stride, padding=padding, groups=groups, bias=False),
            norm_layer(out_ch),
        ]
        if act_layer is not None:
            layers.append(act_layer())
        super().__init__(*layers)
