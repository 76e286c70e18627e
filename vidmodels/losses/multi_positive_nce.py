"""Multi-instance InfoNCE: several positives share one numerator (CoCLR's loss).

Legend: B batch, N candidates per row (1 + queue size in CoCLR).

Reference:
    - [0] CoCLR, Han et al., NeurIPS 2020 (thesis Eq. 4.2/4.4, seed 001 L931, L943)
    - [1] MIL-NCE, Miech et al., CVPR 2020
"""

from __future__ import annotations

import torch

from vidmodels.losses.positive_mask import check_positive_mask

__all__ = ["multi_positive_nce"]


def multi_positive_nce(logits_BN: torch.Tensor, pos_mask_BN: torch.Tensor) -> torch.Tensor:
    """``L = -mean_i log( Σ_{p∈P_i} exp(l_ip) / Σ_j exp(l_ij) )``, with ``l = z·z'/τ`` precomputed.

    The negatives are the complement of the positives, so the denominator runs over
    every column. Computed as ``logsumexp_j l_ij - logsumexp_{p∈P_i} l_ip``, which is
    stable for huge logits. With one positive per row this is cross-entropy (InfoNCE).

    Args:
        logits_BN: Similarities already divided by the temperature.
        pos_mask_BN: Boolean positive set P_i per row.

    Returns:
        Scalar loss.

    Raises:
        ValueError: If the shapes differ or a row has no positive.
    """
    pos_mask_BN = check_positive_mask(logits_BN, pos_mask_BN)
    log_pos_B = torch.logsumexp(logits_BN.masked_fill(~pos_mask_BN, float("-inf")), dim=1)
    log_all_B = torch.logsumexp(logits_BN, dim=1)
    return (log_all_B - log_pos_B).mean()
