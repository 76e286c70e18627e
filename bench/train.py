"""Training benchmark: CoCLR clips/s with the real data pipeline vs the same model fed from memory.

    python bench/train.py [--quick | --tiny] [--data DIR] [--gpu] [--set videos=96 --set epochs=4 ...]

Prints ONE JSON object on stdout (progress goes to stderr). Everything runs in this
process on an embedded Ray cluster of ``cores`` CPUs (``RAY_ADDRESS`` is ignored: the
ratios need a private cluster of known size), on synthetic UCF-101-style videos
(:mod:`pipelines.prep.synthetic`) ingested with a short GOP and given Farneback flow, i.e.
the ``make demo`` data at a smaller size. Method: CoCLR's first stage (``infonce``,
RGB) with ``CoCLRConfig.debug`` (``s3d_debug``) on the debug-size ``coclr`` recipe
(two RGB + two flow clips of 8 x 64² per sample), trained by :func:`pipelines.train.runtime.fit`
on ``workers`` in {1, 2} gloo workers of ``cpus_per_worker`` CPUs, per-worker batch
``batch_size``. For each worker count, one after another (order: memory 1, real 1,
real 2, memory 2, so that each compared pair runs back to back):

  real        ``fit`` on ``pipelines.methods.coclr._dataset``'s pipeline: decode, sampling and
              augmentation in Ray Data tasks every epoch, the epoch read from an
              epoch clock, exactly as ``jobs/coclr.py`` trains.
  memory      the same samples (epoch 0's) materialised once into the object store
              (``Dataset.materialize()`` of the same pipeline, identical uint8 columns)
              and fed to the same ``fit``: what training costs when data is free
              apart from Ray Data's block-to-tensor path.
  compute_only  the same model and step (``normalize_batch``, forward, backward, Adam)
              on uint8 tensors already in this process, one torch thread, no Ray: the
              ceiling of one worker.

Figures come from the training loop itself: every ``log_every_n_steps`` each worker
reports ``clips_per_s`` (world size x its clips / its window time; a clip is one
sample) and ``data_wait_frac`` (share of the window before each batch arrived). Ray
Train V2 keeps only the last report (``Result.metrics``) and the checkpointed ones
(``metrics_dataframe``), so the method builder installs a tap on ``ray.train.report``
in each worker that copies every report, and how long the call took, to a
:class:`ReportLog` actor (no MLflow). The loop leaves that call out of its windows
(it restarts its timer after a report), and in Ray 2.60 it is not free: each worker's report queue holds one report
and the controller drains it every ``RAY_TRAIN_HEALTH_CHECK_INTERVAL_S`` (Ray's default 2 s,
0.5 s on clusters our code starts), so a report sooner than that after the previous one blocks. Hence two views:
``*_excl_report`` as the loop measures them, and ``clips_per_s`` / ``data_wait_frac``
with the report calls added back as waiting (what training gets with this logging
cadence; ``report_frac`` is their share). The first window of each worker is the warm-up and
is dropped; the later first windows of each epoch are kept, since restarting the
pipeline per epoch is a real cost. Figures are summed over windows, then averaged
over ranks. ``ratios`` compare runs of this process only; compare ratios across
machines, not clips/s.

``data_stage_ms_per_clip`` is the pipeline's per-stage telemetry (decode, augment, Arrow ms
and KB read per clip) from the epoch reports; ``goals_met`` says whether the real
pipeline kept the loop's data wait (``data_wait_frac_excl_report``) at or below 0.15.

``--gpu``: when CUDA is available, also S3D CoCLR (full ``s3d``, 32 x 128² clips,
``gpu_batch`` per GPU) on one GPU from tensors already on the device, bf16 autocast as
in the training loop, against fp32 as the in-process baseline. Without CUDA the JSON
says that it was skipped and why.

``--set clip_cache=true``: the videos (and their flow) are decoded once into a clip cache
beside the dataset (:mod:`pipelines.data.clip_cache`) and both arms' pipelines slice it
instead of decoding; samples are bit-identical, so the ``real`` figures then show the
pipeline without decoding.

Shape legend: ``B`` batch, ``T`` frames per clip, ``S`` crop size.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import functools
import json
import logging
import math
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench import common  # noqa: E402
from bench.common import load1  # noqa: E402
from bench.train_compute import compute_only, gpu_section  # noqa: E402
from bench.train_figures import data_stages, goals, order, ratios, summarise, windows_of  # noqa: E402

import torch  # noqa: E402

from pipelines.data import recipes  # noqa: E402
from pipelines.train.loop import LoopConfig  # noqa: E402
from pipelines.train.optim import OptimConfig  # noqa: E402
from vidmodels.methods import CoCLR, CoCLRConfig  # noqa: E402

__all__ = ["compute_only", "gpu_section", "order", "summarise", "windows_of"]  # what tests use; the rest is the CLI
POLL_ENV = "RAY_TRAIN_HEALTH_CHECK_INTERVAL_S"  # how often the Train controller collects reports



@dataclasses.dataclass(frozen=True)
class BenchConfig:
    """What to measure; named variants are :func:`quick` and :func:`tiny`, edits with ``--set``."""

    variant: str = "default"
    videos: int = 96            # samples per epoch (one per video)
    frames: int = 48            # frames per synthetic video (128 x 128, GOP 8)
    batch_size: int = 8         # per worker
    epochs: int = 3
    log_every_n_steps: int = 3  # one logging window
    workers: tuple[int, ...] = (1, 2)
    cpus_per_worker: float = 0.5  # leaves the rest of the cluster to the data tasks
    queue_size: int = 128       # the demo's CoCLR queue
    report_poll_s: float | None = None  # RAY_TRAIN_HEALTH_CHECK_INTERVAL_S; None: vidray's (0.5 s, pipelines/__init__)
    compute_steps: int = 12     # compute_only: measured steps (after 2 warm-up steps)
    gpu_batch: int = 32         # --gpu: clips per GPU
    gpu_steps: int = 20
    cores: int = len(os.sched_getaffinity(0))
    seed: int = 0
    clip_cache: bool = False    # the real pipeline reads frames decoded once (pipelines.data.clip_cache)


def quick() -> BenchConfig:
    """About three minutes on 2 busy cores (four Ray Train start-ups are most of it)."""
    return dataclasses.replace(BenchConfig(), variant="quick", videos=48, frames=40, epochs=2, compute_steps=8)


def tiny() -> BenchConfig:
    """The test: 2 workers only, real and memory, fast controller polling; figures meaningless."""
    return dataclasses.replace(BenchConfig(), variant="tiny", videos=16, frames=24, batch_size=4, epochs=1,
                               log_every_n_steps=1, workers=(2,), queue_size=16, report_poll_s=0.5,
                               compute_steps=2, gpu_batch=2, gpu_steps=2)


# --------------------------------------------------------------------------- data


def prepare_data(cfg: BenchConfig, root: Path) -> str:
    """Synthetic videos -> ingest (GOP 8) -> Farneback flow; returns the dataset folder."""
    from pipelines.prep.flow import FlowConfig, run_flow
    from pipelines.prep.ingest import IngestConfig, run_ingest
    from pipelines.prep.synthetic import generate, preset

    classes = min(12, cfg.videos)  # one group: every video is in the train split
    syn = preset("demo", num_classes=classes, groups=1, clips_per_group=math.ceil(cfg.videos / classes),
                 multi_videos=0, frames=cfg.frames, seed=cfg.seed)
    generate(str(root / "src"), syn, workers=cfg.cores, progress=False)
    dst = str(root / "ucf101")
    report = run_ingest(IngestConfig(fmt="ucf101", src=str(root / "src" / "ucf101"), dst=dst, gop=8))
    flow = run_flow(FlowConfig(manifest=dst, method="farneback"))
    if report.quarantined or flow.quarantined:
        raise RuntimeError(f"lost videos: ingest {report.reasons}, flow {flow.reasons}")
    return dst


def job_for(cfg: BenchConfig, manifest_dir: str):
    """The ``debug``/``demo`` CoCLR job at this benchmark's size (stage 1, RGB)."""
    from pipelines.methods.coclr import demo
    from pipelines.methods.spec import DataConfig

    job = demo()
    return dataclasses.replace(
        job, data=DataConfig(manifest=manifest_dir, debug_size=True, seed=cfg.seed, limit=cfg.videos),
        method=CoCLRConfig.debug(queue_size=cfg.queue_size, modality="rgb", stage="infonce"),
        optim=OptimConfig(lr=1e-3, schedule="constant"),
        loop=LoopConfig(epochs=cfg.epochs, batch_size=cfg.batch_size, log_every_n_steps=cfg.log_every_n_steps,
                        max_failures=0, seed=cfg.seed))


