"""Recipes: what one training sample is, per method, as a typed config with named presets.

A recipe fixes the temporal sampling (clip length, stride, number of clips or blocks,
the short-video rule of :mod:`pipelines.data.sampling`), the clip augmentation
(:class:`~pipelines.data.augment.AugmentConfig`), optional volume augmentations and hence
the exact shape of every batch column (:func:`batch_schema`). Shapes are fixed per
recipe, so Ray Data stores the tensor columns with its fixed-shape tensor extension
type (V2, int64 offsets: no Arrow offset overflow however large a batch is).

Presets follow the seeds; :func:`debug` shrinks any of them to CPU test sizes
(8 frames, 64 px). Named variants are functions that edit a base (STYLE.md 6)::

    recipe("coclr")                       # 2 x 32 frames, 128 px, RGB + flow
    recipe("dpc", debug=True)             # 4 blocks x 3 frames, 64 px
    apply_overrides(recipe("eval"), ["num_clips=5", "augment.out_size=112"])

Batch schema (``B`` rows; ``T`` frames per clip, ``S`` crop size, ``K`` classes;
``N`` blocks of ``L`` frames; ``V = num_clips * spatial_crops`` views; ``k`` windows)::

    every recipe  video_id: string, label: string ("" when null), label_index: int64 (-1 when null),
                  vid_index: int64 (the manifest row: a unique id per video, used to find a
                      sample back and by CoCLR to exclude same-video queue entries)
    coclr         rgb_0, rgb_1, flow_0, flow_1: uint8[B,T,S,S,3]; frame_idx_0, frame_idx_1: int64[B,T];
                  aug_caption_0, aug_caption_1: string
    dpc           blocks: uint8[B,N,L,S,S,3]; frame_idx: int64[B,N,L]; aug_caption: string
    detection     rgb: uint8[B,T,S,S,3]; frame_labels: float32[B,T,K]; frame_idx: int64[B,T];
                  aug_caption: string; aug_kind: string, aug_partner/aug_freeze_{r,m}/
                  aug_{mixup,cutmix}_{r,n1,n2}: int64, aug_cutmix_mode: string, aug_delta: float32,
                  aug_smooth: bool  (volume augmentation parameters, pipelines/data/volume_aug.py)
    classification rgb: uint8[B,T,S,S,3]; frame_idx: int64[B,T]; aug_caption: string
    eval          views: uint8[B,V,T,S,S,3] (view v = window v // spatial_crops, crop v % spatial_crops);
                  frame_idx: int64[B,k,T]; video_labels: float32[B,K] (multi-hot of label_index and segments)

Flow columns hold the stored uint8 encoding of :mod:`pipelines.prep.flow` (x, y, 0).

:func:`make_sample` builds one sample from a manifest row and a ``read`` function (pure
apart from ``read``, so it runs without Ray); :mod:`pipelines.data.dataset` runs it in Ray Data.
"""

from __future__ import annotations

import dataclasses
import json
from typing import Any, Callable, Iterable, Literal

import numpy as np

from pipelines.data import augment
from pipelines.data import sampling
from pipelines.config import apply_overrides
from pipelines.io.probe import MediaError
from pipelines.data.sampling import ShortRule
from pipelines.data.volume_aug import VolumeAugConfig, VolumeParams, params_to_columns

RecipeName = Literal["coclr", "dpc", "detection", "classification", "eval"]


