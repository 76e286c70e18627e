"""MoCo building blocks shared by the contrastive methods: encoder + head, EMA, key queue.

Legend: B local batch, N global batch (all ranks), D embedding dim, K queue size.

Reference:
    - [0] MoCo, He et al., CVPR 2020; MoCo v2, Chen et al., 2020
    - [1] CoCLR, Han et al., NeurIPS 2020 (momentum queue, seed 001 L973)
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from vidmodels import dist

__all__ = ["KeyQueue", "ProjectedEncoder", "ema_update"]


class ProjectedEncoder(nn.Module):
    """Headless backbone, then a projection head, then L2 normalisation.

    Its ``state_dict`` has ``backbone.*`` and ``head.*`` keys; the ``backbone.*`` part
    is what downstream tasks keep (the head is dropped, as in SimCLR; seed 001 L971).

    Args:
        backbone: A headless :class:`~vidmodels.backbones.base.VideoBackbone`.
        head: Projection head ``(B, feature_dim) -> (B, D)``.
    """

    def __init__(self, backbone: nn.Module, head: nn.Module) -> None:
        super().__init__()
        self.backbone = backbone
        self.head = head

    def forward(self, x_BCTHW: torch.Tensor) -> torch.Tensor:
        """``(B, C, T, H, W) -> (B, D)``, unit norm."""
        z_BF = self.backbone.forward_head(self.backbone.forward_features(x_BCTHW), pre_logits=True)
        return F.normalize(self.head(z_BF), dim=1)


@torch.no_grad()
def ema_update(target: nn.Module, source: nn.Module, momentum: float) -> None:
    """``θ_target ← m θ_target + (1 - m) θ_source`` over parameters (buffers are left alone)."""
    for p_t, p_s in zip(target.parameters(), source.parameters(), strict=True):
        p_t.mul_(momentum).add_(p_s.detach(), alpha=1.0 - momentum)


class KeyQueue(nn.Module):
    """FIFO queue of keys with their source-video ids and labels, identical on every rank.

    :meth:`enqueue` first all-gathers the batch from every rank (rank order), so each
    rank writes the same global batch and the queues never diverge. The ring buffer
    wraps around, so the queue size need not be a multiple of the global batch.
    Slots not yet written hold random unit vectors (MoCo's initialisation, drawn from
    a fixed seed so every rank starts identical) with video id and label -1; they act
    as negatives until overwritten, and ``full`` says when none are left.

    Args:
        size: Number of keys K (2048 in CoCLR).
        dim: Key dimension D (128 in CoCLR).
        gather_distributed: Gather keys from all ranks before enqueueing.
        seed: Seed of the initial random keys.

    Raises:
        ValueError: If ``size`` or ``dim`` is not positive.
    """

    keys: torch.Tensor
    vid: torch.Tensor
    labels: torch.Tensor
    ptr: torch.Tensor
    full: torch.Tensor

    def __init__(self, size: int, dim: int, *, gather_distributed: bool = True, seed: int = 0) -> None:
        super().__init__()
        if size <= 0 or dim <= 0:
            raise ValueError(f"queue size and dim must be positive, got size={size}, dim={dim}")
        self.size = size
        self.dim = dim
        self.gather_distributed = gather_distributed
        init_KD = torch.randn(size, dim, generator=torch.Generator().manual_seed(seed))
        self.register_buffer("keys", F.normalize(init_KD, dim=1))
        self.register_buffer("vid", torch.full((size,), -1, dtype=torch.long))
        self.register_buffer("labels", torch.full((size,), -1, dtype=torch.long))
        self.register_buffer("ptr", torch.zeros((), dtype=torch.long))
        self.register_buffer("full", torch.zeros((), dtype=torch.bool))

    @property
    def is_full(self) -> bool:
        """True once every slot has been written at least once."""
        return bool(self.full)

    @torch.no_grad()
    def enqueue(self, keys_BD: torch.Tensor, vid_B: torch.Tensor, labels_B: torch.Tensor | None = None) -> None:
        """Writes the (gathered) batch at ``ptr``, overwriting the oldest entries.

        Args:
            keys_BD: Keys of this rank.
            vid_B: Source-video ids, int64.
            labels_B: Class labels, int64 (-1 unknown); None stores -1.

        Raises:
            ValueError: If the shapes disagree or the global batch exceeds the queue size.
        """
        if labels_B is None:
            labels_B = torch.full_like(vid_B, -1)
        if keys_BD.shape[1:] != (self.dim,) or vid_B.shape != keys_BD.shape[:1] or labels_B.shape != vid_B.shape:
            raise ValueError(
                f"expected keys (B, {self.dim}), vid (B,), labels (B,); got {tuple(keys_BD.shape)}, "
                f"{tuple(vid_B.shape)}, {tuple(labels_B.shape)}"
            )
        if self.gather_distributed:
            keys_BD, vid_B, labels_B = (dist.gather_nograd(t) for t in (keys_BD, vid_B, labels_B))
        n = keys_BD.shape[0]
        if n > self.size:
            raise ValueError(f"global batch {n} exceeds the queue size {self.size}")
        idx_N = (self.ptr + torch.arange(n, device=self.ptr.device)) % self.size
        self.keys[idx_N] = keys_BD.detach().to(self.keys.dtype)
        self.vid[idx_N] = vid_B.to(self.vid.dtype)
        self.labels[idx_N] = labels_B.to(self.labels.dtype)
        self.full |= self.ptr + n >= self.size
        self.ptr.copy_((self.ptr + n) % self.size)
