"""Synthetic action videos whose class is defined by motion only.

No dataset can be downloaded here, so the project renders its own. Each clip shows
one or more textured foreground shapes over a cluttered, textured background; the
class decides only *how the shapes move* (direction, rotation, oscillation,
approach/recede, blinking, orbiting). Background, palette, shape, colour, size and
pattern are drawn independently of the class, so appearance alone cannot solve the
task, which is what makes CoCLR's RGB/flow co-training meaningful.

:func:`generate` writes real H.264 MP4 files in the layouts the ingest adapters read::

    OUT/ucf101/UCF-101/<Class>/v_<Class>_g<GG>_c<CC>.mp4
    OUT/ucf101/ucfTrainTestlist/{classInd,trainlist01,testlist01}.txt
    OUT/charades/Charades_v1_480/<ID>.mp4          (multi-action videos)
    OUT/charades/Charades_v1_classes.txt
    OUT/charades/Charades_v1_{train,test}.csv
    OUT/synthetic_meta.json

Everything is a pure function of ``(seed, video index)``: every video has its own
``np.random.default_rng([seed, kind, ...])`` stream, so the output does not depend
on the number of workers or on the order in which videos are rendered.

Reproducibility: annotations and rendered frames are exact functions of the seed.
The encoded bytes, hence the decoded pixels, are too only when the width is a
multiple of 128: with other widths this libx264 build was seen to produce
different bitstreams for identical frames, depending on heap contents (it reads
memory it did not initialise), so :func:`generate` warns for such widths.

Shape legend: T frames, H height, W width, P sprite side, 2 (x, y), 3 RGB, 4 RGBA.
"""

from __future__ import annotations

import csv
import dataclasses
import json
import multiprocessing
import os
import time
import warnings
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

import cv2
import numpy as np
from tqdm import tqdm

from pipelines.io.encode import write_video
from pipelines.prep.synthetic_config import (
    CLASSES,
    PRESETS,
    MotionClass,
    SyntheticConfig,
    preset,
)
from pipelines.prep.synthetic_scenes import (
    _MOTIONS,
    Style,
    Track,
    _make_sprite,
    _Motion,
    _render,
    class_style,
    make_background,
    render_clip,
)

__all__ = ["CHARADES_HEADER", "CLASSES", "GENERATOR_VERSION", "PRESETS", "MotionClass", "MultiActionPlan",
           "Segment", "Style", "SyntheticConfig", "Track", "class_style", "generate", "make_background",
           "plan_multi_action", "preset", "render_clip", "render_multi_action", "ucf_name", "ucf_scene"]

GENERATOR_VERSION = "2"
CHARADES_HEADER = ("id", "subject", "scene", "quality", "relevance", "verified", "script",
                   "objects", "descriptions", "actions", "length")
_ID_ALPHABET = "ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789"


# ----------------------------------------------------------------------------- multi-action

@dataclass(frozen=True)
class Segment:
    """An action of one object over frames ``[start, end)``."""
    cls_idx: int
    start: int
    end: int
    actor: int

    def seconds(self, fps: float) -> tuple[float, float]:
        return self.start / fps, self.end / fps


@dataclass(frozen=True)
class MultiActionPlan:
    """Everything about a multi-action video except its pixels."""
    n_frames: int
    tracks: list[Track]
    segments: list[Segment]  # sorted by start


def _feasible_motion(rng: np.random.Generator, cfg: SyntheticConfig, n: int,
                     pose: tuple[float, float, float]) -> tuple[int, _Motion]:
    """Draw (class, motion) until the object stays in frame and at a sane size."""
    short, m = min(cfg.height, cfg.width), 0.1 * min(cfg.height, cfg.width)
    x, y, s = pose
    for _ in range(30):
        cls_idx = int(rng.integers(cfg.num_classes))
        mo = _MOTIONS[CLASSES[cls_idx].name](rng, n, short)
        xs, ys, ss = x + mo.dx_T, y + mo.dy_T, s * mo.scale_T
        if (m <= xs.min() and xs.max() <= cfg.width - m and m <= ys.min() and ys.max() <= cfg.height - m
                and 0.4 <= ss.min() and ss.max() <= 2.5):
            return cls_idx, mo
    return cls_idx, mo  # rare; the object may leave the frame for a while


