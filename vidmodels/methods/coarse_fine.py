"""Coarse-Fine Networks for temporal activity detection, and their baselines (pure PyTorch).

Legend: B batch, C channels, T Coarse (main-stream) frames, T' Fine frames, J steps after
temporal pooling (αT + 1 for Grid Pool, αT for the fixed pools, T without pooling),
H/W spatial, K classes.

Two X3D streams with separate weights (thesis Ch. 3, Table 3.1):

- **Coarse**: stem + res2 on T frames, Grid Pool (α = 1/4, :mod:`vidmodels.layers.grid_pool`),
  res3-res5 and conv5 on J = T/4 + 1 steps, a per-frame head, Grid Unpool of the logits
  back to T frames;
- **Fine**: a plain X3D on the whole video (T' ≤ 128 frames at the same stride), tapped
  after res2..res5 and conv5 for Multi-stage Fusion (:mod:`vidmodels.layers.fine_fusion`)
  after Grid Pool, res3, res4, res5 and on the logits.

Modes (:class:`CoarseFineConfig`): ``coarse_fine``; ``fine_fine`` (the main stream is a
full-rate X3D and the Gaussians centre on its frames, thesis "Fine-Fine"); ``coarse_only``
with ``pool`` in grid / stride / avg / max (Table 3.3e; no Fine stream); ``x3d`` (one
stream, per-frame head). The fixed pools put step j at frame 4j (stride) or 4j + 1.5
(avg, max over frames 4j..4j+3); their logits go back to T frames with the same
piecewise-linear unpooling as Grid Pool.

Reference:
    - [0] Coarse-Fine Networks for Temporal Activity Detection in Videos, Kahatapitiya & Ryoo, CVPR 2021
      (seed 000, Ch. 3; code: kkahatapitiya/Coarse-Fine-Networks ``x3d_coarse.py``)
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator, Mapping
from typing import Any, Literal

import torch
import torch.nn.functional as F
from torch import nn

from vidmodels.heads import PerFrameHead, interpolate_time
from vidmodels.layers.fine_fusion import FusionDims, MultiStageFusion, gaussian_weights
from vidmodels.layers.grid_pool import (
    ConfidenceNet,
    grid_pool,
    grid_pool_positions,
    grid_unpool,
)
from vidmodels.registry import create_backbone

__all__ = ["FINE_TAPS", "CoarseFine", "CoarseFineConfig", "X3DStream", "temporal_pool", "x3d_stream", "x3d_taps"]

Mode = Literal["coarse_fine", "fine_fine", "coarse_only", "x3d"]
Pool = Literal["grid", "stride", "avg", "max"]
FINE_TAPS = ("res2", "res3", "res4", "res5", "conv5")
ALPHA_INV = 4  # Grid Pool and the fixed pools keep one step per 4 frames (α = 1/4)


@dataclasses.dataclass
class CoarseFineConfig:
    """Architecture of a Coarse-Fine model or one of its baselines.

    Attributes:
        arch: Registered X3D builder of both streams (``x3d_m``; ``x3d_debug`` for tests).
        num_classes: K (157 for Charades).
        mode: ``coarse_fine``, ``fine_fine``, ``coarse_only`` or ``x3d``.
        pool: Temporal pooling of the Coarse stream after res2 (``coarse_fine``/``coarse_only``).
        fusion_dims: ``CTHW`` (Gaussian fusion) or ``C`` (channel vectors, Table 3.3b).
        fusion_gate: The gate g on the Fine features (Table 3.3c).
        freeze_fine: Fine stream without gradients and in eval mode (the authors cache its features).
        drop_rate: Dropout of the per-frame heads and of late fusion (0.5).
        fine_per_coarse: Fine frames per Coarse frame (1: both at stride 10, as the authors).
    """

    arch: str = "x3d_m"
    num_classes: int = 157
    mode: Mode = "coarse_fine"
    pool: Pool = "grid"
    fusion_dims: FusionDims = "CTHW"
    fusion_gate: bool = True
    freeze_fine: bool = False
    drop_rate: float = 0.5
    fine_per_coarse: float = 1.0


class X3DStream(nn.Module):
    """An X3D's stem, res2-res5 and conv5 with a :class:`PerFrameHead` (fc1 = X3D's ``head_proj``).

    Attributes ``stem``, ``stages``, ``conv5`` are the backbone's own modules, so a
    Kinetics checkpoint loaded into the X3D before wrapping carries over.

    Shape:
        ``(B, 3, T, H, W) -> (B, T, K)``.
    """

    def __init__(self, backbone: nn.Module, num_classes: int, *, drop_rate: float = 0.5) -> None:
        super().__init__()
        self.stem, self.stages, self.conv5 = backbone.stem, backbone.stages, backbone.conv5
        proj = backbone.head_proj
        self.head = PerFrameHead(proj.in_features, num_classes, hidden_dim=proj.out_features, drop_rate=drop_rate)
        self.head.fc1 = proj
        self.stage_dims = [blocks[-1].conv_c[0].out_channels for blocks in self.stages]
        self.feature_map_dim = proj.in_features

    def forward(self, x_BCTHW: torch.Tensor) -> torch.Tensor:
        return self.head(self.conv5(self.stages(self.stem(x_BCTHW))))


def x3d_stream(arch: str, num_classes: int, *, drop_rate: float = 0.5) -> X3DStream:
    """A freshly built registered X3D ``arch`` as an :class:`X3DStream`."""
    return X3DStream(create_backbone(arch, num_classes=0), num_classes, drop_rate=drop_rate)


def x3d_taps(net: nn.Module, x_BCTHW: torch.Tensor) -> dict[str, torch.Tensor]:
    """Features of an X3D (or :class:`X3DStream`) after res2, res3, res4, res5 and conv5.

    Returns:
        ``{"res2": (B, 24, T, H/4, W/4), ..., "res5": (B, 192, T, H/32, W/32),
        "conv5": (B, 432, T, H/32, W/32)}`` (X3D-M widths).
    """
    taps, x = {}, net.stem(x_BCTHW)
    for name, stage in zip(FINE_TAPS[:4], net.stages, strict=True):
        x = taps[name] = stage(x)
    taps["conv5"] = net.conv5(x)
    return taps


def temporal_pool(x_BCTHW: torch.Tensor, pool: Literal["stride", "avg", "max"]) -> tuple[torch.Tensor, torch.Tensor]:
    """Fixed pooling by 4 in time (Table 3.3e baselines) and the frame position of each step.

    Returns:
        ``(x_BCJHW, s_BJ)``: stride keeps frames 4j (J = ⌈T/4⌉) at ``s_j = 4j``; avg/max use
        kernel and stride 4 (J = ⌊T/4⌋), ``s_j = 4j + 1.5``, the window centre.
    """
    if pool == "stride":
        x_BCJHW, offset = x_BCTHW[:, :, ::ALPHA_INV], 0.0
    else:
        fn = F.avg_pool3d if pool == "avg" else F.max_pool3d
        x_BCJHW, offset = fn(x_BCTHW, (ALPHA_INV, 1, 1), (ALPHA_INV, 1, 1)), (ALPHA_INV - 1) / 2
    J = x_BCJHW.shape[2]
    s_J = torch.arange(J, device=x_BCTHW.device, dtype=x_BCTHW.dtype) * ALPHA_INV + offset
    return x_BCJHW, s_J.expand(x_BCTHW.shape[0], J)


class CoarseFine(nn.Module):
    """Coarse-Fine Network (or a baseline) producing per-frame logits; see the module docstring.

    Args:
        cfg: The architecture.

    Raises:
        ValueError: On an unknown mode, pool or fusion_dims.
    """

    def __init__(self, cfg: CoarseFineConfig | None = None, **overrides: Any) -> None:
        super().__init__()
        cfg = dataclasses.replace(cfg or CoarseFineConfig(), **overrides)
        _validate(cfg)
        self.cfg = cfg
        self.coarse = x3d_stream(cfg.arch, cfg.num_classes, drop_rate=cfg.drop_rate)
        self.pool = cfg.pool if cfg.mode in ("coarse_fine", "coarse_only") else None
        self.confidence = ConfidenceNet(self.coarse.stage_dims[0]) if self.pool == "grid" else None
        self.fine: X3DStream | None = None
        self.fusion: MultiStageFusion | None = None
        if cfg.mode in ("coarse_fine", "fine_fine"):
            self.fine = x3d_stream(cfg.arch, cfg.num_classes, drop_rate=cfg.drop_rate)
            self.fusion = MultiStageFusion(
                self.fine.stage_dims, self.coarse.stage_dims, self.fine.feature_map_dim, cfg.num_classes,
                gate=cfg.fusion_gate, fusion_dims=cfg.fusion_dims, late_drop_rate=cfg.drop_rate,
            )
            # The Fine head is kept (stage-1 Fine checkpoints load 1:1) but never used here.
            self.fine.head.requires_grad_(False)
            if cfg.freeze_fine:
                self.fine.requires_grad_(False)
                self.fine.eval()

    def train(self, mode: bool = True) -> CoarseFine:
        super().train(mode)
        if self.fine is not None and self.cfg.freeze_fine:
            self.fine.eval()  # frozen BN statistics, as the cached features of the authors
        return self

    def forward(
        self,
        coarse_BCTHW: torch.Tensor,
        fine_BCTHW: torch.Tensor | Mapping[str, torch.Tensor] | None = None,
        fine_mask_BT: torch.Tensor | None = None,
        offset_B: torch.Tensor | None = None,
        num_frames: int | None = None,
    ) -> torch.Tensor:
        """Per-frame logits of the Coarse (main) stream.

        Args:
            coarse_BCTHW: Coarse clip ``(B, 3, T, H, W)`` (the full-rate clip in ``fine_fine``).
            fine_BCTHW: Fine video ``(B, 3, T', H, W)``, or its precomputed :func:`x3d_taps`
                (any spatial size; each level is resized to the Coarse one by adaptive max
                pooling, nearest upsampling for the authors' 7² cache). Fused modes only.
            fine_mask_BT: 1 on valid (unpadded) Fine frames, ``(B, T')``; default all ones.
            offset_B: Start of the Coarse clip in Fine frames, ``(B,)``; default 0.
            num_frames: Interpolate the logits from T to this many frames with ``interpolate_time``
                (its default, ``align_corners=False``, is the authors' last step onto the labels).

        Returns:
            ``(B, T, K)``, or ``(B, num_frames, K)``.

        Raises:
            ValueError: If a fused mode gets no Fine input.
        """
        T = coarse_BCTHW.shape[2]
        x_BCJHW, s_BJ = self._stem_pool(coarse_BCTHW)
        ctx = self._fine_context(fine_BCTHW, fine_mask_BT, offset_B, s_BJ, T, x_BCJHW) if self.fusion else None
        if ctx is not None:
            x_BCJHW = self.fusion.mix(0, x_BCJHW, ctx["biases"], ctx["scales"])
        for i, stage in enumerate(self.coarse.stages[1:], start=1):
            x_BCJHW = stage(x_BCJHW)
            if ctx is not None:
                x_BCJHW = self.fusion.mix(i, x_BCJHW, ctx["biases"], ctx["scales"])
        logits_BJK = self.coarse.head(self.coarse.conv5(x_BCJHW))
        if ctx is not None:
            logits_BJK = self.fusion.fuse_logits(logits_BJK, ctx["conv5"], ctx["G"], ctx["m"])
        logits_BTK = logits_BJK if self.pool is None else grid_unpool(logits_BJK, s_BJ, T)
        return logits_BTK if num_frames is None else interpolate_time(logits_BTK, num_frames)

    def _stem_pool(self, x_BCTHW: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """stem + res2, then the temporal pool; positions ``s_BJ`` of the steps in input frames."""
        x = self.coarse.stages[0](self.coarse.stem(x_BCTHW))
        if self.pool == "grid":
            p_BA = self.confidence(x)
            return grid_pool(x, p_BA), grid_pool_positions(p_BA, x.shape[2])
        if self.pool is not None:
            return temporal_pool(x, self.pool)
        B, T = x.shape[0], x.shape[2]
        return x, torch.arange(T, device=x.device, dtype=x.dtype).expand(B, T)

    def _fine_context(
        self,
        fine: torch.Tensor | Mapping[str, torch.Tensor] | None,
        m_BT: torch.Tensor | None,
        offset_B: torch.Tensor | None,
        s_BJ: torch.Tensor,
        T: int,
        x_BCJHW: torch.Tensor,
    ) -> dict[str, Any]:
        """Fine taps, Gaussians over the Fine frames and every level's bias and scale maps."""
        if fine is None:
            raise ValueError(f"mode {self.cfg.mode!r} needs the Fine video or its features")
        taps = fine if isinstance(fine, Mapping) else self.fine_features(fine)
        B, Tf = s_BJ.shape[0], taps["conv5"].shape[2]
        m_BT = torch.ones(B, Tf, device=s_BJ.device) if m_BT is None else m_BT.to(s_BJ.dtype)
        offset_B = torch.zeros(B, device=s_BJ.device) if offset_B is None else offset_B.to(s_BJ.dtype)
        # The authors centre on T·c_j (c = s/(T-1)), not on the sampled frame (T-1)·c_j.
        centre_BJ = s_BJ * (T / (T - 1)) if self.pool == "grid" and T > 1 else s_BJ
        mu_BJ = offset_B[:, None] + self.cfg.fine_per_coarse * centre_BJ
        G_BTJ = gaussian_weights(mu_BJ, m_BT.sum(1) / 8, Tf)
        h, w = x_BCJHW.shape[3:]
        sizes = [(h, w)]
        for _ in range(len(FINE_TAPS) - 2):
            h, w = (h + 1) // 2, (w + 1) // 2  # X3D stages halve H, W with k3 s2 p1 (ceil)
            sizes.append((h, w))
        biases, scales = self.fusion.encode([taps[k] for k in FINE_TAPS[:4]], G_BTJ, m_BT, sizes)
        return {"biases": biases, "scales": scales, "conv5": taps["conv5"], "G": G_BTJ, "m": m_BT}

    def fine_features(self, fine_BCTHW: torch.Tensor) -> dict[str, torch.Tensor]:
        """:func:`x3d_taps` of the Fine stream (without gradients when frozen): what the authors cache."""
        with torch.set_grad_enabled(torch.is_grad_enabled() and not self.cfg.freeze_fine):
            return x3d_taps(self.fine, fine_BCTHW)

    def fusion_parameters(self) -> Iterator[nn.Parameter]:
        """Trainable parameters of the fusion layers (new in stage 2)."""
        return (p for p in (self.fusion.parameters() if self.fusion else ()) if p.requires_grad)

    def param_groups(self, lr: float, *, fusion_lr_mult: float = 10.0) -> list[dict[str, Any]]:
        """Optimizer groups: everything else at ``lr``, the fusion layers at ``fusion_lr_mult·lr``.

        Stage 2 trains the new fusion layers at 10× the learning rate (thesis L440; the
        code's ``rw``/``mix`` group). Frozen parameters are left out.
        """
        fusion_ids = {id(p) for p in self.fusion_parameters()}
        base = [p for p in self.parameters() if p.requires_grad and id(p) not in fusion_ids]
        groups = [{"params": base, "lr": lr}]
        if fusion_ids:
            groups.append({"params": list(self.fusion_parameters()), "lr": lr * fusion_lr_mult})
        return groups


def _validate(cfg: CoarseFineConfig) -> None:
    for field, allowed in (("mode", Mode), ("pool", Pool), ("fusion_dims", FusionDims)):
        if getattr(cfg, field) not in allowed.__args__:
            raise ValueError(f"{field} must be one of {allowed.__args__}, got {getattr(cfg, field)!r}")
    if cfg.num_classes < 1:
        raise ValueError(f"num_classes must be >= 1, got {cfg.num_classes}")
