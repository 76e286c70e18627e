"""Video ViT: tubelet embedding, joint or divided space-time attention, token dropout.

Legend: B batch, C channels, T frames, H/W pixels, T' tubelet steps, S spatial
positions per step (H'W'), N = T'S patch tokens, D width, h heads, K classes.

- Tubelet embedding (ViViT/VideoMAE): a ``Conv3d`` with kernel = stride = tubelet
  (2x16x16 by default) turns ``(B, C, T, H, W)`` into N tokens ordered t-major.
- Position: separable learned embeddings, ``pos_time[t'] + pos_space[s]``, so a
  token keeps its (t', s) identity after being dropped or sampled.
- Attention: ``"joint"`` attends over all N (+CLS) tokens (ViViT model 1, VideoMAE);
  ``"divided"`` first attends over time at each position, then over space within
  each step, with the CLS token replicated per step and averaged (TimeSformer).
- Token dropout (Turbo, seed 001 Ch6) and sampling (ATS, seed 003 Ch7):
  ``forward_features(x, keep_idx=...)`` keeps a subset of patch tokens after the
  position embedding (any subset for joint attention; for divided attention the
  subset of spatial positions shared by every step, i.e. tube dropout). The CLS
  token is always kept. ``Attention.forward(x, return_attn=True)`` also returns
  the attention map and values that ATS scores tokens with.
- Pooling: the final CLS token (Turbo's video feature), or the token mean.

Reference:
    - [0] An Image is Worth 16x16 Words (ViT), Dosovitskiy et al., ICLR 2021
    - [1] ViViT: A Video Vision Transformer, Arnab et al., ICCV 2021
    - [2] Is Space-Time Attention All You Need for Video Understanding? (TimeSformer), Bertasius et al., ICML 2021
    - [3] VideoMAE, Tong et al., NeurIPS 2022
    - [4] Turbo Training with Token Dropout, Han et al., BMVC 2022 (seed 001, Ch6)
    - [5] Adaptive Token Sampling for Efficient Vision Transformers, Fayyaz et al., ECCV 2022 (seed 003, Ch7)
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any, Literal

import torch
import torch.nn.functional as F
from torch import nn

from vidmodels.backbones.base import VideoBackbone
from vidmodels.layers import DropPath
from vidmodels.registry import register

NormLayer = Callable[[int], nn.Module]
ActLayer = Callable[[], nn.Module]


class Attention(nn.Module):
    """Multi-head self-attention over a token sequence.

    Args:
        dim: Token width D.
        num_heads: Heads h.
        qkv_bias: Bias in the qkv projection.
        attn_drop: Dropout on attention weights (explicit path only; SDPA otherwise).
        proj_drop: Dropout after the output projection.
    """

    def __init__(self, dim: int, num_heads: int, *, qkv_bias: bool = True, attn_drop: float = 0.0, proj_drop: float = 0.0) -> None:
        super().__init__()
        if dim % num_heads:
            raise ValueError(f"dim {dim} is not divisible by num_heads {num_heads}")
        self.num_heads = num_heads
        self.qkv = nn.Linear(dim, 3 * dim, bias=qkv_bias)
        self.attn_drop = attn_drop
        self.proj = nn.Linear(dim, dim)
        self.proj_drop = nn.Dropout(proj_drop)

    def forward(
        self, x_BND: torch.Tensor, *, return_attn: bool = False
    ) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Attends ``(B, N, D) -> (B, N, D)``.

        Args:
            x_BND: Tokens.
            return_attn: Also return the attention weights ``(B, h, N, N)`` and the
                values ``(B, h, N, D/h)`` (what ATS needs); uses an explicit softmax.
        """
        B, N, D = x_BND.shape
        q, k, v = self.qkv(x_BND).reshape(B, N, 3, self.num_heads, D // self.num_heads).permute(2, 0, 3, 1, 4).unbind(0)
        drop = self.attn_drop if self.training else 0.0
        if return_attn:
            attn_BhNN = torch.softmax((q * q.shape[-1] ** -0.5) @ k.transpose(-2, -1), dim=-1)
            out_BhNd = F.dropout(attn_BhNN, drop, self.training) @ v
        else:
            out_BhNd = F.scaled_dot_product_attention(q, k, v, dropout_p=drop)
        out_BND = self.proj_drop(self.proj(out_BhNd.transpose(1, 2).reshape(B, N, D)))
        return (out_BND, attn_BhNN, v) if return_attn else out_BND


class Mlp(nn.Sequential):
    """``Linear(D, rD) -> act -> dropout -> Linear(rD, D) -> dropout``."""

    def __init__(self, dim: int, hidden: int, *, act_layer: ActLayer, drop: float = 0.0) -> None:
        super().__init__(nn.Linear(dim, hidden), act_layer(), nn.Dropout(drop), nn.Linear(hidden, dim), nn.Dropout(drop))


class Block(nn.Module):
    """Pre-norm transformer block; joint attention, or divided time-then-space attention.

    Args:
        dim: Width D.
        num_heads: Heads.
        mlp_ratio: MLP hidden width / D.
        divided: Add a temporal attention (own norm) before the spatial one.
        num_prefix: Number of leading non-patch tokens (1 with a CLS token).
        drop: Dropout in the MLP and after projections.
        drop_path: Stochastic-depth probability.
        norm_layer: Norm constructor.
        act_layer: MLP activation.
    """

    def __init__(
        self, dim: int, num_heads: int, *, mlp_ratio: float, divided: bool, num_prefix: int,
        drop: float = 0.0, drop_path: float = 0.0, norm_layer: NormLayer, act_layer: ActLayer,
    ) -> None:
        super().__init__()
        self.num_prefix = num_prefix
        self.norm_t = norm_layer(dim) if divided else None
        self.attn_t = Attention(dim, num_heads, proj_drop=drop) if divided else None
        self.norm1 = norm_layer(dim)
        self.attn = Attention(dim, num_heads, proj_drop=drop)
        self.norm2 = norm_layer(dim)
        self.mlp = Mlp(dim, int(dim * mlp_ratio), act_layer=act_layer, drop=drop)
        self.drop_path = DropPath(drop_path)

    def forward(self, x_BND: torch.Tensor, grid: tuple[int, int]) -> torch.Tensor:
        """``(B, P + T'S, D) -> (B, P + T'S, D)``; ``grid = (T', S)`` (used by divided attention)."""
        if self.attn_t is None:
            x_BND = x_BND + self.drop_path(self.attn(self.norm1(x_BND)))
        else:
            x_BND = self._divided(x_BND, *grid)
        return x_BND + self.drop_path(self.mlp(self.norm2(x_BND)))

    def _divided(self, x_BND: torch.Tensor, T: int, S: int) -> torch.Tensor:
        B, _, D = x_BND.shape
        P = self.num_prefix
        prefix_BPD, x_BNpD = x_BND[:, :P], x_BND[:, P:]
        # Temporal attention: each spatial position attends over the T' steps.
        x_bTD = x_BNpD.reshape(B, T, S, D).transpose(1, 2).reshape(B * S, T, D)
        x_bTD = x_bTD + self.drop_path(self.attn_t(self.norm_t(x_bTD)))
        # Spatial attention within each step; prefix tokens join every step, then are averaged.
        x_bSD = x_bTD.reshape(B, S, T, D).transpose(1, 2).reshape(B * T, S, D)
        pre_bPD = prefix_BPD[:, None].expand(B, T, P, D).reshape(B * T, P, D)
        y_bSD = torch.cat([pre_bPD, x_bSD], dim=1)
        y_bSD = y_bSD + self.drop_path(self.attn(self.norm1(y_bSD)))
        prefix_BPD = y_bSD[:, :P].reshape(B, T, P, D).mean(1)
        return torch.cat([prefix_BPD, y_bSD[:, P:].reshape(B, T * S, D)], dim=1)


class VideoViT(VideoBackbone):
    """Video ViT; see the module docstring.

    Args:
        num_classes: Classifier size K; 0 for headless.
        in_chans: Input channels.
        img_size: Spatial size the position embedding is built for (interpolated otherwise).
        num_frames: Frames the temporal position embedding is built for.
        tubelet: Tubelet ``(t, p, p)``.
        embed_dim: Width D.
        depth: Number of blocks.
        num_heads: Attention heads.
        mlp_ratio: MLP expansion.
        attention: ``"joint"`` or ``"divided"`` space-time attention.
        class_token: Prepend a learned CLS token (needed by ATS; Turbo pools it).
        global_pool: ``"token"`` (CLS) or ``"avg"`` (mean of patch tokens).
        drop_rate: Dropout in blocks and before the classifier.
        drop_path_rate: Maximum stochastic depth, linear over blocks.
        norm_layer: Norm constructor (LayerNorm, eps 1e-6).
        act_layer: MLP activation (GELU).

    Raises:
        ValueError: On an unknown ``attention`` or ``global_pool``, or ``"token"``
            pooling without a class token.
    """

    def __init__(
        self,
        *,
        num_classes: int = 0,
        in_chans: int = 3,
        img_size: int = 224,
        num_frames: int = 16,
        tubelet: tuple[int, int, int] = (2, 16, 16),
        embed_dim: int = 768,
        depth: int = 12,
        num_heads: int = 12,
        mlp_ratio: float = 4.0,
        attention: Literal["joint", "divided"] = "joint",
        class_token: bool = True,
        global_pool: Literal["token", "avg"] = "token",
        drop_rate: float = 0.0,
        drop_path_rate: float = 0.0,
        norm_layer: NormLayer = functools.partial(nn.LayerNorm, eps=1e-6),
        act_layer: ActLayer = nn.GELU,
    ) -> None:
        super().__init__()
        if attention not in ("joint", "divided"):
            raise ValueError(f"attention must be 'joint' or 'divided', got {attention!r}")
        if global_pool not in ("token", "avg") or (global_pool == "token" and not class_token):
            raise ValueError(f"invalid global_pool {global_pool!r} (class_token={class_token})")
        self.attention, self.global_pool, self.tubelet = attention, global_pool, tubelet
        self.num_prefix = int(class_token)
        self.grid_size = (num_frames // tubelet[0], img_size // tubelet[1], img_size // tubelet[2])
        self.patch_embed = nn.Conv3d(in_chans, embed_dim, tubelet, stride=tubelet)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, embed_dim)) if class_token else None
        # 3-D parameters on purpose: module.to(memory_format=channels_last_3d) rejects 4-D ones.
        self.pos_time = nn.Parameter(torch.zeros(1, self.grid_size[0], embed_dim))
        self.pos_space = nn.Parameter(torch.zeros(1, self.grid_size[1] * self.grid_size[2], embed_dim))
        dpr = [drop_path_rate * i / max(depth - 1, 1) for i in range(depth)]
        self.blocks = nn.ModuleList(
            Block(embed_dim, num_heads, mlp_ratio=mlp_ratio, divided=attention == "divided", num_prefix=self.num_prefix,
                  drop=drop_rate, drop_path=dpr[i], norm_layer=norm_layer, act_layer=act_layer)
            for i in range(depth)
        )
        self.norm = norm_layer(embed_dim)
        self.feature_map_dim = embed_dim
        self._init_head(feature_dim=embed_dim, num_classes=num_classes, drop_rate=drop_rate)
        self._init_weights()

    def _init_weights(self) -> None:
        for p in (self.pos_time, self.pos_space, self.cls_token):
            if p is not None:
                nn.init.trunc_normal_(p, std=0.02)
        for m in self.modules():
            if isinstance(m, nn.Linear):
                nn.init.trunc_normal_(m.weight, std=0.02)
                if m.bias is not None:
                    nn.init.zeros_(m.bias)

    def _pos_embed(self, T: int, H: int, W: int) -> torch.Tensor:
        """Position embedding ``(1, T, H*W, D)`` for a ``T x H x W`` token grid (interpolated if needed)."""
        pos_t, pos_s = self.pos_time, self.pos_space
        if T != pos_t.shape[1]:
            pos_t = F.interpolate(pos_t.transpose(1, 2), size=T, mode="linear", align_corners=False).transpose(1, 2)
        h0, w0 = self.grid_size[1:]
        if (H, W) != (h0, w0):
            grid = pos_s.reshape(1, h0, w0, -1).permute(0, 3, 1, 2)
            grid = F.interpolate(grid, size=(H, W), mode="bicubic", align_corners=False)
            pos_s = grid.permute(0, 2, 3, 1).reshape(1, H * W, -1)
        return pos_t[:, :, None] + pos_s[:, None]

    def forward_features(self, x_BCTHW: torch.Tensor, *, keep_idx: torch.Tensor | None = None) -> torch.Tensor:
        """Embeds, optionally drops tokens, and runs the blocks.

        Args:
            x_BCTHW: Input clip; T, H, W divisible by the tubelet.
            keep_idx: Token dropout. Joint attention: ``(B, N_keep)`` indices into the
                N = T'·S patch tokens (t-major). Divided attention: ``(B, S_keep)``
                indices into the S spatial positions, kept at every step.

        Returns:
            Normalised tokens ``(B, P + N_keep, D)``, CLS first when present.
        """
        x_BDTHW = self.patch_embed(x_BCTHW)
        B, D, T, H, W = x_BDTHW.shape
        x_BTSD = x_BDTHW.flatten(3).permute(0, 2, 3, 1) + self._pos_embed(T, H, W).to(x_BDTHW.dtype)
        S = H * W
        if keep_idx is not None and self.attention == "divided":
            idx = keep_idx[:, None, :, None].expand(B, T, keep_idx.shape[1], D)
            x_BTSD, S = torch.gather(x_BTSD, 2, idx), keep_idx.shape[1]
        x_BND = x_BTSD.reshape(B, T * S, D)
        if keep_idx is not None and self.attention == "joint":
            x_BND = torch.gather(x_BND, 1, keep_idx[:, :, None].expand(B, keep_idx.shape[1], D))
        if self.cls_token is not None:
            x_BND = torch.cat([self.cls_token.expand(B, 1, D).to(x_BND.dtype), x_BND], dim=1)
        for blk in self.blocks:
            x_BND = blk(x_BND, (T, S))
        return self.norm(x_BND)

    def pool(self, x_BND: torch.Tensor) -> torch.Tensor:
        """CLS token or mean of patch tokens: ``(B, P + N, D) -> (B, D)``."""
        return x_BND[:, 0] if self.global_pool == "token" else x_BND[:, self.num_prefix :].mean(1)