def _timeline(rng: np.random.Generator, cfg: SyntheticConfig, n: int) -> list[tuple[int, int]]:
    """Segments ``[start, end)`` of one object: 1-2.5 s actions separated by 0.3-1.2 s rests."""
    spans, t = [], int(round(rng.uniform(0.3, 1.2) * cfg.fps))
    min_len = int(round(cfg.fps))
    while t + min_len <= n:
        end = min(t + int(round(rng.uniform(1.0, 2.5) * cfg.fps)), n)
        spans.append((t, end))
        t = end + int(round(rng.uniform(0.3, 1.2) * cfg.fps))
    return spans


def plan_multi_action(rng: np.random.Generator, cfg: SyntheticConfig) -> MultiActionPlan:
    """Sample duration, per-object action timelines and poses; objects rest between actions."""
    n = int(round(rng.uniform(*cfg.multi_seconds) * cfg.fps))
    tracks, segments = [], []
    for actor in range(int(rng.integers(1, cfg.max_objects + 1))):
        pose_5T = np.empty((5, n))
        pose_5T[:] = np.array([rng.uniform(0.3, 0.7) * cfg.width, rng.uniform(0.3, 0.7) * cfg.height,
                               rng.uniform(0, 360), 1.0, 1.0])[:, None]
        for start, end in _timeline(rng, cfg, n):
            x, y, angle, s, _ = pose_5T[:, start]
            cls_idx, mo = _feasible_motion(rng, cfg, end - start, (x, y, s))
            pose_5T[:, start:end] = [x + mo.dx_T, y + mo.dy_T, angle + mo.angle_T, s * mo.scale_T, mo.alpha_T]
            pose_5T[:, end:] = pose_5T[:, end - 1:end]  # rest: no action until the next segment
            segments.append(Segment(cls_idx, start, end, actor))
        tracks.append(Track(*pose_5T))
    return MultiActionPlan(n, tracks, sorted(segments, key=lambda sg: (sg.start, sg.end, sg.actor)))


def render_multi_action(rng: np.random.Generator, cfg: SyntheticConfig) -> tuple[np.ndarray, list[Segment]]:
    """Render a long video where objects act in temporal segments and rest in between.

    The plan is drawn first from ``rng``, so :func:`plan_multi_action` on a fresh
    generator with the same seed returns the same segments without rendering.

    Returns:
        frames_THW3: uint8 RGB; segments: the annotated actions, sorted by start.
    """
    plan = plan_multi_action(rng, cfg)
    canvas_HW3 = make_background(rng, cfg)
    sprites = [_make_sprite(rng, rng.uniform(0.08, 0.15) * min(cfg.height, cfg.width)) for _ in plan.tracks]
    return _render(rng, canvas_HW3, sprites, plan.tracks, cfg, plan.n_frames), plan.segments


# ----------------------------------------------------------------------------- dataset

def _clip_rng(cfg: SyntheticConfig, cls_idx: int, group: int, clip: int) -> np.random.Generator:
    return np.random.default_rng([cfg.seed, 0, cls_idx, group, clip])


def _group_rng(cfg: SyntheticConfig, group: int) -> np.random.Generator:
    # Keyed by group only: group g is the same scene for every class, so backgrounds carry no label.
    return np.random.default_rng([cfg.seed, 1, group])


def ucf_scene(cfg: SyntheticConfig, cls_idx: int, group: int) -> np.ndarray:
    """The background of (class, group): the group's scene when ``context`` is 0; else a scene of
    that class and group whose palette is the class's with probability ``context``."""
    if not cfg.context:
        return make_background(_group_rng(cfg, group), cfg)
    rng = np.random.default_rng([cfg.seed, 7, cls_idx, group])
    typical = rng.random() < cfg.context
    return make_background(rng, cfg, class_style(cfg, cls_idx).palette_K3 if typical else None)


def _multi_rng(cfg: SyntheticConfig, index: int) -> np.random.Generator:
    return np.random.default_rng([cfg.seed, 2, index])


def ucf_name(cls_name: str, group: int, clip: int) -> str:
    """``MoveLeft/v_MoveLeft_g01_c02.mp4`` for 1-based group and clip."""
    return f"{cls_name}/v_{cls_name}_g{group:02d}_c{clip:02d}.mp4"


def charades_ids(cfg: SyntheticConfig) -> list[str]:
    """Distinct 5-character uppercase alphanumeric IDs, deterministic in the seed."""
    rng, ids = np.random.default_rng([cfg.seed, 3]), []
    while len(ids) < cfg.multi_videos:
        vid = "".join(_ID_ALPHABET[i] for i in rng.integers(0, len(_ID_ALPHABET), 5))
        if vid not in ids:
            ids.append(vid)
    return ids


