"""Where Ray's CPU per clip goes beyond decode + augment: the same samples up a ladder of five ways.

    python bench/ray_overhead.py [--quick | --tiny] [--data DIR] [--set epochs=6 ...]

Prints ONE JSON object on stdout (progress on stderr). It takes ``bench/pipeline.py``'s
configuration, data and samples (``BenchConfig``, the ``classification`` recipe, epochs
``1..epochs`` after an untimed warm-up) and makes them five ways, each adding one thing
to the one before:

  pool_discard       whole samples in a spawn process pool, each dropped when made
                     (``bench/pipeline.py``'s ``decode_augment``).
  pool_keep_block    the same, but a task's samples are kept and stacked into blocks of
                     the pipeline's rows per task, as a decode task must (memory held).
  ray_task_block     ``pool_keep_block`` in plain Ray tasks with the pipeline's runtime env
                     (a Ray worker process instead of a pool process).
  ray_task_stage     the pipeline's own decode stage (``tasks.sample_stage``: the ledger calls,
                     guarded reads, telemetry columns, the Arrow block) on the same blocks of
                     item rows, in plain Ray tasks returning only the row count.
  ray_data_refs      the Ray Data pipeline (``RayRunner``: built once, one execution for all
                     epochs), the driver only counting the blocks' rows (Ray Data's
                     executor, its tasks and the object store; nothing fetched).
  ray_data_batches   the same, the driver taking every batch with ``iter_torch_batches`` by
                     epoch (``bench/pipeline.py``'s ``ray``).

For each: clips/s and CPU ms per clip of the process tree (:mod:`bench.cpu`: the driver and
the pool, or the driver and the bench's own Ray cluster), the median of ``rounds`` rounds
run in rotated order, and ``step_ms_per_clip``, the CPU each step adds. Figures are
comparable only within one run; ``cpu_s_by_process`` of the last round names the processes.
"""

from __future__ import annotations

import dataclasses
import statistics
import sys
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.common import log  # noqa: E402
from bench.pipeline import bench_main, prepare_data, start_ray, timed  # noqa: E402
from bench.pipeline_loaders import ClipDataset, RayRunner, SampleChunk, WorkerPool, items_of  # noqa: E402
from pipelines.data import recipes  # noqa: E402
from pipelines.data.tasks import epoch_order  # noqa: E402

RUNGS = ("pool_discard", "pool_keep_block", "ray_task_block", "ray_task_stage", "ray_data_refs", "ray_data_batches")
GROUP = {"pool_discard": "spawn", "pool_keep_block": "spawn"}  # the rest: "ray"
STEPS = {"pool_keep_block": "keeping and stacking each block's samples",
         "ray_task_block": "a Ray worker process instead of a pool process",
         "ray_task_stage": "the pipeline's stage code (ledger, guarded reads, telemetry, Arrow block)",
         "ray_data_refs": "Ray Data's executor and its task and object-store path",
         "ray_data_batches": "the driver fetching every batch"}


@dataclasses.dataclass(frozen=True)
class BlockChunk:
    """A task's samples kept and stacked per block of ``rows`` (then dropped); returns the count."""

    dataset: ClipDataset
    rows: int

    def __call__(self, keys: list[tuple[int, int]]) -> int:
        for start in range(0, len(keys), self.rows):
            samples = [self.dataset[k] for k in keys[start:start + self.rows]]
            block = {c: np.stack([s[c] for s in samples]) for c in samples[0]}
            del samples, block
        return len(keys)


def _ray_task(chunk: BlockChunk, keys: list[tuple[int, int]]) -> int:
    from pipelines.data.workers import init_decode_worker

    init_decode_worker()
    return chunk(keys)


def _stage_task(rows: list[dict], epoch: int, kwargs: dict) -> int:
    from pipelines.data.tasks import sample_stage

    batch = {k: np.array([r[k] for r in rows], dtype=object) for k in rows[0]}
    return sample_stage(batch, epoch=epoch, **kwargs).num_rows


