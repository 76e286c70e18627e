"""Per-epoch validation hooks (``TrainTask.validate``): run on rank 0 after every epoch.

A hook is ``(method, epoch, device) -> {metric: value}``; the loop logs the result as
``epoch/val_<metric>`` and prints it on the epoch's progress line. Hooks are picklable
dataclasses so they travel to the workers with the task.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import torch
from torch import nn


@dataclasses.dataclass(frozen=True)
class ClipTop1:
    """Top-1 (%) of ``method.logits`` on one centre view per video of a manifest split.

    Attributes:
        manifest: dataset folder or manifest URL.
        split: the split scored (e.g. ``test``).
        recipe: an ``eval`` recipe (its first view of each video is scored).
        num_classes: ``K`` of the labels.
        limit: score only the split's first N videos.
        batch_size: videos per forward pass.
    """

    manifest: str
    split: str
    recipe: object
    num_classes: int
    limit: int | None = None
    batch_size: int = 8

    def __call__(self, method: nn.Module, epoch: int, device: torch.device) -> dict[str, float]:
        from pipelines.data.dataset import LoaderOptions, build_pipeline
        from pipelines.data.normalize import normalize_video

        pipe = build_pipeline(self.manifest, self.recipe, self.split, num_classes=self.num_classes, limit=self.limit,
                              options=LoaderOptions(strings=False, ledger_name="vidray-validation-ledger"))
        kind = self.recipe.video_columns()["views"]
        hits, total = 0, 0
        for batch in pipe.dataset.iter_batches(batch_size=self.batch_size, batch_format="numpy"):
            views = torch.from_numpy(np.ascontiguousarray(batch["views"][:, 0])).to(device)
            logits_BK = method.logits(normalize_video(views, kind))
            labels_B = torch.from_numpy(batch["label_index"]).to(device)
            hits += int((logits_BK.argmax(dim=1) == labels_B).sum())
            total += len(labels_B)
        return {"top1": 100.0 * hits / max(1, total), "videos": float(total)}