class _Job(NamedTuple):
    kind: str  # "ucf" or "multi"
    path: str
    key: tuple[int, ...]  # (cls_idx, group, clip) or (index,)


def _run_job(job: _Job, cfg: SyntheticConfig, skip_existing: bool) -> bool:
    """Render and encode one video; returns False when an existing file was kept."""
    path = Path(job.path)
    if skip_existing and path.exists():
        return False
    if job.kind == "ucf":
        cls_idx, group, clip = job.key
        style = class_style(cfg, cls_idx) if cfg.context else None
        frames_THW3 = render_clip(cls_idx, _clip_rng(cfg, cls_idx, group, clip), cfg,
                                  canvas_HW3=ucf_scene(cfg, cls_idx, group), style=style)
    else:
        frames_THW3, _ = render_multi_action(_multi_rng(cfg, job.key[0]), cfg)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.stem + ".partial.mp4")  # atomic: a kept file is always complete
    write_video(str(tmp), frames_THW3, fps=cfg.fps, codec="libx264", crf=cfg.crf)
    os.replace(tmp, path)
    return True


def _init_worker() -> None:
    cv2.setNumThreads(1)  # one process per core already


def _run_jobs(jobs: list[_Job], cfg: SyntheticConfig, workers: int, skip_existing: bool,
              progress: bool) -> int:
    """Run jobs serially or in a process pool; returns how many videos were written."""
    bar = tqdm(total=len(jobs), desc="synthetic videos", unit="video", disable=not progress)
    written = 0
    if workers <= 1:
        for job in jobs:
            written += _run_job(job, cfg, skip_existing)
            bar.update()
    else:
        # spawn, not fork: a child forked after OpenCV's thread pool has run can deadlock in cv2.
        ctx = multiprocessing.get_context("spawn")
        with ProcessPoolExecutor(workers, mp_context=ctx, initializer=_init_worker) as pool:
            futures = [pool.submit(_run_job, job, cfg, skip_existing) for job in jobs]
            for fut in as_completed(futures):
                written += fut.result()
                bar.update()
    bar.close()
    return written


def _write_lines(path: Path, lines: list[str]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(line + "\n" for line in lines))


def _write_ucf_lists(root: Path, cfg: SyntheticConfig) -> tuple[int, int]:
    """classInd / trainlist01 (with 1-based label) / testlist01 (no label), as UCF101."""
    lists = root / "ucf101" / "ucfTrainTestlist"
    _write_lines(lists / "classInd.txt", [f"{i + 1} {c.name}" for i, c in enumerate(cfg.classes)])
    train, test = [], []
    for i, c in enumerate(cfg.classes):
        for g in range(1, cfg.groups + 1):
            for k in range(1, cfg.clips_per_group + 1):
                name = ucf_name(c.name, g, k)
                (test.append(name) if g in cfg.test_groups else train.append(f"{name} {i + 1}"))
    _write_lines(lists / "trainlist01.txt", train)
    _write_lines(lists / "testlist01.txt", test)
    return len(train), len(test)


def _charades_row(cfg: SyntheticConfig, vid: str, index: int, plan: MultiActionPlan) -> dict[str, str]:
    rng = np.random.default_rng([cfg.seed, 5, index])
    descs = [CLASSES[s.cls_idx].description.lower() for s in plan.segments]
    actions = ";".join(f"c{s.cls_idx:03d} {s.start / cfg.fps:.2f} {s.end / cfg.fps:.2f}" for s in plan.segments)
    return {"id": vid, "subject": f"SY{int(rng.integers(1, 100)):02d}", "scene": "Synthetic",
            "quality": str(int(rng.integers(5, 8))), "relevance": str(int(rng.integers(5, 8))),
            "verified": "Yes",
            "script": f"{len(plan.tracks)} shape(s) over a cluttered background: " + ", then ".join(descs) + ".",
            "objects": "", "descriptions": "; ".join(f"A shape is {d}." for d in descs),
            "actions": actions, "length": f"{plan.n_frames / cfg.fps:.2f}"}


