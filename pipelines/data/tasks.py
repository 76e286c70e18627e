"""What one decode task (one Ray Data block of manifest item rows) does.

:func:`sample_stage` is the ``map_batches`` function of :func:`~pipelines.data.dataset.build_pipeline`:
it opens the block with the quarantine ledger (:mod:`pipelines.data.ledger`: one call in,
one call out; per read only in a retried block), builds each sample with the recipe's
``sample`` and a guarded reader, adds the telemetry columns
(:mod:`pipelines.data.telemetry`) and returns the block, as Arrow when it times the conversion.

Guarded reads: every read runs in the task's own thread under a deadline of
``decode_timeout_s`` (:mod:`pipelines.data.watchdog`). A read past it is stuck in native
code: the video is recorded in the ledger (``decode_timeout``) and the worker process
exits, so that Ray replaces it and retries the task, which skips the recorded video.
Reads name the codec and frame size from the manifest, so ``read_frames`` picks its
backend without probing the file. With ``LoaderOptions.clip_cache`` a read of a video that
the cache holds is a slice of its decoded frames (:mod:`pipelines.data.clip_cache`).
"""

from __future__ import annotations

import dataclasses
import hashlib
import sys
import threading
import time
from collections.abc import Callable, Sequence

import numpy as np

from pipelines.data import recipes, telemetry
from pipelines.data.clip_cache import ClipCache
from pipelines.data.executor import tune_executor
from pipelines.data.ledger import LedgerClient
from pipelines.data.recipes import RecipeConfig
from pipelines.data.watchdog import WATCHDOG
from pipelines.data.workers import init_decode_worker
from pipelines.io.probe import MediaError
from pipelines.io.video import read_frames
from pipelines.prep.ingest import quarantine_row

if "ray.data" in sys.modules:  # e.g. Ray Train's shard coordinator unpickling our stages: it runs the executor
    tune_executor()
FLOW_CODEC = "h264"  # pipelines.prep.flow stores flow as lossless libx264rgb at the video's size


class _Skipped(Exception):
    """The ledger said not to read this video (counted there)."""


def _guarded(fn: Callable[[], np.ndarray], uri: str, timeout_s: float | None,
             on_timeout: Callable[[float], None]) -> np.ndarray:
    """``fn()`` in this thread, under a deadline of ``timeout_s`` (``None``: none); past it,
    ``on_timeout(timeout_s)`` and the process exits (:mod:`pipelines.data.watchdog`). Untyped
    decoder errors become MediaError."""
    try:
        if timeout_s is None:
            return fn()
        with WATCHDOG.guard(timeout_s, on_timeout):
            return fn()
    except MediaError:
        raise
    except Exception as exc:  # untyped decoder errors, typed here
        raise recipes.media_error("decoder_error", uri, f"the decoder raised {type(exc).__name__}: {exc}") from exc


@dataclasses.dataclass
class _Block:
    """One task's block: its ledger mode, what it must report, and the current sample's reads."""

    client: LedgerClient
    run: str
    key: str
    per_read: bool                      # a retried block: the ledger protocol per read
    bad: frozenset[str]                 # files known to be bad when the block began
    failed: list[dict] = dataclasses.field(default_factory=list)
    skipped: list[str] = dataclasses.field(default_factory=list)
    decode_s: float = 0.0               # of the current sample
    bytes_read: int = 0

    def fail(self, record: dict) -> None:
        """A failed read's record: to the ledger at once in a retried block, else with ``end_block``."""
        if self.per_read:
            self.client.fail(self.run, record)
        else:
            self.failed.append(record)


