"""Volume augmentations for weakly-guided detection pretraining (seed 000, chapter 4).

Volume Freeze, Volume MixUp and Volume CutMix turn single-action clips with
frame-level pseudo labels (the video label copied to every frame, L646-648) into
clips with action segments and multi-action frames. Each is a deterministic function
of its sampled parameters (the ops live in :mod:`pipelines.data.volume_ops` and are
re-exported here); ``sample_*`` functions draw those parameters; and
:func:`volume_augment_batch` is a Ray ``map_batches`` stage that pairs clips inside a
batch (the seed mixes "a batch of input clips", L727).

Conventions: frame index ``t`` is 0-based; a clip has ``n`` frames; videos are
``(n, H, W, C)`` and frame-level labels ``(n, K)``. Mixed videos are computed in
float32 (the batch stage rounds them back to uint8); labels are float32.

Shape legend: ``N`` output frames, ``T`` batch clip length, ``H``/``W``/``C`` frame
height/width/channels, ``K`` classes, ``B`` batch.
"""

from __future__ import annotations

import dataclasses
import hashlib
from typing import Literal

import numpy as np

from pipelines.data.volume_ops import (  # noqa: F401 - moved there (this file's size); re-exported
    CutMixMode,
    cutmix_mask,
    temporal_alpha,
    truncate01,
    view_translation,
    volume_cutmix,
    volume_freeze,
    volume_mixup,
)

KINDS = ("freeze", "mixup", "cutmix")


# --------------------------------------------------------------------------- parameters


@dataclasses.dataclass(frozen=True)
class FreezeParams:
    r: int
    m: int


@dataclasses.dataclass(frozen=True)
class MixSpan:
    """Clip 1 keeps its first ``n1`` frames, clip 2 its first ``n2``, placed at offset ``r``."""

    r: int
    n1: int
    n2: int


@dataclasses.dataclass(frozen=True)
class VolumeParams:
    """One clip's volume augmentation; ``None`` for an op not applied, ``partner = -1`` when nothing is mixed."""

    partner: int = -1
    freeze: FreezeParams | None = None
    mixup: MixSpan | None = None
    cutmix: MixSpan | None = None
    cutmix_mode: CutMixMode = "view"
    delta: float = 0.0
    smooth: bool = True

    @property
    def kind(self) -> str:
        ops = [k for k in KINDS if getattr(self, k) is not None]
        return "+".join(ops) if ops else "none"


@dataclasses.dataclass(frozen=True)
class VolumeAugConfig:
    """How the batch stage combines the three augmentations (seed 000 L715-719).

    ``policy``: ``"single"`` applies one op drawn with ``single_weights`` ("joint train
    - single"), with probability ``p_apply``; ``"joint"`` applies each op independently
    with ``p_freeze``/``p_mixup``/``p_cutmix``, in the order freeze -> mixup -> cutmix
    ("joint train", up to all three); ``"freeze"``/``"mixup"``/``"cutmix"`` always apply
    that one op (the per-model setting of the ensemble). The seed gives no probabilities.
    ``cutmix_mode="random"`` picks window or view 50/50; the default "view" scored best
    (Table 4.4c). ``delta_frac`` sets ``delta = max(1, round(W * delta_frac))`` (the seed
    only says "a small value").
    """

    policy: Literal["single", "joint", "freeze", "mixup", "cutmix"] = "single"
    p_apply: float = 1.0
    single_weights: tuple[float, float, float] = (1.0, 1.0, 1.0)
    p_freeze: float = 0.5
    p_mixup: float = 0.5
    p_cutmix: float = 0.5
    cutmix_mode: Literal["window", "view", "random"] = "view"
    delta_frac: float = 1 / 16
    smooth: bool = True
    overlap_only: bool = True
    video_keys: tuple[str, ...] = ("rgb",)
    label_key: str = "frame_labels"


def sample_freeze(rng: np.random.Generator, n: int) -> FreezeParams:
    """``r`` uniform in ``[0, n - 2]``, then ``m`` uniform in ``[2, n - r]`` (the seed's ranges, L669)."""
    r = int(rng.integers(0, n - 1))
    return FreezeParams(r, int(rng.integers(2, n - r + 1)))


