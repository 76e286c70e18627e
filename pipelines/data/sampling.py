"""Clip sampling: pure functions from a video's length (and frame rate) to frame indices.

Every function returns ``int64`` indices into the video's frames (0-based, as
:func:`pipelines.io.video.read_frames` counts them) and draws randomness only from the
``rng`` it is given, so a sample is reproducible from :func:`sample_rng`.

A clip of ``length`` frames at temporal ``stride`` touches ``span = (length - 1) *
stride + 1`` consecutive source frames. A video is *short* when ``num_frames < span``;
short videos never raise, they follow one of three documented rules (``short=``):

* ``"pad"``: the CoCLR code's rule (``dataset/lmdb_dataset.py::frame_sampler``, "pad
  left"): keep the strided indices that exist and repeat frame 0 in front of them, so
  the clip ends on real frames. Default of :func:`two_clips` and :func:`test_views`.
* ``"loop"``: index ``i -> i mod num_frames``; every part of the clip keeps moving,
  which matters for DPC's block prediction (a padded, frozen block would be trivially
  predictable). Default of :func:`block_sequence`. The DPC/MemDPC code itself *drops*
  videos shorter than ``num_blocks * block_len * stride`` from the dataset; that is a
  manifest filter, not a sampler's job.
* ``"clamp"``: index ``i -> min(i, num_frames - 1)`` (repeat the last frame; the
  SlowFast/X3D practice), default of :func:`dense_window` because the repeated frame
  keeps its true label.

Shape legend: ``L`` frames per clip, ``K`` classes, ``N`` blocks, ``S`` spatial crops,
``V`` temporal windows.
"""

from __future__ import annotations

import dataclasses
import hashlib
from typing import Any, Literal, Sequence

import numpy as np

ShortRule = Literal["pad", "loop", "clamp"]
SHORT_RULES = ("pad", "loop", "clamp")


def sample_rng(seed: int, epoch: int, video_id: str | int, view: int = 0) -> np.random.Generator:
    """A generator derived reproducibly from ``(seed, epoch, video_id, view)``.

    Independent of process, worker and iteration order (no global state), so a clip
    can be re-drawn exactly for replay, and a new epoch re-randomises every sample.
    ``video_id`` is hashed with BLAKE2b (not Python's salted ``hash``).

    Raises:
        ValueError: if ``seed``, ``epoch`` or ``view`` is negative.
    """
    if min(seed, epoch, view) < 0:
        raise ValueError(f"seed, epoch and view must be >= 0, got {seed}, {epoch}, {view}")
    digest = hashlib.blake2b(str(video_id).encode(), digest_size=8).digest()
    key = int.from_bytes(digest, "little")
    return np.random.default_rng(np.random.SeedSequence([seed, epoch, view, key]))


def clip_span(length: int, stride: int) -> int:
    """Source frames touched by ``length`` frames at ``stride``: ``(length - 1) * stride + 1``."""
    return (length - 1) * stride + 1


def clip_indices(num_frames: int, start: int, *, length: int, stride: int = 1,
                 short: ShortRule = "pad") -> np.ndarray:
    """Indices ``start + stride * arange(length)``, with ``short`` applied past the end.

    Returns:
        idx_L: int64, every entry in ``[0, num_frames)``.

    Raises:
        ValueError: on ``num_frames < 1``, ``length < 1``, ``stride < 1`` or an unknown rule.
    """
    _check(num_frames, length, stride, short)
    idx = start + stride * np.arange(length, dtype=np.int64)
    if short == "loop":
        return idx % num_frames
    if short == "clamp":
        return np.minimum(idx, num_frames - 1)
    valid = idx[idx < num_frames]  # increasing, so the valid ones come first
    return np.concatenate([np.zeros(length - len(valid), np.int64), valid])


def random_start(num_frames: int, length: int, stride: int, rng: np.random.Generator) -> int:
    """A uniform start in ``[0, num_frames - span]``.

    For a short video (``num_frames < span``) the start is a sub-stride jitter drawn
    from ``[0, min(stride, num_frames))``, as CoCLR's code does, so as much of the clip
    as possible lies on real frames.
    """
    span = clip_span(length, stride)
    if num_frames >= span:
        return int(rng.integers(0, num_frames - span + 1))
    return int(rng.integers(0, min(stride, num_frames)))


