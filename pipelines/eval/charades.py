"""The official Charades localisation submission file, written and read back.

Each line is ``id frame score_1 ... score_K``, space separated, with ``frame`` in 1..n (25) and
row j−1 of a video's ``scores_nK`` (from :func:`vidmodels.metrics.charades_points`) as frame j;
``Charades_v1_localize.m`` reads it with ``textread(file, '%s%d%[^\\n]')``. The scores are
written with ``%.9g``, which round-trips float32 exactly; ``-inf`` is written as ``-inf``.

Shape legend: ``n`` points per video, ``K`` classes.
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterable
from typing import Any

import numpy as np

__all__ = ["read_charades_submission", "write_charades_submission"]


def write_charades_submission(path: str | os.PathLike, rows: Iterable[tuple[str, Any]], *,
                              fmt: str = "%.9g") -> int:
    """Writes one line per (video, point) in the official localisation format.

    Args:
        path: Output text file.
        rows: ``(video_id, scores_nK)`` per video; scores as numpy arrays or torch tensors.
        fmt: printf format of one score.

    Returns:
        The number of lines written.

    Raises:
        ValueError: On a video id with whitespace, a scores array that is not 2-D, a K that
            differs between videos, or NaN scores.
    """
    count, num_classes = 0, None
    with open(path, "w", encoding="utf-8") as f:
        for video_id, scores in rows:
            if not video_id or any(c.isspace() for c in video_id):
                raise ValueError(f"video id {video_id!r} is empty or contains whitespace")
            s_nK = np.asarray(scores.detach().cpu() if hasattr(scores, "detach") else scores, np.float64)
            if s_nK.ndim != 2 or (num_classes is not None and s_nK.shape[1] != num_classes):
                raise ValueError(f"{video_id}: scores of shape {s_nK.shape}, expected (n, {num_classes or 'K'})")
            if np.isnan(s_nK).any():
                raise ValueError(f"{video_id}: NaN scores")
            num_classes = s_nK.shape[1]
            for j, row_K in enumerate(s_nK, start=1):
                f.write(f"{video_id} {j} " + " ".join(fmt % v for v in row_K) + "\n")
                count += 1
    return count


def read_charades_submission(path: str | os.PathLike) -> dict[str, np.ndarray]:
    """Reads a submission back: ``{video_id: scores_nK}`` with row j−1 holding frame j.

    As the official scorer, frames numbered from 0 are shifted by one (when the smallest frame
    number in the file is 0), and frames missing below a video's largest frame score ``-inf``.

    Raises:
        ValueError: On a malformed line, a K that differs between lines, or a negative or repeated frame.
    """
    frames: dict[str, dict[int, list[float]]] = {}
    num_classes = None
    with open(path, encoding="utf-8") as f:
        for line_no, line in enumerate(f, start=1):
            parts = line.split()
            if not parts:
                continue
            if len(parts) < 3 or (num_classes is not None and len(parts) - 2 != num_classes):
                raise ValueError(f"{path}:{line_no}: expected 'id frame score_1 ... score_K'")
            num_classes = len(parts) - 2
            per_video = frames.setdefault(parts[0], {})
            frame = int(parts[1])
            if frame < 0 or frame in per_video:
                raise ValueError(f"{path}:{line_no}: frame {frame} of {parts[0]} negative or repeated")
            per_video[frame] = [float(v) for v in parts[2:]]
    shift = 1 if frames and min(min(v) for v in frames.values()) == 0 else 0
    out = {}
    for video_id, per_video in frames.items():
        s_nK = np.full((max(per_video) + shift, num_classes), -math.inf)
        for frame, scores in per_video.items():
            s_nK[frame + shift - 1] = scores
        out[video_id] = s_nK
    return out