@dataclasses.dataclass(frozen=True)
class RecipeConfig:
    """One sample's sampling and augmentation; fields a recipe does not use are ignored.

    Attributes:
        name: which sample builder runs (``coclr``, ``dpc``, ``detection``, ``classification``, ``eval``).
        clip_len: frames per clip (per block for ``dpc``).
        stride: temporal stride between sampled frames.
        num_clips: ``coclr``: views per sample (2); ``eval``: temporal windows ``k``.
        num_blocks: ``dpc``: blocks per sample.
        spatial_crops: ``eval``: crops per window (1, 3 or 10).
        with_flow: ``coclr``: also read the aligned flow video (manifest ``flow_uri``) with the
            same indices, crop and flip as each RGB clip.
        modality: ``eval``: read the views from the RGB video (``"rgb"``) or from its flow
            video (``"flow"``, manifest ``flow_uri``; views hold the stored uint8 flow
            encoding and flipped crops negate x), to evaluate a flow encoder.
        short: rule for videos shorter than a clip (see :mod:`pipelines.data.sampling`).
        augment: clip augmentation; ``augment.out_size`` is the crop size ``S`` of every recipe.
        volume: volume augmentations as a batch stage (``detection``); ``None`` for none.
        volume_batch_size: clips paired within one volume-augmentation batch.
        shuffle: permute the sample order per ``(seed, epoch)`` (off for evaluation).
    """

    name: RecipeName
    clip_len: int = 32
    stride: int = 1
    num_clips: int = 1
    num_blocks: int = 8
    spatial_crops: int = 3
    with_flow: bool = False
    modality: Literal["rgb", "flow"] = "rgb"
    short: ShortRule = "pad"
    augment: augment.AugmentConfig = dataclasses.field(default_factory=augment.AugmentConfig)
    volume: VolumeAugConfig | None = None
    volume_batch_size: int = 8
    shuffle: bool = True

    @property
    def crop_size(self) -> int:
        return self.augment.out_size

    @property
    def needs_flow(self) -> bool:
        """Whether samples read the manifest's ``flow_uri``."""
        return self.with_flow or (self.name == "eval" and self.modality == "flow")

    @property
    def needs_classes(self) -> bool:
        """Whether batches carry ``K``-wide label tensors (so ``num_classes`` must be known)."""
        return self.name in ("detection", "eval")


def coclr() -> RecipeConfig:
    """CoCLR (seed 001 L971): two clips of 32 frames at stride 1 at random offsets, RGB and
    the aligned flow clip sharing crop and flip, 128 px, CoCLR augmentations (clip-wise)."""
    return RecipeConfig("coclr", clip_len=32, stride=1, num_clips=2, with_flow=True, short="pad",
                        augment=augment.coclr())


def dpc() -> RecipeConfig:
    """DPC/MemDPC (seed 001 L412, L703): 8 blocks x 5 frames at stride 3, 128 px, frame-wise jitter;
    short videos loop (a frozen block would be trivially predictable)."""
    return RecipeConfig("dpc", clip_len=5, stride=3, num_blocks=8, short="loop", augment=augment.dpc())


def detection() -> RecipeConfig:
    """Detection pretraining (seed 000 L727): 16 frames at stride 5, per-frame labels from
    segments (or the video label copied to every frame), X3D crop to 224, volume augmentations."""
    return RecipeConfig("detection", clip_len=16, stride=5, short="clamp", augment=augment.x3d_detection(),
                        volume=VolumeAugConfig(), volume_batch_size=8)


def classification() -> RecipeConfig:
    """Fine-tuning / linear probe: one clip of 32 frames, 128 px, resized crop, flip and
    clip-wise colour jitter (no blur or grey), with the video label."""
    return RecipeConfig("classification", clip_len=32, stride=1, short="pad",
                        augment=dataclasses.replace(augment.coclr(), grey_p=0.0, blur_p=0.0))


def eval_() -> RecipeConfig:
    """Multi-view evaluation: ``k = 10`` evenly spaced windows of 32 frames x 3 crops of 128 px
    after resizing the short side to 128 (SlowFast/X3D "k x 3 views"); one sample holds all
    views of one video, so its frames are decoded once. Deterministic, unshuffled."""
    return RecipeConfig("eval", clip_len=32, stride=1, num_clips=10, spatial_crops=3, short="pad",
                        augment=augment.AugmentConfig(out_size=128), shuffle=False)


RECIPES: dict[str, Callable[[], RecipeConfig]] = {
    "coclr": coclr, "dpc": dpc, "detection": detection, "classification": classification, "eval": eval_,
}