def two_clips(num_frames: int, rng: np.random.Generator, *, length: int = 32, stride: int = 1,
              short: ShortRule = "pad") -> tuple[np.ndarray, np.ndarray]:
    """Two clips of one video at independent random offsets (CoCLR's two views).

    CoCLR (seed 001 L971): 32 consecutive frames at 30 fps, "cropped at random time
    stamps"; the two clips may overlap. Short videos follow ``short`` (default: the
    CoCLR code's left padding with frame 0).

    Returns:
        (idx0_L, idx1_L): int64 frame indices.
    """
    return tuple(clip_indices(num_frames, random_start(num_frames, length, stride, rng), length=length,
                              stride=stride, short=short) for _ in range(2))


def block_sequence(num_frames: int, rng: np.random.Generator, *, num_blocks: int = 8,
                   block_len: int = 5, stride: int = 3, short: ShortRule = "loop") -> np.ndarray:
    """Consecutive non-overlapping blocks at a fixed stride (DPC / MemDPC input).

    DPC (seed 001 L412, L703): 8 blocks x 5 frames, one of every 3 frames, so the
    sample covers ~4 s; the stride is fixed because a random stride would make the
    prediction task ambiguous. Short videos loop by default (see module docstring).

    Returns:
        idx_NL: int64, ``idx_NL[b]`` are the frames of block ``b``, in time order.
    """
    length = num_blocks * block_len
    start = random_start(num_frames, length, stride, rng)
    idx = clip_indices(num_frames, start, length=length, stride=stride, short=short)
    return idx.reshape(num_blocks, block_len)


def segment_labels(frame_idx: np.ndarray, fps: float, segments: Sequence[dict[str, Any]], *,
                   num_classes: int) -> np.ndarray:
    """Per-frame multi-hot labels from manifest ``segments``.

    Frame ``i`` is shown at ``i / fps`` seconds (constant frame rate) and carries class
    ``k`` when some segment of ``label_index == k`` has ``start_s <= i / fps <= end_s``
    (both ends inclusive).

    Args:
        frame_idx: int frame indices, any shape ``(...)``.
        segments: dicts with ``label_index``, ``start_s``, ``end_s`` (the manifest's struct).

    Returns:
        labels_(...)K: float32 in {0, 1}.

    Raises:
        ValueError: on ``fps <= 0`` or a ``label_index`` outside ``[0, num_classes)``.
    """
    if fps <= 0:
        raise ValueError(f"fps must be > 0, got {fps}")
    idx = np.asarray(frame_idx)
    out = np.zeros((idx.size, num_classes), np.float32)
    if len(segments):
        cls = np.array([s["label_index"] for s in segments], np.int64)
        if cls.min() < 0 or cls.max() >= num_classes:
            raise ValueError(f"segment label_index outside [0, {num_classes}): {cls.tolist()}")
        start = np.array([s["start_s"] for s in segments], np.float64)
        end = np.array([s["end_s"] for s in segments], np.float64)
        t = idx.reshape(-1, 1) / fps
        hits_LS = (t >= start) & (t <= end)
        frame_pos, seg_pos = np.nonzero(hits_LS)
        out[frame_pos, cls[seg_pos]] = 1.0
    return out.reshape(*idx.shape, num_classes)


def replicate_label(label_index: int, length: int, *, num_classes: int) -> np.ndarray:
    """Frame-level pseudo labels: the video label copied to every frame (seed 000 L646-648).

    Returns:
        labels_LK: float32 one-hot rows.
    """
    out = np.zeros((length, num_classes), np.float32)
    out[:, label_index] = 1.0
    return out


def dense_window(num_frames: int, fps: float, segments: Sequence[dict[str, Any]],
                 rng: np.random.Generator, *, length: int = 16, stride: int = 5, num_classes: int,
                 short: ShortRule = "clamp") -> tuple[np.ndarray, np.ndarray]:
    """A random strided window with per-frame multi-hot labels (detection training).

    Seed 000: 16 frames at stride 5 for detection pretraining (L727), 16 at stride 10
    for Charades fine-tuning (L733). Labels are those of the frames actually sampled
    (see :func:`segment_labels`), so a clamped or looped index carries its own label.

    Returns:
        (idx_L int64, labels_LK float32).
    """
    start = random_start(num_frames, length, stride, rng)
    idx = clip_indices(num_frames, start, length=length, stride=stride, short=short)
    return idx, segment_labels(idx, fps, segments, num_classes=num_classes)


