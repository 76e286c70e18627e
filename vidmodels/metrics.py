"""Accuracy metrics (0-dim tensors in [0, 1], no gradient) and the Charades localisation evaluator.

Legend: B batch, N candidates per row (frames pooled over videos for the AP metrics),
K classes, T frames of one video, n sampled points of one video (25 in Charades).

The evaluator follows the official ``Charades_v1_localize.m`` (adapted from THUMOS15):
per class, rows are sorted by descending score and ``AP = Σ_{i∈pos} precision@i / npos``.
It is numpy-based (accepts torch tensors or arrays) because it runs over whole test sets.

Reference:
    - [0] Charades, Sigurdsson et al., ECCV 2016; ``Charades_v1_localize.m`` (the official scorer)
    - [1] Coarse-Fine Networks, Kahatapitiya & Ryoo, CVPR 2021 (seed 000 L462, L484)
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch

__all__ = [
    "average_precision_official",
    "charades_map",
    "charades_points",
    "charades_times",
    "frame_map",
    "frame_map_by_label_count",
    "instance_accuracy",
    "scores_at_times",
    "segment_point_labels",
    "topk_accuracy",
]


@torch.no_grad()
def instance_accuracy(logits_BN: torch.Tensor, pos_mask_BN: torch.Tensor) -> torch.Tensor:
    """Contrastive top-1: fraction of rows whose highest logit is one of their positives.

    Args:
        logits_BN: Similarity logits.
        pos_mask_BN: Boolean positive set per row.
    """
    top_B = logits_BN.argmax(dim=1)
    hit_B = pos_mask_BN.bool().gather(1, top_B[:, None]).squeeze(1)
    return hit_B.float().mean()


@torch.no_grad()
def topk_accuracy(logits_BK: torch.Tensor, target_B: torch.Tensor, ks: Sequence[int] = (1, 5)) -> list[torch.Tensor]:
    """Classification top-k accuracies, one per ``k`` in ``ks`` (each ``k`` capped at K).

    Args:
        logits_BK: Class scores.
        target_B: Class indices, int64.
        ks: The k values.
    """
    kmax = min(max(ks), logits_BK.shape[1])
    pred_BK = logits_BK.topk(kmax, dim=1).indices
    hit_BK = pred_BK == target_B[:, None]
    return [hit_BK[:, : min(k, kmax)].any(dim=1).float().mean() for k in ks]


# --------------------------------------------------------------------------- Charades evaluator


def _to_numpy(x: Any) -> np.ndarray:
    """Float array; float32 stays float32 (the ranking is the same, and every-frame Charades is ~2e8 scores)."""
    if isinstance(x, torch.Tensor):
        x = x.detach().cpu().numpy()
    x = np.asarray(x)
    return x if x.dtype in (np.float32, np.float64) else x.astype(np.float64)


def _checked(scores_NK: Any, labels_NK: Any) -> tuple[np.ndarray, np.ndarray]:
    s_NK, y_NK = _to_numpy(scores_NK), _to_numpy(labels_NK)
    if s_NK.ndim != 2 or s_NK.shape != y_NK.shape:
        raise ValueError(f"scores {s_NK.shape} and labels {y_NK.shape} must both be (N, K)")
    n_nan = int(np.isnan(s_NK).sum())
    if n_nan:
        raise ValueError(f"scores contain {n_nan} NaN entries; score a missing row -inf (official protocol)")
    if not np.isin(y_NK, (0.0, 1.0)).all():
        raise ValueError("labels must be 0/1 (multi-hot)")
    return s_NK, y_NK.astype(bool)


def average_precision_official(scores_N: np.ndarray, labels_N: np.ndarray) -> float:
    """One class's AP as ``THUMOSeventclspr`` in ``Charades_v1_localize.m``.

    ``AP = (1/npos) Σ_{i: y_(i)=1} TP_i / i`` over the rows ranked by descending score.
    Ties keep the row order: MATLAB's ``sort(-conf)`` is stable, so among equal scores the
    earlier row ranks first (and each tied row gets its own precision, unlike sklearn,
    which treats a tie as one threshold). ``-inf`` (a missing row) ranks last.

    Args:
        scores_N: Scores of one class, no NaN.
        labels_N: Boolean positives.

    Returns:
        The AP, or NaN when ``npos == 0`` (as the official script).
    """
    hit_N = labels_N[np.argsort(-scores_N, kind="stable")]
    npos = int(hit_N.sum())
    if npos == 0:
        return math.nan
    precision_N = np.cumsum(hit_N) / np.arange(1, hit_N.size + 1)
    return float(precision_N[hit_N].sum() / npos)


def frame_map(scores_NK: Any, labels_NK: Any) -> dict[str, Any]:
    """Per-frame mAP and WAP of the official Charades localisation scorer.

    ``map = mean_{k: npos_k>0} AP_k``; ``wap = Σ_k AP_k·npos_k / Σ_k npos_k``.
    Unlike the ``.m`` (whose NaN AP propagates into both means), classes without positives
    are left out of both means and counted; ``per_class`` keeps their NaN. The authors'
    ``APMeter`` instead scores them 0 in the mean: ``np.nan_to_num(per_class).mean()``.

    Args:
        scores_NK: Scores (torch or numpy), N rows pooled over videos; ``-inf`` is legal
            (a missing row), NaN is not. Ties are broken by row order (see
            :func:`average_precision_official`), so pool rows in the ground-truth order
            (video order of the CSV, then frames) to match the official script exactly.
        labels_NK: Multi-hot 0/1 labels.

    Returns:
        ``{"map", "wap"}`` floats (NaN when no class has a positive), ``"per_class"``
        float64 (K,), ``"npos"`` int64 (K,), ``"classes_without_positives"`` int.

    Raises:
        ValueError: On shapes other than two equal ``(N, K)``, NaN scores, or non-0/1 labels.
    """
    s_NK, y_NK = _checked(scores_NK, labels_NK)
    ap_K = np.array([average_precision_official(s_NK[:, k], y_NK[:, k]) for k in range(s_NK.shape[1])])
    npos_K = y_NK.sum(0).astype(np.int64)
    has_K = npos_K > 0
    if has_K.any():
        mean_ap = float(ap_K[has_K].mean())
        weighted_ap = float((ap_K[has_K] * npos_K[has_K]).sum() / npos_K.sum())
    else:
        mean_ap = weighted_ap = math.nan
    return {"map": mean_ap, "wap": weighted_ap, "per_class": ap_K, "npos": npos_K,
            "classes_without_positives": int((~has_K).sum())}


def frame_map_by_label_count(scores_NK: Any, labels_NK: Any, *,
                             include_background: bool = False) -> dict[str, dict[str, Any]]:
    """:func:`frame_map` on frames with exactly one label vs more than one (thesis Table 4.4e).

    Rows are split by their label count ``c = Σ_k y_k``: ``"single"`` holds the rows with
    ``c == 1``, ``"multi"`` those with ``c > 1``; each gets its own ranking and APs. Rows
    with ``c == 0`` (no action) are dropped from both by default, so each subset measures
    how well the classes are told apart among action frames; ``include_background=True``
    adds them to both subsets as negatives (closer to the full metric). The thesis does
    not say which it used.

    Returns:
        ``{"single": frame_map(...), "multi": frame_map(...)}``.

    Raises:
        ValueError: As :func:`frame_map`.
    """
    s_NK, y_NK = _checked(scores_NK, labels_NK)
    count_N = y_NK.sum(1)
    background_N = (count_N == 0) & include_background
    out = {}
    for name, keep_N in (("single", count_N == 1), ("multi", count_N > 1)):
        keep_N = keep_N | background_N  # keeps the original row order (tie rule)
        out[name] = frame_map(s_NK[keep_N], y_NK[keep_N])
    return out


def charades_times(duration_s: float, n: int = 25) -> np.ndarray:
    """The official sampling points ``t_j = (j−1)/n · L``, j = 1..n (the ``.m``'s ``timepoint``).

    The official script takes L from the CSV ``length``; the platform passes the manifest's
    ``duration_s`` (the decoded stream's duration), which can differ by a fraction of a second.

    Returns:
        times_n: float64 seconds, ``t_1 = 0`` and ``t_n = (n−1)/n · L`` (the end is never sampled).

    Raises:
        ValueError: On ``n < 1`` or a negative duration.
    """
    if n < 1 or duration_s < 0:
        raise ValueError(f"need n >= 1 and duration_s >= 0, got n={n}, duration_s={duration_s}")
    return np.arange(n) / n * float(duration_s)  # same operation order as the .m: (j-1)/n*time


def segment_point_labels(segments: Sequence[Mapping[str, Any]], times: Any, num_classes: int) -> np.ndarray:
    """Multi-hot labels at given times: class k is on at t iff some segment of class k has
    ``start_s <= t <= end_s`` (both ends inclusive, as the official scorer).

    Args:
        segments: dicts with ``label_index``, ``start_s``, ``end_s`` (the manifest's struct).
        times: Seconds, shape (n,).
        num_classes: K.

    Returns:
        labels_nK: float32 in {0, 1}.

    Raises:
        ValueError: On a ``label_index`` outside ``[0, num_classes)``.
    """
    t_n = np.asarray(times, np.float64).reshape(-1)
    labels_nK = np.zeros((t_n.size, num_classes), np.float32)
    for seg in segments:
        k = int(seg["label_index"])
        if not 0 <= k < num_classes:
            raise ValueError(f"segment label_index {k} outside [0, {num_classes})")
        labels_nK[(t_n >= seg["start_s"]) & (t_n <= seg["end_s"]), k] = 1.0
    return labels_nK


def scores_at_times(frame_scores_TK: Any, fps: float, times: Any) -> np.ndarray:
    """A video's per-frame scores read at given times by linear interpolation.

    Frame i is shown at ``i / fps`` (the platform's convention), so the score at t is the
    linear interpolation of the frame scores at position ``p = t·fps``, clamped to
    ``[0, T−1]`` (a point past the last decoded frame takes the last frame's score). The
    official script leaves this choice to the submitter (spec R5); interpolation is the
    continuous extension of the per-frame logits, themselves linearly interpolated from
    stride-10 steps.

    Args:
        frame_scores_TK: Finite per-frame scores. Interpolating logits and probabilities agree
            only at frame positions, so pass the scores you submit (probabilities in the
            authors' files).
        fps: Frames per second, > 0.
        times: Seconds, shape (n,).

    Returns:
        scores_nK: float64.

    Raises:
        ValueError: On ``fps <= 0``, no frames, or non-finite scores.
    """
    s_TK = _to_numpy(frame_scores_TK).astype(np.float64, copy=False)
    if fps <= 0 or s_TK.ndim != 2 or s_TK.shape[0] == 0:
        raise ValueError(f"need fps > 0 and scores of shape (T>=1, K), got fps={fps}, {s_TK.shape}")
    if not np.isfinite(s_TK).all():
        raise ValueError("frame scores must be finite to be interpolated")
    p_n = np.clip(np.asarray(times, np.float64).reshape(-1) * fps, 0.0, s_TK.shape[0] - 1)
    lo_n = np.floor(p_n).astype(np.int64)
    hi_n = np.minimum(lo_n + 1, s_TK.shape[0] - 1)
    w_n1 = (p_n - lo_n)[:, None]
    return (1.0 - w_n1) * s_TK[lo_n] + w_n1 * s_TK[hi_n]


def charades_points(frame_scores_TK: Any, fps: float, duration_s: float, segments: Sequence[Mapping[str, Any]],
                    num_classes: int, n: int = 25) -> tuple[np.ndarray, np.ndarray]:
    """One video's official rows: scores and labels at ``t_j = (j−1)L/n``.

    Returns:
        ``(scores_nK, labels_nK)``; row j−1 is the official frame j.
    """
    times_n = charades_times(duration_s, n)
    return scores_at_times(frame_scores_TK, fps, times_n), segment_point_labels(segments, times_n, num_classes)


def charades_map(video_scores: Sequence[Any], video_segments: Sequence[Sequence[Mapping[str, Any]]],
                 durations: Sequence[float], fps: float | Sequence[float], num_classes: int,
                 n: int = 25) -> dict[str, Any]:
    """The official 25-point localisation MAP/WAP over videos (:func:`frame_map` of the pooled rows).

    Args:
        video_scores: Per video, per-frame scores ``(T_v, K)``.
        video_segments: Per video, the manifest segments.
        durations: Per video, the manifest ``duration_s`` (stands for the CSV ``length``).
        fps: One frame rate for all videos, or one per video.
        num_classes: K.
        n: Points per video (25).

    Returns:
        As :func:`frame_map`, over ``n · V`` rows in video order.

    Raises:
        ValueError: When the per-video sequences differ in length, or as the helpers.
    """
    fps_v = [fps] * len(video_scores) if np.isscalar(fps) else list(fps)
    if not len(video_scores) == len(video_segments) == len(durations) == len(fps_v):
        raise ValueError("video_scores, video_segments, durations and fps need one entry per video")
    rows = [charades_points(s, f, d, g, num_classes, n)
            for s, g, d, f in zip(video_scores, video_segments, durations, fps_v)]
    if not rows:
        return frame_map(np.zeros((0, num_classes)), np.zeros((0, num_classes)))
    return frame_map(np.concatenate([r[0] for r in rows]), np.concatenate([r[1] for r in rows]))