def with_clip_cache(job, cfg: BenchConfig):
    """``job`` reading its videos from a clip cache made now beside the dataset (``--set clip_cache=true``)."""
    from pipelines.data.clip_cache import cache_dataset

    report = cache_dataset(job.data.manifest, f"{job.data.manifest.rstrip('/')}-clip-cache", split=job.data.split,
                           limit=cfg.videos, budget_bytes=2**34, progress=common.log)
    common.log(report.line())
    return dataclasses.replace(job, data=dataclasses.replace(job.data, clip_cache=report.root))


# --------------------------------------------------------------------------- report capture


class ReportLog:
    """Every ``ray.train.report`` of a run's workers, with how long each call took (a Ray actor, no CPU)."""

    def __init__(self) -> None:
        self.rows: list[dict] = []
        self.workers: list[dict] = []

    def add(self, row: dict) -> None:
        self.rows.append(row)

    def worker(self, info: dict) -> None:
        self.workers.append(info)

    def get(self) -> dict:
        return {"rows": self.rows, "workers": self.workers}


def _tap_reports(report_log) -> None:
    """Copy every ``ray.train.report`` of this worker process, and its duration, to ``report_log``.

    The loop calls ``ray.train.report`` through the module attribute, so replacing it
    in this worker process (a worker of this benchmark only) sees every report. Window
    rows are sent without waiting (~0.1 ms, inside the next window); an epoch report
    waits for delivery, so nothing is lost when the worker exits after the last one.
    """
    import ray
    import ray.train

    original = getattr(ray.train.report, "__wrapped__", ray.train.report)
    rank = ray.train.get_context().get_world_rank()

    @functools.wraps(original)
    def report(metrics, *args, **kwargs):
        start = time.perf_counter()
        out = original(metrics, *args, **kwargs)
        row = {"rank": rank, "report_s": time.perf_counter() - start,
               **{k: v for k, v in metrics.items() if isinstance(v, (int, float))}}
        ref = report_log.add.remote(row)
        if "clips_per_s" not in metrics:
            ray.get(ref)
        return out

    ray.train.report = report
    ray.get(report_log.worker.remote({"rank": rank, "torch_threads": torch.get_num_threads(),
                                      "omp_num_threads": os.environ.get("OMP_NUM_THREADS")}))


