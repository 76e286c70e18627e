"""Clip-cache benchmark: the same sweep with every trial decoding, then with the shared cache.

    python bench/tune_cache.py [--trials 4] [--epochs 2] [--concurrent 1] [--data DIR]

Prints ONE JSON object on stdout (progress on stderr). As ``bench/tune.py``: an embedded Ray
cluster of ``cores`` CPUs, a private MLflow store, the ``tiny`` synthetic set (24 frames at
128², H.264), ``supervised`` at debug size (8 videos, batch 4, one worker), ``trials`` grid
points of the learning rate that no scheduler stops. Two arms, in this order:

  decode   ``jobs/tune.py --no-clip-cache``: each trial's decode tasks decode their clips;
  cache    the default: the driver decodes the 8 videos once into the sweep's clip cache
           (:mod:`pipelines.tune.cache`, inside this arm's wall and CPU time) and every
           trial's decode tasks slice it.

Per arm: ``wall_s``, ``cpu_s`` (this process tree: driver, Ray daemons and workers,
``bench/cpu.py``) and, from the trials' MLflow runs, ``decode_ms_per_clip`` (the
``epoch/epoch_data_decode_ms`` metric: wall time of a sample's reads in its decode task) and
``augment_ms_per_clip``. Ratios are cache / decode in this one run. At debug size the trials'
fixed costs (Ray Train start-up, MLflow, checkpoints) dwarf decoding, so the wall ratio is
close to 1 by construction; ``decode_ms_ratio`` is the figure that scales with the dataset.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import pipelines  # noqa: E402,F401 - sets Ray's auth mode before machine_info imports ray
from bench.common import log  # noqa: E402
from bench.cpu import CpuMeter  # noqa: E402
from bench.tune import _sets, run_private  # noqa: E402


def sweep_arm(sets: list[str], name: str, trials: int, epochs: int, concurrent: int, cache: bool) -> dict[str, Any]:
    """One sweep (no trial stopped): its wall and CPU seconds and its trials' per-clip stage times."""
    from pipelines.tune.sweep import SweepConfig, run_sweep

    lrs = ", ".join(f"{1e-3 * (1 + i):g}" for i in range(trials))
    cfg = SweepConfig(method="supervised", overrides=tuple(sets), default_space=False,
                      space=(f"optim.lr=grid({lrs})",), num_samples=1, metric="epoch_loss", mode="min",
                      grace_period=epochs, max_concurrent=concurrent, name=name, clip_cache=cache)
    start = time.perf_counter()
    with CpuMeter() as meter:
        result = run_sweep(cfg)
    wall = time.perf_counter() - start
    stages = trial_stage_ms(name)
    return {"wall_s": round(wall, 1), "cpu_s": round(meter.seconds("ray"), 1),
            "trials_finished": sum(r["status"] == "finished" for r in result.rows), **stages}


def trial_stage_ms(sweep: str) -> dict[str, Any]:
    """Mean over the trials' training runs of their last epoch's decode and augment ms per clip."""
    from pipelines.tune.tracking import client

    exp = client().get_experiment_by_name("supervised")
    runs = [r for r in client().search_runs([exp.experiment_id], filter_string=f"tags.vidray_run_name LIKE '{sweep}.%'")
            if "epoch/epoch_data_decode_ms" in r.data.metrics]
    mean = lambda key: round(sum(r.data.metrics[key] for r in runs) / max(1, len(runs)), 3)  # noqa: E731
    return {"runs_with_telemetry": len(runs), "decode_ms_per_clip": mean("epoch/epoch_data_decode_ms"),
            "augment_ms_per_clip": mean("epoch/epoch_data_augment_ms")}


def measure(args: argparse.Namespace, work: Path) -> dict[str, Any]:
    from pipelines.cluster import init_ray
    from pipelines.methods.spec import DataConfig
    from pipelines.prep.ready import ensure_dataset

    data = Path(args.data) if args.data else work / "data"
    sets = _sets(data, work / "runs", args.epochs)
    init_ray(num_cpus=args.cores)
    ensure_dataset(DataConfig(manifest=str(data / "debug" / "ucf101"), synthetic="tiny"), [])
    arms = {}
    for arm, cache in (("decode", False), ("cache", True)):
        log(f"arm {arm}: {args.trials} trials")
        arms[arm] = sweep_arm(sets, f"bench-cache-{arm}", args.trials, args.epochs, args.concurrent, cache)
    ratio = lambda key: round(arms["cache"][key] / arms["decode"][key], 3) if arms["decode"][key] else None  # noqa: E731
    return {"config": {**vars(args), "method": "supervised/debug", "videos": 8, "batch_size": 4, "workers": 1},
            "arms": arms, "wall_ratio": ratio("wall_s"), "cpu_ratio": ratio("cpu_s"),
            "decode_ms_ratio": ratio("decode_ms_per_clip")}


def main(argv: list[str] | None = None) -> dict[str, Any]:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--trials", type=int, default=4)
    p.add_argument("--epochs", type=int, default=2)
    p.add_argument("--concurrent", type=int, default=1, help="trials at a time")
    p.add_argument("--data", help="folder holding (or to hold) debug/ucf101; default: a temporary one")
    p.add_argument("--cores", type=int, default=len(os.sched_getaffinity(0)))
    return run_private(p.parse_args(argv), argv, measure, "bench/tune_cache.py")

if __name__ == "__main__":
    main()
