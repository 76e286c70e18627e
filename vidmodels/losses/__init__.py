"""Losses (pure functions): contrastive ones with the positive-set helpers of CoCLR/UberNCE,
and the per-frame detection losses."""

from vidmodels.losses.detection import (
    frame_bce,
    localization_loss,
    mixed_source_ce,
    soft_frame_ce,
)
from vidmodels.losses.info_nce import info_nce, moco_logits
from vidmodels.losses.mean_positive_nce import mean_positive_nce
from vidmodels.losses.multi_positive_nce import multi_positive_nce
from vidmodels.losses.positive_mask import label_positive_mask, topk_positive_mask

__all__ = [
    "frame_bce",
    "info_nce",
    "label_positive_mask",
    "localization_loss",
    "mean_positive_nce",
    "mixed_source_ce",
    "moco_logits",
    "multi_positive_nce",
    "soft_frame_ce",
    "topk_positive_mask",
]
