"""Distributed helpers; the only module of vidmodels that imports ``torch.distributed``.

Every function is the identity (or the single-process answer) when no process
group is initialised, so models and losses can call them unconditionally. All
collectives assume the same local batch size on every rank (as DDP with a
``drop_last`` sampler guarantees).

Legend: B local batch, W world size, N = W * B global batch.
"""

from __future__ import annotations

import torch
import torch.distributed as dist

__all__ = [
    "broadcast",
    "gather",
    "gather_nograd",
    "is_dist",
    "rank",
    "shuffle_batch",
    "unshuffle_batch",
    "world_size",
]


def is_dist() -> bool:
    """True when a default process group is initialised."""
    return dist.is_available() and dist.is_initialized()


def rank() -> int:
    """Global rank, 0 without a process group."""
    return dist.get_rank() if is_dist() else 0


def world_size() -> int:
    """Number of ranks, 1 without a process group."""
    return dist.get_world_size() if is_dist() else 1


class _GatherWithGrad(torch.autograd.Function):
    """All-gather along dim 0 whose backward returns this rank's slice of the summed gradient.

    Each rank's loss may use every rank's rows, so the gradient of the summed loss
    with respect to the local rows is the all-reduced (summed) upstream gradient,
    restricted to this rank's slice.
    """

    @staticmethod
    def forward(ctx, x_B: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        ctx.batch = x_B.shape[0]
        parts = [torch.empty_like(x_B) for _ in range(world_size())]
        dist.all_gather(parts, x_B.contiguous())
        return torch.cat(parts, dim=0)

    @staticmethod
    def backward(ctx, grad_N: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        grad_N = grad_N.contiguous()
        dist.all_reduce(grad_N, op=dist.ReduceOp.SUM)
        start = rank() * ctx.batch
        return grad_N[start : start + ctx.batch]


def gather(x_B: torch.Tensor) -> torch.Tensor:
    """Differentiable all-gather ``(B, ...) -> (W * B, ...)`` in rank order; identity without a group."""
    if not is_dist():
        return x_B
    return _GatherWithGrad.apply(x_B)


@torch.no_grad()
def gather_nograd(x_B: torch.Tensor) -> torch.Tensor:
    """All-gather ``(B, ...) -> (W * B, ...)`` without autograd; identity without a group."""
    if not is_dist():
        return x_B
    parts = [torch.empty_like(x_B) for _ in range(world_size())]
    dist.all_gather(parts, x_B.contiguous())
    return torch.cat(parts, dim=0)


def broadcast(x: torch.Tensor, src: int = 0) -> torch.Tensor:
    """Broadcasts ``x`` in place from rank ``src`` and returns it; identity without a group."""
    if is_dist():
        dist.broadcast(x, src=src)
    return x


@torch.no_grad()
def shuffle_batch(x_B: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Shuffle-BN, step 1: redistributes the global batch across ranks at random.

    The key encoder's BatchNorm then sees samples from other ranks, so its batch
    statistics cannot leak which key matches which query (MoCo, He et al. 2020).
    The permutation is drawn on rank 0 and broadcast.

    Args:
        x_B: Local batch ``(B, ...)``.

    Returns:
        ``(x_shuffled_B, unshuffle_idx_N)``: this rank's share of the permuted global
        batch, and the inverse permutation for :func:`unshuffle_batch`. Without a
        process group: ``(x_B, arange(B))``.
    """
    if not is_dist():
        return x_B, torch.arange(x_B.shape[0], device=x_B.device)
    x_N = gather_nograd(x_B)
    perm_N = broadcast(torch.randperm(x_N.shape[0], device=x_N.device))
    unshuffle_idx_N = torch.argsort(perm_N)
    local_idx_B = perm_N.view(world_size(), -1)[rank()]
    return x_N[local_idx_B], unshuffle_idx_N


@torch.no_grad()
def unshuffle_batch(x_B: torch.Tensor, unshuffle_idx_N: torch.Tensor) -> torch.Tensor:
    """Shuffle-BN, step 2: returns each rank its own samples, in their original order.

    Args:
        x_B: Outputs computed on the shuffled local batch ``(B, ...)``.
        unshuffle_idx_N: Second output of :func:`shuffle_batch`.
    """
    if not is_dist():
        return x_B
    x_N = gather_nograd(x_B)
    local_idx_B = unshuffle_idx_N.view(world_size(), -1)[rank()]
    return x_N[local_idx_B]
