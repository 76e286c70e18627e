"""A cheap per-epoch proxy for self-supervised encoders: kNN top-1 and retrieval R@1 on a fixed subset.

:class:`KnnProxy` is a validation hook (``TrainTask.validate``, run on rank 0 after an epoch,
see :mod:`pipelines.eval.validate`): every ``every`` epochs it embeds a small, fixed, labelled
subset of the manifest with the method's encoder and scores

* ``knn_top1``: each query video's class is the cosine-similarity-weighted vote of its ``k``
  nearest gallery videos (InstDisc's weighted kNN without the temperature); % correct;
* ``retrieval_r1``: % of queries whose nearest gallery video has their class (the
  retrieval protocol's R@1, :func:`pipelines.eval.protocols.retrieval_recall`).

The loop logs them as ``val_knn_top1`` and ``val_retrieval_r1``; a sweep ranks and stops
self-supervised trials on ``val_knn_top1`` (``docs/tuning.md``).

The subset: ``limit`` videos of the query split and of the gallery split (the test split
queries the train split, as the retrieval protocol), spread evenly over each split's rows in
manifest order (so every class is present when the manifest is sorted by class), one view
per video: the spatial centre crop of the first window of the ``eval`` recipe, at the
length and crop size the encoder trains on. With the same split on both sides each video
queries the others (leave-one-out). The views are decoded once per process, in the process
(no Ray Data job beside the training pipeline), and kept for later epochs; each evaluation
is then only ``2 x limit`` forward passes.

Between evaluations the hook returns its last values again, with ``proxy_epoch`` saying
when they were measured: every epoch-end report must carry a sweep's metric (Tune refuses
a result without it). A process with no value yet (a new phase, a resumed run) evaluates.

Each method says which module embeds a clip (``encoder``: a module-level function
``method -> nn.Module`` mapping ``(B, C, T, H, W)`` to ``(B, D)``, picklable): CoCLR's
query backbone, DPC's context network f + g.

Shape legend: ``N`` videos (``Q`` queries, ``G`` gallery), ``D`` feature dim, ``K`` neighbours.
"""

from __future__ import annotations

import dataclasses
import logging
from typing import Any, Callable

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

log = logging.getLogger(__name__)

# (manifest, split, limit, recipe) -> (views uint8 (N, T, S, S, 3), labels (N,)); one process, one phase.
_VIEWS: dict[tuple, tuple[np.ndarray, np.ndarray]] = {}
# repr(hook) -> its last metrics, repeated between evaluations.
_LAST: dict[Any, dict[str, float]] = {}


@dataclasses.dataclass
class ProxyConfig:
    """A job's ``proxy`` section (``--set proxy.every=5``).

    Attributes:
        every: evaluate every N epochs of a phase; 0 turns the hook off.
        query_split: manifest split whose videos query.
        gallery_split: split searched (the same as ``query_split``: leave-one-out).
        limit: videos per split (spread evenly over the split); ``None``: all of it.
        k: neighbours that vote for kNN top-1.
    """

    every: int = 0
    query_split: str = "test"
    gallery_split: str = "train"
    limit: int | None = 64
    k: int = 5


def proxy_recipe(train_recipe, modality: str):
    """The ``eval`` recipe of one view per video at the size ``train_recipe`` trains on.

    The clip holds as many frames as the encoder sees in one training sample
    (``num_blocks x clip_len`` for block recipes), at the same stride and crop size.
    """
    from pipelines.data import recipes

    frames = train_recipe.clip_len * getattr(train_recipe, "num_blocks", 1)
    return recipes.recipe("eval", overrides=[
        "num_clips=1", "spatial_crops=1", f"modality={modality}", f"clip_len={frames}",
        f"stride={train_recipe.stride}", f"augment.out_size={train_recipe.crop_size}"])


def knn_proxy(cfg: ProxyConfig, manifest: str, train_recipe, modality: str,
              encoder: Callable[[nn.Module], nn.Module]) -> KnnProxy | None:
    """The hook a method spec returns from ``validate``; ``None`` when ``cfg.every`` is 0."""
    if cfg.every <= 0:
        return None
    return KnnProxy(manifest=manifest, recipe=proxy_recipe(train_recipe, modality), encoder=encoder,
                    query_split=cfg.query_split, gallery_split=cfg.gallery_split, limit=cfg.limit, k=cfg.k,
                    every=cfg.every)