def debug(cfg: RecipeConfig) -> RecipeConfig:
    """The same recipe at CPU test size: 8-frame clips (dpc: 4 blocks x 3), 64 px, 2 eval windows."""
    small = dict(augment=dataclasses.replace(cfg.augment, out_size=64), volume_batch_size=4)
    if cfg.augment.crop == "scale":  # keep X3D's 224/[256, 320] ratio at 64 px
        small["augment"] = dataclasses.replace(small["augment"], short_side=(73, 91))
    if cfg.name == "dpc":
        return dataclasses.replace(cfg, clip_len=3, stride=2, num_blocks=4, **small)
    if cfg.name == "detection":
        return dataclasses.replace(cfg, clip_len=8, stride=2, **small)
    if cfg.name == "eval":
        return dataclasses.replace(cfg, clip_len=8, num_clips=2, **small)
    return dataclasses.replace(cfg, clip_len=8, **small)


def recipe(name: str | RecipeConfig, *, debug_size: bool = False, overrides: Iterable[str] = ()) -> RecipeConfig:
    """A named preset (or a given config), optionally at debug size, with dotted overrides.

    Overrides are typed by the fields (``clip_len=8``, ``augment.out_size=64``); see
    :func:`pipelines.config.apply_overrides`.

    Raises:
        ValueError: unknown recipe name or override (``ConfigError`` is a ``ValueError``).
    """
    if isinstance(name, RecipeConfig):
        cfg = name
    elif name in RECIPES:
        cfg = RECIPES[name]()
    else:
        raise ValueError(f"unknown recipe {name!r}; choose one of {', '.join(RECIPES)}")
    if debug_size:
        cfg = debug(cfg)
    return apply_overrides(cfg, overrides)


def to_dict(cfg: RecipeConfig) -> dict[str, Any]:
    """The resolved config as plain data, for logging with a run."""
    return dataclasses.asdict(cfg)


# --------------------------------------------------------------------------- batch schema

# Columns of every recipe, and each recipe's own, as (dtype, per-row shape).
_COMMON = {"video_id": ("string", ()), "label": ("string", ()), "label_index": ("int64", ()),
           "vid_index": ("int64", ())}


def batch_schema(cfg: RecipeConfig, num_classes: int | None = None) -> dict[str, tuple[str, tuple[int, ...]]]:
    """Every column of the recipe's batches: ``name -> (dtype, per-row shape)``.

    Raises:
        ValueError: ``num_classes`` missing for a recipe with ``K``-wide labels.
    """
    if cfg.needs_classes and not num_classes:
        raise ValueError(f"recipe {cfg.name!r} needs num_classes")
    T, S, K = cfg.clip_len, cfg.crop_size, num_classes
    clip = ("uint8", (T, S, S, 3))
    cols: dict[str, tuple[str, tuple[int, ...]]] = dict(_COMMON)
    if cfg.name == "coclr":
        for v in range(cfg.num_clips):
            cols[f"rgb_{v}"] = clip
            if cfg.with_flow:
                cols[f"flow_{v}"] = clip
            cols[f"frame_idx_{v}"] = ("int64", (T,))
            cols[f"aug_caption_{v}"] = ("string", ())
    elif cfg.name == "dpc":
        cols.update(blocks=("uint8", (cfg.num_blocks, T, S, S, 3)), frame_idx=("int64", (cfg.num_blocks, T)),
                    aug_caption=("string", ()))
    elif cfg.name in ("detection", "classification"):
        cols.update(rgb=clip, frame_idx=("int64", (T,)), aug_caption=("string", ()))
        if cfg.name == "detection":
            cols["frame_labels"] = ("float32", (T, K))
            if cfg.volume is not None:
                example = params_to_columns([VolumeParams()])
                cols.update({k: ("string" if v.dtype == object else str(v.dtype), ()) for k, v in example.items()})
    elif cfg.name == "eval":
        V = cfg.num_clips * cfg.spatial_crops
        cols.update(views=("uint8", (V, T, S, S, 3)), frame_idx=("int64", (cfg.num_clips, T)),
                    video_labels=("float32", (K,)))
    else:
        raise ValueError(f"unknown recipe {cfg.name!r}")
    return cols


