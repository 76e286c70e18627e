"""Render the synthetic motion-defined action datasets (UCF101- and Charades-style).

    python jobs/make_synthetic.py --preset demo --out data/synthetic
    python jobs/make_synthetic.py --preset tiny --out /tmp/synth --seed 3 --num-classes 6

Re-running with the same arguments over an existing tree keeps the videos already
there and rewrites the (identical) annotations; see :func:`pipelines.prep.synthetic.generate`.
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import argparse  # noqa: E402
import json  # noqa: E402
import os  # noqa: E402

from pipelines.prep.synthetic import PRESETS, generate, preset  # noqa: E402


def _size(text: str) -> tuple[int, int]:
    """``128`` (square) or ``WxH`` -> (height, width)."""
    w, _, h = text.lower().partition("x")
    return (int(h or w), int(w))


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", required=True, help="local output directory")
    p.add_argument("--preset", default="demo", choices=sorted(PRESETS))
    p.add_argument("--seed", type=int)
    p.add_argument("--num-classes", type=int)
    p.add_argument("--groups", type=int)
    p.add_argument("--clips-per-group", type=int)
    p.add_argument("--frames", type=int)
    p.add_argument("--size", type=_size, help="N (square) or WxH; widths that are multiples of 128 "
                                              "give byte-reproducible videos")
    p.add_argument("--fps", type=float)
    p.add_argument("--multi-videos", type=int, help="number of multi-action (Charades-style) videos")
    p.add_argument("--clutter", type=float, help="density of static background shapes (1.0; 0 = none)")
    p.add_argument("--context", type=float, help="probability that a scene / an object is its class's typical one "
                                                 "(0: appearance carries no label)")
    p.add_argument("--shake", type=float, help="largest camera-shake amplitude in px (0.8)")
    p.add_argument("--workers", type=int, default=os.cpu_count(), help="processes (default: all cores)")
    p.add_argument("--overwrite", action="store_true", help="re-render videos that already exist")
    p.add_argument("--no-progress", action="store_true")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> dict:
    args = parse_args(argv)
    overrides = {k: getattr(args, k) for k in ("seed", "num_classes", "groups", "clips_per_group",
                                               "frames", "fps", "multi_videos", "clutter", "context", "shake")
                 if getattr(args, k) is not None}
    if args.size is not None:
        overrides["height"], overrides["width"] = args.size
    cfg = preset(args.preset, **overrides)
    summary = generate(args.out, cfg, workers=args.workers, progress=not args.no_progress,
                       overwrite=args.overwrite)
    print(json.dumps(summary, indent=2))
    return summary


if __name__ == "__main__":
    main()
