"""The demo behind ``make demo``: synthetic motion dataset -> ingest -> manifest summary.

Runs on embedded defaults: an embedded local Ray cluster (token auth on), the local
filesystem as object store (``--data``, default ``data/``). Later issues extend it to
train, evaluate and register models.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from pipelines import manifest, storage  # noqa: E402
from pipelines.cluster import init_ray  # noqa: E402
from pipelines.ingest import IngestConfig, run_ingest  # noqa: E402
from pipelines.synthetic import generate, preset  # noqa: E402


def print_summary(name: str, dataset: str) -> dict:
    summary = manifest.summarize(manifest.read_manifest(dataset), manifest.read_quarantine(dataset))
    print(f"\n== {name}: {dataset}")
    print(f"   accepted {summary['accepted']}, quarantined {summary['quarantined']}, "
          f"classes {summary['classes']}, splits {summary['splits']}")
    print(f"   {summary['total_frames']} frames, {summary['total_hours'] * 60:.1f} min, "
          f"videos with segments {summary['videos_with_segments']}, fingerprint {summary['fingerprint'][:16]}")
    return summary


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", default="data", help="local folder (or URL for the datasets) to work in")
    p.add_argument("--preset", default="demo", help="synthetic dataset preset (tiny or demo)")
    args = p.parse_args(argv)
    start = time.time()
    raw = str(Path(args.data) / "synthetic")
    print(f"[1/3] rendering the synthetic motion dataset ({args.preset}) into {raw}")
    made = generate(raw, preset(args.preset))
    print(json.dumps({k: made[k] for k in made if k != "seconds"}))
    init_ray()
    summaries = {}
    for step, (fmt, name) in enumerate((("ucf101", "ucf101"), ("charades", "charades")), start=2):
        dst = storage.join(args.data, "demo", name)
        print(f"[{step}/3] ingesting {name} ({fmt} format) into {dst}, transcoding to GOP 8")
        report = run_ingest(IngestConfig(fmt=fmt, src=str(Path(raw) / name), dst=dst, gop=8))
        print(f"   inputs {report.inputs} = accepted {report.accepted} + quarantined {report.quarantined}")
        summaries[name] = print_summary(name, dst)
    print(f"\ndemo finished in {time.time() - start:.0f}s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