_VIT_SRC = "VideoMAE ViT-{} (joint attn, 16x224², tubelet 2x16x16; params rounded, fvcore GFLOPs = MACs)"


@register(input_size=(16, 224, 224), ref_params=22_000_000, ref_params_precision=1_000_000, ref_gmacs=57.0, ref_gmacs_precision=1.0, ref_source=_VIT_SRC.format("S"))
def vit_video_s(*, num_classes: int = 0, **kwargs: Any) -> VideoViT:
    """ViT-S/16 video (D=384, 12 blocks, 6 heads), tubelet 2x16x16."""
    return VideoViT(num_classes=num_classes, **{"embed_dim": 384, "depth": 12, "num_heads": 6, **kwargs})


@register(input_size=(16, 224, 224), ref_params=87_000_000, ref_params_precision=1_000_000, ref_gmacs=180.6, ref_gmacs_precision=0.1,
          ref_source=_VIT_SRC.format("B") + "; 180.6 GFLOPs from Turbo Table 6.1 (seed 001 L1598)")
def vit_video_b(*, num_classes: int = 0, **kwargs: Any) -> VideoViT:
    """ViT-B/16 video (D=768, 12 blocks, 12 heads), tubelet 2x16x16."""
    return VideoViT(num_classes=num_classes, **{"embed_dim": 768, "depth": 12, "num_heads": 12, **kwargs})


@register(input_size=(4, 32, 32))
def vit_video_debug(*, num_classes: int = 0, **kwargs: Any) -> VideoViT:
    """Tiny video ViT for tests (D=32, 2 blocks, 2x8x8 tubelets on 4x32²)."""
    defaults = dict(img_size=32, num_frames=4, tubelet=(2, 8, 8), embed_dim=32, depth=2, num_heads=2)
    return VideoViT(num_classes=num_classes, **{**defaults, **kwargs})
