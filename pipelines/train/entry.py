"""The generic trainer behind ``jobs/train.py`` and every method's alias (``jobs/coclr.py``...).

``python jobs/train.py --method M --variant V [--stage S] [--set a.b=v] [--print-config]``:

1. resolves the method's variant and the ``--set`` overrides (typed; unknown keys are
   refused with a suggestion) and makes relative local paths absolute (against the
   current directory: for a job submitted with ``--working-dir .``, its uploaded copy of
   the checkout; give absolute paths or URLs to share data between jobs);
2. checks, or for ``debug`` variants makes, the dataset every phase reads
   (:func:`pipelines.prep.ready.ensure_dataset`), before any worker starts;
3. connects to Ray, saves the resolved config next to the checkpoints and runs the
   schedule (:func:`pipelines.train.phases.run_phases`), printing what was registered.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys

from pipelines.config import add_config_args, resolve_config, save_config, to_dict
from pipelines.io import storage


def resolve_paths(job):
    """Every dataset's ``manifest`` (``data`` and any other :class:`DataConfig` field, e.g. a
    pretraining set) and ``storage_path`` as absolute local paths (URLs are kept)."""
    from pipelines.methods.spec import DataConfig

    datasets = {f.name: dataclasses.replace(getattr(job, f.name), manifest=storage.absolute(getattr(job, f.name).manifest))
                for f in dataclasses.fields(job) if isinstance(getattr(job, f.name), DataConfig)}
    return dataclasses.replace(job, **datasets, storage_path=storage.absolute(job.storage_path))


def parser_for(method: str | None) -> argparse.ArgumentParser:
    from pipelines.methods import METHODS, get_method

    p = argparse.ArgumentParser(description="Train a registered method on Ray (one Ray Train run per phase).")
    p.add_argument("--method", required=method is None, default=method, choices=sorted(METHODS),
                   help="registered method")
    if method is not None:
        spec = get_method(method)
        add_config_args(p, spec.variants, default="debug")
    p.add_argument("--stage", help="run only this phase")
    p.add_argument("--print-config", action="store_true", help="print the resolved config and exit")
    return p


def main(argv: list[str] | None = None, *, method: str | None = None) -> int:
    """Parse, prepare and run; returns the exit status."""
    from pipelines.methods import get_method

    argv = list(sys.argv[1:] if argv is None else argv)
    if method is None:  # --method first, then the method's own variants
        method = parser_for(None).parse_known_args(argv)[0].method
    args = parser_for(method).parse_args(argv)
    spec = get_method(args.method)
    job = resolve_paths(resolve_config(args))
    if args.print_config:
        print(json.dumps(to_dict(job), indent=2))
        return 0
    from pipelines.cluster import init_ray, job_package_warning
    from pipelines.prep.ready import ensure_phase_data
    from pipelines.train.phases import run_phases

    phases = spec.schedule(job, args.stage)  # an impossible config is refused before data is touched
    if warning := job_package_warning(job.storage_path):
        print(warning, flush=True)
    init_ray()
    ensure_phase_data(spec, job, phases)
    storage.makedirs(job.storage_path)
    save_config(job, storage.join(job.storage_path, f"{job.run_name}.config.yaml"))
    done = run_phases(spec, job, stage=args.stage)
    print(f"\n{'phase':<16} {'registered model':<28} {'version':>7}  alias")
    for row in done:
        print(f"{row['phase']:<16} {str(row['model']):<28} {str(row['version']):>7}  {row['alias']}")
    if spec.finish is not None and args.stage is None:
        spec.finish(job, done)
    return 0
