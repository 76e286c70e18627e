"""The quarantine ledger of the data pipeline: decode failures and the reads that killed a worker.

One :class:`QuarantineLedger` Ray actor per driver (:func:`get_ledger`) holds the
:data:`~pipelines.io.manifest.QUARANTINE_SCHEMA` records of every run (one
:func:`~pipelines.data.dataset.build_pipeline` call) and what each run skipped.

Protocol of a decode task (one Ray Data block), :class:`LedgerClient` on the task side:

* **batched** (every first attempt of a block): one call when the task starts,
  :meth:`QuarantineLedger.begin_block`, marks the block open and returns the block's
  files already known to be bad (skipped without decoding); one call when it ends,
  :meth:`QuarantineLedger.end_block`, brings the block's failure records and skipped
  files and closes the block. Nothing per sample: two round trips per 16–64 rows
  instead of three per sample (2–3 ms each on a busy node).
* **per read** (a retried block): ``begin_block`` finds the block still open, so an
  earlier attempt died inside it (a native crash in a decoder, an OOM kill, or a
  worker that exited with stuck decoders). The retry then runs the original protocol:
  before each read :meth:`QuarantineLedger.attempt` records "reading (video, uri)", the
  sample's next read or its end (:meth:`QuarantineLedger.done`) clears it, failures go
  in one by one (:meth:`QuarantineLedger.fail`). A retry that finds an attempt still
  open knows that this read killed the worker and quarantines it (``decoder_crash``)
  instead of reading it again. A crashing video thus costs two retries (one to switch to
  per-read mode, one to pinpoint it), and every retry gets further, so the retries end.

A run must not iterate the same Dataset twice at once: a block open in one execution
would look like a crashed attempt to the other (it would only run in per-read mode, but
an attempt open in one would be quarantined by the other).
"""

from __future__ import annotations

from collections import Counter
from typing import Any, Sequence

import pyarrow as pa
import ray

from pipelines.io import manifest, storage
from pipelines.prep.ingest import quarantine_row

DEFAULT_LEDGER = "vidray-quarantine-ledger"


class QuarantineLedger:
    """Decode failures, open blocks and in-flight reads of all runs of a driver (a Ray actor)."""

    def __init__(self) -> None:
        self._records: dict[tuple, dict] = {}
        self._bad: dict[str, tuple] = {}            # source_uri -> key of its decode record
        self._runs: dict[str, set[tuple]] = {}
        self._open: dict[tuple[str, str], set[str]] = {}  # (run, video_id) -> uris being read
        self._blocks: set[tuple[str, str]] = set()   # (run, block) of tasks that began and did not end

    def _add(self, run: str, row: dict) -> None:
        key = (row["stage"], row["video_id"], row["source_uri"])
        self._records.setdefault(key, row)
        if row["stage"] == "decode":
            self._bad.setdefault(row["source_uri"], key)
        ref = self._bad.get(row["source_uri"], key) if row["stage"] == "decode" else key
        self._runs.setdefault(run, set()).add(ref)

    def _skip(self, run: str, uri: str) -> None:
        self._runs.setdefault(run, set()).add(self._bad[uri])

    # ------------------------------------------------------------------ batched protocol
    def begin_block(self, run: str, block: str, uris: Sequence[str]) -> tuple[bool, list[str]]:
        """``(retry, bad)``: whether an earlier attempt of this block died, and which of
        ``uris`` are known to be bad (not counted here: the task reports what it skipped)."""
        retry = (run, block) in self._blocks
        self._blocks.add((run, block))
        return retry, [u for u in uris if u in self._bad]

    def end_block(self, run: str, block: str | None, failed: Sequence[dict], skipped: Sequence[str]) -> None:
        """The block's failure records and skipped known-bad files; closes it (``block=None``: keep it
        open, for a worker about to exit)."""
        for row in failed:
            self._fail(run, row)
        for uri in skipped:
            self._skip(run, uri)
        if block is not None:
            self._blocks.discard((run, block))

    # ------------------------------------------------------------------ per-read protocol
    def attempt(self, run: str, video_id: str, uri: str, previous: str | None = None) -> bool:
        """Whether to read ``uri`` now (``previous``: the sample's last read, which returned).

        ``False``, with the video counted, for a known-bad file or for a read that an
        earlier attempt of this run started and never finished: the worker died in it.
        """
        if uri in self._bad:
            self._skip(run, uri)
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
        self._fail(run, row)

    def _fail(self, run: str, row: dict) -> None:
        self._add(run, row)
        self._open.pop((run, row["video_id"]), None)

    # ------------------------------------------------------------------ build time and results
    def exclude(self, run: str, rows: list[dict]) -> None:
        for row in rows:
            self._add(run, row)

    def rows(self, run: str | None = None) -> list[dict]:
        keys = self._records if run is None else sorted(self._runs.get(run, ()), key=str)
        return [self._records[k] for k in keys]

    def counts(self, run: str | None = None) -> dict[str, int]:
        return dict(Counter(r["kind"] for r in self.rows(run)))


class LedgerClient:
    """The task side: blocking calls to the ledger actor, or direct calls to a local
    :class:`QuarantineLedger` (tests, no Ray). ``calls`` counts the round trips."""

    def __init__(self, ledger: Any) -> None:
        self.ledger, self.calls = ledger, 0

    def __getattr__(self, name: str):
        if name.startswith("_"):
            raise AttributeError(name)
        method = getattr(self.ledger, name)

        def call(*args):
            self.calls += 1
            if isinstance(self.ledger, QuarantineLedger):
                return method(*args)
            return ray.get(method.remote(*args))

        return call


_LEDGERS: dict[str, Any] = {}  # the driver keeps its ledgers alive for as long as it runs


def get_ledger(name: str = DEFAULT_LEDGER) -> "ray.actor.ActorHandle":
    """The named ledger actor of this Ray job, created on first use (no CPU reserved).

    The handle is kept in this process: Ray destroys a (non-detached) actor once no
    handle to it is left, which would lose the records between two builds.

    A driver shares the ledger by ``name`` with everything it starts. A worker process (a
    Tune trial, a Train worker running a validation hook) gets a ledger of its own
    (``name`` plus its worker id): an actor dies with the process that created it, so a
    ledger shared between trials would vanish when the trial that made it ends, and the
    other trials' records with it.
    """
    if name not in _LEDGERS:
        ctx = ray.get_runtime_context()
        scoped = name if ctx.worker.mode == ray._private.worker.SCRIPT_MODE else f"{name}-{ctx.get_worker_id()[:16]}"
        actor_cls = ray.remote(num_cpus=0)(QuarantineLedger)
        from pipelines.cluster import on_this_node  # the ledger lives with its creator, not on a worker node

        _LEDGERS[name] = actor_cls.options(name=scoped, get_if_exists=True, scheduling_strategy=on_this_node()).remote()
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
