"""Downstream evaluation protocols of the seeds: retrieval, linear and MLP probes, finetune.

Every protocol works on *video-level* features: each video's test views (k temporal
windows x spatial crops, from the ``eval`` recipe) go through the frozen encoder, and
the view embeddings are averaged (seed 001: "features averaged over sliding windows
and crops"). Feature extraction runs on Ray Data with a pool of actors that each hold
the encoder once (:class:`FeatureExtractor`).

* **retrieval** (CoCLR / MemDPC protocol): test videos query the train videos by
  cosine similarity of L2-normalised features; R@k is the fraction of queries with at
  least one same-class video among the k nearest.
* **linear** probe: a linear classifier trained on the frozen train features,
  standardised with the train mean/std (full-batch Adam with weight decay,
  cross-entropy), scored on the test features.
  The seeds train the probe on augmented clips; we train it on the multi-view averaged
  features without augmentation, which is cheaper and the common practice of later
  work (stated here because the seeds differ).
* **mlp** probe: the same on a one-hidden-layer MLP (``Linear -> BatchNorm -> ReLU -> Dropout
  -> Linear``, hidden width = feature dim), MemDPC's "non-linear probe" (seed 001 L674-L681;
  the thesis gives no architecture, only dropout 0.9 on the final layer, which is the default).
* **finetune**: the whole encoder plus a linear head, trained end to end with the
  generic Ray Train loop on the ``classification`` recipe, then scored with the same
  multi-view averaging (softmax probabilities averaged over views).

Shape legend: ``N`` videos, ``V`` views, ``D`` feature dim, ``K`` classes.
"""

from __future__ import annotations

import dataclasses
import os
import uuid
from typing import Any, Callable, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from pipelines.config import ScalingConfig
from pipelines.train.optim import OptimConfig

RECALL_KS = (1, 5, 10, 20)
AUTHORS_KS = (1, 5, 10, 20, 50)  # the CoCLR code's retrieval


@dataclasses.dataclass
class Features:
    """Video-level features of one split."""

    video_id: list[str]
    label_index: np.ndarray  # (N,) int64
    feats_ND: np.ndarray     # (N, D) float32, L2-normalised


class FeatureExtractor:
    """Ray Data ``map_batches`` callable: multi-view clips in, one averaged embedding per video out.

    Args:
        build_encoder: zero-argument callable returning the encoder (``forward`` gives
            the pooled ``(B, D)`` embedding); called once per actor.
        device: ``"cuda"`` when the actor has a GPU, else ``"cpu"``.
        kind: ``"features"`` (unit-length view-averaged embeddings), ``"raw"`` (the plain mean
            of the views' embeddings, for the authors' retrieval) or ``"logits"``.
        modality: ``"rgb"`` views are ImageNet-normalised; ``"flow"`` views (the stored
            uint8 flow encoding) are mapped to [-1, 1] and only (x, y) go in.
    """

    def __init__(self, build_encoder: Callable[[], torch.nn.Module], device: str = "cpu",
                 kind: str = "features", modality: str = "rgb") -> None:
        self.device = torch.device(device)
        self.kind = kind
        self.modality = modality
        self.encoder = build_encoder().to(self.device).eval()

    @torch.no_grad()
    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        from pipelines.data.normalize import normalize_video

        views = torch.from_numpy(np.require(batch["views"], requirements=("C", "W"))).to(self.device)  # (B, V, T, H, W, 3) uint8
        x = normalize_video(views, self.modality)  # (B, V, 3, T, H, W)
        if self.modality == "flow":  # flow encoders read (x, y), not the stored zero channel
            x = x[:, :, :2]
        b, v = x.shape[:2]
        out_BVD = self.encoder(x.flatten(0, 1)).view(b, v, -1).float()
        if self.kind == "raw":  # the CoCLR code's test_retrieval: feature.mean(0) over views
            feats_BD = out_BVD.mean(dim=1)
        elif self.kind == "logits":  # class probabilities averaged over views (finetune protocol)
            feats_BD = out_BVD.softmax(dim=-1).mean(dim=1)
        else:
            feats_BD = F.normalize(F.normalize(out_BVD, dim=-1).mean(dim=1), dim=-1)
        return {"video_id": batch["video_id"], "label_index": batch["label_index"],
                "feats": feats_BD.cpu().numpy()}


