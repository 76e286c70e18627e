"""Optical flow for every manifest video: ``python jobs/flow.py --manifest URL [--method tvl1|farneback]``.

Writes ``<dataset>/flow/<video_id>.mkv`` (lossless, frame-aligned with the RGB video;
see ``pipelines/prep/flow.py``), adds a ``flow_uri`` column to the manifest and appends
videos that fail to ``quarantine.parquet`` with stage ``flow``. Re-running skips rows
whose flow file exists with the right frame count and method. Exit status: 0 when
every row got flow or was quarantined; 3 with ``--strict`` and any quarantined row;
2 when the manifest cannot be read.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from pipelines.cluster import init_ray  # noqa: E402
from pipelines.prep.flow import BOUND, METHODS, FlowConfig, run_flow  # noqa: E402


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--manifest", required=True, help="dataset folder or manifest .parquet URL")
    p.add_argument("--method", default="tvl1", choices=METHODS, help="flow algorithm (default: TV-L1)")
    p.add_argument("--out", help="folder for the flow files (default: <dataset>/flow)")
    p.add_argument("--bound", type=float, default=BOUND, help="truncation in px before the uint8 mapping")
    p.add_argument("--param", action="append", default=[], metavar="NAME=VALUE",
                   help="method parameter, e.g. scales_number=3 (TV-L1) or winsize=9 (Farneback)")
    p.add_argument("--num-cpus", type=int, help="CPUs of an embedded local Ray cluster")
    p.add_argument("--strict", action="store_true", help="exit 3 if any row was quarantined")
    p.add_argument("--json", action="store_true", help="print the report as JSON")
    return p.parse_args(argv)


def _params(pairs: list[str]) -> dict:
    """``["a=1", "b=0.5"]`` -> ``{"a": 1, "b": 0.5}`` (numbers parsed as JSON)."""
    out = {}
    for pair in pairs:
        name, _, value = pair.partition("=")
        try:
            out[name] = json.loads(value)
        except json.JSONDecodeError:
            out[name] = value
    return out


def main(argv=None) -> int:
    args = parse_args(argv)
    cfg = FlowConfig(manifest=args.manifest, method=args.method, out=args.out, bound=args.bound,
                     params=_params(args.param))
    init_ray(num_cpus=args.num_cpus)
    try:
        report = run_flow(cfg)
    except (FileNotFoundError, ValueError) as exc:
        print(f"flow: {exc}", file=sys.stderr)
        return 2
    if args.json:
        print(json.dumps({**report.__dict__, "with_flow": report.with_flow}))
    else:
        print(f"\nflow ({cfg.method}) {args.manifest} -> {cfg.out_dir} in {report.seconds:.1f}s")
        print(f"  rows {report.rows} = with flow {report.with_flow} ({report.computed} computed, "
              f"{report.existing} already there) + quarantined {report.quarantined}")
        for kind, n in report.reasons.items():
            print(f"  quarantined {kind:<16} {n}")
    return 3 if args.strict and report.quarantined else 0


if __name__ == "__main__":
    sys.exit(main())