@dataclasses.dataclass(frozen=True)
class KnnProxy:
    """Validation hook: kNN top-1 and retrieval R@1 (%) of ``encoder(method)`` features (module docstring).

    Attributes:
        manifest: dataset folder or manifest URL.
        recipe: an ``eval`` recipe with one view per video (:func:`proxy_recipe`).
        encoder: module-level function ``method -> nn.Module``, ``(B, C, T, H, W) -> (B, D)``.
        query_split, gallery_split: the splits scored (equal: leave-one-out).
        limit: videos per split.
        k: kNN voters.
        every: epochs between evaluations.
        batch_size: videos per forward pass.
    """

    manifest: str
    recipe: Any
    encoder: Callable[[nn.Module], nn.Module]
    query_split: str = "test"
    gallery_split: str = "train"
    limit: int | None = 64
    k: int = 5
    every: int = 1
    batch_size: int = 16

    def __call__(self, method: nn.Module, epoch: int, device: torch.device) -> dict[str, float]:
        key = repr(self)
        if self.every > 0 and epoch % self.every and key in _LAST:
            return _LAST[key]
        module = self.encoder(method)
        query = self._features(module, self.query_split, device)
        same = self.query_split == self.gallery_split
        gallery = query if same else self._features(module, self.gallery_split, device)
        scores = knn_scores(*query, *gallery, k=self.k, leave_one_out=same)
        _LAST[key] = {**scores, "proxy_videos": float(len(query[1])), "proxy_epoch": float(epoch)}
        return _LAST[key]

    def _features(self, module: nn.Module, split: str, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
        """Unit-length ``(N, D)`` features and ``(N,)`` labels of ``split``'s subset."""
        from pipelines.data.normalize import normalize_video

        views_NTSS3, labels_N = subset_views(self.manifest, split, self.limit, self.recipe)
        kind = self.recipe.video_columns()["views"]
        chunks = []
        for i in range(0, len(views_NTSS3), self.batch_size):
            x = normalize_video(torch.from_numpy(views_NTSS3[i:i + self.batch_size]).to(device), kind)
            if kind == "flow":  # flow encoders read (x, y), not the stored zero channel
                x = x[:, :2]
            chunks.append(F.normalize(module(x).float().flatten(1), dim=1).cpu())
        return torch.cat(chunks), torch.from_numpy(labels_N)


def knn_scores(q_QD: torch.Tensor, q_Q: torch.Tensor, g_GD: torch.Tensor, g_G: torch.Tensor, *, k: int,
               leave_one_out: bool = False) -> dict[str, float]:
    """Weighted kNN top-1 and R@1 (%) of unit-length queries against a gallery.

    Args:
        q_QD, g_GD: L2-normalised features; q_Q, g_G: int64 class labels.
        k: voters (capped at the gallery size); each votes its cosine similarity for its class.
        leave_one_out: the gallery is the query set: a video never retrieves itself.

    Raises:
        ValueError: an empty query set, or a gallery with nothing to retrieve.
    """
    sim_QG = q_QD @ g_GD.T
    if leave_one_out:
        sim_QG.fill_diagonal_(float("-inf"))
    n = sim_QG.shape[1] - int(leave_one_out)
    if not len(q_Q) or n < 1:
        raise ValueError(f"kNN needs queries and a gallery; got {len(q_Q)} queries, {n} gallery videos")
    sim_QK, idx_QK = sim_QG.topk(min(k, n), dim=1)
    labels_QK = g_G[idx_QK]
    classes = int(max(g_G.max(), q_Q.max())) + 1
    votes_QC = torch.zeros(len(q_Q), classes).scatter_add_(1, labels_QK, sim_QK.float())
    return {"knn_top1": float((votes_QC.argmax(dim=1) == q_Q).float().mean() * 100),
            "retrieval_r1": float((labels_QK[:, 0] == q_Q).float().mean() * 100)}


def subset_views(manifest_url: str, split: str, limit: int | None, recipe) -> tuple[np.ndarray, np.ndarray]:
    """The fixed subset's first views ``(N, T, S, S, 3)`` uint8 and labels ``(N,)``, decoded once per process.

    Rows without a label and videos that fail to decode are left out (logged).

    Raises:
        ValueError: no usable labelled video in ``split``.
    """
    key = (manifest_url, split, limit, repr(recipe))
    if key not in _VIEWS:
        _VIEWS[key] = _decode_subset(manifest_url, split, limit, recipe)
    return _VIEWS[key]


def _decode_subset(manifest_url: str, split: str, limit: int | None, recipe) -> tuple[np.ndarray, np.ndarray]:
    from pipelines.data import recipes
    from pipelines.data.dataset import (
        _items,  # the item rows the training pipeline reads, in manifest order
    )
    from pipelines.io import manifest
    from pipelines.io.probe import MediaError
    from pipelines.io.video import read_frames

    table = manifest.read_manifest(manifest_url)
    items, _, _ = _items(table, recipe, split, None)
    items = [r for r in items if r["label_index"] >= 0]
    if limit is not None and len(items) > limit:
        items = [items[i] for i in np.unique(np.linspace(0, len(items) - 1, limit).round().astype(int))]
    num_classes = 1 + max([r["label_index"] for r in items], default=0)

    views, labels, failed = [], [], 0
    for row in items:
        def read(video_id: str, uri: str, idx: np.ndarray, row: dict = row) -> np.ndarray:
            known = uri == row["uri"] and row.get("height")  # the manifest's codec and size are the RGB file's
            return read_frames(uri, idx, codec=row["codec"] if known else None,
                               size=(row["height"], row["width"]) if known else None)

        try:
            sample = recipes.make_sample(row, recipe, seed=0, epoch=0, num_classes=num_classes, read=read)
        except MediaError as exc:
            failed += 1
            log.warning("proxy subset: %s left out: %s", row["video_id"], exc)
            continue
        views.append(sample["views"][0])
        labels.append(row["label_index"])
    if not views:
        raise ValueError(f"no labelled video of split {split!r} of {manifest_url} could be read for the proxy")
    if failed:
        log.warning("proxy subset of %s/%s: %d of %d videos left out", manifest_url, split, failed, len(items))
    return np.stack(views), np.asarray(labels, np.int64)
