"""DPC/MemDPC's context network as a backbone: block encoder f (R-2D3D) + ConvGRU aggregator g.

Legend: B batch, C channels, T frames, N blocks, L frames per block, D channels of z and c,
H/W the spatial map.

``forward_features(x_BCTHW)`` cuts the clip into ``N = T // block_len`` consecutive
blocks (frames past ``N * block_len`` are dropped; a clip shorter than one block is
looped to ``block_len`` frames), encodes each block, ``z = mean_t f(x_i)`` (the authors'
``avg_pool3d`` over the block's remaining time steps), aggregates ``c = g(ReLU(z_1..z_N))``
and returns the last context ``c_N`` as ``(B, D, 1, H, W)``; the pooled embedding is the
spatially pooled ``c_N``, the representation the seed evaluates with retrieval, probes and
finetuning (seed 001 L428, L678, L789-L791). With ``bidirectional=True`` (MemDPC) a second
aggregator reads the blocks backwards and the two contexts are concatenated on channels,
as the MemDPC evaluation code does (2D channels).

So a registered DPC/MemDPC encoder runs through the generic evaluator on ordinary
``(B, C, T, H, W)`` clips. :class:`vidmodels.methods.dpc.DPC` owns one of these as its
``context`` and registers its state unchanged.

Reference:
    - [0] Video Representation Learning by Dense Predictive Coding, Han et al., ICCV-W 2019
    - [1] Memory-augmented Dense Predictive Coding, Han et al., ECCV 2020
"""

from __future__ import annotations

import functools
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from vidmodels.backbones.base import VideoBackbone
from vidmodels.layers import ConvGRU
from vidmodels.registry import create_backbone, register


class DPCContext(VideoBackbone):
    """Encoder f + aggregator g (+ a backward aggregator); see the module docstring.

    Args:
        encoder: Registry name of the block encoder (an R-2D3D).
        block_len: Frames per block L.
        in_chans: Input channels (3 RGB, 2 flow).
        bidirectional: Add the backward aggregator (MemDPC).
        dense: Keep the spatial map; False pools z to 1x1 before aggregation (DPC's
            "remove Map" ablation, Table 2.1).
        track_running_stats: BatchNorm running statistics (the DPC pretraining code turns
            them off, which changes only eval-mode forward passes).
        gru_dropout: Dropout on the hidden state after every step (0.1, seed 001 L408).
        num_classes: Classifier size K; 0 for headless.
        drop_rate: Dropout before the classifier.
    """

    def __init__(self, *, encoder: str = "r2d3d_18", block_len: int = 5, in_chans: int = 3,
                 bidirectional: bool = False, dense: bool = True, track_running_stats: bool = True,
                 gru_dropout: float = 0.1, num_classes: int = 0, drop_rate: float = 0.0) -> None:
        super().__init__()
        if block_len < 1:
            raise ValueError(f"block_len must be >= 1, got {block_len}")
        norm = functools.partial(nn.BatchNorm3d, track_running_stats=track_running_stats)
        self.encoder = create_backbone(encoder, num_classes=0, in_chans=in_chans, norm_layer=norm)
        dim = self.encoder.feature_map_dim
        self.block_len, self.dense, self.dim = block_len, dense, dim
        self.agg = ConvGRU(dim, dim, kernel_size=1, dropout=gru_dropout)
        self.agg_b = ConvGRU(dim, dim, kernel_size=1, dropout=gru_dropout) if bidirectional else None
        self.feature_map_dim = dim * (2 if bidirectional else 1)
        self._init_head(feature_dim=self.feature_map_dim, num_classes=num_classes, drop_rate=drop_rate)

    def aggregators(self) -> list[ConvGRU]:
        """The forward aggregator, then the backward one if any."""
        return [self.agg] if self.agg_b is None else [self.agg, self.agg_b]

    def encode_blocks(self, x_BNCLHW: torch.Tensor) -> torch.Tensor:
        """``z_i = f(x_i)`` pooled over time, before any ReLU: ``(B, N, C, L, H, W) -> (B, N, D, H', W')``."""
        B, N = x_BNCLHW.shape[:2]
        f_XDTHW = self.encoder.forward_features(x_BNCLHW.flatten(0, 1))
        z_XDHW = f_XDTHW.mean(dim=2)
        if not self.dense:
            z_XDHW = z_XDHW.mean(dim=(2, 3), keepdim=True)
        return z_XDHW.reshape(B, N, *z_XDHW.shape[1:])

    def blocks(self, x_BCTHW: torch.Tensor) -> torch.Tensor:
        """Cut a clip into consecutive blocks: ``(B, C, T, H, W) -> (B, N, C, L, H, W)``."""
        B, C, T, H, W = x_BCTHW.shape
        L = self.block_len
        if T < L:  # one looped block rather than none
            x_BCTHW = x_BCTHW[:, :, torch.arange(L, device=x_BCTHW.device) % T]
            T = L
        N = T // L
        return x_BCTHW[:, :, : N * L].reshape(B, C, N, L, H, W).transpose(1, 2)

    def contexts(self, z_BNDHW: torch.Tensor) -> list[torch.Tensor]:
        """The last context ``c_N`` of each aggregator, ``(B, D, H, W)`` each (backward: on flipped time)."""
        inputs = F.relu(z_BNDHW)
        out = []
        for i, agg in enumerate(self.aggregators()):
            _, h_LBDHW = agg(inputs if i == 0 else inputs.flip(1))
            out.append(h_LBDHW[-1])
        return out

    def forward_features(self, x_BCTHW: torch.Tensor) -> torch.Tensor:
        """``(B, C, T, H, W) -> (B, D or 2D, 1, H', W')``: the last context(s) of the clip's blocks."""
        c_BDHW = torch.cat(self.contexts(self.encode_blocks(self.blocks(x_BCTHW))), dim=1)
        return c_BDHW.unsqueeze(2)


def _context(encoder: str, block_len: int, num_classes: int, kwargs: dict[str, Any]) -> DPCContext:
    return DPCContext(**{"encoder": encoder, "block_len": block_len, **kwargs}, num_classes=num_classes)


@register(input_size=(40, 128, 128), ref_source="R-2D3D-18 + ConvGRU (seed 001 L406-L408); 8 blocks x 5 frames")
def dpc_context_18(*, num_classes: int = 0, **kwargs: Any) -> DPCContext:
    """DPC/MemDPC context network with R-2D3D-18 (D=256), 5-frame blocks."""
    return _context("r2d3d_18", 5, num_classes, kwargs)


@register(input_size=(40, 224, 224), ref_source="R-2D3D-34 + ConvGRU (seed 001 L511-L512); 8 blocks x 5 frames")
def dpc_context_34(*, num_classes: int = 0, **kwargs: Any) -> DPCContext:
    """DPC/MemDPC context network with R-2D3D-34 (D=256), 5-frame blocks."""
    return _context("r2d3d_34", 5, num_classes, kwargs)


@register(input_size=(12, 96, 96), ref_source="r2d3d_debug + ConvGRU (D=32); CPU tests and benchmarks")
def dpc_context_tiny(*, num_classes: int = 0, **kwargs: Any) -> DPCContext:
    """The CPU size: ``r2d3d_debug`` (D=32), 3-frame blocks (the ``dpc`` recipe at debug size).

    Not named ``*_debug``: the registry's debug set is pinned by the backbone tests; this
    one's contract is tested in ``tests/vidmodels/test_dpc.py``.
    """
    return _context("r2d3d_debug", 3, num_classes, kwargs)