def string_columns(cfg: RecipeConfig, num_classes: int | None = None) -> list[str]:
    """Columns ``iter_torch_batches`` cannot turn into tensors (drop them for training)."""
    return [k for k, (dtype, _) in batch_schema(cfg, num_classes or 1).items() if dtype == "string"]


# --------------------------------------------------------------------------- samples
#
# One function per recipe: (item row, config, generator, read, K) -> the row's column
# values. ``read(video_id, uri, indices)`` returns uint8 (T, H, W, 3) frames and is called
# once per file (RGB, flow); the data pipeline passes a guarded read_frames. An item row
# has video_id, uri, flow_uri ("" when absent), num_frames, fps, label ("" when null),
# label_index (-1 when null), segments (JSON list of {label_index, start_s, end_s}) and
# row (the manifest row). Every random draw comes from the generator, in a fixed order.

Read = Callable[[str, str, np.ndarray], np.ndarray]


def media_error(kind: str, uri: str, reason: str) -> MediaError:
    """A :class:`MediaError` naming the file (``.uri``) it is about, for the quarantine record."""
    exc = MediaError(kind, f"{uri}: {reason}")
    exc.uri = uri
    return exc


def _random_clip(n: int, cfg: RecipeConfig, rng: np.random.Generator) -> np.ndarray:
    start = sampling.random_start(n, cfg.clip_len, cfg.stride, rng)
    return sampling.clip_indices(n, start, length=cfg.clip_len, stride=cfg.stride, short=cfg.short)


def _coclr(row: dict, cfg: RecipeConfig, rng: np.random.Generator, read: Read, K: int | None) -> dict:
    """``num_clips`` clips at independent offsets (:func:`sampling.two_clips` for 2), RGB and
    flow read with the concatenated indices, each view with its own crop shared by RGB and flow."""
    idx_VT = [_random_clip(row["num_frames"], cfg, rng) for _ in range(cfg.num_clips)]
    flat = np.concatenate(idx_VT)
    rgb = read(row["video_id"], row["uri"], flat)
    flow = read(row["video_id"], row["flow_uri"], flat) if cfg.with_flow else None
    if flow is not None and flow.shape[1:3] != rgb.shape[1:3]:
        raise media_error("flow_mismatch", row["flow_uri"], f"flow frames {flow.shape[1:3]} differ "
                                                             f"from RGB frames {rgb.shape[1:3]}")
    T, (H, W) = cfg.clip_len, rgb.shape[1:3]
    out = {}
    for v, idx in enumerate(idx_VT):
        p = augment.sample_params(cfg.augment, rng, T, H, W)
        clip = slice(v * T, (v + 1) * T)
        if flow is not None:
            out[f"rgb_{v}"], out[f"flow_{v}"] = augment.augment_pair(rgb[clip], flow[clip], p)
        else:
            out[f"rgb_{v}"] = augment.augment_clip(rgb[clip], p)
        out[f"frame_idx_{v}"], out[f"aug_caption_{v}"] = idx, p.caption()
    return out


def _dpc(row: dict, cfg: RecipeConfig, rng: np.random.Generator, read: Read, K: int | None) -> dict:
    idx_NL = sampling.block_sequence(row["num_frames"], rng, num_blocks=cfg.num_blocks, block_len=cfg.clip_len,
                                     stride=cfg.stride, short=cfg.short)
    frames = read(row["video_id"], row["uri"], idx_NL.reshape(-1))
    p = augment.sample_params(cfg.augment, rng, idx_NL.size, *frames.shape[1:3])
    blocks = augment.augment_clip(frames, p).reshape(*idx_NL.shape, cfg.crop_size, cfg.crop_size, 3)
    return {"blocks": blocks, "frame_idx": idx_NL, "aug_caption": p.caption()}