def _runs(cfg, manifest_dir: str, rcfg: recipes.RecipeConfig):
    """``({rung: fn(epochs) -> clips}, closers, the Ray runner)``."""
    import ray

    from pipelines.data.workers import ray_runtime_env

    items = items_of(manifest_dir, rcfg, cfg.videos)
    runner = RayRunner(cfg, manifest_dir, rcfg, cfg.epochs)
    pool, dataset = WorkerPool(cfg.cores), ClipDataset(items, rcfg, cfg.seed, cfg.backend)
    block = BlockChunk(dataset, runner.rows_per_task)
    task = ray.remote(num_cpus=1, runtime_env=ray_runtime_env())(_ray_task)
    stage_task = ray.remote(num_cpus=1, runtime_env=ray_runtime_env())(_stage_task)
    stage_kwargs = ray.put(dict(cfg=rcfg, seed=cfg.seed, num_classes=runner.pipe.num_classes, ledger=runner.pipe.ledger,
                                run=runner.pipe.run, options=runner.options, drop=recipes.string_columns(rcfg)))

    def keys(epochs) -> list[tuple[int, int]]:
        return [(e, int(i)) for e in epochs for i in epoch_order(len(items), cfg.seed, e, rcfg.shuffle)]

    def tasks(epochs) -> list[list[tuple[int, int]]]:  # blocks of consecutive samples, as the pipeline's
        ks = keys(epochs)
        return [ks[i:i + block.rows] for i in range(0, len(ks), block.rows)]

    def stage(epochs) -> int:  # the same blocks of rows in the same order, one epoch at a time
        return sum(ray.get([stage_task.remote([items[k[1]] for k in t], t[0][0], stage_kwargs)
                            for e in epochs for t in tasks([e])]))

    def refs(epochs) -> int:
        if list(epochs) == [0]:
            return runner.run([0])
        runner._set_epoch(min(epochs))
        return sum(bundle.num_rows() for bundle in runner.pipe.dataset.iter_internal_ref_bundles())

    block_ref = ray.put(block)
    runs = {"pool_discard": lambda es: int(pool.run(SampleChunk(dataset), keys(es))[0]),
            "pool_keep_block": lambda es: sum(pool.pool.imap_unordered(block, tasks(es))),
            "ray_task_block": lambda es: sum(ray.get([task.remote(block_ref, t) for t in tasks(es)])),
            "ray_task_stage": stage, "ray_data_refs": refs, "ray_data_batches": runner.run}
    return runs, (pool.close, runner.close), runner


def ladder(cfg, manifest_dir: str, rcfg: recipes.RecipeConfig) -> dict[str, Any]:
    runs, closers, runner = _runs(cfg, manifest_dir, rcfg)
    measured, detail = range(1, cfg.epochs + 1), {name: [] for name in RUNGS}
    expected = cfg.epochs * cfg.videos
    try:
        for name in RUNGS:
            log(f"warm-up {name}")
            runs[name]([0])
        for r in range(cfg.rounds):
            for name in RUNGS[r % len(RUNGS):] + RUNGS[:r % len(RUNGS)]:
                log(f"round {r + 1}/{cfg.rounds} {name}")
                detail[name].append(timed(lambda: runs[name](measured), GROUP.get(name, "ray")))
                if detail[name][-1]["clips"] != expected:
                    raise RuntimeError(f"{name} made {detail[name][-1]['clips']} clips, not {expected}")
                log(f"  {detail[name][-1]}")
    finally:
        for close in closers:
            close()
    median = {key: {n: round(statistics.median(d[key] for d in detail[n]), 2) for n in RUNGS}
              for key in ("clips_per_s", "cpu_ms_per_clip")}
    cpu = median["cpu_ms_per_clip"]
    steps = {f"{name}: {what}": round(cpu[name] - cpu[RUNGS[RUNGS.index(name) - 1]], 2)
             for name, what in STEPS.items()}
    return {**median, "step_ms_per_clip": steps,
            "ray_data_cpu_over_pool_discard": round(cpu["ray_data_batches"] / cpu["pool_discard"], 3),
            "cpu_s_by_process": {n: detail[n][-1]["cpu_s_by_process"] for n in RUNGS},
            "rounds_detail": {n: [{k: d[k] for k in ("clips_per_s", "cpu_ms_per_clip", "load_before", "load_after")}
                                  for d in detail[n]] for n in RUNGS},
            "rows_per_task": runner.rows_per_task, "clips_per_measurement": expected}


def run(cfg, root: Path) -> dict[str, Any]:
    import ray

    start_ray(cfg)
    try:
        data = prepare_data(cfg, root)
        rcfg = recipes.recipe("classification", overrides=[f"clip_len={cfg.clip_len}",
                                                           f"augment.out_size={cfg.crop}"])
        report = ladder(cfg, data["transcoded"], rcfg)
    finally:
        ray.shutdown()
    return {**report, "config": {**dataclasses.asdict(cfg), "recipe": "classification"}}


def main(argv: list[str] | None = None) -> dict[str, Any]:
    return bench_main("bench/ray_overhead.py", run, argv)


if __name__ == "__main__":
    main()