def extract_features(dataset, build_encoder: Callable[[], torch.nn.Module], *, batch_size: int = 4,
                     concurrency: int = 1, use_gpu: bool = False, kind: str = "features",
                     modality: str = "rgb") -> Features:
    """Run :class:`FeatureExtractor` over an ``eval``-recipe dataset and collect the features.

    ``kind="logits"``: the module outputs class logits and the result holds the
    view-averaged class probabilities instead of unit-length features.
    """
    import ray.data

    out = dataset.map_batches(FeatureExtractor, fn_constructor_kwargs={
        "build_encoder": build_encoder, "device": "cuda" if use_gpu else "cpu", "kind": kind,
        "modality": modality},
        batch_size=batch_size, compute=ray.data.ActorPoolStrategy(size=concurrency),
        num_gpus=1 if use_gpu else 0, batch_format="numpy")
    rows = out.take_all()
    rows.sort(key=lambda r: str(r["video_id"]))
    return Features(video_id=[str(r["video_id"]) for r in rows],
                    label_index=np.array([int(r["label_index"]) for r in rows], np.int64),
                    feats_ND=np.stack([r["feats"] for r in rows]).astype(np.float32) if rows
                    else np.zeros((0, 0), np.float32))


def retrieval_recall(query: Features, gallery: Features, ks: Sequence[int] = RECALL_KS, *,
                     center: bool = False) -> dict[str, float]:
    """R@k of ``query`` against ``gallery`` by cosine similarity.

    ``center`` (the CoCLR authors' ``test_retrieval``): each set is centred by its own mean,
    then L2-normalised, before the similarities; without it features are used as they are
    (unit length from :class:`FeatureExtractor`).
    """
    if not len(query.video_id) or not len(gallery.video_id):
        raise ValueError("retrieval needs non-empty query and gallery sets")
    q_QD, g_GD = torch.from_numpy(query.feats_ND), torch.from_numpy(gallery.feats_ND)
    if center:
        q_QD = F.normalize(q_QD - q_QD.mean(dim=0, keepdim=True), dim=1)
        g_GD = F.normalize(g_GD - g_GD.mean(dim=0, keepdim=True), dim=1)
    sim_QG = q_QD @ g_GD.T
    k_max = min(max(ks), sim_QG.shape[1])
    top_QK = sim_QG.topk(k_max, dim=1).indices.numpy()
    hits_QK = gallery.label_index[top_QK] == query.label_index[:, None]
    return {f"R@{k}": float(hits_QK[:, :min(k, k_max)].any(axis=1).mean() * 100) for k in ks}


def linear_probe(train: Features, test: Features, num_classes: int, *, epochs: int = 300, lr: float = 1e-2,
                 weight_decay: float = 1e-4, seed: int = 0) -> dict[str, Any]:
    """Train a linear classifier on frozen features; top-1/top-5 (%) and the confusion matrix on ``test``."""
    return _fit_probe(probe_head("linear", num_classes), train, test, num_classes, epochs=epochs, lr=lr,
                      weight_decay=weight_decay, seed=seed)


def mlp_probe(train: Features, test: Features, num_classes: int, *, epochs: int = 300, lr: float = 1e-2,
              weight_decay: float = 1e-4, dropout: float = 0.9, seed: int = 0) -> dict[str, Any]:
    """:func:`linear_probe` with a one-hidden-layer MLP head (module docstring); same outputs."""
    return _fit_probe(probe_head("mlp", num_classes, dropout=dropout), train, test, num_classes, epochs=epochs,
                      lr=lr, weight_decay=weight_decay, seed=seed)


