"""Sweep benchmark: trials/hour of ``jobs/tune.py`` and what Tune adds to a trial over a single run.

    python bench/tune.py [--trials 3] [--epochs 2] [--data DIR]

Prints ONE JSON object on stdout (progress goes to stderr). Everything runs in this
process on an embedded Ray cluster of ``cores`` CPUs (``RAY_ADDRESS`` is ignored) and a
private MLflow store (a temporary ``VIDRAY_HOME``), on the ``tiny`` synthetic set that
the debug variants make (rendered under ``--data`` when missing). The method is
``supervised`` at debug size (``s3d_debug``, 8 x 64² clips, 8 videos, batch 4, one worker
of 0.5 CPU, no per-epoch validation), ``epochs`` epochs, in this order:

  single    :func:`pipelines.train.phases.run_phases` called here: what ``jobs/train.py``
            does for one run (preview, Ray Train, export and registration, MLflow).
  sweep     :func:`pipelines.tune.sweep.run_sweep` with ``trials`` grid points of the
            learning rate (all sane), one trial at a time, ASHA with its grace period
            equal to the epochs, so no trial is stopped and every trial does exactly
            the single run's work; the driver's own steps (dataset check, parent run,
            results, ``@best``) are inside its wall time.

The single run is measured twice, before the sweep (``single_run_cold_s``: this process's
first Ray Train run, imports and worker start-up included) and after it (``single_run_s``,
the reference). Reported: ``trials_per_hour`` (trials / sweep wall time),
``tune_overhead_per_trial_s`` = sweep wall / trials - single run and its ratio, split into
``overhead_inside_trial_s`` (a trial's MLflow job run, i.e. ``run_phases`` inside the
trial, minus the single run's: report forwarding, the Ray Data cap) and
``overhead_outside_trial_s`` (the rest: trial actor start-up and imports, Tune's
scheduling and bookkeeping, the driver's dataset check, parent run, results and
``@best``). Debug sizes: fixed costs dominate, so the ratio is an upper bound for real
runs, whose epochs are minutes. On a shared machine compare figures of one run only.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import pipelines  # noqa: E402,F401 - sets Ray's auth mode before machine_info imports ray
from bench import common  # noqa: E402
from bench.common import PhaseTimer, load1, log  # noqa: E402


def _sets(data: Path, storage: Path, epochs: int) -> list[str]:
    return [f"data.manifest={data / 'debug' / 'ucf101'}", f"storage_path={storage}", f"loop.epochs={epochs}",
            "scaling.num_workers=1", "data.limit=8", "val_split=none", "model_name=bench-tune"]


def single_run(sets: list[str], run_name: str) -> float:
    """Seconds of one ``run_phases`` of the debug job, as ``jobs/train.py`` runs it."""
    from pipelines.config import apply_overrides
    from pipelines.methods import get_method
    from pipelines.train.entry import resolve_paths
    from pipelines.train.phases import run_phases

    spec = get_method("supervised")
    job = resolve_paths(apply_overrides(spec.variants["debug"](), [*sets, f"run_name={run_name}"]))
    start = time.perf_counter()
    run_phases(spec, job)
    return time.perf_counter() - start


def job_run_seconds(run_name: str) -> float:
    """Duration of the MLflow job run ``run_name`` (start to end of ``run_phases``' own run)."""
    from pipelines.tune.tracking import client

    exp = client().get_experiment_by_name("supervised")
    (run,) = client().search_runs([exp.experiment_id], filter_string=f"attributes.run_name = '{run_name}'")
    return (run.info.end_time - run.info.start_time) / 1000


def sweep(sets: list[str], trials: int, epochs: int) -> tuple[float, Any]:
    """Seconds and result of a ``trials``-point sweep in which no trial is stopped."""
    from pipelines.tune.sweep import SweepConfig, run_sweep

    lrs = ", ".join(f"{1e-3 * (1 + i):g}" for i in range(trials))
    cfg = SweepConfig(method="supervised", overrides=tuple(sets), default_space=False,
                      space=(f"optim.lr=grid({lrs})",), num_samples=1, metric="epoch_loss", mode="min",
                      grace_period=epochs, max_concurrent=1, name="bench-sweep")
    start = time.perf_counter()
    result = run_sweep(cfg)
    return time.perf_counter() - start, result


def trial_run_seconds(name: str) -> list[float]:
    """Duration of each trial's MLflow job run (``run_phases`` inside the trial)."""
    from pipelines.tune.tracking import trial_runs

    return [(r.info.end_time - r.info.start_time) / 1000 for r in trial_runs("supervised", name)
            if r.info.end_time]


def measure(args: argparse.Namespace, work: Path) -> dict[str, Any]:
    """Cold single run, the sweep, then the warm single run that the sweep is compared with."""
    from pipelines.cluster import init_ray
    from pipelines.methods.spec import DataConfig
    from pipelines.prep.ready import ensure_dataset

    data = Path(args.data) if args.data else work / "data"
    sets = _sets(data, work / "runs", args.epochs)
    timer = PhaseTimer()
    init_ray(num_cpus=args.cores)
    timer("dataset", lambda: ensure_dataset(DataConfig(manifest=str(data / "debug" / "ucf101"), synthetic="tiny"),
                                            []))
    cold_s = timer("single_cold", lambda: single_run(sets, "bench-single-cold"))
    sweep_s, result = timer("sweep", lambda: sweep(sets, args.trials, args.epochs))
    single_s = timer("single", lambda: single_run(sets, "bench-single"))
    trial_runs = trial_run_seconds(result.name)
    per_trial, in_trial = sweep_s / args.trials, sum(trial_runs) / max(1, len(trial_runs))
    single_job = job_run_seconds("bench-single")
    return {"config": {**vars(args), "method": "supervised/debug", "videos": 8, "batch_size": 4, "workers": 1},
            "single_run_cold_s": round(cold_s, 1), "single_run_s": round(single_s, 1),
            "single_job_run_s": round(single_job, 1), "sweep_s": round(sweep_s, 1), "trials": len(result.rows),
            "trials_finished": sum(r["status"] == "finished" for r in result.rows),
            "trials_per_hour": round(3600 * args.trials / sweep_s, 1),
            "trial_job_run_s": [round(x, 1) for x in trial_runs], "sweep_s_per_trial": round(per_trial, 1),
            "tune_overhead_per_trial_s": round(per_trial - single_s, 1),
            "tune_overhead_ratio": round(per_trial / single_s, 2),
            "overhead_inside_trial_s": round(in_trial - single_job, 1),
            "overhead_outside_trial_s": round(per_trial - in_trial, 1),
            "phases": timer.phases}


@contextlib.contextmanager
def _stdout_to_stderr():
    """Ray's worker logs and Tune's status tables go to file descriptor 1: send them to 2, so
    stdout carries the JSON object only."""
    sys.stdout.flush()
    saved = os.dup(1)
    os.dup2(2, 1)
    try:
        yield
    finally:
        sys.stdout.flush()
        os.dup2(saved, 1)
        os.close(saved)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--trials", type=int, default=3)
    p.add_argument("--epochs", type=int, default=2)
    p.add_argument("--data", help="folder holding (or to hold) debug/ucf101; default: a temporary one")
    p.add_argument("--cores", type=int, default=len(os.sched_getaffinity(0)))
    return run_private(p.parse_args(argv), argv, measure, "bench/tune.py")


def run_private(args: argparse.Namespace, argv: list[str] | None, measure_fn, name: str) -> dict[str, Any]:
    """``measure_fn(args, work)`` on an embedded cluster (``RAY_ADDRESS`` ignored) with a private MLflow
    store in a temporary ``work`` folder, Ray's prints on stderr; prints and returns the JSON envelope."""
    os.environ.pop("RAY_ADDRESS", None)
    machine, load_start, started = common.machine_info(), load1(), time.time()
    with tempfile.TemporaryDirectory(prefix="vidray-bench-") as work:
        os.environ["VIDRAY_HOME"] = str(Path(work) / "home")  # a private MLflow store
        os.environ.pop("MLFLOW_TRACKING_URI", None)
        with _stdout_to_stderr():
            report = measure_fn(args, Path(work))
    command = f"python {name} " + " ".join(argv if argv is not None else sys.argv[1:])
    out = common.envelope(name, command.strip(), "default", report, machine=machine,
                          load_start=load_start, started=started)
    print(json.dumps(out, indent=2))
    log(f"done in {out['wall_s']} s")
    return out


if __name__ == "__main__":
    main()