class _Reader:
    """``read(video_id, uri, idx)`` inside a decode task: the block's ledger rule, then a watched read."""

    def __init__(self, block: _Block, options, media: dict[str, tuple[str | None, tuple | None]]) -> None:
        self.block, self.options, self.media = block, options, media
        self.last: dict[str, str] = {}
        self.fn = options.reader or self._read_frames
        self.cache = ClipCache(options.clip_cache) if options.clip_cache else None

    def _read_frames(self, uri: str, idx: np.ndarray) -> np.ndarray:
        if self.cache is not None:
            frames = self.cache.read(uri, idx)
            if frames is not None:
                return frames
        codec, size = self.media.get(uri, (None, None))
        return read_frames(uri, idx, backend=self.options.backend, threads=1, codec=codec, size=size)

    def __call__(self, video_id: str, uri: str, idx: np.ndarray) -> np.ndarray:
        b = self.block
        if b.per_read:
            if not b.client.attempt(b.run, video_id, uri, self.last.get(video_id)):
                raise _Skipped(video_id)
        elif uri in b.bad:
            b.skipped.append(uri)
            raise _Skipped(video_id)
        start, bytes0 = time.perf_counter(), telemetry.read_bytes()
        frames = _guarded(lambda: self.fn(uri, idx), uri, self.options.decode_timeout_s,
                          lambda timeout_s: self._timed_out(video_id, uri, timeout_s))
        b.decode_s += time.perf_counter() - start
        b.bytes_read += telemetry.read_bytes() - bytes0
        self.last[video_id] = uri  # the sample's reads run one after another
        if not isinstance(frames, np.ndarray) or frames.dtype != np.uint8 or frames.shape[:1] != (len(idx),) \
                or frames.ndim != 4:
            raise recipes.media_error("decoder_error", uri, f"the decoder returned {type(frames).__name__} "
                                      f"{getattr(frames, 'shape', '')} for {len(idx)} frames")
        return frames

    def _timed_out(self, video_id: str, uri: str, timeout_s: float) -> None:
        """(The watchdog's thread, before the process exits.) Record the hung read; the block
        stays open, so that the retried task reads per file and skips this one."""
        b = self.block
        b.fail(quarantine_row(uri, "decode", "decode_timeout", (
            f"{uri}: decoding did not finish within {timeout_s:g} s (a hung decoder); the worker "
            f"process exited and the retried task skipped the file"), video_id=video_id))
        if not b.per_read:
            b.client.end_block(b.run, None, b.failed, b.skipped)


def block_key(rows: list[dict]) -> str:
    """A name of the block stable across retries (and processes): a digest of its video ids."""
    return hashlib.sha1("\x1f".join(r["video_id"] for r in rows).encode()).hexdigest()[:16]


def media_of(rows: list[dict]) -> dict[str, tuple[str | None, tuple | None]]:
    """``uri -> (codec, (H, W))`` from the manifest for every file of the block."""
    out = {}
    for r in rows:
        size = (r["height"], r["width"]) if r.get("height") and r.get("width") else None
        out[r["uri"]] = (r.get("codec") or None, size)
        if r.get("flow_uri"):
            out[r["flow_uri"]] = (FLOW_CODEC, size)
    return out


_BLOCKS: dict[str, np.ndarray] = {}  # column -> this process's block buffer (see _block_buffer)
_BLOCKS_LOCK = threading.Lock()  # a check and the view it hands out, as one step


def _block_buffer(name: str, dtype: np.dtype, shape: tuple, rows: int) -> np.ndarray:
    """``rows`` rows of this process's buffer for column ``name``: the previous block's, once
    nothing else refers to it (a view of it, an Arrow array made from it), else a new one.

    The next block reuses the buffer once Ray has serialized this one, instead of a fresh
    array. A fresh 54 MB block (90 clips of 16 x 112² x 3) is ``mmap``-ed, and faulting its
    pages in (with ``numpy``'s transparent huge pages, sometimes by synchronous compaction) took
    0.15 ms of CPU per clip and 1.4-2.4 ms in one block of five; a reused one 0.09 ms. The
    cost: a decode worker keeps one block's memory between tasks (about ``dataset.BLOCK_BYTES``).
    """
    with _BLOCKS_LOCK:
        held = _BLOCKS.get(name)
        if (held is None or sys.getrefcount(held) > 3 or held.dtype != dtype or held.shape[1:] != shape
                or len(held) < rows):  # 3: the dict's, ``held`` and getrefcount's argument
            held = _BLOCKS[name] = np.empty((rows, *shape), dtype)
        return held[:rows]


class _BlockWriter:
    """A block's columns, filled as its samples are made: each sample's fixed-size columns are
    copied into the block's buffer (:func:`_block_buffer`) when it is added, and the sample is
    dropped. ``capacity`` bounds the rows; ``batch()`` returns the rows added, as numpy columns.

    Copying at once, rather than keeping a task's samples and stacking them at its end, writes
    each clip while it is still in cache and lets the allocator hand the same memory to the
    next sample, instead of holding a second block's worth of samples until the task ends. The
    Ray decode workers of ``bench/pipeline.py`` spent 0.14-0.27 ms less CPU per 16 x 112² clip
    (perf, 3 pairs of runs, mean 0.19; ``bench/RESULTS.md``). ``copy_s`` is the copying's wall
    time (the stage's ``t_arrow_ms`` counts it).
    """

    def __init__(self, schema: dict[str, tuple[str, tuple]], capacity: int) -> None:
        self.schema, self.rows, self.copy_s = schema, 0, 0.0
        self.fixed = {name: _block_buffer(name, np.dtype(dtype), tuple(shape), capacity)
                      for name, (dtype, shape) in schema.items() if dtype != "string" and capacity}
        self.strings: dict[str, list[str]] = {name: [] for name, (dtype, _) in schema.items() if dtype == "string"}

    def add(self, sample: dict) -> None:
        start = time.perf_counter()
        for name, buffer in self.fixed.items():
            value = np.asarray(sample[name])
            if value.shape != buffer.shape[1:]:
                raise ValueError(f"column {name!r}: a sample of shape {value.shape} in a block of {buffer.shape[1:]}")
            buffer[self.rows] = value
        for name, values in self.strings.items():
            values.append(str(sample[name]))
        self.rows += 1
        self.copy_s += time.perf_counter() - start

    def batch(self) -> dict[str, np.ndarray]:
        """The rows added; an empty block keeps every column with its dtype and shape."""
        out = {}
        for name, (dtype, shape) in self.schema.items():
            if dtype == "string":
                out[name] = np.array(self.strings[name], dtype=object)
            elif not self.rows:
                out[name] = np.zeros((0, *shape), dtype)
            else:
                out[name] = self.fixed[name][:self.rows]
        return out