def probe_head(kind: str, num_classes: int, *, dropout: float = 0.9) -> Callable[[int], torch.nn.Module]:
    """``d -> head`` of the ``linear`` or ``mlp`` probe."""
    if kind == "linear":
        return lambda d: torch.nn.Linear(d, num_classes)
    if kind != "mlp":
        raise ValueError(f"probe must be 'linear' or 'mlp', got {kind!r}")
    return lambda d: torch.nn.Sequential(torch.nn.Linear(d, d), torch.nn.BatchNorm1d(d), torch.nn.ReLU(),
                                         torch.nn.Dropout(dropout), torch.nn.Linear(d, num_classes))


def _fit_probe(make_head: Callable[[int], torch.nn.Module], train: Features, test: Features, num_classes: int, *,
               epochs: int, lr: float, weight_decay: float, seed: int) -> dict[str, Any]:
    """Full-batch Adam on frozen features standardised with the train statistics (a parameter-free
    BatchNorm, as MoCo v3's probe: unit-length features of a young encoder differ by tiny amounts a
    plain linear layer barely sees); scores on ``test`` in eval mode."""
    logits_NK = probe_logits(make_head, train, test, epochs=epochs, lr=lr, weight_decay=weight_decay, seed=seed)
    return classification_scores(logits_NK, torch.from_numpy(test.label_index), num_classes)


def probe_logits(make_head: Callable[[int], torch.nn.Module], train: Features, test: Features, *,
                 epochs: int, lr: float, weight_decay: float, seed: int) -> torch.Tensor:
    """The trained probe's ``(N_test, K)`` logits (see :func:`_fit_probe`)."""
    torch.manual_seed(seed)
    x_tr, y_tr = torch.from_numpy(train.feats_ND), torch.from_numpy(train.label_index)
    mean, std = x_tr.mean(dim=0), x_tr.std(dim=0).clamp_min(1e-6)
    x_tr, x_te = (x_tr - mean) / std, (torch.from_numpy(test.feats_ND) - mean) / std
    head = make_head(x_tr.shape[1])
    opt = torch.optim.Adam(head.parameters(), lr=lr, weight_decay=weight_decay)
    for _ in range(epochs):
        opt.zero_grad()
        F.cross_entropy(head(x_tr), y_tr).backward()
        opt.step()
    with torch.no_grad():
        return head.eval()(x_te)


def classification_scores(logits_NK: torch.Tensor, labels_N: torch.Tensor, num_classes: int) -> dict[str, Any]:
    """Top-1 / top-5 accuracy (%) and the confusion matrix (rows: true class, columns: predicted)."""
    pred_N = logits_NK.argmax(dim=1)
    k = min(5, logits_NK.shape[1])
    top5 = (logits_NK.topk(k, dim=1).indices == labels_N[:, None]).any(dim=1).float().mean().item()
    confusion_KK = np.zeros((num_classes, num_classes), np.int64)
    np.add.at(confusion_KK, (labels_N.numpy(), pred_N.numpy()), 1)
    return {"top1": (pred_N == labels_N).float().mean().item() * 100, "top5": top5 * 100,
            "confusion": confusion_KK}


