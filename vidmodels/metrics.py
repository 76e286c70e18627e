"""Accuracy metrics, returned as fractions in [0, 1] (0-dim tensors, no gradient).

Legend: B batch, N candidates per row, K classes.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

__all__ = ["instance_accuracy", "topk_accuracy"]


@torch.no_grad()
def instance_accuracy(logits_BN: torch.Tensor, pos_mask_BN: torch.Tensor) -> torch.Tensor:
    """Contrastive top-1: fraction of rows whose highest logit is one of their positives.

    Args:
        logits_BN: Similarity logits.
        pos_mask_BN: Boolean positive set per row.
    """
    top_B = logits_BN.argmax(dim=1)
    hit_B = pos_mask_BN.bool().gather(1, top_B[:, None]).squeeze(1)
    return hit_B.float().mean()


@torch.no_grad()
def topk_accuracy(logits_BK: torch.Tensor, target_B: torch.Tensor, ks: Sequence[int] = (1, 5)) -> list[torch.Tensor]:
    """Classification top-k accuracies, one per ``k`` in ``ks`` (each ``k`` capped at K).

    Args:
        logits_BK: Class scores.
        target_B: Class indices, int64.
        ks: The k values.
    """
    kmax = min(max(ks), logits_BK.shape[1])
    pred_BK = logits_BK.topk(kmax, dim=1).indices
    hit_BK = pred_BK == target_B[:, None]
    return [hit_BK[:, : min(k, kmax)].any(dim=1).float().mean() for k in ks]
