"""Sweep any registered method with Ray Tune: ``python jobs/tune.py --method supervised --num-samples 8``.

Through Ray: ``ray job submit --working-dir . -- python jobs/tune.py --method coclr --variant debug
--num-samples 4``. Each trial trains the method's schedule on Ray Train exactly as
``jobs/train.py`` does; ASHA (default) or HyperBand stop weak trials on the method's
metric; MLflow gets one parent run with a child run per trial; the best finished trial's
encoders get the registry alias ``best`` if they beat its holder on the model's pinned evaluation
suite (``--no-gate``: on the sweep's metric; :mod:`pipelines.tune.gate`). ``--scheduler pbt`` trains one phase per trial in the
trial's own process and copies top trials' checkpoints into weak ones (``--stage`` for a
multi-phase method). A killed sweep continues with the same command
and ``--resume``. See :mod:`pipelines.tune.sweep` and ``docs/tuning.md``.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from pipelines.config import ConfigError  # noqa: E402
from pipelines.tune.search import SEARCHES  # noqa: E402
from pipelines.tune.sweep import SweepConfig, run_sweep  # noqa: E402


def parse_args(argv: list[str] | None = None) -> SweepConfig:
    from pipelines.methods import METHODS

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--method", required=True, choices=sorted(METHODS))
    p.add_argument("--variant", default="debug", help="the method's config variant (default: debug)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override of the base config, as jobs/train.py (repeatable)")
    p.add_argument("--space", action="append", default=[], metavar="KEY=DOMAIN|NAME",
                   help="searched key, e.g. optim.lr='loguniform(1e-4,1e-2)', method.topk='choice(1,5,50)', "
                        "uniform(a,b), randint(a,b), grid(v1,v2); adds to or replaces the method's default space. "
                        "A NAME (e.g. ablation) starts from that space of the method instead of its default")
    p.add_argument("--space-file", help="YAML {key: domain} added like --space")
    p.add_argument("--no-default-space", dest="default_space", action="store_false",
                   help="search only the --space / --space-file keys")
    p.add_argument("--num-samples", type=int, default=4)
    p.add_argument("--scheduler", default="asha",
                   help="asha (default), hyperband, or pbt (one phase, one worker per trial; see docs/tuning.md)")
    p.add_argument("--search", default="random", choices=SEARCHES,
                   help="random (default: Tune's random and grid search) or optuna (TPE on the trials' metric; "
                        "no grid domains, not with pbt)")
    p.add_argument("--metric", help="epoch-end metric to rank trials on (default: the method's)")
    p.add_argument("--mode", choices=("max", "min"))
    p.add_argument("--grace-period", type=int, default=1, help="epochs before ASHA may stop a trial")
    p.add_argument("--reduction-factor", type=float, default=2.0)
    p.add_argument("--perturbation-interval", type=int, default=1, help="PBT: epochs between exploit decisions")
    p.add_argument("--quantile-fraction", type=float, default=0.25,
                   help="PBT: share of trials that copy a top trial (and that are copied)")
    p.add_argument("--pbt-synch", action="store_true",
                   help="PBT: every trial pauses at each perturbation point until all have reached it")
    p.add_argument("--max-concurrent", type=int, help="trials at once (default: cluster CPUs / CPUs per trial)")
    p.add_argument("--data-cpus", type=float, default=1.0, help="Ray Data CPU limit per trial")
    p.add_argument("--stage", help="train only this phase of the schedule")
    p.add_argument("--name", help="sweep name (default: <run_name>-sweep)")
    p.add_argument("--seed", type=int, help="seed of the search (random or optuna)")
    p.add_argument("--max-failures", type=int, default=1, help="restarts of a failed trial")
    p.add_argument("--keep-checkpoints", dest="prune", action="store_false",
                   help="keep every trial's checkpoints (default: stopped trials' are deleted after the sweep, "
                        "finished trials keep their latest)")
    p.add_argument("--no-clip-cache", dest="clip_cache", action="store_false",
                   help="every trial decodes its own clips (default: the driver decodes the dataset once into "
                        "a cache that every trial reads, pipelines/tune/cache.py)")
    p.add_argument("--clip-cache-dir", help="folder of the clip cache, on a disk every decode worker sees "
                                           "(default: <storage_path>/<sweep>.clip-cache, deleted after the sweep; "
                                           "a folder given here is kept for later sweeps)")
    p.add_argument("--clip-cache-gb", type=float, default=8.0, help="size limit of the clip cache (default 8)")
    p.add_argument("--gate-manifest", metavar="URL",
                   help="manifest of the evaluation suite gating @best (default: the sweep's data manifest)")
    p.add_argument("--gate-protocol", choices=("retrieval", "linear"),
                   help="the suite's protocol: retrieval (R@1) or linear (top1); default: the method's")
    p.add_argument("--no-gate", dest="gate", action="store_false",
                   help="move @best on the sweep's own metric, without the evaluation suite")
    p.add_argument("--repin-suite", action="store_true",
                   help="replace the suite pinned on the registered model by this sweep's (after a manifest change)")
    p.add_argument("--resume", action="store_true", help="continue the stored sweep of that name")
    args = vars(p.parse_args(argv))
    for key in ("overrides", "space"):
        args[key] = tuple(args[key])
    return SweepConfig(**args)


def main(argv: list[str] | None = None) -> int:
    """Run the sweep; 0 when some trial finished and was registered as best, 1 when none did, 2 on bad settings."""
    try:
        result = run_sweep(parse_args(argv))
    except ConfigError as exc:
        print(f"tune: {exc}", file=sys.stderr)
        return 2
    return 0 if result.best is not None else 1


if __name__ == "__main__":
    sys.exit(main())