def current_epoch(epoch) -> int:
    """``epoch`` itself, or the value of an epoch clock (:class:`pipelines.data.clock.EpochClock`).

    A training run passes the clock so that one Dataset object, re-executed every epoch
    by ``iter_torch_batches``, draws new clips each epoch from ``(seed, epoch, video)``.
    """
    return int(epoch) if isinstance(epoch, (int, np.integer)) else epoch.get()


def _one_sample(row: dict, block: _Block, read: _Reader, make: Callable[..., dict]) -> dict | None:
    """One sample with its telemetry, or ``None`` (failure recorded, or a known-bad file skipped)."""
    start = time.perf_counter()
    block.decode_s, block.bytes_read = 0.0, 0
    try:
        sample = make(row, read=read)
    except _Skipped:
        return None
    except MediaError as exc:
        block.fail(quarantine_row(getattr(exc, "uri", row["uri"]), "decode", exc.kind, exc.reason,
                                  video_id=row["video_id"]))
        return None
    if block.per_read:
        block.client.done(block.run, row["video_id"])
    total = time.perf_counter() - start
    return {**sample, "t_decode_ms": 1000 * block.decode_s, "t_augment_ms": 1000 * (total - block.decode_s),
            "bytes_read": block.bytes_read}


def _writer(cfg: RecipeConfig, num_classes: int | None, timed: bool, drop: Sequence[str], capacity: int,
            extra: dict[str, tuple[str, tuple]] | None = None) -> _BlockWriter:
    """The block's writer: the recipe's columns without the ``drop`` ones, the ``extra`` ones and,
    when ``timed``, the telemetry columns made per sample (``t_arrow_ms`` is added by :func:`_output`)."""
    schema = recipes.batch_schema(cfg, num_classes, with_stage=False)  # the batch stage adds its own
    schema = {**{k: v for k, v in schema.items() if k not in drop}, **(extra or {})}
    if timed:
        schema.update({k: v for k, v in telemetry.COLUMNS.items() if k != "t_arrow_ms"})
    return _BlockWriter(schema, capacity)


def _output(writer: _BlockWriter, timed: bool):
    """The block: numpy columns, or (``timed``) an Arrow table with ``t_arrow_ms`` measured (the
    samples' copies into the block and the conversion, per row)."""
    if not timed and writer.rows:
        return writer.batch()
    import pyarrow as pa
    from ray.data.block import BlockAccessor

    start = time.perf_counter()
    if writer.rows:
        table = BlockAccessor.batch_to_block(writer.batch())
    else:  # a zero-row tensor column does not convert to Arrow's tensor type: slice a one-row block
        one = {k: np.zeros((1, *shape), object if dtype == "string" else dtype)
               for k, (dtype, shape) in writer.schema.items()}
        table = BlockAccessor.batch_to_block(one).slice(0, 0)
    if not timed:
        return table
    per_row = 1000 * (time.perf_counter() - start + writer.copy_s) / max(1, writer.rows)
    return table.append_column("t_arrow_ms", pa.array(np.full(writer.rows, per_row, np.float32)))


def sample_stage(batch: dict[str, np.ndarray], *, cfg: RecipeConfig, seed: int, epoch,
                 num_classes: int | None, run: str, ledger, options, drop: Sequence[str] = ()):
    """Ray ``map_batches`` stage: item rows in, samples out (without the ``drop`` columns); failed
    videos are left out and recorded."""
    init_decode_worker()
    epoch = current_epoch(epoch)
    rows = [{k: (v[i].item() if isinstance(v[i], np.generic) else v[i]) for k, v in batch.items()}
            for i in range(len(batch["video_id"]))]
    writer = _writer(cfg, num_classes, options.telemetry, drop, len(rows))
    _samples(rows, epoch, block_key(rows), writer.add, cfg=cfg, seed=seed, num_classes=num_classes, run=run,
             ledger=ledger, options=options)
    return _output(writer, options.telemetry)