def sample_mix_span(rng: np.random.Generator, T: int) -> MixSpan:
    """``(r, n1, n2)`` with ``max(n1, r + n2) == T``, so the mixed clip keeps the batch's length.

    The seed keeps every datapoint at the same number of frames (L729) but does not say
    how ``n1, n2, r`` are drawn. With probability 1/2 (always when ``T < 3``) scenario 1:
    ``r ~ U[0, T-2]``, ``n1 ~ U[r+1, T]``, ``n2 = T - r`` (clip1 -> clip2); otherwise
    scenario 2: ``n1 = T``, ``r ~ U[0, T-3]``, ``n2 ~ U[2, T-r-1]`` (clip1 -> clip2 ->
    clip1). Each source clip is cut to its first ``n1`` / ``n2`` frames, so nothing is
    ever truncated after mixing (the seed's "truncation" T01, L886-892, acts on alpha).

    Raises:
        ValueError: for ``T < 2``.
    """
    if T < 2:
        raise ValueError(f"mixing needs clips of >= 2 frames, got {T}")
    if T < 3 or rng.random() < 0.5:
        r = int(rng.integers(0, T - 1))
        return MixSpan(r, int(rng.integers(r + 1, T + 1)), T - r)
    r = int(rng.integers(0, T - 2))
    return MixSpan(r, T, int(rng.integers(2, T - r)))


def sample_volume_params(rng: np.random.Generator, cfg: VolumeAugConfig, T: int, width: int,
                         partner: int) -> VolumeParams:
    """Draw one clip's ops under ``cfg.policy`` (see :class:`VolumeAugConfig`)."""
    if cfg.policy == "single":
        chosen = {str(rng.choice(KINDS, p=np.asarray(cfg.single_weights) / sum(cfg.single_weights)))}
        if rng.random() >= cfg.p_apply:
            chosen = set()
    elif cfg.policy == "joint":
        probs = (cfg.p_freeze, cfg.p_mixup, cfg.p_cutmix)
        chosen = {k for k, p in zip(KINDS, probs) if rng.random() < p}
    elif cfg.policy in KINDS:
        chosen = {cfg.policy}
    else:
        raise ValueError(f"unknown policy {cfg.policy!r}")
    mode = cfg.cutmix_mode if cfg.cutmix_mode != "random" else ("window", "view")[int(rng.integers(2))]
    freeze = sample_freeze(rng, T) if "freeze" in chosen else None
    mixup = sample_mix_span(rng, T) if "mixup" in chosen else None
    cutmix = (MixSpan(0, T, T) if mode == "view" else sample_mix_span(rng, T)) if "cutmix" in chosen else None
    mixes = mixup is not None or cutmix is not None
    return VolumeParams(partner if mixes else -1, freeze, mixup, cutmix, mode,
                        float(max(1, round(width * cfg.delta_frac))), cfg.smooth)


def apply_volume_params(videos: list[np.ndarray], labels: np.ndarray, partner_videos: list[np.ndarray],
                        partner_labels: np.ndarray, p: VolumeParams, *,
                        overlap_only: bool = True) -> tuple[list[np.ndarray], np.ndarray]:
    """Replay ``p`` on one clip: freeze, then mixup, then cutmix with the partner's original clip.

    ``videos`` are aligned streams of the same clip (e.g. RGB, or RGB and flow) that get
    identical ops; every output has the input's length ``T``.

    Returns:
        (videos ``(T, H, W, C)`` float32 or input dtype when nothing mixed, labels ``(T, K)`` float32).
    """
    labels = labels.astype(np.float32)
    if p.freeze is not None:
        out = [volume_freeze(v, labels, p.freeze.r, p.freeze.m) for v in videos]
        videos, labels = [v for v, _ in out], out[0][1]
    if p.mixup is not None:
        s = p.mixup
        out = [volume_mixup(v[:s.n1], labels[:s.n1], v2[:s.n2], partner_labels[:s.n2], s.r, p.smooth)
               for v, v2 in zip(videos, partner_videos)]
        videos, labels = [v for v, _ in out], out[0][1]
    if p.cutmix is not None:
        s = p.cutmix
        out = [volume_cutmix(v[:s.n1], labels[:s.n1], v2[:s.n2], partner_labels[:s.n2], s.r,
                             p.cutmix_mode, p.delta, overlap_only=overlap_only)
               for v, v2 in zip(videos, partner_videos)]
        videos, labels = [v for v, _ in out], out[0][1]
    return videos, labels


# --------------------------------------------------------------------------- batch stage


def pair_partners(rng: np.random.Generator, batch_size: int) -> np.ndarray:
    """A random cyclic derangement: clip ``perm[k]`` is paired with clip ``perm[k + 1]`` (wrapping).

    No clip is paired with itself when ``batch_size >= 2``; a batch of one pairs the
    clip with itself (mixing it with a shifted copy of itself).
    """
    perm = rng.permutation(batch_size)
    partner = np.empty(batch_size, np.int64)
    partner[perm] = np.roll(perm, -1)
    return partner


