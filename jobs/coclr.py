"""CoCLR on Ray: ``ray job submit --working-dir . -- python jobs/coclr.py --variant demo``.

Runs the whole schedule (InfoNCE RGB and flow, then CoCLR cycles) or one phase with
``--stage NAME``; each phase trains on Ray Train, logs to MLflow and registers its
encoder as ``<model_name>-<modality>@<phase>``. Re-submitting resumes.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from pipelines.cluster import init_ray  # noqa: E402
from pipelines.methods.coclr import VARIANTS, run_schedule  # noqa: E402
from pipelines.config import add_config_args, resolve_config, save_config  # noqa: E402


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_config_args(parser, VARIANTS, default="ucf101")
    parser.add_argument("--stage", help="run only this phase (e.g. infonce_rgb, coclr_rgb_c1)")
    parser.add_argument("--print-config", action="store_true", help="print the resolved config and exit")
    args = parser.parse_args(argv)
    job = resolve_config(args)
    if args.print_config:
        from pipelines.config import to_dict

        print(json.dumps(to_dict(job), indent=2))
        return 0
    init_ray()
    Path(job.storage_path).mkdir(parents=True, exist_ok=True) if "://" not in job.storage_path else None
    save_config(job, f"{job.storage_path.rstrip('/')}/{job.run_name}.config.yaml")
    done = run_schedule(job, stage=args.stage)
    print(f"\n{'phase':<16} {'registered model':<24} {'version':>7}  alias")
    for row in done:
        print(f"{row['phase']:<16} {str(row['model']):<24} {str(row['version']):>7}  {row['alias']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
