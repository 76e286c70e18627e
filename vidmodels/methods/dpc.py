"""DPC and MemDPC: predict the future blocks' dense embeddings from the past ones.

Legend: B batch, N blocks, q predicted steps, C channels, L frames per block, D channels of
z and c, H/W the spatial map, K memory slots.

Model (seed 001 chapter 2, Eq. 2.1-2.4, L346-L360; digest §1.1, §1.3):

* ``z_i = f(x_i)``: each block through the R-2D3D encoder, pooled over time, kept as a map;
* ``c_t = g(ReLU(z_1..z_t))``: a 1-layer ConvGRU (1x1 gates, dropout 0.1 after each step)
  over the first ``N - q`` blocks;
* sequential prediction: ``ẑ_{t+1} = φ(c_t)``, then ``c_{t+1} = g(ReLU(ẑ_{t+1}), c_t)``, for
  ``q`` steps; φ is Conv1x1 -> ReLU -> Conv1x1;
* loss: :func:`~vidmodels.losses.dense_predictive_nce.dense_predictive_nce` of the ``q``
  predictions against the **pre-ReLU** ``z`` of the last ``q`` blocks.

MemDPC (chapter 3, Eq. 3.3-3.4, L633-L647): φ outputs K logits per position and the
prediction is the memory read :func:`memory_read`, ``ẑ = softmax_K(φ(c)) · M`` with a
learnable ``M`` of K slots, the same bank for every step. The bidirectional variant (L670)
shares f, φ and M and adds a backward aggregator on the time-flipped blocks; its two
losses are averaged in the thesis and summed in the authors' code (``loss_reduction``,
default the code's ``"sum"``).

Where the thesis leaves a choice to the code (spec §E.1, [EXT] in the digest), the code's
value is the default: orthogonal init of g and φ with gain 1 (DPC) or 0.1 (MemDPC), zero
biases; ``M ~ N(0, 1)``. Under DDP the targets of all ranks are candidates
(``gather_distributed``, default on: more easy negatives than the authors' per-GPU scores).

Batch contract (the ``dpc`` recipe after the train loop normalised it)::

    blocks  float (B, N, C, L, H, W)   RGB (ImageNet-normalised) or flow in [-1, 1] (x, y, 0)

Reference:
    - [0] Video Representation Learning by Dense Predictive Coding, Han et al., ICCV-W 2019
    - [1] Memory-augmented Dense Predictive Coding, Han et al., ECCV 2020
"""

from __future__ import annotations

import dataclasses
from typing import Literal

import torch
from torch import nn

from vidmodels.backbones.dpc_context import DPCContext
from vidmodels.heads import ConvPredictor
from vidmodels.layers import ConvGRU
from vidmodels.losses.dense_predictive_nce import (
    dense_nce_metrics,
    dense_predictive_logits,
)
from vidmodels.registry import create_backbone

__all__ = ["DPC", "DPCConfig", "MemDPC", "MemDPCConfig", "build_dpc", "memory_read"]


def memory_read(logits_BKHW: torch.Tensor, memory_KD: torch.Tensor) -> torch.Tensor:
    """MemDPC's predictive addressing, Eq. 3.3-3.4: ``ẑ = softmax_K(logits) · M`` at every position.

    Args:
        logits_BKHW: φ(c), one logit per memory slot and position.
        memory_KD: The memory bank M (K slots of D channels).

    Returns:
        ``z_BDHW``: at each position a convex combination of the slots.

    Raises:
        ValueError: If the slot counts differ.
    """
    if logits_BKHW.shape[1] != memory_KD.shape[0]:
        raise ValueError(f"logits have {logits_BKHW.shape[1]} slots, the memory {memory_KD.shape[0]}")
    p_BKHW = logits_BKHW.softmax(dim=1)
    return torch.einsum("bkhw,kd->bdhw", p_BKHW, memory_KD.to(p_BKHW.dtype))


