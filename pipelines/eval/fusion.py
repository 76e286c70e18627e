"""Two-stream late fusion at evaluation: an RGB and a flow encoder scored together.

The seeds evaluate two-stream networks by averaging the streams' outputs (DPC / MemDPC,
seed 001 L789-L791; CoCLR's "R+F" rows): nothing is trained jointly.

* **retrieval**: each stream's unit-length view-averaged features give a cosine similarity
  matrix (test queries x train gallery); the fused similarity is their mean, and R@k is read
  from it exactly as :func:`pipelines.eval.protocols.retrieval_recall` reads one stream's.
* **linear** / **mlp**: one probe per stream, trained on that stream's frozen features as the
  single-stream protocol does; the fused prediction is the mean of the streams' softmax
  probabilities.

Only videos present in every stream are scored (a video whose flow file was quarantined has
no flow features): the counts are returned (``videos``, ``dropped``) so nothing vanishes silently.

Shape legend: ``Q`` test queries, ``G`` train gallery, ``D`` feature dim, ``K`` classes.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable, Sequence

import torch

from pipelines.eval.protocols import (RECALL_KS, EvalConfig, Features, classification_scores, eval_dataset,
                                      extract_features, probe_head, probe_logits)

FUSABLE = ("retrieval", "linear", "mlp")


@dataclasses.dataclass
class Stream:
    """One stream of a two-stream evaluation: its encoder and the views it reads."""

    build_encoder: Callable[[], torch.nn.Module]
    cfg: EvalConfig  # ``modality`` says which views (``rgb`` or ``flow``)


def align(streams: Sequence[tuple[Features, Features]]) -> tuple[list[tuple[Features, Features]], int]:
    """Restrict every stream's (train, test) features to the videos all streams have; returns them
    and the number of videos dropped."""
    keep_train = set.intersection(*(set(tr.video_id) for tr, _ in streams))
    keep_test = set.intersection(*(set(te.video_id) for _, te in streams))
    total = max(len(tr.video_id) + len(te.video_id) for tr, te in streams)
    out = [(_subset(tr, keep_train), _subset(te, keep_test)) for tr, te in streams]
    return out, total - len(keep_train) - len(keep_test)


def _subset(f: Features, keep: set[str]) -> Features:
    idx = [i for i, v in enumerate(f.video_id) if v in keep]
    order = sorted(idx, key=lambda i: f.video_id[i])
    return Features([f.video_id[i] for i in order], f.label_index[order], f.feats_ND[order])


def fused_retrieval(streams: Sequence[tuple[Features, Features]], ks: Sequence[int] = RECALL_KS) -> dict[str, float]:
    """R@k from the mean of the streams' cosine similarities (test queries the train gallery)."""
    sims_QG = [torch.from_numpy(te.feats_ND) @ torch.from_numpy(tr.feats_ND).T for tr, te in streams]
    sim_QG = torch.stack(sims_QG).mean(dim=0)
    train, test = streams[0]
    k_max = min(max(ks), sim_QG.shape[1])
    top_QK = sim_QG.topk(k_max, dim=1).indices.numpy()
    hits_QK = train.label_index[top_QK] == test.label_index[:, None]
    return {f"R@{k}": float(hits_QK[:, :min(k, k_max)].any(axis=1).mean() * 100) for k in ks}


def fused_probe(streams: Sequence[tuple[Features, Features]], num_classes: int, kind: str, *, epochs: int,
                seed: int, lr: float = 1e-2, weight_decay: float = 1e-4) -> dict[str, Any]:
    """One ``kind`` probe per stream; scores of the mean of their softmax probabilities."""
    probs_NK = torch.stack([probe_logits(probe_head(kind, num_classes), tr, te, epochs=epochs, lr=lr,
                                         weight_decay=weight_decay, seed=seed).softmax(dim=1)
                            for tr, te in streams]).mean(dim=0)
    return classification_scores(probs_NK, torch.from_numpy(streams[0][1].label_index), num_classes)


def run_fused(streams: Sequence[Stream], protocols: Sequence[str], num_classes: int) -> dict[str, Any]:
    """Features of every stream, aligned by video, then the fused protocols.

    Returns:
        ``{"fused_<protocol>": scores}`` plus ``"fused_videos": {"videos", "dropped"}``.
    """
    unknown = set(protocols) - set(FUSABLE)
    if unknown:
        raise ValueError(f"late fusion covers {FUSABLE}; {sorted(unknown)} score one stream at a time "
                         "(run jobs/evaluate.py without --fuse for them)")
    feats = [tuple(extract_features(eval_dataset(s.cfg, split).dataset, s.build_encoder, batch_size=s.cfg.batch_size,
                                    modality=s.cfg.modality) for split in (s.cfg.train_split, s.cfg.test_split))
             for s in streams]
    aligned, dropped = align(feats)
    if not aligned[0][0].video_id or not aligned[0][1].video_id:
        raise ValueError("no video has features in every stream: check that the manifest has flow_uri "
                         "(python jobs/flow.py --manifest ...)")
    cfg = streams[0].cfg
    out: dict[str, Any] = {"fused_videos": {"videos": float(len(aligned[0][0].video_id) + len(aligned[0][1].video_id)),
                                            "dropped": float(dropped)}}
    for protocol in protocols:
        out[f"fused_{protocol}"] = (fused_retrieval(aligned) if protocol == "retrieval" else
                                    fused_probe(aligned, num_classes, protocol, epochs=cfg.linear_epochs,
                                                seed=cfg.seed))
    return out


def class_count(manifest: str) -> tuple[int, list[str]]:
    """``(K, class names)`` of a manifest's ``label_index`` column."""
    from pipelines.io import manifest as manifest_mod

    table = manifest_mod.read_manifest(manifest)
    names = {i: n for n, i in zip(table.column("label").to_pylist(), table.column("label_index").to_pylist())
             if i is not None}
    k = max(names) + 1 if names else 0
    return k, [names.get(i, str(i)) for i in range(k)]


def fusion_table(single: dict[str, dict[str, Any]], fused: dict[str, Any]) -> str:
    """Rows per stream and the fused row, columns R@1 / R@5 / linear / mlp where measured."""
    cols = [("retrieval", "R@1"), ("retrieval", "R@5"), ("linear", "top1"), ("mlp", "top1")]
    rows = {**single,
            "fused (mean)": {p[len("fused_"):]: v for p, v in fused.items() if p.startswith("fused_")}}
    used = [c for c in cols if any(c[0] in r for r in rows.values())]
    lines = [f"{'stream':<16}" + "".join(f" {p[:6] + ' ' + m:>14}" for p, m in used)]
    for name, r in rows.items():
        cells = "".join(f" {r[p][m]:14.2f}" if p in r and m in r[p] else f" {'':>14}" for p, m in used)
        lines.append(f"{name:<16}{cells}")
    return "\n".join(lines) + (f"\nvideos scored: {int(fused['fused_videos']['videos'])}, dropped (not in every "
                               f"stream): {int(fused['fused_videos']['dropped'])}")


def scores_only(results: dict[str, Any]) -> dict[str, dict[str, float]]:
    """The float scores of a results dict (no confusion matrices, no private keys)."""
    return {p: {k: v for k, v in r.items() if isinstance(v, float)} for p, r in results.items()
            if not p.startswith("_") and isinstance(r, dict)}


__all__ = ["Stream", "align", "fused_retrieval", "fused_probe", "run_fused", "class_count", "fusion_table",
           "scores_only", "FUSABLE"]
