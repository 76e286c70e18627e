"""Supervised-contrastive NCE: the log-likelihood is averaged over each row's positives.

The CoCLR code's UberNCE (the label oracle) uses this form, where every positive is
its own term, unlike CoCLR's multi-instance loss, where the positives share one
numerator (seed 001 digest §3.1, "[EXT]").

Legend: B batch, N candidates per row.

Reference:
    - [0] CoCLR, Han et al., NeurIPS 2020 (UberNCE, seed 001 L915-L921)
    - [1] Supervised Contrastive Learning, Khosla et al., NeurIPS 2020
"""

from __future__ import annotations

import torch

from vidmodels.losses.positive_mask import check_positive_mask

__all__ = ["mean_positive_nce"]


def mean_positive_nce(logits_BN: torch.Tensor, pos_mask_BN: torch.Tensor) -> torch.Tensor:
    """``L = -mean_i (1/|P_i|) Σ_{p∈P_i} log( exp(l_ip) / Σ_j exp(l_ij) )``.

    Args:
        logits_BN: Similarities already divided by the temperature.
        pos_mask_BN: Boolean positive set P_i per row.

    Returns:
        Scalar loss.

    Raises:
        ValueError: If the shapes differ or a row has no positive.
    """
    pos_mask_BN = check_positive_mask(logits_BN, pos_mask_BN)
    num_pos_B = pos_mask_BN.to(logits_BN.dtype).sum(dim=1)
    log_prob_BN = torch.log_softmax(logits_BN, dim=1)
    # masked_fill, not a product: log_prob may be -inf where the mask is 0.
    pos_log_prob_B = log_prob_BN.masked_fill(~pos_mask_BN, 0.0).sum(dim=1)
    return -(pos_log_prob_B / num_pos_B).mean()
