"""Contrastive losses (pure functions) and the positive-set helpers of CoCLR/UberNCE."""

from vidmodels.losses.info_nce import info_nce, moco_logits
from vidmodels.losses.mean_positive_nce import mean_positive_nce
from vidmodels.losses.multi_positive_nce import multi_positive_nce
from vidmodels.losses.positive_mask import label_positive_mask, topk_positive_mask

__all__ = [
    "info_nce",
    "label_positive_mask",
    "mean_positive_nce",
    "moco_logits",
    "multi_positive_nce",
    "topk_positive_mask",
]