def build_tapped(cfg: CoCLRConfig, report_log) -> CoCLR:
    """A CoCLR method for the task's ``build_method``, with the report tap installed first."""
    _tap_reports(report_log)
    return CoCLR(cfg)


# --------------------------------------------------------------------------- measurements


def measure(cfg: BenchConfig, job, dataset, *, workers: int, name: str, storage: str,
            clock, span: bool = False) -> dict[str, Any]:
    """One ``fit`` run; its steady-state figures, wall time and the workers' torch threads."""
    import ray

    from pipelines.config import ScalingConfig
    from pipelines.data import recipes as recipes_mod
    from pipelines.train.loop import TrainTask
    from pipelines.train.runtime import fit

    report_log = ray.remote(num_cpus=0)(ReportLog).remote()
    steps = cfg.videos // (cfg.batch_size * workers)
    before, start = load1(), time.perf_counter()
    rcfg = recipes_mod.recipe("coclr", debug_size=job.data.debug_size, overrides=job.data.recipe_overrides)
    task = TrainTask(build_method=functools.partial(build_tapped, job.method, report_log),
                     video_columns=rcfg.video_columns(), optim=job.optim, loop=job.loop, steps_per_epoch=steps,
                     name=name, epoch_clock=clock, epochs_span=span)
    result = fit(task, datasets={"train": dataset}, run_name=name, storage_path=storage,
                 scaling=ScalingConfig(num_workers=workers, use_gpu=False, cpus_per_worker=cfg.cpus_per_worker))
    wall = time.perf_counter() - start
    if result.error:
        raise result.error
    got = ray.get(report_log.get.remote())
    ray.kill(report_log)
    figures = summarise(got["rows"], world=workers, batch_size=cfg.batch_size, steps_per_epoch=steps)
    last = result.metrics
    return {**figures, "data_stage_ms_per_clip": data_stages(got["rows"]), "workers": workers,
            "steps_per_epoch": steps, "fit_wall_s": round(wall, 1),
            "load_before": before, "load_after": load1(), "final_epoch_loss": round(last.get("epoch_loss", 0.0), 4),
            "worker_threads": sorted(got["workers"], key=lambda w: w["rank"])}


