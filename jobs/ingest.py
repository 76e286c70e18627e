"""Ingest a video dataset into a manifest: ``python jobs/ingest.py --format ucf101 --src S --dst D``.

Runs on the Ray cluster it is submitted to (``ray job submit --working-dir . -- python
jobs/ingest.py ...``) or on an embedded local one. Exit status: 0 when every input was
accepted or quarantined; 3 with ``--strict`` and any quarantined input; 2 when the
source cannot be read in the given format.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from pipelines.prep import datasets  # noqa: E402
from pipelines.cluster import init_ray  # noqa: E402
from pipelines.prep.ingest import IngestConfig, run_ingest  # noqa: E402


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--format", dest="fmt", required=True, choices=datasets.FORMATS)
    p.add_argument("--src", required=True, help="dataset root: local path, file://, s3:// or memory://")
    p.add_argument("--dst", required=True, help="where manifest.parquet, quarantine.parquet and videos/ go")
    p.add_argument("--short-side", type=int, help="transcode to H.264 with this short side (pixels)")
    p.add_argument("--gop", type=int, help="transcode to H.264 with a keyframe every GOP frames")
    p.add_argument("--crf", type=int, default=20, help="x264 quality when transcoding")
    p.add_argument("--split-id", type=int, default=1, help="ucf101/hmdb51 split number (1-3)")
    p.add_argument("--split", default="train", help="split of a folder layout without split folders")
    p.add_argument("--num-cpus", type=int, help="CPUs of an embedded local Ray cluster")
    p.add_argument("--strict", action="store_true", help="exit 3 if any input was quarantined")
    p.add_argument("--json", action="store_true", help="print the report as JSON")
    return p.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    cfg = IngestConfig(fmt=args.fmt, src=args.src, dst=args.dst, short_side=args.short_side, gop=args.gop,
                       crf=args.crf, split_id=args.split_id, split=args.split)
    init_ray(num_cpus=args.num_cpus)
    try:
        report = run_ingest(cfg)
    except datasets.SourceError as exc:
        print(f"ingest: {exc}", file=sys.stderr)
        return 2
    if args.json:
        print(json.dumps({**report.__dict__, "accepted": report.accepted}))
    else:
        print(f"\ningest {args.fmt} {args.src} -> {args.dst} in {report.seconds:.1f}s")
        print(f"  inputs {report.inputs} = accepted {report.accepted} "
              f"({report.accepted_new} new, {report.accepted_existing} already ingested) "
              f"+ quarantined {report.quarantined}")
        for kind, n in report.reasons.items():
            print(f"  quarantined {kind:<16} {n}")
        print(f"  manifest rows {report.manifest_rows}, fingerprint {report.fingerprint[:16]}")
    return 3 if args.strict and report.quarantined else 0


if __name__ == "__main__":
    sys.exit(main())
