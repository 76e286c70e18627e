"""Supervised classification: a backbone plus a linear head with dropout, cross-entropy.

Used for full finetuning (the seeds' "finetune" protocol: the whole encoder is
trained with a new linear head) and as a supervised baseline. Batch contract, as the
``classification`` recipe delivers it after the train loop normalised it:

    rgb          float (B, 3, T, H, W)   one augmented clip per video
    label_index  int64 (B,)              class index (rows without a label never reach here)

Shape legend: ``B`` batch, ``T`` frames, ``H``/``W`` size, ``K`` classes, ``D`` features.
"""

from __future__ import annotations

import dataclasses

import torch
import torch.nn.functional as F
from torch import nn

from vidmodels.heads import LinearClassifier
from vidmodels.metrics import topk_accuracy
from vidmodels.registry import create_backbone


@dataclasses.dataclass
class ClassifierConfig:
    """Backbone, classes and regularisation of a finetuning run.

    ``dropout`` defaults to 0.5, the usual value for finetuning S3D/R3D on UCF101/HMDB51
    (the seeds do not state it).
    """

    backbone: str = "s3d"
    num_classes: int = 101
    in_chans: int = 3
    dropout: float = 0.5
    label_smoothing: float = 0.0
    input_key: str = "rgb"


class Classifier(nn.Module):
    """Backbone (pooled features) -> dropout + linear head; ``forward(batch)`` gives loss and top-1."""

    def __init__(self, cfg: ClassifierConfig) -> None:
        super().__init__()
        if cfg.num_classes < 1:
            raise ValueError(f"num_classes must be >= 1, got {cfg.num_classes}")
        self.cfg = cfg
        self.backbone = create_backbone(cfg.backbone, num_classes=0, in_chans=cfg.in_chans)
        self.head = LinearClassifier(self.backbone.feature_dim, cfg.num_classes, drop_rate=cfg.dropout)

    def logits(self, x_BCTHW: torch.Tensor) -> torch.Tensor:
        """Class logits ``(B, K)`` of a clip batch."""
        return self.head(self.backbone(x_BCTHW))

    def forward(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        logits_BK = self.logits(batch[self.cfg.input_key]).float()
        target_B = batch["label_index"].long()
        loss = F.cross_entropy(logits_BK, target_B, label_smoothing=self.cfg.label_smoothing)
        return {"loss": loss, "top1": topk_accuracy(logits_BK.detach(), target_B, ks=(1,))[0]}

    def trainable_parameters(self):
        return self.parameters()

    def load_backbone_state(self, state_dict: dict[str, torch.Tensor]) -> None:
        """Initialise the backbone from a registered encoder's state dict (a headless backbone)."""
        self.backbone.load_state_dict(state_dict)
