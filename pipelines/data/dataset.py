"""Ray Data datasets of training samples: manifest rows in, fixed-shape uint8 tensor batches out.

``build_dataset(manifest_url, recipe, split)`` reads the manifest on the driver, keeps
the split's rows and turns each into one sample in a ``map_batches`` stage
(:func:`sample_stage`) running the recipe's ``sample`` (:mod:`pipelines.data.recipes`: indices,
**one** :func:`~pipelines.io.video.read_frames` call per file, augmentation), then the recipe's
optional ``batch_stage`` (e.g. the detection recipe's volume augmentations) as a second
``map_batches`` stage. The batch schema is the recipe's. Batches travel as Arrow with Ray's fixed-shape tensor type
(V2, int64 offsets) and reach the trainer through
``ray.train.get_dataset_shard(...).iter_torch_batches()`` (build with
``LoaderOptions(strings=False)`` there: string columns are not tensors).

Randomness. Sample ``i`` of epoch ``e`` draws everything (clip offsets, crops, flips,
colour) from ``sample_rng(seed, e, video_id)``; the sample order is a permutation
drawn from ``(seed, e)``, and block boundaries are kept in order, so the same
``(seed, epoch)`` gives identical batches and another epoch gives new clips and
augmentations. A trainer builds one dataset per epoch.

Decode failures: skipped and counted, never replaced. A video whose decode fails
(:class:`~pipelines.io.probe.MediaError`, e.g. ``DecodeError`` kinds ``corrupt``,
``not_found``) produces no sample; a :class:`QuarantineLedger` actor records it
(``stage="decode"``, ``kind``, ``reason``) and :meth:`VideoPipeline.write_quarantine`
merges the records into ``DST/quarantine.parquet``. Rows the recipe cannot use (its
``exclude``: e.g. a required ``flow_uri`` missing, kind ``no_flow``; no video label for a
supervised recipe, ``no_label``) are counted at build time with ``stage="dataset"`` and not read. So for
every run ``inputs = samples + quarantined`` (:meth:`VideoPipeline.accounting`).
Exceptions from our own sampling or augmentation code are bugs and fail the task.

Decoder isolation (feasible in-process, no subprocess per video):

* hang: every read runs in a daemon watchdog thread joined with
  ``decode_timeout_s``; on timeout the video is quarantined (``decode_timeout``) and the
  thread abandoned. Once ``max_stuck_decoders`` threads are stuck in one worker process,
  the process exits so that Ray replaces it (a thread stuck in native code cannot be
  killed), and the task is retried as below.
* native crash (segfault, abort from a C++ thread, OOM kill): the worker dies and Ray
  Data retries the task (its default for a dead worker: retry without limit). Before
  each read the worker tells the ledger "attempting (video, uri)", and the sample's
  next read or its end says "done"; a retried task that finds an attempt still open
  knows that this read killed a worker and quarantines the video (``decoder_crash``)
  instead of decoding it again. Each retry thus gets past one more bad video, so the
  retries end.
* known-bad files (any earlier decode record in this ledger) are skipped without decoding.

Limits: a run must not iterate two identical datasets at once (an attempt open in one
would look like a crash to the other); :func:`build_pipeline` gives every build its own
run id, so this only concerns iterating the *same* Dataset object concurrently.

Shape legend: ``T`` frames, ``H``/``W`` source size, ``S`` crop, ``N`` blocks, ``L``
frames per block, ``V`` views, ``K`` classes, ``B`` batch.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import os
import threading
import uuid
from collections import Counter
from typing import Any, Callable, Sequence

import numpy as np
import pyarrow as pa
import ray

from pipelines.io import manifest
from pipelines.data import recipes
from pipelines.io import storage
from pipelines.prep.ingest import quarantine_row
from pipelines.io.probe import MediaError
from pipelines.data.recipes import RecipeConfig
from pipelines.io.video import read_frames

log = logging.getLogger(__name__)
DEFAULT_LEDGER = "vidray-quarantine-ledger"
_ITEM_COLUMNS = ("video_id", "uri", "flow_uri", "num_frames", "fps", "label", "label_index", "split", "group_id")
_STUCK: list[threading.Thread] = []  # watchdog threads abandoned in this worker process


@dataclasses.dataclass(frozen=True)
class LoaderOptions:
    """How the pipeline runs (not what a sample is: that is the recipe).

    Attributes:
        rows_per_task: manifest rows per decode task (one Ray Data block each).
        num_cpus: CPUs reserved per decode task.
        backend: :func:`~pipelines.io.video.read_frames` backend.
        decode_timeout_s: watchdog limit per read; ``None`` disables the watchdog.
        max_stuck_decoders: abandoned decode threads after which a worker process exits.
        ledger_name: named :class:`QuarantineLedger` actor (get-or-create).
        strings: keep string columns (``video_id``, captions); ``False`` for ``iter_torch_batches``.
        reader: ``(uri, indices) -> uint8 (T, H, W, 3)``; default ``read_frames`` (a test hook).
    """

    rows_per_task: int = 4
    num_cpus: float = 1.0
    backend: str = "auto"
    decode_timeout_s: float | None = 120.0
    max_stuck_decoders: int = 2
    ledger_name: str = DEFAULT_LEDGER
    strings: bool = True
    reader: Callable[[str, np.ndarray], np.ndarray] | None = None


# --------------------------------------------------------------------------- quarantine ledger


class QuarantineLedger:
    """Decode failures and in-flight reads of all runs of a driver (a Ray actor, see :func:`get_ledger`).

    Records are :data:`~pipelines.io.manifest.QUARANTINE_SCHEMA` rows, one per (stage,
    video, file); a run (one :func:`build_pipeline` call) refers to the records of the
    videos it skipped.
    """

    def __init__(self) -> None:
        self._records: dict[tuple, dict] = {}
        self._bad: dict[str, tuple] = {}            # source_uri -> key of its decode record
        self._runs: dict[str, set[tuple]] = {}
        self._open: dict[tuple[str, str], set[str]] = {}  # (run, video_id) -> uris being read

    def _add(self, run: str, row: dict) -> None:
        key = (row["stage"], row["video_id"], row["source_uri"])
        self._records.setdefault(key, row)
        if row["stage"] == "decode":
            self._bad.setdefault(row["source_uri"], key)
        ref = self._bad.get(row["source_uri"], key) if row["stage"] == "decode" else key
        self._runs.setdefault(run, set()).add(ref)

    def attempt(self, run: str, video_id: str, uri: str, previous: str | None = None) -> bool:
        """Whether to read ``uri`` now (``previous``: the sample's last read, which returned).

        ``False``, with the video counted, for a known-bad file or for a read that an
        earlier attempt of this run started and never finished: the worker died in it.
        """
        if uri in self._bad:
            self._runs.setdefault(run, set()).add(self._bad[uri])
            self._open.pop((run, video_id), None)
            return False
        inflight = self._open.setdefault((run, video_id), set())
        inflight.discard(previous)
        if uri in inflight:
            self._add(run, quarantine_row(uri, "decode", "decoder_crash", (
                f"the worker process died while decoding {uri} (a native crash or abort in the "
                f"decoder, or the process was killed); the retried task skipped it"), video_id=video_id))
            self._open.pop((run, video_id), None)
            return False
        inflight.add(uri)
        return True

    def done(self, run: str, video_id: str) -> None:
        self._open.pop((run, video_id), None)

    def fail(self, run: str, row: dict) -> None:
        self._add(run, row)
        self._open.pop((run, row["video_id"]), None)

    def exclude(self, run: str, rows: list[dict]) -> None:
        for row in rows:
            self._add(run, row)

    def rows(self, run: str | None = None) -> list[dict]:
        keys = self._records if run is None else sorted(self._runs.get(run, ()), key=str)
        return [self._records[k] for k in keys]

    def counts(self, run: str | None = None) -> dict[str, int]:
        return dict(Counter(r["kind"] for r in self.rows(run)))


_LEDGERS: dict[str, Any] = {}  # the driver keeps its ledgers alive for as long as it runs


def get_ledger(name: str = DEFAULT_LEDGER) -> "ray.actor.ActorHandle":
    """The named ledger actor of this Ray job, created on first use (no CPU reserved).

    The handle is kept in this process: Ray destroys a (non-detached) actor once no
    handle to it is left, which would lose the records between two builds.
    """
    if name not in _LEDGERS:
        actor_cls = ray.remote(num_cpus=0)(QuarantineLedger)
        _LEDGERS[name] = actor_cls.options(name=name, get_if_exists=True).remote()
    return _LEDGERS[name]


def write_quarantine(rows: Sequence[dict], dst: str) -> pa.Table:
    """Merge ``stage="decode"`` records into ``dst``'s ``quarantine.parquet`` (replacing older
    records of the same video and file); returns the table written."""
    url = dst if dst.endswith(".parquet") else storage.join(dst, manifest.QUARANTINE_NAME)
    new = [r for r in rows if r["stage"] == "decode"]
    keys = {(r["video_id"], r["source_uri"]) for r in new}
    old = [r for r in manifest.read_quarantine(url).to_pylist()
           if not (r["stage"] == "decode" and (r["video_id"], r["source_uri"]) in keys)]
    table = manifest.to_table(old + new, manifest.QUARANTINE_SCHEMA)
    manifest.write_table(table, url)
    return table


# --------------------------------------------------------------------------- guarded reads


class DecodeTimeout(MediaError):
    """A read did not return within the watchdog limit."""

    def __init__(self, uri: str, seconds: float) -> None:
        super().__init__("decode_timeout", f"{uri}: decoding did not finish within {seconds:g} s "
                                           f"(a hung decoder); the read was abandoned")
        self.uri = uri


class _Skipped(Exception):
    """The ledger said not to read this video (already counted there)."""


def _with_watchdog(fn: Callable[[], np.ndarray], uri: str, timeout_s: float | None) -> np.ndarray:
    """``fn()`` in a daemon thread joined with ``timeout_s``; untyped decoder errors become MediaError."""
    box: dict[str, Any] = {}

    def target() -> None:
        try:
            box["value"] = fn()
        except BaseException as exc:  # noqa: BLE001 - handed to the caller below
            box["error"] = exc

    if timeout_s is None:
        target()
    else:
        thread = threading.Thread(target=target, name=f"vidray-decode {uri}", daemon=True)
        thread.start()
        thread.join(timeout_s)
        if thread.is_alive():
            _STUCK.append(thread)
            raise DecodeTimeout(uri, timeout_s)
    if "error" in box:
        exc = box["error"]
        if isinstance(exc, MediaError):
            raise exc
        raise recipes.media_error("decoder_error", uri, f"the decoder raised {type(exc).__name__}: {exc}") from exc
    return box["value"]


class _Reader:
    """``read(video_id, uri, idx)`` inside a decode task: ledger bookkeeping, then a watched read."""

    def __init__(self, ledger, run: str, options: LoaderOptions) -> None:
        self.ledger, self.run, self.options = ledger, run, options
        self.last: dict[str, str] = {}
        self.fn = options.reader or (lambda uri, idx: read_frames(uri, idx, backend=options.backend, threads=1))

    def __call__(self, video_id: str, uri: str, idx: np.ndarray) -> np.ndarray:
        previous = self.last.get(video_id)  # the sample's reads run one after another
        if not ray.get(self.ledger.attempt.remote(self.run, video_id, uri, previous)):
            raise _Skipped(video_id)
        frames = _with_watchdog(lambda: self.fn(uri, idx), uri, self.options.decode_timeout_s)
        self.last[video_id] = uri
        if not isinstance(frames, np.ndarray) or frames.dtype != np.uint8 or frames.shape[:1] != (len(idx),) \
                or frames.ndim != 4:
            raise recipes.media_error("decoder_error", uri, f"the decoder returned {type(frames).__name__} "
                                      f"{getattr(frames, 'shape', '')} for {len(idx)} frames")
        return frames


def _stack(samples: list[dict], schema: dict[str, tuple[str, tuple]]) -> dict[str, np.ndarray]:
    """Samples to a numpy batch; an empty batch keeps every column with its dtype and shape."""
    out = {}
    for name, (dtype, shape) in schema.items():
        if dtype == "string":
            out[name] = np.array([str(s[name]) for s in samples], dtype=object)
        else:
            out[name] = (np.stack([np.asarray(s[name], dtype) for s in samples]) if samples
                         else np.zeros((0, *shape), dtype))
    return out


def current_epoch(epoch) -> int:
    """``epoch`` itself, or the value of an epoch-clock actor (:func:`pipelines.train.runtime.epoch_clock`).

    A training run passes the clock so that one Dataset object, re-executed every epoch
    by ``iter_torch_batches``, draws new clips each epoch from ``(seed, epoch, video)``.
    """
    return epoch if isinstance(epoch, (int, np.integer)) else int(ray.get(epoch.get.remote()))


def batch_stage(batch: dict[str, np.ndarray], *, fn, kwargs: dict, seed: int, epoch) -> dict[str, np.ndarray]:
    """Ray ``map_batches`` stage around a recipe's :class:`~pipelines.data.recipes.BatchStage`
    function (e.g. volume augmentation), reading the current epoch."""
    return fn(batch, seed=seed, epoch=current_epoch(epoch), **kwargs)


def sample_stage(batch: dict[str, np.ndarray], *, cfg: RecipeConfig, seed: int, epoch,
                 num_classes: int | None, run: str, ledger, options: LoaderOptions) -> dict[str, np.ndarray]:
    """Ray ``map_batches`` stage: item rows in, samples out; failed videos are left out and recorded."""
    import cv2

    epoch = current_epoch(epoch)
    cv2.setNumThreads(1)  # one task per CPU
    read = _Reader(ledger, run, options)
    samples = []
    for i in range(len(batch["video_id"])):
        row = {k: (v[i].item() if isinstance(v[i], np.generic) else v[i]) for k, v in batch.items()}
        try:
            samples.append(recipes.make_sample(row, cfg, seed=seed, epoch=epoch, num_classes=num_classes,
                                               read=read))
        except _Skipped:
            continue
        except MediaError as exc:
            uri = getattr(exc, "uri", row["uri"])
            ray.get(ledger.fail.remote(run, quarantine_row(uri, "decode", exc.kind, exc.reason,
                                                           video_id=row["video_id"])))
            if len([t for t in _STUCK if t.is_alive()]) >= options.max_stuck_decoders:
                log.error("%d decoder threads are stuck; exiting so that Ray replaces this worker", len(_STUCK))
                os._exit(70)  # the retried task skips the recorded videos
            continue
        ledger.done.remote(run, row["video_id"])
    # Columns of the recipe's batch stage (e.g. volume augmentation) are added by that stage.
    return _stack(samples, recipes.batch_schema(cfg, num_classes, with_stage=False))


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


def build_pipeline(manifest_url: str, recipe: str | RecipeConfig, split: str, *, seed: int = 0, epoch: int = 0,
                   num_classes: int | None = None, limit: int | None = None,
                   options: LoaderOptions | None = None) -> VideoPipeline:
    """Build the dataset of ``recipe`` over the ``split`` rows of a manifest, with its accounting.

    Args:
        manifest_url: dataset folder or manifest ``.parquet`` URL.
        recipe: a name of :data:`recipes.RECIPES` or a :class:`RecipeConfig`.
        split: manifest split (``train``, ``test``...).
        seed, epoch: the randomness of this pass (module docstring); ``epoch`` may be an
            epoch-clock actor handle, read by every task (see :func:`current_epoch`).
        num_classes: ``K`` for detection/eval labels (default: inferred from the manifest).
        limit: read only the split's first ``limit`` rows (in manifest order).

    Raises:
        ValueError: unknown recipe, empty split, or no labels to infer ``num_classes`` from.
    """
    cfg = recipes.recipe(recipe)
    options = options or LoaderOptions()
    table = manifest.read_manifest(manifest_url)
    if cfg.needs_classes and num_classes is None:
        num_classes = infer_num_classes(table)
    items, excluded, inputs = _items(table, cfg, split, limit)
    if cfg.shuffle:
        order = np.random.default_rng([seed, current_epoch(epoch)]).permutation(len(items))
        items = [items[i] for i in order]
    run, ledger = uuid.uuid4().hex, get_ledger(options.ledger_name)
    ray.get(ledger.exclude.remote(run, excluded))
    if excluded:
        log.warning("%s/%s: %d of %d rows cannot be used by %r: %s", manifest_url, split, len(excluded),
                    len(inputs), cfg.name, dict(Counter(r["kind"] for r in excluded)))
    ds = ray.data.from_items(items, override_num_blocks=max(1, math.ceil(len(items) / options.rows_per_task)))
    _configure(ds.context)
    ds = ds.map_batches(sample_stage, batch_size=None, batch_format="numpy", num_cpus=options.num_cpus,
                        fn_kwargs=dict(cfg=cfg, seed=seed, epoch=epoch, num_classes=num_classes, run=run,
                                       ledger=ledger, options=options))
    stage = cfg.batch_stage(num_classes)
    if stage is not None:
        ds = ds.map_batches(batch_stage, batch_size=stage.batch_size, batch_format="numpy", num_cpus=options.num_cpus,
                            fn_kwargs=dict(fn=stage.fn, kwargs=stage.kwargs, seed=seed, epoch=epoch))
    if not options.strings:
        ds = ds.drop_columns(recipes.string_columns(cfg, num_classes))
    return VideoPipeline(ds, cfg, split, num_classes, inputs, run, ledger, manifest_url)


def build_dataset(manifest_url: str, recipe: str | RecipeConfig, split: str, *, seed: int = 0, epoch: int = 0,
                  num_classes: int | None = None, limit: int | None = None,
                  options: LoaderOptions | None = None) -> "ray.data.Dataset":
    """The ``ray.data.Dataset`` of :func:`build_pipeline` (failures go to the ledger ``options.ledger_name``)."""
    return build_pipeline(manifest_url, recipe, split, seed=seed, epoch=epoch, num_classes=num_classes,
                          limit=limit, options=options).dataset
