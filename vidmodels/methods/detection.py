"""Temporal activity detection with X3D (seed 000 ch. 4): pretraining and finetuning objectives.

One module, three objectives, one network: an X3D whose head (spatial mean -> ``head_proj``
432 -> 2048 without bias -> ReLU -> dropout -> fc) runs per time step
(:meth:`vidmodels.backbones.x3d.X3D.forward_frames`), as the SSDet / Coarse-Fine code.

* ``clip`` — classification pretraining, the baseline: the same head on the clip's
  spatio-temporal mean, softmax cross-entropy against the clip's label (the mean of its frame
  labels: the video one-hot for unaugmented single-label clips).
* ``frames`` — weakly-guided detection pretraining: per-frame targets are the video label
  copied to every frame (pseudo labels), then Volume Freeze / MixUp / CutMix edited
  (:mod:`pipelines.data.volume_aug`; frozen frames are all-zero rows, mixed frames soft rows).
  Loss :func:`~vidmodels.losses.detection.frame_bce` (the spec's default), or with
  ``pretrain_loss="softmax"`` the authors' per-frame softmax CE
  (:func:`~vidmodels.losses.detection.soft_frame_ce`) with ``background`` = ``class_zero`` (their
  code) or ``extra_class`` (a K+1-th background logit, what the thesis' "new background label"
  suggests).
* ``localize`` — activity-detection finetuning: multi-label sigmoid per frame, logits predicted
  at the clip stride and interpolated linearly to every raw frame the clip spans,
  ``L = ½ L_cls + ½ L_loc`` (:func:`~vidmodels.losses.detection.localization_loss`).

Batch contract (after the train loop's normalisation)::

    rgb           float (B, 3, T, H, W)
    frame_labels  float (B, T, K)  clip / frames objectives (the ``detection`` recipe)
                  float (B, L, K)  localize, L = T * stride raw frames (``activity`` recipe)
    frame_valid   float (B, L)     localize: 0 on frames past the video's end

Reference: Kahatapitiya et al., "Weakly-guided Self-supervised Pretraining for Temporal Activity
Detection" (AAAI 2023) and "Coarse-Fine Networks" (CVPR 2021); seed 000 L440, L593, L646-L735.
"""

from __future__ import annotations

import dataclasses
from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

from vidmodels.losses.detection import frame_bce, localization_loss, soft_frame_ce
from vidmodels.registry import create_backbone

Objective = Literal["clip", "frames", "localize"]


@dataclasses.dataclass
class DetectionConfig:
    """The network and its objective.

    Attributes:
        backbone: an X3D registry name (``x3d_m`` in the seed, ``x3d_debug`` for tests).
        num_classes: K; 0 takes it from the dataset (the spec fills it in).
        objective: ``clip``, ``frames`` or ``localize`` (module docstring).
        pretrain_loss: ``bce`` (default) or ``softmax`` (the SSDet code) for ``frames``.
        background: where a frozen frame's mass goes under ``softmax``: ``class_zero`` (the code)
            or ``extra_class`` (K+1 outputs).
        cls_weight: w of ``L = w L_cls + (1 - w) L_loc`` for ``localize`` (½).
        dropout: before the classifier (0.5, seed 000 L728).
    """

    backbone: str = "x3d_m"
    num_classes: int = 0
    objective: Objective = "frames"
    pretrain_loss: Literal["bce", "softmax"] = "bce"
    background: Literal["class_zero", "extra_class"] = "class_zero"
    cls_weight: float = 0.5
    dropout: float = 0.5
    in_chans: int = 3

    @property
    def outputs(self) -> int:
        """Classifier width: K, plus one background logit for ``softmax`` with ``extra_class``."""
        extra = self.objective == "frames" and self.pretrain_loss == "softmax" and self.background == "extra_class"
        return self.num_classes + int(extra)


class FrameDetector(nn.Module):
    """X3D with its head run per frame; ``forward(batch)`` gives the objective's loss and metrics."""

    def __init__(self, cfg: DetectionConfig) -> None:
        super().__init__()
        if cfg.num_classes < 1:
            raise ValueError(f"num_classes must be >= 1, got {cfg.num_classes}")
        if cfg.objective not in ("clip", "frames", "localize"):
            raise ValueError(f"objective must be clip, frames or localize, got {cfg.objective!r}")
        self.cfg = cfg
        self.backbone = create_backbone(cfg.backbone, num_classes=cfg.outputs, in_chans=cfg.in_chans,
                                        drop_rate=cfg.dropout)
        if not hasattr(self.backbone, "forward_frames"):
            raise ValueError(f"backbone {cfg.backbone!r} has no per-frame head (forward_frames); use an X3D")

    def frame_logits(self, x_BCTHW: torch.Tensor, num_frames: int | None = None) -> torch.Tensor:
        """``(B, T, K)`` per-step logits, or interpolated to ``num_frames`` frames."""
        return self.backbone.forward_frames(x_BCTHW, num_frames)

    def logits(self, x_BCTHW: torch.Tensor) -> torch.Tensor:
        """Clip-level ``(B, K)`` logits (the classification head on the spatio-temporal mean)."""
        return self.backbone(x_BCTHW)

    def forward(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        x_BCTHW, labels = batch["rgb"], batch["frame_labels"].float()
        if self.cfg.objective == "clip":
            logits_BK = self.logits(x_BCTHW).float()
            target_BK = labels.mean(1)
            target_BK = target_BK / target_BK.sum(1, keepdim=True).clamp_min(1e-6)
            loss = F.cross_entropy(logits_BK, target_BK)
            return {"loss": loss, "top1": (logits_BK.argmax(1) == target_BK.argmax(1)).float().mean()}
        if self.cfg.objective == "frames":
            logits_BTK = self.frame_logits(x_BCTHW).float()
            loss = (frame_bce(logits_BTK, labels) if self.cfg.pretrain_loss == "bce"
                    else soft_frame_ce(logits_BTK, labels, background=self.cfg.background))
            return {"loss": loss, "frame_top1": _frame_top1(logits_BTK[..., :self.cfg.num_classes], labels)}
        logits_BLK = self.frame_logits(x_BCTHW, num_frames=labels.shape[1]).float()
        loss, parts = localization_loss(logits_BLK, labels, batch.get("frame_valid"), cls_weight=self.cfg.cls_weight)
        return {"loss": loss, **parts}

    def load_backbone_state(self, state: dict[str, torch.Tensor], *, strict_head: bool = False) -> list[str]:
        """Start from a pretrained X3D: every tensor whose shape fits is loaded; the classifier of a
        different K is left new (the seed's finetuning replaces fc2). Returns the keys not loaded."""
        own = self.backbone.state_dict()
        fits = {k: v for k, v in state.items() if k in own and own[k].shape == v.shape}
        if strict_head and len(fits) != len(own):
            raise ValueError(f"state does not fit: {sorted(set(own) - set(fits))[:5]}")
        self.backbone.load_state_dict(fits, strict=False)
        return sorted(set(own) - set(fits))


@torch.no_grad()
def _frame_top1(logits_BTK: torch.Tensor, labels_BTK: torch.Tensor) -> torch.Tensor:
    """Share of labelled frames whose top class is one of their labels (frozen frames left out)."""
    labelled_BT = labels_BTK.sum(-1) > 0
    if not labelled_BT.any():
        return logits_BTK.new_zeros(())
    hit_BT = labels_BTK.gather(-1, logits_BTK.argmax(-1, keepdim=True)).squeeze(-1) > 0
    return hit_BT[labelled_BT].float().mean()