def _batch_rng(batch: dict[str, np.ndarray], cfg: VolumeAugConfig, seed: int, epoch: int) -> np.random.Generator:
    """A generator keyed on ``(seed, epoch)`` and the batch's content, so identical batches get identical draws."""
    h = hashlib.blake2b(digest_size=8)
    if "video_id" in batch:  # strings by value: an object array's bytes would be pointers
        h.update("\0".join(map(str, batch["video_id"])).encode())
    h.update(np.ascontiguousarray(batch[cfg.label_key], np.float32).tobytes())
    for key in cfg.video_keys:  # a coarse subsample is enough to tell batches apart
        h.update(np.ascontiguousarray(batch[key][:, :, ::8, ::8]).tobytes())
    return np.random.default_rng([seed, epoch, int.from_bytes(h.digest(), "little")])


def params_to_columns(params: list[VolumeParams]) -> dict[str, np.ndarray]:
    """Sampled parameters as batch columns (``-1`` where an op was not applied), for replay and preview."""
    def ints(get) -> np.ndarray:
        return np.array([get(p) for p in params], np.int64)

    cols = {"aug_kind": np.array([p.kind for p in params], dtype=object),
            "aug_partner": ints(lambda p: p.partner),
            "aug_freeze_r": ints(lambda p: p.freeze.r if p.freeze else -1),
            "aug_freeze_m": ints(lambda p: p.freeze.m if p.freeze else -1)}
    for op in ("mixup", "cutmix"):
        for f in ("r", "n1", "n2"):
            cols[f"aug_{op}_{f}"] = ints(lambda p: getattr(getattr(p, op), f) if getattr(p, op) else -1)
    cols["aug_cutmix_mode"] = np.array([p.cutmix_mode if p.cutmix else "" for p in params], dtype=object)
    cols["aug_delta"] = np.array([p.delta for p in params], np.float32)
    cols["aug_smooth"] = np.array([p.smooth for p in params], bool)
    return cols


def params_from_columns(batch: dict[str, np.ndarray], i: int) -> VolumeParams:
    """The :class:`VolumeParams` of row ``i`` recorded by :func:`params_to_columns`."""
    def span(op: str) -> MixSpan | None:
        r, n1, n2 = (int(batch[f"aug_{op}_{f}"][i]) for f in ("r", "n1", "n2"))
        return MixSpan(r, n1, n2) if r >= 0 else None

    fr, fm = int(batch["aug_freeze_r"][i]), int(batch["aug_freeze_m"][i])
    return VolumeParams(int(batch["aug_partner"][i]), FreezeParams(fr, fm) if fr >= 0 else None,
                        span("mixup"), span("cutmix"), str(batch["aug_cutmix_mode"][i]) or "view",
                        float(batch["aug_delta"][i]), bool(batch["aug_smooth"][i]))


def volume_augment_batch(batch: dict[str, np.ndarray], *, cfg: VolumeAugConfig, seed: int,
                         epoch: int = 0) -> dict[str, np.ndarray]:
    """Ray ``map_batches`` stage: volume-augment every clip, pairing clips within the batch.

    Pairing: :func:`pair_partners` (a seeded random cyclic derangement); partners are
    the batch's *original* clips. Parameters come from :func:`sample_volume_params`
    with a generator keyed on ``(seed, epoch, batch content)``: identical inputs give
    identical outputs, and a reshuffled epoch draws anew. Shapes are kept: mixing
    parameters are drawn so that ``max(n1, r + n2) == T`` (:func:`sample_mix_span`).
    Video columns keep their dtype (uint8 is rounded); labels become float32. Other
    columns pass through unchanged (a video-level label column is *not* mixed: the
    mixed targets are in ``cfg.label_key``), and the parameters are added as
    ``aug_*`` columns (:func:`params_to_columns`).

    Args:
        batch: ``cfg.video_keys`` -> ``(B, T, H, W, C)``, ``cfg.label_key`` -> ``(B, T, K)``.

    Returns:
        The batch with augmented videos and labels and the ``aug_*`` columns.
    """
    videos_B = [np.asarray(batch[k]) for k in cfg.video_keys]
    labels_BTK = np.asarray(batch[cfg.label_key])
    B, T = labels_BTK.shape[:2]
    rng = _batch_rng(batch, cfg, seed, epoch)
    partner = pair_partners(rng, B)
    width = videos_B[0].shape[3]
    params = [sample_volume_params(rng, cfg, T, width, int(partner[i])) for i in range(B)]
    out_videos = [v.copy() for v in videos_B]
    out_labels = labels_BTK.astype(np.float32, copy=True)
    for i, p in enumerate(params):
        j = partner[i]
        vs, ls = apply_volume_params([v[i] for v in videos_B], labels_BTK[i], [v[j] for v in videos_B],
                                     labels_BTK[j].astype(np.float32), p, overlap_only=cfg.overlap_only)
        for out, v in zip(out_videos, vs):
            out[i] = np.clip(np.rint(v), 0, 255) if out.dtype == np.uint8 else v
        out_labels[i] = ls
    return {**batch, **dict(zip(cfg.video_keys, out_videos)), cfg.label_key: out_labels,
            **params_to_columns(params)}
