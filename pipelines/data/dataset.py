"""Ray Data datasets of training samples: manifest rows in, fixed-shape uint8 tensor batches out.

``build_dataset(manifest_url, recipe, split)`` reads the manifest on the driver, keeps
the split's rows and turns each into one sample in a ``map_batches`` stage
(:func:`~pipelines.data.tasks.sample_stage`) running the recipe's ``sample``
(:mod:`pipelines.data.recipes`: indices, **one** :func:`~pipelines.io.video.read_frames`
call per file, with the manifest's codec and frame size so that no read probes the file;
augmentation), then the recipe's optional ``batch_stage`` (e.g. the detection recipe's
volume augmentations) as a second ``map_batches`` stage. The batch schema is the recipe's,
plus the per-sample telemetry columns of :mod:`pipelines.data.telemetry` (``t_decode_ms``,
``t_augment_ms``, ``t_arrow_ms``, ``bytes_read``; ``LoaderOptions(telemetry=False)`` leaves
them out), which the training loop sums per epoch and drops before the model. Batches
travel as Arrow with Ray's fixed-shape tensor type (V2, int64 offsets) and reach the
trainer through ``ray.train.get_dataset_shard(...).iter_torch_batches()`` (build with
``LoaderOptions(strings=False)`` there: string columns are not tensors).

Blocks. A decode task reads ``rows_per_task`` manifest rows (one Ray Data block): by default
equal blocks, at least three per CPU and a multiple of the CPUs in number, each at most
``BLOCK_BYTES`` (96 MiB of samples; 16–256 rows) (:func:`auto_rows_per_task`), and never so
many rows that a CPU of the cluster gets no block. Per-task costs are spread over the block's
samples: ~30 ms of CPU per task on a 2-CPU node (the driver's executor and iterator about
half, then the decode worker, the raylet, the ledger actor: 45- against 90-row blocks in
``bench/pipeline.py``), and the time in which the task's CPU idles between the end of one task
and the start of the next (:mod:`pipelines.data.executor` shortens it). Fewer blocks cost
less, and a count that the CPUs divide keeps the execution's tail short: 720 clips of
16 x 112² on 2 CPUs, 8 alternated rounds (2026-12-02), in blocks of 60 / 90 / 120 / 180 / 240
rows: 261 / 270 / 279 / 273 / 233 clips/s at 7.11 / 6.89 / 6.76 / 6.80 / 6.72 CPU ms per clip
(three blocks per CPU is 120; four was the rule before). Decode tasks run with the allocator
and thread settings of :mod:`pipelines.data.workers` (a Ray ``runtime_env``).

Randomness. Sample ``i`` of epoch ``e`` draws everything (clip offsets, crops, flips,
colour) from ``sample_rng(seed, e, video_id)``; the sample order is a permutation
drawn from ``(seed, e)`` at build time, and block boundaries are kept in order, so the
same ``(seed, epoch)`` gives identical batches and another epoch gives new clips and
augmentations. A run builds its dataset once: a trainer passes an epoch clock as
``epoch`` (:mod:`pipelines.data.clock`), read by every task, so each
re-execution of the same Dataset draws that epoch's clips (in the build-time order; an
epoch-spanning dataset, below, draws each epoch's order).

Epoch-spanning datasets (``LoaderOptions(span_epochs=K, total_epochs=E)``, what training
builds: ``data.epochs_per_execution``). Ray Data pays a fixed cost per execution: starting
it, a scheduling loop that submits and collects tasks on a fixed cadence, a ramp at the
start and a tail at the end in which CPUs idle (:mod:`pipelines.data.executor` shortens the
cadence and the ramp). Re-executed every epoch, that cost is paid
every epoch; with small epochs it dominates (``bench/RESULTS.md``). An epoch-spanning
dataset holds ``K * n`` slots (``n`` items) in blocks of ``rows_per_task`` consecutive slots,
sized from all ``K * n``: slot ``f`` is place ``f % n`` of epoch ``base + f // n``, where
``base`` is the epoch clock's value when the execution starts, and each epoch has its own
order, drawn from ``(seed, epoch)`` in the task (:func:`~pipelines.data.tasks.span_stage`).
So one execution gives ``K`` epochs, each sample with its ``epoch`` column, the next epoch's
first blocks decode while the current one's last batches train, and a resumed run starts
its execution at the resumed epoch. Epochs from ``E`` on give no samples. The consumer is
:class:`~pipelines.data.epochs.EpochStream` (batches of one epoch at a time, the same count
on every worker). Sample ``i`` of epoch ``e`` is the same sample as in a per-epoch build.

Decode failures: skipped and counted, never replaced. A video whose decode fails
(:class:`~pipelines.io.probe.MediaError`, e.g. ``DecodeError`` kinds ``corrupt``,
``not_found``) produces no sample; the :class:`~pipelines.data.ledger.QuarantineLedger`
actor records it (``stage="decode"``, ``kind``, ``reason``) and
:meth:`VideoPipeline.write_quarantine` merges the records into ``DST/quarantine.parquet``.
Rows the recipe cannot use (its ``exclude``: e.g. a required ``flow_uri`` missing, kind
``no_flow``; no video label for a supervised recipe, ``no_label``) are counted at build
time with ``stage="dataset"`` and not read. So for every run
``inputs = samples + quarantined`` (:meth:`VideoPipeline.accounting`). Exceptions from our
own sampling or augmentation code are bugs and fail the task.

Decoder isolation (feasible in-process, no subprocess per video):

* hang: every read has a deadline (:mod:`pipelines.data.watchdog`); a read past
  ``decode_timeout_s`` is quarantined (``decode_timeout``) and its worker exits, so that
  Ray replaces it and retries the task, which skips the file.
* native crash (segfault, abort from a C++ thread, OOM kill): the worker dies and Ray
  Data retries the task (its default for a dead worker: retry without limit). A task
  tells the ledger when its block begins and ends (one call each, with the block's
  records); a retried task finds its block still open and switches to one ledger call
  per read, so that the read that kills a worker is known and quarantined
  (``decoder_crash``) by the next retry instead of decoded again
  (:mod:`pipelines.data.ledger`). Each retry gets past one more bad video, so the
  retries end.
* known-bad files (any earlier decode record in this ledger) are skipped without decoding.

Limits: a run must not iterate two identical datasets at once (an open block or read in
one would look like a crash to the other); :func:`build_pipeline` gives every build its
own run id, so this only concerns iterating the *same* Dataset object concurrently.

Shape legend: ``T`` frames, ``H``/``W`` source size, ``S`` crop, ``N`` blocks, ``L``
frames per block, ``V`` views, ``K`` classes, ``B`` batch.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import uuid
from collections import Counter
from typing import Any, Callable

import numpy as np
import pyarrow as pa
import ray

from pipelines.data import recipes
from pipelines.data.executor import tune_executor
from pipelines.data.ledger import DEFAULT_LEDGER, QuarantineLedger, get_ledger, write_quarantine
from pipelines.data.recipes import RecipeConfig
from pipelines.data.recipes.base import with_canvas
from pipelines.data.tasks import batch_stage, current_epoch, epoch_order, sample_stage, span_stage
from pipelines.data.workers import ray_runtime_env
from pipelines.io import manifest
from pipelines.prep.ingest import quarantine_row

__all__ = ["DEFAULT_LEDGER", "LoaderOptions", "QuarantineLedger", "VideoPipeline",
           "auto_rows_per_task", "batch_stage", "build_dataset", "build_pipeline", "current_epoch", "get_ledger",
           "group_indices", "infer_num_classes", "sample_stage", "write_quarantine"]
log = logging.getLogger(__name__)
_ITEM_COLUMNS = ("video_id", "uri", "flow_uri", "num_frames", "fps", "label", "label_index", "split", "group_id",
                 "codec", "height", "width")


@dataclasses.dataclass(frozen=True)
class LoaderOptions:
    """How the pipeline runs (not what a sample is: that is the recipe).

    Attributes:
        rows_per_task: manifest rows per decode task (one Ray Data block each); ``None``:
            :func:`auto_rows_per_task`.
        num_cpus: CPUs reserved per decode task.
        backend: :func:`~pipelines.io.video.read_frames` backend.
        decode_timeout_s: deadline per read (past it the video is quarantined and the worker
            exits: :mod:`pipelines.data.watchdog`); ``None`` disables the watchdog.
        ledger_name: named :class:`~pipelines.data.ledger.QuarantineLedger` actor (get-or-create).
        strings: keep string columns (``video_id``, captions); ``False`` for ``iter_torch_batches``.
        telemetry: add the per-sample columns of :mod:`pipelines.data.telemetry`.
        reader: ``(uri, indices) -> uint8 (T, H, W, 3)``; default ``read_frames`` (a test hook).
        clip_cache: folder of a :class:`~pipelines.data.clip_cache.ClipCache` (decoded videos,
            e.g. a sweep's): reads of cached videos are served from it, the rest decode.
        span_epochs: one execution of the dataset draws this many consecutive epochs, from the
            epoch clock's value when it starts (module docstring, "Epoch-spanning datasets");
            ``None``: one epoch per execution.
        total_epochs: with ``span_epochs``, the run's epochs: later epochs give no samples.
    """

    rows_per_task: int | None = None
    num_cpus: float = 1.0
    backend: str = "auto"
    decode_timeout_s: float | None = 120.0
    ledger_name: str = DEFAULT_LEDGER
    strings: bool = True
    telemetry: bool = True
    reader: Callable[[str, np.ndarray], np.ndarray] | None = None
    clip_cache: str | None = None
    span_epochs: int | None = None
    total_epochs: int | None = None


BLOCK_BYTES = 96 * 2**20  # a decode task's samples, at most about (Ray Data splits blocks above 128 MiB)
BLOCKS_PER_CPU = 3        # at least, per execution


def auto_rows_per_task(n_rows: int, cpus: float, sample_bytes: int = 0) -> int:
    """Rows of equal blocks, ``BLOCKS_PER_CPU`` per CPU or more, whose count is a multiple of the
    CPUs: ``ceil(n_rows / (k * cpus))`` with ``k = max(BLOCKS_PER_CPU, ceil(n_rows / (cpus * cap)))``,
    clamped to ``[16, cap]`` and at most ``ceil(n_rows / cpus)`` (every CPU gets a block);
    ``cap = clamp(BLOCK_BYTES / sample_bytes, 16, 256)``, 64 if the sample size is unknown."""
    cpus = max(1, int(cpus))
    cap = min(256, max(16, BLOCK_BYTES // sample_bytes)) if sample_bytes > 0 else 64
    per_cpu = max(BLOCKS_PER_CPU, math.ceil(n_rows / (cpus * cap)))
    rows = min(cap, max(16, math.ceil(n_rows / (per_cpu * cpus))))
    return max(1, min(rows, math.ceil(n_rows / cpus)))


def sample_bytes(cfg: RecipeConfig, num_classes: int | None) -> int:
    """Bytes of one sample's fixed-size columns (strings count nothing)."""
    return sum(int(np.prod(shape, dtype=np.int64)) * np.dtype(dtype).itemsize
               for dtype, shape in recipes.batch_schema(cfg, num_classes, with_stage=False).values()
               if dtype != "string")


# --------------------------------------------------------------------------- building


@dataclasses.dataclass
class VideoPipeline:
    """A built dataset and what is needed to account for its inputs."""

    dataset: "ray.data.Dataset"
    recipe: RecipeConfig
    split: str
    num_classes: int | None
    inputs: list[str]          # video_ids of the manifest rows this run reads or excluded
    run: str
    ledger: Any
    manifest_url: str
    rows_per_task: int = 0     # rows per decode task (block) this build chose
    span_epochs: int | None = None  # epochs per execution (an epoch-spanning dataset), else None

    def quarantined(self) -> pa.Table:
        """This run's quarantine records (build-time exclusions and decode failures)."""
        return manifest.to_table(ray.get(self.ledger.rows.remote(self.run)), manifest.QUARANTINE_SCHEMA)

    def accounting(self, samples: int) -> dict[str, Any]:
        """``inputs = samples + quarantined`` for a full pass that yielded ``samples`` rows."""
        rows = ray.get(self.ledger.rows.remote(self.run))
        kinds = Counter(r["kind"] for r in rows)
        return {"inputs": len(self.inputs), "samples": samples, "quarantined": len(rows),
                "kinds": dict(sorted(kinds.items())), "balanced": len(self.inputs) == samples + len(rows)}

    def write_quarantine(self, dst: str | None = None) -> pa.Table:
        """Merge this run's decode failures into ``dst`` (default: the manifest's dataset folder)."""
        if dst is None:
            url = self.manifest_url
            dst = url.rsplit("/", 1)[0] if url.endswith(".parquet") else url
        return write_quarantine(ray.get(self.ledger.rows.remote(self.run)), dst)


def infer_num_classes(table: pa.Table) -> int:
    """``1 + `` the largest class index in ``label_index`` and ``segments`` of the whole manifest.

    Pass ``num_classes`` explicitly when the manifest may miss the last classes.
    """
    indices = [i for i in table.column("label_index").to_pylist() if i is not None]
    indices += [s["label_index"] for segs in table.column("segments").to_pylist() for s in (segs or [])]
    if not indices:
        raise ValueError("the manifest has no labels; pass num_classes")
    return max(indices) + 1


def _items(table: pa.Table, cfg: RecipeConfig, split: str,
           limit: int | None) -> tuple[list[dict], list[dict], list[str]]:
    """(item rows to read, quarantine rows for rows the recipe cannot use, input video_ids)."""
    rows = table.select(list(_ITEM_COLUMNS)).to_pylist()
    segments = table.column("segments").to_pylist()
    chosen = [i for i, r in enumerate(rows) if r["split"] == split][:limit]
    groups = group_indices(rows)
    if not chosen:
        raise ValueError(f"no manifest rows in split {split!r} (splits: {sorted({r['split'] for r in rows})})")
    items, excluded = [], []
    for i in chosen:
        r = rows[i]
        item = {**{k: r[k] for k in _ITEM_COLUMNS if k != "split"}, "row": i, "segments": json.dumps(
            [{k: s[k] for k in ("label_index", "start_s", "end_s")} for s in segments[i] or []]),
            "label": r["label"] or "", "label_index": -1 if r["label_index"] is None else r["label_index"],
            "flow_uri": r["flow_uri"] or "", "group_index": groups[i]}
        item.pop("group_id")
        why = cfg.exclude(item)
        if why:
            excluded.append(quarantine_row(r["uri"], "dataset", *why, video_id=r["video_id"]))
        else:
            items.append(item)
    return items, excluded, [rows[i]["video_id"] for i in chosen]


def group_indices(rows: list[dict]) -> list[int]:
    """Each manifest row's source group as an int (sorted ``group_id``; no group: the video itself),
    the same for a row whatever split or limit is read."""
    ids = [r.get("group_id") or r["video_id"] for r in rows]
    index = {g: i for i, g in enumerate(sorted(set(ids)))}
    return [index[g] for g in ids]


def _configure(ctx: "ray.data.DataContext") -> None:
    """This dataset's context: ordered blocks (reproducible batches) and V2 tensor columns."""
    ctx.execution_options.preserve_order = True
    ctx.enable_tensor_extension_casting = True
    try:  # Ray >= 2.50; V2 is already the default there, set explicitly against env overrides
        from ray.data._internal.tensor_extensions.arrow import FixedShapeTensorFormat

        ctx.arrow_fixed_shape_tensor_format = FixedShapeTensorFormat.V2
    except ImportError:
        ctx.use_arrow_tensor_v2 = True


def _stages(items: list[dict], rows_per_task: int, cfg: RecipeConfig, options: LoaderOptions,
            task_kwargs: dict) -> "ray.data.Dataset":
    """The item blocks, the decode stage and the recipe's batch stage, in decode workers' runtime env.

    String columns are dropped by the last stage itself (``strings=False``): a separate
    ``drop_columns`` would be one more task per block, as it cannot fuse with a stage that
    has a runtime env.
    """
    remote = dict(num_cpus=options.num_cpus, runtime_env=ray_runtime_env())
    stage = cfg.batch_stage(task_kwargs["num_classes"])
    drop = [] if options.strings else recipes.string_columns(cfg, task_kwargs["num_classes"])
    kwargs = dict(cfg=cfg, options=options, drop=[] if stage else drop, **task_kwargs)
    if options.span_epochs:
        slots = len(items) * options.span_epochs
        ranges = [(j, min(j + rows_per_task, slots)) for j in range(0, slots, rows_per_task)]
        ds = ray.data.from_items([dict(start=j, stop=s) for j, s in ranges], override_num_blocks=len(ranges))
        _configure(ds.context)
        ds = ds.map_batches(span_stage, batch_size=None, batch_format="numpy", fn_kwargs=dict(
            items=ray.put(items), total_epochs=options.total_epochs or options.span_epochs, shuffle=cfg.shuffle,
            **kwargs), **remote)
    else:
        ds = ray.data.from_items(items, override_num_blocks=max(1, math.ceil(len(items) / rows_per_task)))
        _configure(ds.context)
        ds = ds.map_batches(sample_stage, batch_size=None, batch_format="numpy", fn_kwargs=kwargs, **remote)
    if stage is not None:
        ds = ds.map_batches(batch_stage, batch_size=stage.batch_size, batch_format="numpy",
                            fn_kwargs=dict(fn=stage.fn, kwargs=stage.kwargs, seed=task_kwargs["seed"],
                                           epoch=task_kwargs["epoch"], drop=drop), **remote)
    return ds


def build_pipeline(manifest_url: str, recipe: str | RecipeConfig, split: str, *, seed: int = 0, epoch: int = 0,
                   num_classes: int | None = None, limit: int | None = None,
                   options: LoaderOptions | None = None) -> VideoPipeline:
    """Build the dataset of ``recipe`` over the ``split`` rows of a manifest, with its accounting.

    Args:
        manifest_url: dataset folder or manifest ``.parquet`` URL.
        recipe: a name of :data:`recipes.RECIPES` or a :class:`RecipeConfig`.
        split: manifest split (``train``, ``test``...).
        seed, epoch: the randomness of this pass (module docstring); ``epoch`` may be an
            epoch clock (:class:`~pipelines.data.clock.EpochClock`), read by every task (see :func:`current_epoch`).
        num_classes: ``K`` for detection/eval labels (default: inferred from the manifest).
        limit: read only the split's first ``limit`` rows (in manifest order).

    Raises:
        ValueError: unknown recipe, empty split, or no labels to infer ``num_classes`` from.
    """
    cfg = recipes.recipe(recipe)
    options = options or LoaderOptions()
    tune_executor()  # this process iterates the dataset (or hands it to Ray Train, whose coordinator does too)
    table = manifest.read_manifest(manifest_url)
    if cfg.needs_classes and num_classes is None:
        num_classes = infer_num_classes(table)
    items, excluded, inputs = _items(table, cfg, split, limit)
    cfg = with_canvas(cfg, [r["height"] for r in items], [r["width"] for r in items])  # device-mode augmentation
    rows_per_task = options.rows_per_task or auto_rows_per_task(  # an execution's rows: every epoch it spans
        len(items) * (options.span_epochs or 1), ray.cluster_resources().get("CPU", 1), sample_bytes(cfg, num_classes))
    if cfg.shuffle and not options.span_epochs:
        items = [items[i] for i in epoch_order(len(items), seed, current_epoch(epoch), True)]
    run, ledger = uuid.uuid4().hex, get_ledger(options.ledger_name)
    ray.get(ledger.exclude.remote(run, excluded))
    if excluded:
        log.warning("%s/%s: %d of %d rows cannot be used by %r: %s", manifest_url, split, len(excluded),
                    len(inputs), cfg.name, dict(Counter(r["kind"] for r in excluded)))
    ds = _stages(items, rows_per_task, cfg, options, dict(seed=seed, epoch=epoch, num_classes=num_classes,
                                                          run=run, ledger=ledger))
    if options.span_epochs:
        log.info("%s: %d epochs per execution, in blocks of %d rows", cfg.name, options.span_epochs, rows_per_task)
    return VideoPipeline(ds, cfg, split, num_classes, inputs, run, ledger, manifest_url, rows_per_task,
                         options.span_epochs)


def build_dataset(manifest_url: str, recipe: str | RecipeConfig, split: str, *, seed: int = 0, epoch: int = 0,
                  num_classes: int | None = None, limit: int | None = None,
                  options: LoaderOptions | None = None) -> "ray.data.Dataset":
    """The ``ray.data.Dataset`` of :func:`build_pipeline` (failures go to the ledger ``options.ledger_name``)."""
    return build_pipeline(manifest_url, recipe, split, seed=seed, epoch=epoch, num_classes=num_classes,
                          limit=limit, options=options).dataset
