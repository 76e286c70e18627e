"""CPU cost of clip augmentation per sample, old (numpy reference) vs new (OpenCV), against decode.

    python bench/augment.py [--quick | --tiny] [--set rounds=7 --set samples=16 ...]

Prints ONE JSON object on stdout (progress goes to stderr). For each recipe preset
(``classification_16x112``: the ``classification`` recipe at 16 frames x 112 px;
``classification_32x128``, ``coclr``, ``dpc`` and ``detection`` as preset), the same
``samples`` samples of one synthetic video (:mod:`pipelines.prep.synthetic`, ``height x width``,
written with a ``gop``-frame keyframe interval as bench/pipeline.py's transcoded set; for
``coclr`` also its Farneback flow video, stored as :mod:`pipelines.prep.flow` stores it)
are built by ``recipes.make_sample`` three ways, each timed with ``time.process_time``:

  decode_cpu_ms        the sample's ``read_frames(uri, indices, threads=1, codec=..., size=...)``
                       calls (RGB and flow), naming the codec and frame size as the pipeline's
                       decode tasks do from the manifest, so that no read probes the file.
  augment_cpu_ms.new   ``make_sample`` fed the decoded frames: parameter sampling plus the
                       ``apply_*`` of :mod:`pipelines.data.augment` (sampling is the same in both
                       rows and costs a few tens of microseconds).
  augment_cpu_ms.reference  the same with ``augment.apply_*`` swapped for
                       ``bench/augment_reference.py`` (the numpy implementation it replaced).

A figure is the CPU milliseconds per sample (a ``coclr`` sample is two views of RGB + flow, a
``dpc`` sample one 40-frame sequence), the median over ``rounds`` rounds of the mean over the
samples; the order of the three measurements rotates each round. Everything is single-threaded,
as in the data plane (one Ray task per CPU): ``cv2.setNumThreads(1)`` and one-thread BLAS/OpenMP
(set before numpy is imported), so process time is the cost of one core. ``augment_over_decode_cpu``
is new augment over decode; the goals (<= 0.5 for ``classification_16x112``, <= 1 for ``dpc``)
are reported in ``goals_met``, never asserted.

Shape legend: ``T`` frames, ``S`` crop size.
"""

from __future__ import annotations

import os

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):  # before numpy: single thread
    os.environ[_var] = "1"

import argparse
import contextlib
import dataclasses
import json
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import cv2
import numpy as np

from bench import augment_reference, common
from bench.common import load1
from pipelines.config import apply_overrides
from pipelines.data import augment, recipes
from pipelines.data.tasks import media_of
from pipelines.io.video import read_frames

OPS = ("apply_crop", "apply_hflip", "apply_color_jitter", "apply_greyscale", "apply_blur")
# name -> (recipe, overrides); the profile was classification 16 x 112 px from 128 px frames.
RECIPES: dict[str, tuple[str, tuple[str, ...]]] = {
    "classification_16x112": ("classification", ("clip_len=16", "augment.out_size=112")),
    "classification_32x128": ("classification", ()),
    "coclr": ("coclr", ()),
    "dpc": ("dpc", ()),
    "detection": ("detection", ()),
}
GOALS = {"classification_16x112": 0.5, "dpc": 1.0}  # augment CPU <= this x decode CPU


@dataclasses.dataclass(frozen=True)
class BenchConfig:
    """What to measure; named variants are :func:`quick` and :func:`tiny`, edits with ``--set``."""

    variant: str = "default"
    frames: int = 64           # frames of the synthetic video
    height: int = 128          # the demo preset's size
    width: int = 128           # a multiple of 128: byte-reproducible x264 output (synthetic.py)
    gop: int = 8               # keyframe interval, as bench/pipeline.py's transcoded set
    samples: int = 16          # samples per measurement (epochs 0..samples-1 of one video)
    rounds: int = 7
    recipes: tuple[str, ...] = tuple(RECIPES)
    seed: int = 0


def quick() -> BenchConfig:
    """Tens of seconds: fewer samples and rounds."""
    return dataclasses.replace(BenchConfig(), variant="quick", samples=6, rounds=3)


def tiny() -> BenchConfig:
    """Seconds (the test): every recipe, one round of two samples of a short video; figures meaningless."""
    return dataclasses.replace(BenchConfig(), variant="tiny", frames=40, samples=2, rounds=1)


# --------------------------------------------------------------------------- data


def make_videos(cfg: BenchConfig, root: Path, with_flow: bool) -> dict[str, Any]:
    """One synthetic RGB video (and its stored flow video); returns the manifest item row."""
    from pipelines.io.encode import write_video
    from pipelines.prep.flow import flow_video
    from pipelines.prep.synthetic import preset, render_clip

    syn = preset("demo", frames=cfg.frames, height=cfg.height, width=cfg.width, seed=cfg.seed)
    frames_THW3 = render_clip(0, np.random.default_rng(cfg.seed), syn)
    rgb = str(root / "v.mp4")
    write_video(rgb, frames_THW3, fps=syn.fps, codec="libx264", crf=syn.crf, gop=cfg.gop)
    flow = str(root / "v_flow.mkv")
    if with_flow:
        flow_video(rgb, flow, method="farneback", expected_frames=cfg.frames)
    return {"video_id": "v", "uri": rgb, "flow_uri": flow if with_flow else "", "num_frames": cfg.frames,
            "fps": syn.fps, "label": "c0", "label_index": 0, "segments": "[]", "row": 0, "codec": "h264",
            "height": cfg.height, "width": cfg.width}