def _write_charades(root: Path, cfg: SyntheticConfig, ids: list[str]) -> tuple[int, int, int]:
    """Classes file and train/test CSVs; returns (train, test, segments) counts."""
    cdir = root / "charades"
    _write_lines(cdir / "Charades_v1_classes.txt", [f"c{i:03d} {c.description}" for i, c in enumerate(cfg.classes)])
    n = len(ids)
    k = min(max(round(n * cfg.test_fraction), 1), n - 1) if n > 1 else 0
    test_idx = set(np.random.default_rng([cfg.seed, 4]).permutation(n)[:k].tolist())
    rows = {"train": [], "test": []}
    n_seg = 0
    for i, vid in enumerate(ids):
        plan = plan_multi_action(_multi_rng(cfg, i), cfg)
        n_seg += len(plan.segments)
        rows["test" if i in test_idx else "train"].append(_charades_row(cfg, vid, i, plan))
    for split, split_rows in rows.items():
        with open(cdir / f"Charades_v1_{split}.csv", "w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=CHARADES_HEADER, lineterminator="\n")
            writer.writeheader()
            writer.writerows(split_rows)
    return len(rows["train"]), len(rows["test"]), n_seg


def _meta(cfg: SyntheticConfig, counts: dict[str, int]) -> dict:
    return {"generator_version": GENERATOR_VERSION, "seed": cfg.seed, "preset": cfg.preset,
            "classes": [dataclasses.asdict(c) for c in cfg.classes], "counts": counts,
            "fps": cfg.fps, "size": {"height": cfg.height, "width": cfg.width},
            "frames_per_clip": cfg.frames, "test_groups": list(cfg.test_groups),
            "config": dataclasses.asdict(cfg)}


def generate(out_dir: str, cfg: SyntheticConfig, *, workers: int | None = None, progress: bool = True,
             overwrite: bool = False) -> dict:
    """Write the UCF101-style and Charades-style synthetic datasets under ``out_dir`` (local).

    Idempotent: annotations are always rewritten (byte-identical for the same config).
    Videos that already exist are kept when ``synthetic_meta.json`` there records the
    same config, since they are then the same videos (written atomically); otherwise
    the metadata is removed first and every video is re-rendered. Files of an earlier,
    larger config that this one does not name are left in place.

    Args:
        out_dir: local output root.
        cfg: what to generate.
        workers: processes (default ``os.cpu_count()``); <= 1 renders in this process.
        progress: show a tqdm bar.
        overwrite: re-render every video even if the tree is up to date.

    Returns:
        Summary: counts, videos written and kept, wall seconds.
    """
    t0 = time.perf_counter()
    if cfg.width % 128:
        warnings.warn(f"width {cfg.width} is not a multiple of 128: libx264 output may not be "
                      "byte-reproducible (see pipelines.prep.synthetic's docstring)", stacklevel=2)
    root = Path(out_dir)
    root.mkdir(parents=True, exist_ok=True)
    meta_path = root / "synthetic_meta.json"
    n_ucf = cfg.num_classes * cfg.groups * cfg.clips_per_group
    n_ucf_test = cfg.num_classes * len(cfg.test_groups) * cfg.clips_per_group
    counts = {"classes": cfg.num_classes, "ucf_clips": n_ucf, "ucf_train": n_ucf - n_ucf_test,
              "ucf_test": n_ucf_test, "charades_videos": cfg.multi_videos}
    ids = charades_ids(cfg)
    counts["charades_train"], counts["charades_test"], counts["charades_segments"] = _write_charades(root, cfg, ids)
    _write_ucf_lists(root, cfg)
    meta = _meta(cfg, counts)
    reuse = (not overwrite and meta_path.exists()
             and json.loads(meta_path.read_text()) == json.loads(json.dumps(meta)))
    meta_path.unlink(missing_ok=True)  # until every video matches this config again
    jobs = [_Job("multi", str(root / "charades" / "Charades_v1_480" / f"{vid}.mp4"), (i,))
            for i, vid in enumerate(ids)]  # the long ones first, for load balance
    jobs += [_Job("ucf", str(root / "ucf101" / "UCF-101" / ucf_name(c.name, g, k)), (i, g, k))
             for i, c in enumerate(cfg.classes) for g in range(1, cfg.groups + 1)
             for k in range(1, cfg.clips_per_group + 1)]
    written = _run_jobs(jobs, cfg, workers or os.cpu_count() or 1, reuse, progress)
    meta_path.write_text(json.dumps(meta, indent=2) + "\n")
    return {"out": str(root), "preset": cfg.preset, "seed": cfg.seed, **counts,
            "written": written, "kept": len(jobs) - written, "seconds": round(time.perf_counter() - t0, 2)}