def plot_confusion(confusion_KK: np.ndarray, class_names: Sequence[str], title: str):
    """A matplotlib figure of a confusion matrix, row-normalised, with counts."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    k = len(class_names)
    fig, ax = plt.subplots(figsize=(1.0 + 0.45 * k, 1.0 + 0.45 * k))
    rates = confusion_KK / np.maximum(1, confusion_KK.sum(axis=1, keepdims=True))
    ax.imshow(rates, cmap="Blues", vmin=0, vmax=1)
    ax.set_xticks(range(k), class_names, rotation=90, fontsize=7)
    ax.set_yticks(range(k), class_names, fontsize=7)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(title, fontsize=9)
    for i in range(k):
        for j in range(k):
            if confusion_KK[i, j]:
                ax.text(j, i, str(confusion_KK[i, j]), ha="center", va="center", fontsize=6,
                        color="white" if rates[i, j] > 0.5 else "black")
    fig.tight_layout()
    return fig


# ----------------------------------------------------------------------------- driving a protocol


def build_from_state(backbone: str, kwargs: dict[str, Any], state: dict[str, torch.Tensor] | None,
                     seed: int = 0) -> torch.nn.Module:
    """A registry backbone with ``state`` loaded (``None``: random init from ``seed``); picklable via partial."""
    from vidmodels.registry import create_backbone

    torch.manual_seed(seed)
    module = create_backbone(backbone, **kwargs)
    if state is not None:
        module.load_state_dict(state)
    return module


@dataclasses.dataclass
class EvalConfig:
    """What ``jobs/evaluate.py`` runs."""

    manifest: str = "data/demo/ucf101"
    train_split: str = "train"
    test_split: str = "test"
    debug_size: bool = False          # 8-frame, 64 px views
    num_clips: int | None = None      # temporal windows per video (recipe default: 10)
    spatial_crops: int | None = None  # crops per window (recipe default: 3)
    stride: int | None = None         # frame stride of each window (recipe default: 1); match the training clips'
    batch_size: int = 4
    linear_epochs: int = 300
    finetune_epochs: int = 10
    seed: int = 0
    storage_path: str = "data/runs"   # finetune checkpoints (a fresh run name every time)
    finetune_optim: OptimConfig = dataclasses.field(
        default_factory=lambda: OptimConfig(lr=1e-4, weight_decay=1e-3, schedule="cosine"))
    finetune_scaling: ScalingConfig = dataclasses.field(
        default_factory=lambda: ScalingConfig(num_workers=1, cpus_per_worker=0.5))
    modality: str = "rgb"             # "flow": views from the manifest's flow videos (a flow encoder)
    # "vidray": unit-length view-averaged features, R@1/5/10/20. "authors" (the CoCLR code): the
    # plain mean of the view features, each split centred by its mean, then normalised; R@1/5/10/20/50.
    # Their half-overlapping windows are not reproduced: views are the eval recipe's k windows.
    retrieval: str = "vidray"


def match_modality(cfg: EvalConfig, kwargs: dict[str, Any]) -> tuple[EvalConfig, dict[str, Any]]:
    """Make the views and the encoder agree: a 2-channel encoder is a flow encoder, and a
    flow evaluation of a ``random:`` encoder builds it with 2 input channels.

    Raises:
        ValueError: an unknown modality, or ``modality="flow"`` with an encoder that does
            not take 2 channels.
    """
    if cfg.modality not in ("rgb", "flow"):
        raise ValueError(f"modality must be 'rgb' or 'flow', got {cfg.modality!r}")
    in_chans = kwargs.get("in_chans")
    if in_chans is None:
        in_chans = 2 if cfg.modality == "flow" else 3
        kwargs = {**kwargs, "in_chans": in_chans}
    modality = "flow" if in_chans == 2 else "rgb"
    if cfg.modality == "flow" and modality != "flow":
        raise ValueError(f"modality 'flow' needs a 2-channel encoder; this one has in_chans={in_chans}")
    return dataclasses.replace(cfg, modality=modality), kwargs


def eval_dataset(cfg: EvalConfig, split: str):
    from pipelines.data import recipes
    from pipelines.data.dataset import build_pipeline

    overrides = [f"{k}={v}" for k, v in (("num_clips", cfg.num_clips), ("spatial_crops", cfg.spatial_crops),
                                         ("stride", cfg.stride), ("modality", cfg.modality)) if v is not None]
    recipe = recipes.recipe("eval", debug_size=cfg.debug_size, overrides=overrides)
    return build_pipeline(cfg.manifest, recipe, split, seed=cfg.seed)


def run_protocols(build_encoder: Callable[[], torch.nn.Module], protocols: Sequence[str], cfg: EvalConfig,
                  *, backbone: str | None = None, state: dict | None = None) -> dict[str, Any]:
    """Features once per split, then each protocol; returns ``{protocol: {metric: value}}``.

    ``finetune`` needs ``backbone`` and ``state`` (the encoder it starts from).
    """
    from pipelines.io import manifest as manifest_mod

    table = manifest_mod.read_manifest(cfg.manifest)
    names = {}
    for label, index in zip(table.column("label").to_pylist(), table.column("label_index").to_pylist()):
        if index is not None:
            names[index] = label
    num_classes = max(names) + 1 if names else 0
    results: dict[str, Any] = {}
    if {"retrieval", "linear", "mlp"} & set(protocols):
        if cfg.retrieval not in ("vidray", "authors"):
            raise ValueError(f"retrieval must be 'vidray' or 'authors', got {cfg.retrieval!r}")
        authors = cfg.retrieval == "authors"
        train, test = (extract_features(eval_dataset(cfg, split).dataset, build_encoder, batch_size=cfg.batch_size,
                                        modality=cfg.modality, kind="raw" if authors else "features")
                       for split in (cfg.train_split, cfg.test_split))
        if "retrieval" in protocols:
            results["retrieval"] = retrieval_recall(test, train, AUTHORS_KS if authors else RECALL_KS,
                                                    center=authors)
        if "linear" in protocols:
            results["linear"] = linear_probe(train, test, num_classes, epochs=cfg.linear_epochs, seed=cfg.seed)
        if "mlp" in protocols:
            results["mlp"] = mlp_probe(train, test, num_classes, epochs=cfg.linear_epochs, seed=cfg.seed)
    if "finetune" in protocols:
        if cfg.modality != "rgb":
            raise ValueError("finetune trains on the RGB 'classification' recipe; flow encoders support "
                             "retrieval and linear")
        results["finetune"] = finetune(backbone, state, cfg, num_classes)
    results["_class_names"] = [names.get(i, str(i)) for i in range(num_classes)]
    return results


def finetune(backbone: str, state: dict | None, cfg: EvalConfig, num_classes: int) -> dict[str, Any]:
    """Train encoder + linear head on the ``classification`` recipe, score with multi-view averaging."""
    import functools

    from pipelines.data import recipes
    from pipelines.data.dataset import LoaderOptions, build_pipeline
    from pipelines.train.checkpoint import load_checkpoint_state
    from pipelines.train.loop import LoopConfig, TrainTask
    from pipelines.train.runtime import fit

    recipe = recipes.recipe("classification", debug_size=cfg.debug_size)
    pipe = build_pipeline(cfg.manifest, recipe, cfg.train_split, seed=cfg.seed,
                          options=LoaderOptions(strings=False))
    videos = len(pipe.inputs) - pipe.quarantined().num_rows
    loop = LoopConfig(epochs=cfg.finetune_epochs, batch_size=cfg.batch_size, log_every_n_steps=10,
                      seed=cfg.seed)
    per_step = cfg.batch_size * cfg.finetune_scaling.num_workers
    task = TrainTask(build_method=functools.partial(_build_classifier, backbone, num_classes, state),
                     video_columns=recipe.video_columns(), optim=cfg.finetune_optim, loop=loop,
                     steps_per_epoch=max(1, videos // per_step), name=f"finetune {backbone}")
    result = fit(task, datasets={"train": pipe.dataset}, scaling=cfg.finetune_scaling,
                 run_name=f"finetune-{backbone}-{uuid.uuid4().hex[:8]}",
                 storage_path=os.path.abspath(cfg.storage_path) if "://" not in cfg.storage_path
                 else cfg.storage_path)
    if result.error:
        raise result.error
    model = _build_classifier(backbone, num_classes, None)
    model.load_state_dict(load_checkpoint_state(result.checkpoint)["model"])
    probs = extract_features(eval_dataset(cfg, cfg.test_split).dataset,
                             functools.partial(_logits_module, model), batch_size=cfg.batch_size, kind="logits")
    scores = classification_scores(torch.from_numpy(probs.feats_ND), torch.from_numpy(probs.label_index),
                                   num_classes)
    return {**scores, "train_loss": float(result.metrics.get("epoch_loss", float("nan"))),
            "train_epochs": float(result.metrics.get("epoch", 0))}


def _build_classifier(backbone: str, num_classes: int, state: dict | None):
    from vidmodels.methods import Classifier, ClassifierConfig

    model = Classifier(ClassifierConfig(backbone=backbone, num_classes=num_classes))
    if state is not None:
        model.load_backbone_state(state)
    return model


class _Logits(torch.nn.Module):
    def __init__(self, model) -> None:
        super().__init__()
        self.model = model

    def forward(self, x):
        return self.model.logits(x)


def _logits_module(model):
    return _Logits(model)