class Reads:
    """``read`` functions for ``make_sample``: decoding (timed) and serving the decoded frames."""

    def __init__(self, row: dict[str, Any]) -> None:
        self.media = media_of([row])  # uri -> (codec, (H, W)), as a decode task has them
        self.cache: dict[tuple[str, bytes], np.ndarray] = {}
        self.decode_s = 0.0

    def decode(self, video_id: str, uri: str, idx: np.ndarray) -> np.ndarray:
        codec, size = self.media.get(uri, (None, None))
        start = time.process_time()
        frames = read_frames(uri, idx, threads=1, codec=codec, size=size)
        self.decode_s += time.process_time() - start
        self.cache[(uri, np.asarray(idx).tobytes())] = frames
        return frames

    def cached(self, video_id: str, uri: str, idx: np.ndarray) -> np.ndarray:
        return self.cache[(uri, np.asarray(idx).tobytes())]


@contextlib.contextmanager
def reference_ops() -> Iterator[None]:
    """``augment.apply_*`` (used by ``augment_clip``, ``augment_pair`` and the recipes) -> the reference."""
    saved = {name: getattr(augment, name) for name in OPS}
    try:
        for name in OPS:
            setattr(augment, name, getattr(augment_reference, name))
        yield
    finally:
        for name, fn in saved.items():
            setattr(augment, name, fn)


# --------------------------------------------------------------------------- measuring


def measure(cfg: BenchConfig, name: str, row: dict[str, Any]) -> dict[str, Any]:
    """Median CPU ms per sample of decode, new and reference augmentation for one recipe."""
    recipe_name, overrides = RECIPES[name]
    rcfg = recipes.recipe(recipe_name, overrides=overrides)
    if not rcfg.needs_flow:
        row = {**row, "flow_uri": ""}
    reads = Reads(row)

    def run(read: Callable) -> float:
        start = time.process_time()
        for epoch in range(cfg.samples):
            recipes.make_sample(row, rcfg, seed=cfg.seed, epoch=epoch, num_classes=4, read=read)
        return (time.process_time() - start) * 1e3 / cfg.samples

    def decode() -> float:
        reads.decode_s = 0.0
        run(reads.decode)
        return reads.decode_s * 1e3 / cfg.samples

    def reference() -> float:
        with reference_ops():
            return run(reads.cached)

    arms = {"decode": decode, "new": lambda: run(reads.cached), "reference": reference}
    decode()  # warm-up, and fills the cache
    detail: dict[str, list[float]] = {k: [] for k in arms}
    for r in range(cfg.rounds):
        order = list(arms)[r % 3:] + list(arms)[:r % 3]
        for arm in order:
            detail[arm].append(round(arms[arm](), 3))
    med = {k: round(statistics.median(v), 3) for k, v in detail.items()}
    sample = recipes.make_sample(row, rcfg, seed=cfg.seed, epoch=0, num_classes=4, read=reads.cached)
    video = {k: list(np.shape(sample[k])) for k in rcfg.video_columns()}
    return {"recipe": recipe_name, "overrides": list(overrides), "video_columns_shape": video,
            "decode_cpu_ms": med["decode"], "augment_cpu_ms": {"reference": med["reference"], "new": med["new"]},
            "new_over_reference": round(med["new"] / med["reference"], 3),
            "augment_over_decode_cpu": round(med["new"] / med["decode"], 3),
            "reference_augment_over_decode_cpu": round(med["reference"] / med["decode"], 3),
            "rounds_detail": detail}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--tiny", action="store_true")
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    args = ap.parse_args(argv)
    cfg = tiny() if args.tiny else quick() if args.quick else BenchConfig()
    cfg = apply_overrides(cfg, args.set)
    unknown = set(cfg.recipes) - set(RECIPES)
    if unknown:
        raise SystemExit(f"unknown recipes {sorted(unknown)}; choose from {list(RECIPES)}")
    started, load_start, machine = time.time(), load1(), common.machine_info()
    cv2.setNumThreads(1)  # one data task per CPU in the pipeline
    timer = common.PhaseTimer()
    with tempfile.TemporaryDirectory(prefix="bench-augment-") as tmp:
        needs_flow = any(recipes.recipe(RECIPES[n][0]).needs_flow for n in cfg.recipes)
        row = timer("videos", lambda: make_videos(cfg, Path(tmp), needs_flow))
        out = {name: timer(name, lambda name=name: measure(cfg, name, row)) for name in cfg.recipes}
    goals = {f"{n}_augment_le_{g:g}x_decode": out[n]["augment_over_decode_cpu"] <= g
             for n, g in GOALS.items() if n in out}
    report = {"config": {**dataclasses.asdict(cfg), "cv2_threads": cv2.getNumThreads(),
                         "timer": "time.process_time, one thread"},
              "recipes": out, "goals_met": goals, "phases": timer.phases}
    command = "python bench/augment.py " + " ".join(argv if argv is not None else sys.argv[1:])
    print(json.dumps(common.envelope("augment", command.strip(), cfg.variant, report, machine=machine,
                                     load_start=load_start, started=started)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
