"""The contract every backbone implements (timm-style).

Legend: B batch, C channels, T time, H/W spatial, D embedding dim, K classes.

``forward(x) == forward_head(forward_features(x))``:

- ``forward_features(x_BCTHW)`` returns the last feature map ``(B, C, T', H', W')``
  (token sequence ``(B, N, D)`` for ViTs);
- ``forward_head(x, pre_logits=True)`` returns the pooled embedding ``(B, feature_dim)``;
  with ``pre_logits=False`` it returns logits ``(B, K)``, or the embedding when K=0;
- ``reset_classifier(K)`` swaps the final linear layer (K=0 removes it).
"""

from __future__ import annotations

import torch
from torch import nn

from vidmodels.heads import LinearClassifier


class VideoBackbone(nn.Module):
    """Base class: global average pooling, then dropout and a linear classifier.

    Subclasses implement ``forward_features`` and call ``_init_head``; families with
    a different head (X3D's extra 1x1x1 projection, the ViT's class token) override
    ``pool``.

    Attributes:
        feature_dim: Size D of the pooled embedding (``forward_head(..., pre_logits=True)``).
        feature_map_dim: Channels of the ``forward_features`` output.
        num_classes: Current classifier size (0 = headless).
    """

    feature_dim: int
    feature_map_dim: int
    num_classes: int

    def _init_head(self, *, feature_dim: int, num_classes: int, drop_rate: float) -> None:
        self.feature_dim = feature_dim
        self.num_classes = num_classes
        self.drop_rate = drop_rate
        self.head = LinearClassifier(feature_dim, num_classes, drop_rate=drop_rate)

    def forward_features(self, x_BCTHW: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def pool(self, x: torch.Tensor) -> torch.Tensor:
        """Global average pooling ``(B, C, T, H, W) -> (B, C)``."""
        return x.mean((2, 3, 4))

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        """Pools the features and applies the classifier.

        Args:
            x: Output of :meth:`forward_features`.
            pre_logits: Return the pooled embedding ``(B, feature_dim)`` instead of logits.
        """
        z_BD = self.pool(x)
        return z_BD if pre_logits else self.head(z_BD)

    def reset_classifier(self, num_classes: int) -> None:
        """Replaces the classifier by a freshly initialised one with ``num_classes`` outputs."""
        self.num_classes = num_classes
        self.head = LinearClassifier(self.feature_dim, num_classes, drop_rate=self.drop_rate)
        p = next(self.parameters())
        self.head.to(device=p.device, dtype=p.dtype)

    def forward(self, x_BCTHW: torch.Tensor) -> torch.Tensor:
        """``(B, C, T, H, W) -> (B, K)`` logits, or ``(B, feature_dim)`` when headless."""
        return self.forward_head(self.forward_features(x_BCTHW))