def _detection(row: dict, cfg: RecipeConfig, rng: np.random.Generator, read: Read, K: int | None) -> dict:
    """A dense window; labels from segments, else the video label on every frame (seed 000 L646)."""
    segments = json.loads(row["segments"])
    idx, labels_TK = sampling.dense_window(row["num_frames"], row["fps"], segments, rng, length=cfg.clip_len,
                                           stride=cfg.stride, num_classes=K, short=cfg.short)
    if not segments and row["label_index"] >= 0:
        labels_TK = sampling.replicate_label(row["label_index"], cfg.clip_len, num_classes=K)
    frames = read(row["video_id"], row["uri"], idx)
    p = augment.sample_params(cfg.augment, rng, len(idx), *frames.shape[1:3])
    return {"rgb": augment.augment_clip(frames, p), "frame_labels": labels_TK, "frame_idx": idx,
            "aug_caption": p.caption()}


def _classification(row: dict, cfg: RecipeConfig, rng: np.random.Generator, read: Read, K: int | None) -> dict:
    idx = _random_clip(row["num_frames"], cfg, rng)
    frames = read(row["video_id"], row["uri"], idx)
    p = augment.sample_params(cfg.augment, rng, len(idx), *frames.shape[1:3])
    return {"rgb": augment.augment_clip(frames, p), "frame_idx": idx, "aug_caption": p.caption()}


def _eval(row: dict, cfg: RecipeConfig, rng: np.random.Generator, read: Read, K: int | None) -> dict:
    """``k`` windows x ``spatial_crops`` crops of frames resized to short side ``S``, decoded once."""
    idx_kT = sampling.eval_windows(row["num_frames"], num_clips=cfg.num_clips, length=cfg.clip_len,
                                   stride=cfg.stride, short=cfg.short)
    is_flow = cfg.modality == "flow"
    frames = read(row["video_id"], row["flow_uri"] if is_flow else row["uri"], idx_kT.reshape(-1))
    H, W = frames.shape[1:3]
    S, scale = cfg.crop_size, cfg.crop_size / min(frames.shape[1:3])
    rh, rw = max(S, round(H * scale)), max(S, round(W * scale))
    frames = augment.apply_crop(frames, augment.CropParams(0, 0, H, W, rh, rw))
    boxes_S4, flips_S = sampling.spatial_crops(rh, rw, S, cfg.spatial_crops)
    views = []
    for clip in frames.reshape(cfg.num_clips, cfg.clip_len, rh, rw, 3):
        for (y, x, h, w), flip in zip(boxes_S4, flips_S):
            view = clip[:, y:y + h, x:x + w]
            views.append(augment.apply_hflip(view, flip, is_flow=is_flow))
    labels_K = np.zeros(K, np.float32)
    for s in json.loads(row["segments"]):
        labels_K[s["label_index"]] = 1.0
    if row["label_index"] >= 0:
        labels_K[row["label_index"]] = 1.0
    return {"views": np.stack(views), "frame_idx": idx_kT, "video_labels": labels_K}


SAMPLERS = {"coclr": _coclr, "dpc": _dpc, "detection": _detection, "classification": _classification,
            "eval": _eval}


def make_sample(row: dict, cfg: RecipeConfig, *, seed: int, epoch: int, num_classes: int | None,
                read: Read) -> dict[str, Any]:
    """One sample (per-row values of :func:`batch_schema`) from one item row, drawn from
    ``sample_rng(seed, epoch, video_id)``.

    Raises:
        MediaError: a read failed (or flow does not match its video).
    """
    rng = sampling.sample_rng(seed, epoch, row["video_id"])
    base = {"video_id": row["video_id"], "label": row["label"], "label_index": row["label_index"],
            "vid_index": row["row"]}
    return {**base, **SAMPLERS[cfg.name](row, cfg, rng, read, num_classes)}