def span_stage(batch: dict[str, np.ndarray], *, items, total_epochs: int, shuffle: bool, cfg: RecipeConfig,
               seed: int, epoch, num_classes: int | None, run: str, ledger, options, drop: Sequence[str] = ()):
    """Ray ``map_batches`` stage of an epoch-spanning dataset: slot ranges in, samples out.

    A descriptor ``(start, stop)`` is a range of the execution's slots: slot ``f`` is place
    ``f % n`` of epoch ``base + f // n`` (``n`` items, ``base`` the epoch clock's value, read
    once per task; the loop sets it before each execution), so a block may end one epoch and
    begin the next. Place ``j`` of epoch ``e`` is item ``order_e[j]``, ``order_e`` the
    permutation drawn from ``(seed, e)`` (``shuffle``) or the manifest order. Epochs from
    ``total_epochs`` on give no samples. Every sample gets its ``epoch``.
    """
    init_decode_worker()
    base, items = current_epoch(epoch), _items_of(items)
    n, ranges = len(items), list(zip(batch["start"].tolist(), batch["stop"].tolist()))
    writer = _writer(cfg, num_classes, options.telemetry, drop, sum(b - a for a, b in ranges),
                     extra={"epoch": ("int64", ())})
    for start, stop in ranges:
        for k in range(start // n, (stop - 1) // n + 1):
            e = base + k
            if e >= total_epochs:
                break
            places = epoch_order(n, seed, e, shuffle)[max(start - k * n, 0):min(stop - k * n, n)]
            rows = [items[i] for i in places]
            _samples(rows, e, f"{block_key(rows)}@{e}", lambda s, e=e: writer.add({**s, "epoch": e}), cfg=cfg,
                     seed=seed, num_classes=num_classes, run=run, ledger=ledger, options=options)
    return _output(writer, options.telemetry)


def epoch_order(n: int, seed: int, epoch: int, shuffle: bool) -> np.ndarray:
    """The sample order of ``epoch``: a permutation drawn from ``(seed, epoch)``, or ``0..n-1``."""
    return np.random.default_rng([seed, epoch]).permutation(n) if shuffle else np.arange(n)


_ITEMS: dict[str, list[dict]] = {}  # this worker process's item lists, by object ref (insertion order)


def _items_of(ref) -> list[dict]:
    """The item rows behind ``ref`` (a ``ray.put`` list), fetched once per worker process."""
    import ray

    if not isinstance(ref, ray.ObjectRef):
        return ref
    key = ref.hex()
    if key not in _ITEMS:
        while len(_ITEMS) >= 4:  # the runs sharing this worker (a sweep's trials), oldest out
            del _ITEMS[next(iter(_ITEMS))]
        _ITEMS[key] = ray.get(ref)
    return _ITEMS[key]


def _samples(rows: list[dict], epoch: int, key: str, add: Callable[[dict], None], *, cfg: RecipeConfig, seed: int,
             num_classes: int | None, run: str, ledger, options) -> None:
    """The samples of one block of item rows of ``epoch``, each given to ``add`` as it is made; the
    ledger is told when the block begins and ends."""
    client = LedgerClient(ledger)
    uris = sorted({r["uri"] for r in rows} | {r["flow_uri"] for r in rows if r.get("flow_uri")})
    per_read, bad = client.begin_block(run, key, uris)
    block = _Block(client, run, key, per_read, frozenset(bad))
    read = _Reader(block, options, media_of(rows))

    def make(row: dict, read) -> dict:
        return recipes.make_sample(row, cfg, seed=seed, epoch=epoch, num_classes=num_classes, read=read)

    for row in rows:
        if (sample := _one_sample(row, block, read, make)) is not None:
            add(sample)
    client.end_block(run, key, block.failed, block.skipped)


def batch_stage(batch: dict[str, np.ndarray], *, fn, kwargs: dict, seed: int, epoch,
                drop: Sequence[str] = ()) -> dict[str, np.ndarray]:
    """Ray ``map_batches`` stage around a recipe's :class:`~pipelines.data.recipes.BatchStage`
    function (e.g. volume augmentation), reading the current epoch (in an epoch-spanning dataset,
    the epoch of the batch's first row); the ``drop`` columns are left out."""
    init_decode_worker()
    if "epoch" in batch and len(batch["epoch"]):  # an epoch-spanning dataset: the rows' own epoch
        epoch = int(batch["epoch"][0])
    out = fn(batch, seed=seed, epoch=current_epoch(epoch), **kwargs)
    return {k: v for k, v in out.items() if k not in drop}