@dataclasses.dataclass
class DPCConfig:
    """One DPC run. Seed 001 = thesis; [EXT] = the authors' code (spec §E).

    Attributes:
        backbone: Registered :class:`DPCContext` (``dpc_context_18``, ``_34``, ``_tiny``).
        in_chans: 3 (RGB) or 2 (flow: x, y).
        pred_step: Future blocks predicted, q (5pred3: 3).
        dense: Dense maps (True) or pooled vectors (Table 2.1's "remove Map").
        init_gain: Orthogonal-init gain of g and φ ([EXT] DPC 1.0).
        track_running_stats: BatchNorm running statistics. [EXT] The DPC code turns them off
            (batch statistics in eval mode too); training forward passes are identical
            either way, so the default keeps them, which lets the registered encoder be
            probed frozen in eval mode. False reproduces the code.
        gather_distributed: Score against the targets of every rank (module docstring).
        input_key: The batch column read.
    """

    backbone: str = "dpc_context_18"
    in_chans: int = 3
    pred_step: int = 3
    dense: bool = True
    init_gain: float = 1.0
    track_running_stats: bool = True
    gather_distributed: bool = True
    input_key: str = "blocks"

    def validate(self) -> None:
        """Raises ValueError on an inconsistent configuration."""
        if self.pred_step < 1:
            raise ValueError(f"pred_step must be >= 1, got {self.pred_step}")
        if self.in_chans not in (2, 3):
            raise ValueError(f"in_chans must be 3 (RGB) or 2 (flow), got {self.in_chans}")

    def context_kwargs(self) -> dict:
        """Keyword arguments of the registered context backbone (what the registry rebuilds)."""
        return {"in_chans": self.in_chans, "dense": self.dense, "track_running_stats": self.track_running_stats}


@dataclasses.dataclass
class MemDPCConfig(DPCConfig):
    """MemDPC: DPC's fields plus the memory and the bidirectional variant.

    Attributes:
        memory_size: Slots K (Table 3.1: 512, 1024, 2048; 1024 best).
        bidirectional: Add the backward aggregator (L670; the only model of the released code).
        loss_reduction: How the two directions' losses combine: ``"sum"`` ([EXT] code) or
            ``"mean"`` (thesis L670).
        init_gain: [EXT] 0.1 in MemDPC.
        track_running_stats: MemDPC keeps running statistics ([EXT]).
    """

    memory_size: int = 1024
    bidirectional: bool = False
    loss_reduction: Literal["mean", "sum"] = "sum"
    init_gain: float = 0.1

    def validate(self) -> None:
        super().validate()
        if self.memory_size < 1:
            raise ValueError(f"memory_size must be >= 1, got {self.memory_size}")
        if self.loss_reduction not in ("mean", "sum"):
            raise ValueError(f"loss_reduction must be 'mean' or 'sum', got {self.loss_reduction!r}")

    def context_kwargs(self) -> dict:
        return {**super().context_kwargs(), "bidirectional": self.bidirectional}


def _orthogonal_init(module: nn.Module, gain: float) -> None:
    for name, p in module.named_parameters():
        if "bias" in name:
            nn.init.zeros_(p)
        elif p.ndim >= 2:
            nn.init.orthogonal_(p, gain)


