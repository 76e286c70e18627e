"""Positive sets for multi-positive NCE: mined in another view (CoCLR) or from labels (UberNCE).

Both return a boolean ``(B, N)`` mask over the N queue entries; the caller prepends
the column of each query's own key (always positive).

Legend: B batch (queries), N queue entries.

Reference:
    - [0] CoCLR, Han et al., NeurIPS 2020 (Eq. 4.3/4.5, seed 001 L937, L947; UberNCE L915)
"""

from __future__ import annotations

import torch

__all__ = ["label_positive_mask", "topk_positive_mask"]


def topk_positive_mask(
    sim_other_BN: torch.Tensor, k: int, exclude_mask_BN: torch.Tensor | None = None
) -> torch.Tensor:
    """CoCLR's mined positives: ``P_i = topK_j(z2_i · z2_j)`` over the non-excluded entries.

    Args:
        sim_other_BN: Similarities in the *other* view's feature space (e.g. flow
            key of each query against the queue of flow keys).
        k: Number of neighbours K (5 in CoCLR); 0 gives an all-false mask.
        exclude_mask_BN: True for entries that must not be mined, e.g. clips of the
            query's own source video. Rows with fewer than ``k`` candidates get fewer.

    Returns:
        Boolean mask ``(B, N)`` with at most ``k`` True entries per row.

    Raises:
        ValueError: If ``k < 0`` or ``k > N``, or the shapes differ.
    """
    num = sim_other_BN.shape[1]
    if not 0 <= k <= num:
        raise ValueError(f"k must be in [0, {num}], got {k}")
    if exclude_mask_BN is not None and exclude_mask_BN.shape != sim_other_BN.shape:
        raise ValueError(f"shapes disagree: {tuple(sim_other_BN.shape)} vs {tuple(exclude_mask_BN.shape)}")
    mask_BN = torch.zeros_like(sim_other_BN, dtype=torch.bool)
    if k == 0:
        return mask_BN
    sim_BN = sim_other_BN
    if exclude_mask_BN is not None:
        sim_BN = sim_BN.masked_fill(exclude_mask_BN.bool(), float("-inf"))
    idx_BK = sim_BN.topk(k, dim=1).indices
    mask_BN.scatter_(1, idx_BK, True)
    if exclude_mask_BN is not None:
        mask_BN &= ~exclude_mask_BN.bool()  # when a row has fewer than k candidates
    return mask_BN


def label_positive_mask(labels_B: torch.Tensor, queue_labels_N: torch.Tensor) -> torch.Tensor:
    """UberNCE's oracle positives: queue entries with the query's class label.

    Args:
        labels_B: Query labels, int64; negative means unknown (matches nothing).
        queue_labels_N: Labels of the queue entries; negative means unknown/empty.

    Returns:
        Boolean mask ``(B, N)``, True where ``labels_B[i] == queue_labels_N[j] >= 0``.
    """
    same_BN = labels_B[:, None] == queue_labels_N[None, :]
    return same_BN & (labels_B[:, None] >= 0) & (queue_labels_N[None, :] >= 0)


def check_positive_mask(logits_BN: torch.Tensor, pos_mask_BN: torch.Tensor) -> torch.Tensor:
    """Validate a (logits, positive mask) pair for the multi-positive losses; returns the mask as bool.

    Raises:
        ValueError: If the shapes differ, are not 2-D, or a row has no positive.
    """
    if logits_BN.shape != pos_mask_BN.shape or logits_BN.ndim != 2:
        raise ValueError(f"shapes disagree: logits {tuple(logits_BN.shape)}, mask {tuple(pos_mask_BN.shape)}")
    pos_mask_BN = pos_mask_BN.bool()
    if not bool(pos_mask_BN.any(dim=1).all()):
        raise ValueError("every row needs at least one positive")
    return pos_mask_BN
