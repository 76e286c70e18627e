"""Dense predictive InfoNCE of DPC and MemDPC, its SSL accuracy and the kinds of negatives.

Legend: B local batch, q predicted steps, D channels, H/W spatial map, M = B*q*H*W queries,
N = candidates (M per rank, times the world size when gathered).

Every predicted vector ẑ_{i,k} (time step i, spatial index k, of video b) is scored
against every target vector z_{j,m} of the q future blocks of every video in the batch
by a plain dot product (no temperature, no normalisation, seed 001 L368); the only
positive is the target at the same (b, i, k) (L372). Eq. 2.5 (L370), averaged over the
M queries as the authors' code does (``CrossEntropyLoss`` over ``[BqHW, BqHW]``)::

    L = -(1/M) Σ_{b,i,k} log( exp(ẑ_{b,i,k}·z_{b,i,k}) / Σ_{b',j,m} exp(ẑ_{b,i,k}·z_{b',j,m}) )

Negatives of a query (L376-L384): *temporal* (same video and position, other step,
q-1 of them), *spatial* (same video, other position, any step, (HW-1)q) and *easy*
(another video, (B-1)HWq); per query ``1 : (q-1) : (HW-1)q : (B-1)HWq``.

With ``gather_distributed=True`` the targets of all ranks are candidates (the positive is
still this rank's own target), i.e. W times the easy negatives the authors had: their
scores were computed inside ``nn.DataParallel`` replicas, one GPU's batch at a time.

Reference:
    - [0] Video Representation Learning by Dense Predictive Coding, Han et al., ICCV-W 2019 (seed 001, Eq. 2.5)
    - [1] Memory-augmented Dense Predictive Coding, Han et al., ECCV 2020 (seed 001, Eq. 3.6)
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from vidmodels import dist

__all__ = ["KINDS", "candidate_kinds", "dense_nce_metrics", "dense_predictive_logits", "dense_predictive_nce"]

KINDS = ("positive", "temporal", "spatial", "easy")


def _flatten(x_BqDHW: torch.Tensor) -> torch.Tensor:
    """``(B, q, D, H, W) -> (B*q*H*W, D)`` in (b, t, h, w) order."""
    return x_BqDHW.permute(0, 1, 3, 4, 2).reshape(-1, x_BqDHW.shape[2])


def dense_predictive_logits(pred_BqDHW: torch.Tensor, target_BqDHW: torch.Tensor, *,
                            gather_distributed: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    """Dot-product scores of every prediction against every (gathered) target, and the positives.

    Args:
        pred_BqDHW: Predicted future maps ẑ.
        target_BqDHW: Encoded future maps z (DPC: before the ReLU fed to the aggregator).
        gather_distributed: Also score against the other ranks' targets (:func:`vidmodels.dist.gather`).

    Returns:
        ``(logits_MN, positive_M)``: float32 scores and the column of each query's positive.

    Raises:
        ValueError: If the shapes differ or are not 5-D.
    """
    if pred_BqDHW.ndim != 5 or pred_BqDHW.shape != target_BqDHW.shape:
        raise ValueError(f"pred and target must both be (B, q, D, H, W); got {tuple(pred_BqDHW.shape)} "
                         f"and {tuple(target_BqDHW.shape)}")
    pred_MD = _flatten(pred_BqDHW.float())
    target_ND = _flatten((dist.gather(target_BqDHW) if gather_distributed else target_BqDHW).float())
    offset = dist.rank() * pred_MD.shape[0] if gather_distributed else 0
    positive_M = torch.arange(pred_MD.shape[0], device=pred_MD.device) + offset
    return pred_MD @ target_ND.t(), positive_M


def dense_predictive_nce(pred_BqDHW: torch.Tensor, target_BqDHW: torch.Tensor, *,
                         gather_distributed: bool = False) -> torch.Tensor:
    """Eq. 2.5 / 3.6, the mean over the B*q*H*W queries (module docstring).

    Args:
        pred_BqDHW: Predicted future maps ẑ.
        target_BqDHW: Encoded future maps z, same shape.
        gather_distributed: Candidates from every rank (identity without a process group).

    Returns:
        Scalar loss.

    Raises:
        ValueError: If the shapes differ or are not 5-D.
    """
    logits_MN, positive_M = dense_predictive_logits(pred_BqDHW, target_BqDHW,
                                                    gather_distributed=gather_distributed)
    return F.cross_entropy(logits_MN, positive_M)


def candidate_kinds(query_M: torch.Tensor, candidate_M: torch.Tensor, q: int, hw: int) -> torch.Tensor:
    """Kind of each (query, candidate) pair: 0 positive, 1 temporal, 2 spatial, 3 easy (:data:`KINDS`).

    Both are flat indices in (b, t, k) order with ``t < q`` and ``k < hw`` (the layout of
    :func:`dense_predictive_logits`, the query's index already offset to its rank).
    """
    b_q, t_q, k_q = query_M // (q * hw), (query_M // hw) % q, query_M % hw
    b_c, t_c, k_c = candidate_M // (q * hw), (candidate_M // hw) % q, candidate_M % hw
    same_video, same_place, same_time = b_q == b_c, k_q == k_c, t_q == t_c
    kind = torch.full_like(query_M, 3)
    kind[same_video & ~same_place] = 2
    kind[same_video & same_place & ~same_time] = 1
    kind[same_video & same_place & same_time] = 0
    return kind


@torch.no_grad()
def dense_nce_metrics(logits_MN: torch.Tensor, positive_M: torch.Tensor, q: int, hw: int) -> dict[str, torch.Tensor]:
    """The thesis's SSL accuracy and which kind of candidate each query ranks first.

    Returns:
        ``top1`` (the share of queries whose highest score is their positive: "SSL accuracy",
        L426) and ``top1_temporal``, ``top1_spatial``, ``top1_easy``: the share of queries
        whose highest score is a negative of that kind (the four sum to 1).
    """
    kind_M = candidate_kinds(positive_M, logits_MN.argmax(dim=1), q, hw)
    share_K = torch.bincount(kind_M, minlength=len(KINDS)).float() / max(1, kind_M.numel())
    return {"top1": share_K[0], "top1_temporal": share_K[1], "top1_spatial": share_K[2], "top1_easy": share_K[3]}