# --------------------------------------------------------------------------- the run


def training_runs(cfg: BenchConfig, manifest_dir: str, storage: str, phase) -> dict[str, dict]:
    """The ``fit`` runs of :func:`order` on one pipeline and its materialised copy."""
    from pipelines.data.clock import epoch_clock
    from pipelines.methods.coclr import SPEC
    from pipelines.train.phases import _pipeline

    job = job_for(cfg, manifest_dir)
    if cfg.clip_cache:
        job = phase("clip_cache", lambda: with_clip_cache(job, cfg))
    rcfg = SPEC.recipe(job, SPEC.phases(job)[0])
    memory = phase("materialise", lambda: _pipeline(job.data, rcfg, epoch=0).dataset.materialize())  # epoch 0's samples
    if memory.count() != cfg.videos:
        raise RuntimeError(f"materialised {memory.count()} samples, expected {cfg.videos}")
    out = {}
    for kind, workers in order(cfg.workers):
        name = f"{kind}_{workers}w"
        if kind == "memory":
            out[name] = phase(name, lambda: measure(cfg, job, memory, workers=workers, name=name, storage=storage,
                                                    clock=None))
            continue
        clock = epoch_clock(f"vidray-bench-train-epoch-{os.getpid()}-{workers}")
        try:
            pipe = _pipeline(job.data, rcfg, epoch=clock, epochs=job.loop.epochs, workers=workers)  # as run_phase
            out[name] = phase(name, lambda: measure(cfg, job, pipe.dataset, workers=workers, name=name,
                                                    storage=storage, clock=clock,
                                                    span=bool(pipe.span_epochs)))
        finally:
            clock.close()
    return out