@dataclasses.dataclass(frozen=True, eq=False)
class MultiViews:
    """Multi-view evaluation: ``V`` temporal windows x ``S`` spatial crops.

    Attributes:
        frame_idx_VL: int64 frame indices of each temporal window.
        boxes_S4: int64 crop boxes ``(y0, x0, h, w)`` in the (already resized) frame.
        flip_S: bool, whether crop ``s`` is horizontally flipped.
    """

    frame_idx_VL: np.ndarray
    boxes_S4: np.ndarray
    flip_S: np.ndarray


def eval_windows(num_frames: int, *, num_clips: int | None, length: int, stride: int = 1,
                 short: ShortRule = "pad") -> np.ndarray:
    """Temporal windows for evaluation.

    ``num_clips=k`` gives ``k`` evenly spaced windows whose starts run from 0 to
    ``num_frames - span`` (SlowFast/X3D "k x 3 views"). ``num_clips=None`` gives the
    DPC/MemDPC/CoCLR protocol (seed 001 L430, L709, L981): moving windows with half
    overlap (step ``ceil(span / 2)``), as many as fit. A short video yields windows
    that all start at 0 (CoCLR's "pad left, only sample once"), repeated ``k`` times.

    Returns:
        idx_VL: int64.
    """
    span = clip_span(length, stride)
    last = max(num_frames - span, 0)
    if num_clips is None:
        starts = np.arange(0, last + 1, -(-span // 2))
    else:
        if num_clips < 1:
            raise ValueError(f"num_clips must be >= 1, got {num_clips}")
        starts = np.round(np.linspace(0, last, num_clips)).astype(np.int64)
    return np.stack([clip_indices(num_frames, int(s), length=length, stride=stride, short=short)
                     for s in starts])


def spatial_crops(height: int, width: int, crop_size: int,
                  spatial: Literal[1, 3, 10]) -> tuple[np.ndarray, np.ndarray]:
    """Crop boxes for multi-crop evaluation.

    * 1: the centre crop.
    * 3: left/centre/right (or top/centre/bottom) along the longer side, centred on the
      shorter (SlowFast "3 crops"; frames are resized so the short side is ``crop_size``).
    * 10: centre + 4 corners, each unflipped and flipped (CoCLR ten-crop, seed 001 L981).

    Returns:
        (boxes_S4 int64 ``(y0, x0, h, w)``, flip_S bool).

    Raises:
        ValueError: if the crop does not fit or ``spatial`` is not 1, 3 or 10.
    """
    if crop_size > min(height, width):
        raise ValueError(f"crop {crop_size} does not fit a {height}x{width} frame")
    cy, cx = (height - crop_size) // 2, (width - crop_size) // 2
    if spatial == 1:
        corners = [(cy, cx)]
    elif spatial == 3:
        if height > width:
            corners = [(0, cx), (cy, cx), (height - crop_size, cx)]
        else:
            corners = [(cy, 0), (cy, cx), (cy, width - crop_size)]
    elif spatial == 10:
        ye, xe = height - crop_size, width - crop_size
        corners = [(cy, cx), (0, 0), (0, xe), (ye, 0), (ye, xe)] * 2
    else:
        raise ValueError(f"spatial must be 1, 3 or 10, got {spatial}")
    boxes = np.array([(y, x, crop_size, crop_size) for y, x in corners], np.int64)
    flips = np.arange(len(corners)) >= 5 if spatial == 10 else np.zeros(len(corners), bool)
    return boxes, flips


def test_views(num_frames: int, *, num_clips: int | None, length: int, stride: int = 1,
               height: int, width: int, crop_size: int, spatial: Literal[1, 3, 10] = 3,
               short: ShortRule = "pad") -> MultiViews:
    """``V`` temporal windows x ``S`` spatial crops for multi-view evaluation.

    See :func:`eval_windows` and :func:`spatial_crops`; the model's predictions over
    all ``V * S`` views are averaged by the caller.
    """
    boxes, flips = spatial_crops(height, width, crop_size, spatial)
    idx = eval_windows(num_frames, num_clips=num_clips, length=length, stride=stride, short=short)
    return MultiViews(idx, boxes, flips)


test_views.__test__ = False  # a sampler, not a pytest test, despite its name


def _check(num_frames: int, length: int, stride: int, short: str) -> None:
    if num_frames < 1:
        raise ValueError(f"video has no frames (num_frames={num_frames})")
    if length < 1 or stride < 1:
        raise ValueError(f"length and stride must be >= 1, got {length}, {stride}")
    if short not in SHORT_RULES:
        raise ValueError(f"short must be one of {SHORT_RULES}, got {short!r}")