class DPC(nn.Module):
    """Dense Predictive Coding; ``forward(batch)`` returns the loss and the SSL metrics.

    Args:
        cfg: The run's configuration.

    Raises:
        ValueError: On an invalid configuration, or at ``forward`` on too few blocks or a
            spatial map smaller than 2x2 (dense).
    """

    def __init__(self, cfg: DPCConfig) -> None:
        super().__init__()
        cfg.validate()
        self.cfg = cfg
        self.context: DPCContext = create_backbone(cfg.backbone, num_classes=0, **cfg.context_kwargs())
        dim = self.context.dim
        self.predictor = ConvPredictor(dim, dim, self._predictor_out(dim))
        for module in (*self.context.aggregators(), self.predictor):
            _orthogonal_init(module, cfg.init_gain)

    def _predictor_out(self, dim: int) -> int:
        return dim

    def predict(self, c_BDHW: torch.Tensor) -> torch.Tensor:
        """``ẑ = φ(c)``."""
        return self.predictor(c_BDHW)

    def rollout(self, agg: ConvGRU, z_obs_BTDHW: torch.Tensor) -> torch.Tensor:
        """Aggregate the observed blocks, then predict ``q`` steps feeding ReLU(ẑ) back: ``(B, q, D, H, W)``."""
        _, h_LBDHW = agg(torch.relu(z_obs_BTDHW))
        preds = []
        for step in range(self.cfg.pred_step):
            pred_BDHW = self.predict(h_LBDHW[-1])
            preds.append(pred_BDHW)
            if step + 1 < self.cfg.pred_step:  # the code also runs g after the last step; unused
                _, h_LBDHW = agg(torch.relu(pred_BDHW).unsqueeze(1), h_LBDHW)
        return torch.stack(preds, dim=1)

    def _check(self, z_BNDHW: torch.Tensor) -> None:
        N, (H, W), q = z_BNDHW.shape[1], z_BNDHW.shape[3:], self.cfg.pred_step
        if q >= N:
            raise ValueError(f"pred_step {q} needs at least {q + 1} blocks (one observed); the batch has {N}")
        if self.cfg.dense and min(H, W) < 2:
            raise ValueError(f"the encoder's map is {H}x{W}; the dense task needs at least 2x2 (larger crops)")

    def forward(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """One step of self-supervision on ``batch[cfg.input_key]`` (module docstring).

        Returns:
            ``loss`` and detached metrics: ``top1`` (SSL accuracy of the forward direction),
            ``top1_temporal/_spatial/_easy`` (share of queries ranking such a negative first),
            ``chance`` (1 / candidates) and, bidirectional, ``top1_backward``.
        """
        x_BNCLHW = batch[self.cfg.input_key][:, :, : self.cfg.in_chans]
        z_BNDHW = self.context.encode_blocks(x_BNCLHW)
        self._check(z_BNDHW)
        q, hw = self.cfg.pred_step, z_BNDHW.shape[3] * z_BNDHW.shape[4]
        losses, out = [], {}
        for i, agg in enumerate(self.context.aggregators()):
            z_dir = z_BNDHW if i == 0 else z_BNDHW.flip(1)
            pred_BqDHW = self.rollout(agg, z_dir[:, :-q])
            logits_MN, positive_M = dense_predictive_logits(pred_BqDHW, z_dir[:, -q:],
                                                            gather_distributed=self.cfg.gather_distributed)
            losses.append(nn.functional.cross_entropy(logits_MN, positive_M))
            metrics = dense_nce_metrics(logits_MN.detach(), positive_M, q, hw)
            if i == 0:
                out.update(metrics, chance=torch.tensor(1.0 / logits_MN.shape[1]))
            else:
                out["top1_backward"] = metrics["top1"]
        return {"loss": self.combine(losses), **out}

    def combine(self, losses: list[torch.Tensor]) -> torch.Tensor:
        """The loss of the directions trained (DPC: one)."""
        return torch.stack(losses).sum()

    def context_state(self) -> dict[str, torch.Tensor]:
        """A copy of f + g's weights, loadable into ``create_backbone(cfg.backbone, **cfg.context_kwargs())``."""
        return {k: v.detach().clone() for k, v in self.context.state_dict().items()}


class MemDPC(DPC):
    """Memory-augmented DPC: φ addresses a learnable memory bank (module docstring)."""

    cfg: MemDPCConfig

    def __init__(self, cfg: MemDPCConfig) -> None:
        super().__init__(cfg)
        self.memory = nn.Parameter(torch.randn(cfg.memory_size, self.context.dim))

    def _predictor_out(self, dim: int) -> int:
        return self.cfg.memory_size

    def predict(self, c_BDHW: torch.Tensor) -> torch.Tensor:
        """``ẑ = softmax_K(φ(c)) · M``."""
        return memory_read(self.predictor(c_BDHW), self.memory)

    def combine(self, losses: list[torch.Tensor]) -> torch.Tensor:
        """Forward + backward losses summed ([EXT] code) or averaged (thesis L670): ``cfg.loss_reduction``."""
        loss = torch.stack(losses).sum()
        return loss / len(losses) if self.cfg.loss_reduction == "mean" else loss


def build_dpc(cfg: DPCConfig) -> DPC:
    """:class:`MemDPC` for a :class:`MemDPCConfig`, else :class:`DPC`."""
    return MemDPC(cfg) if isinstance(cfg, MemDPCConfig) else DPC(cfg)