def run(cfg: BenchConfig, work: Path, data: Path, gpu: bool) -> dict[str, Any]:
    import ray

    from pipelines.cluster import init_ray

    phase = common.PhaseTimer()

    if cfg.report_poll_s is not None:  # read by the Train controller, a process of the cluster started next
        os.environ[POLL_ENV] = str(cfg.report_poll_s)
    init_ray(num_cpus=cfg.cores)
    ray.data.DataContext.get_current().enable_progress_bars = False
    logging.getLogger("ray.data").setLevel(logging.WARNING)
    manifest_dir = phase("generate+ingest+flow", lambda: prepare_data(cfg, data))
    job = job_for(cfg, manifest_dir)
    rcfg = recipes.recipe("coclr", debug_size=True)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as one Ray Train worker of < 1 CPU gets (OMP_NUM_THREADS=1)
    try:
        compute = phase("compute_only", lambda: compute_only(job.method, rcfg, batch=cfg.batch_size,
                                                             steps=cfg.compute_steps, device=torch.device("cpu"),
                                                             bf16=False))
    finally:
        torch.set_num_threads(threads)
    runs = training_runs(cfg, manifest_dir, str(work / "runs"), phase)
    resources = ray.cluster_resources()
    ray.shutdown()
    gpu_figures = gpu_section(cfg, gpu)
    return {
        "clips_per_s": {name: r["clips_per_s"] for name, r in runs.items()},
        "data_wait_frac": {name: r["data_wait_frac"] for name, r in runs.items()},
        "clips_per_s_excl_report": {name: r["clips_per_s_excl_report"] for name, r in runs.items()},
        "data_wait_frac_excl_report": {name: r["data_wait_frac_excl_report"] for name, r in runs.items()},
        "report_frac": {name: r["report_frac"] for name, r in runs.items()},
        "compute_only_clips_per_s_1_thread": compute["clips_per_s"],
        "data_stage_ms_per_clip": {name: r["data_stage_ms_per_clip"] for name, r in runs.items()},
        "ratios": ratios(runs, compute["clips_per_s"]), "goals_met": goals(runs),
        "runs": runs, "compute_only": compute, "gpu": gpu_figures, "phases": phase.phases,
        "config": {**dataclasses.asdict(cfg), "order": [f"{k}_{w}w" for k, w in order(cfg.workers)],
                   "method": dataclasses.asdict(job.method), "recipe": "coclr (debug size)",
                   "clip_shape_TSS3": [rcfg.clip_len, rcfg.crop_size, rcfg.crop_size, 3],
                   "clip": "one sample = rgb_0, rgb_1 (trained) + flow_0, flow_1 (decoded, not used in this stage)",
                   "ray_cluster": "embedded (address='local')", "ray_cluster_cpus": resources.get("CPU"),
                   "decode_task_cpus": 1.0, "windows_skipped_per_rank": 1,
                   "ray_train_report_poll_s": float(os.environ.get(POLL_ENV, 2.0))}}


def machine_info() -> dict[str, Any]:
    return common.machine_info()


def parse_config(argv: list[str] | None) -> tuple[BenchConfig, str | None, bool]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    size = parser.add_mutually_exclusive_group()
    size.add_argument("--quick", action="store_true", help="about two minutes: fewer videos and epochs")
    size.add_argument("--tiny", action="store_true", help="smallest run, for the test (figures meaningless)")
    parser.add_argument("--data", help="keep the generated data in DIR (reused when run again)")
    parser.add_argument("--gpu", action="store_true", help="also S3D CoCLR clips/s per GPU (needs CUDA)")
    parser.add_argument("--set", action="append", default=[], metavar="FIELD=VALUE",
                        help="override a BenchConfig field, e.g. --set videos=128 (repeatable)")
    args = parser.parse_args(argv)
    base = tiny() if args.tiny else quick() if args.quick else BenchConfig()
    cfg = recipes.apply_overrides(base, args.set)
    for w in cfg.workers:
        windows = cfg.epochs * (cfg.videos // (w * cfg.batch_size) // cfg.log_every_n_steps)
        if windows < 2:
            parser.error(f"{w} workers get {windows} logging windows each; at least 2 are needed (the first is "
                         f"the warm-up): raise videos or epochs, or lower batch_size or log_every_n_steps")
    return cfg, args.data, args.gpu


def main(argv: list[str] | None = None) -> dict[str, Any]:
    cfg, data_dir, gpu = parse_config(argv)
    os.environ.pop("RAY_ADDRESS", None)  # never join the lead's `ray start` cluster: see the docstring
    if __name__ != "__main__":  # imported (e.g. by a test): Ray workers cannot import bench/ by name
        import cloudpickle

        cloudpickle.register_pickle_by_value(sys.modules[__name__])
    started, load_start = time.time(), load1()
    machine = machine_info()
    # Ray forwards worker stdout to ours; stdout carries only the JSON object.
    with tempfile.TemporaryDirectory(prefix="vidray-bench-train-") as tmp, contextlib.redirect_stdout(sys.stderr):
        report = run(cfg, Path(tmp), Path(data_dir or Path(tmp) / "data"), gpu)
    command = " ".join(["python", "bench/train.py", *(sys.argv[1:] if argv is None else argv)])
    report = common.envelope("bench/train.py", command, cfg.variant, report, machine=machine,
                             load_start=load_start, started=started)
    print(json.dumps(report))
    return report


if __name__ == "__main__":
    main()
