"""MoCo-style InfoNCE with a queue of negative keys.

Legend: B batch, D embedding dim, K queue size, N = 1 + K logits per row.

Reference:
    - [0] CoCLR, Han et al., NeurIPS 2020 (thesis Eq. 4.1, seed 001 L909-L913)
    - [1] MoCo, He et al., CVPR 2020
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

__all__ = ["info_nce", "moco_logits"]


def moco_logits(
    q_BD: torch.Tensor, k_BD: torch.Tensor, queue_KD: torch.Tensor, temperature: float
) -> torch.Tensor:
    """Logits ``[q·k, q·queue_1, ..., q·queue_K] / τ``; column 0 is the positive.

    Args:
        q_BD: Queries (L2-normalised by the caller).
        k_BD: Positive keys, one per query (no gradient needed).
        queue_KD: Queued keys.
        temperature: τ > 0.

    Returns:
        ``logits_BN`` with N = 1 + K.
    """
    pos_B1 = (q_BD * k_BD).sum(dim=1, keepdim=True)
    neg_BK = q_BD @ queue_KD.t()
    return torch.cat([pos_B1, neg_BK], dim=1) / temperature


def info_nce(q_BD: torch.Tensor, k_BD: torch.Tensor, queue_KD: torch.Tensor, temperature: float) -> torch.Tensor:
    """InfoNCE: ``L = -mean_i log( exp(q_i·k_i/τ) / (exp(q_i·k_i/τ) + Σ_j exp(q_i·queue_j/τ)) )``.

    Args:
        q_BD: Queries (L2-normalised).
        k_BD: Positive keys from the momentum encoder (L2-normalised).
        queue_KD: Negative keys (L2-normalised).
        temperature: τ > 0 (0.07 in MoCo/CoCLR).

    Returns:
        Scalar loss.

    Raises:
        ValueError: If ``temperature <= 0`` or the shapes disagree.
    """
    if temperature <= 0:
        raise ValueError(f"temperature must be > 0, got {temperature}")
    if q_BD.shape != k_BD.shape or queue_KD.ndim != 2 or queue_KD.shape[1] != q_BD.shape[1]:
        raise ValueError(f"shapes disagree: q {tuple(q_BD.shape)}, k {tuple(k_BD.shape)}, queue {tuple(queue_KD.shape)}")
    logits_BN = moco_logits(q_BD, k_BD, queue_KD, temperature)
    target_B = torch.zeros(q_BD.shape[0], dtype=torch.long, device=q_BD.device)
    return F.cross_entropy(logits_BN, target_B)
