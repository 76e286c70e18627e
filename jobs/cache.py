"""Decode a dataset once into a clip cache: ``python jobs/cache.py --manifest URL --out DIR [--split train]``.

Writes every video of the split (and its flow video, unless ``--no-flow``) as decoded frames
under ``DIR/<manifest fingerprint>/`` (:mod:`pipelines.data.clip_cache`) and prints the
``--set data.clip_cache=...`` that makes a training run read them instead of decoding:
samples are bit-identical, only the decode is skipped. Sweeps make their own cache
(``jobs/tune.py``); this is for single runs that go over a dataset many times. Videos that
do not decode are left out (the run quarantines them as usual); ``--gb`` bounds the size
(videos in manifest order until the next would not fit). Exit status: 0, or 2 when the
manifest is missing or its split has no videos.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from pipelines.cluster import init_ray  # noqa: E402
from pipelines.data.clip_cache import cache_dataset  # noqa: E402
from pipelines.io import manifest  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--manifest", required=True, help="dataset folder or manifest .parquet URL")
    p.add_argument("--out", required=True, help="cache folder, on a disk the decode workers see")
    p.add_argument("--split", default="train", help="manifest split to cache (default: train)")
    p.add_argument("--limit", type=int, help="only the split's first N videos (as data.limit)")
    p.add_argument("--no-flow", dest="flow", action="store_false", help="leave the flow videos out")
    p.add_argument("--gb", type=float, default=8.0, help="size limit (default 8)")
    args = p.parse_args(argv)
    if not manifest.exists(args.manifest):
        print(f"cache: no manifest at {args.manifest}: make one with jobs/ingest.py "
              f"(or jobs/make_synthetic.py then jobs/ingest.py)", file=sys.stderr)
        return 2
    init_ray()
    try:
        report = cache_dataset(args.manifest, args.out, split=args.split, limit=args.limit,
                               budget_bytes=int(args.gb * 2**30), flow=args.flow)
    except ValueError as exc:  # an empty split
        print(f"cache: {exc}", file=sys.stderr)
        return 2
    print(report.line())
    for uri, reason in sorted(report.failed.items()):
        print(f"  not cached: {uri}: {reason}")
    print(f"train on it with: --set data.clip_cache={report.root}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
