"""Ingest: a dataset's files in object storage -> ``manifest.parquet`` + ``quarantine.parquet``.

The adapter lists the inputs on the driver; Ray Data probes every candidate in
parallel (hash, exact decode, optional transcode to a short-GOP H.264 copy under
``DST/videos/``); the driver merges the results with what earlier runs ingested and
writes both tables atomically, also every ``flush_every`` results so a crash loses
little. Invariant, checked on every run: ``inputs = accepted + quarantined``.

Idempotence: a candidate whose content hash is already in the manifest is not
probed or transcoded again; its row is kept (with label and split refreshed from the
current annotations), so re-running never duplicates rows. Rows that earlier runs
accepted from inputs not listed this time are kept too, so one destination can
collect several sources. The quarantine table is rebuilt from this run's inputs
(a fixed file leaves it) plus earlier rows of inputs not listed this time.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import re
import time
from collections import Counter
from typing import Any

import pyarrow as pa

from pipelines.prep import datasets
from pipelines.io import manifest
from pipelines.io import storage
from pipelines.io.probe import MediaError, inspect

log = logging.getLogger(__name__)


@dataclasses.dataclass
class IngestConfig:
    """Arguments of one ingest run."""

    fmt: str
    src: str
    dst: str
    short_side: int | None = None  # transcode to this short side (None: keep the size)
    gop: int | None = None         # transcode with this keyframe interval
    crf: int = 20
    split_id: int = 1              # ucf101 / hmdb51 split
    split: str = "train"           # folder layout without split folders
    flush_every: int = 500

    @property
    def transcode(self) -> bool:
        return self.short_side is not None or self.gop is not None


@dataclasses.dataclass
class IngestReport:
    inputs: int
    accepted_new: int
    accepted_existing: int
    quarantined: int
    reasons: dict[str, int]
    manifest_rows: int
    fingerprint: str
    seconds: float

    @property
    def accepted(self) -> int:
        return self.accepted_new + self.accepted_existing


def safe_path(video_id: str) -> str:
    """A storage path for a video id: safe characters only, no climbing out of the folder."""
    cleaned = re.sub(r"[^A-Za-z0-9._/-]", "_", video_id).strip("/")
    return "/".join(p if p not in ("", ".", "..") else "_" for p in cleaned.split("/"))


def quarantine_row(source_uri: str, stage: str, kind: str, reason: str, *, content_hash=None,
                   video_id=None, origin=None) -> dict[str, Any]:
    return {"source_uri": datasets.safe_name(source_uri), "stage": stage, "kind": kind, "reason": reason,
            "content_hash": content_hash, "video_id": video_id, "origin": origin}


def process_candidate(cand: dict, *, dst: str, known: frozenset[str] | set[str], short_side: int | None,
                      gop: int | None, crf: int, transcode: bool) -> dict[str, Any]:
    """Hash, probe and maybe transcode one candidate (runs in a Ray task).

    Args:
        known: content hashes already in the manifest: those are not probed again.

    Returns:
        ``{"status": "accepted" | "existing" | "quarantined", "row": {...}}``; an
        ``existing`` row holds only what changes (names, labels); the driver adds the rest.
    """
    src = cand["source_uri"]
    bad = dict(source_uri=src, video_id=cand["video_id"], origin=cand.get("origin"))
    try:
        digest = storage.sha256(src)
    except FileNotFoundError as exc:
        return {"status": "quarantined", "row": quarantine_row(
            stage="read", kind="not_found", reason=f"file not found: it was listed but is gone (deleted "
            f"or moved between listing and reading): {exc}", **bad)}
    except PermissionError as exc:
        return {"status": "quarantined", "row": quarantine_row(
            stage="read", kind="permission", reason=f"cannot be read: permission denied ({exc})", **bad)}
    except OSError as exc:
        return {"status": "quarantined", "row": quarantine_row(
            stage="read", kind="read_error", reason=f"cannot be read: {type(exc).__name__}: {exc}", **bad)}
    labels = {k: cand[k] for k in ("video_id", "label", "label_index", "split", "segments")}
    labels["group_id"] = cand.get("group_id") or cand["video_id"]
    if digest in known:  # same bytes as an ingested video: skip the work
        return {"status": "existing", "row": {**labels, "source_uri": src, "content_hash": digest}}
    uri = storage.join(dst, "videos", safe_path(cand["video_id"]) + ".mp4") if transcode else src
    try:
        info = inspect(src, transcode_to=uri if transcode else None, short_side=short_side, gop=gop, crf=crf)
    except MediaError as exc:
        stage = "transcode" if exc.kind == "transcode_failed" else "probe"
        return {"status": "quarantined", "row": quarantine_row(
            stage=stage, kind=exc.kind, reason=exc.reason, content_hash=digest, **bad)}
    except Exception as exc:  # noqa: BLE001 - an unknown failure is still one input's failure
        return {"status": "quarantined", "row": quarantine_row(
            stage="probe", kind="error", reason=f"unexpected error while probing: "
            f"{type(exc).__name__}: {exc}", content_hash=digest, **bad)}
    row = {**labels, **dataclasses.asdict(info), "uri": uri, "source_uri": src, "content_hash": digest,
           "size_bytes": storage.size(uri)}
    return {"status": "accepted", "row": row}


_KNOWN_CACHE: dict[str, frozenset[str]] = {}


def _map_fn(item: dict, *, known_ref, **kwargs) -> dict:
    """Ray Data stage; the known-hash set is fetched from the object store once per worker process."""
    import ray

    key = known_ref.hex()
    if key not in _KNOWN_CACHE:
        _KNOWN_CACHE.clear()
        _KNOWN_CACHE[key] = ray.get(known_ref)
    cand = json.loads(item["candidate"])
    result = process_candidate(cand, known=_KNOWN_CACHE[key], **kwargs)
    return {"order": item["order"], "result": json.dumps(result)}


class _Merger:
    """Accumulates results and writes the two tables (atomically) on :meth:`flush`."""

    def __init__(self, cfg: IngestConfig, listing: datasets.Listing) -> None:
        self.cfg = cfg
        self.old_rows = manifest.read_manifest(cfg.dst).to_pylist()
        self.old_quarantine = manifest.read_quarantine(cfg.dst).to_pylist()
        self.listed = {datasets.safe_name(c.source_uri) for c in listing.candidates}
        self.listed |= {datasets.safe_name(r.source_uri) for r in listing.rejections}
        self.rejected = [quarantine_row(r.source_uri, r.stage, r.kind, r.reason, origin=r.origin,
                                        video_id=r.video_id) for r in listing.rejections]
        self.known = {r["content_hash"]: r for r in self.old_rows}
        self.results: dict[int, dict] = {}

    def add(self, order: int, result: dict) -> None:
        if result["status"] == "existing":  # complete the row from the manifest of earlier runs
            old = self.known[result["row"]["content_hash"]]
            row = {**old, **result["row"]}
            if old["uri"] == old["source_uri"]:  # not transcoded: read the file where it is now
                row["uri"] = row["source_uri"]
            result = {"status": "existing", "row": row}
        self.results[order] = result

    def tables(self) -> tuple[pa.Table, pa.Table, Counter, Counter]:
        """Current manifest and quarantine tables, this run's status counts and quarantine kinds."""
        counts: Counter = Counter()
        rows, quarantine = [], list(self.rejected)
        by_hash: dict[str, dict] = {}
        ids: set[str] = set()
        for _, result in sorted(self.results.items()):
            row = result["row"]
            if result["status"] == "quarantined":
                quarantine.append(row)
                counts["quarantined"] += 1
                continue
            first = by_hash.get(row["content_hash"])
            if first is not None or row["video_id"] in ids:
                what = (f"the same bytes as {first['source_uri']} (video_id {first['video_id']})"
                        if first is not None else f"video_id {row['video_id']!r} is already used")
                quarantine.append(quarantine_row(row["source_uri"], "dedup", "duplicate",
                                                 f"duplicate input: {what}; kept the first",
                                                 content_hash=row["content_hash"], video_id=row["video_id"]))
                counts["quarantined"] += 1
                continue
            by_hash[row["content_hash"]] = row
            ids.add(row["video_id"])
            rows.append(row)
            counts[result["status"]] += 1
        counts["quarantined"] += len(self.rejected)
        kept = [r for r in self.old_rows if r["content_hash"] not in by_hash and r["video_id"] not in ids]
        old_q = [q for q in self.old_quarantine if q["source_uri"] not in self.listed]
        return (manifest.to_table(kept + rows, manifest.MANIFEST_SCHEMA),
                manifest.to_table(old_q + quarantine, manifest.QUARANTINE_SCHEMA), counts,
                Counter(q["kind"] for q in quarantine))

    def flush(self) -> tuple[pa.Table, pa.Table, Counter, Counter]:
        table, quarantine, counts, kinds = self.tables()
        manifest.write_table(table, storage.join(self.cfg.dst, manifest.MANIFEST_NAME))
        manifest.write_table(quarantine, storage.join(self.cfg.dst, manifest.QUARANTINE_NAME))
        return table, quarantine, counts, kinds


def run_ingest(cfg: IngestConfig) -> IngestReport:
    """List, probe (in parallel on Ray) and record every input of ``cfg.src``.

    Raises:
        datasets.SourceError: the source is not in the given format.
        AssertionError: the accounting invariant broke (a bug, never bad input).
    """
    import ray

    start = time.time()
    options = {"split_id": cfg.split_id} if cfg.fmt in ("ucf101", "hmdb51") else {}
    if cfg.fmt == "folder":
        options = {"split": cfg.split}
    listing = datasets.list_inputs(cfg.fmt, cfg.src, **options)
    merger = _Merger(cfg, listing)
    items = [{"order": i, "candidate": json.dumps(dataclasses.asdict(c))}
             for i, c in enumerate(listing.candidates)]
    if items:
        blocks = max(1, min(len(items), int(ray.cluster_resources().get("CPU", 1)) * 4))
        ds = ray.data.from_items(items, override_num_blocks=blocks).map(
            _map_fn, fn_kwargs=dict(dst=cfg.dst, known_ref=ray.put(frozenset(merger.known)),
                                    short_side=cfg.short_side, gop=cfg.gop,
                                    crf=cfg.crf, transcode=cfg.transcode),
            num_cpus=1)
        for n, item in enumerate(ds.iter_rows(), start=1):
            merger.add(item["order"], json.loads(item["result"]))
            if n % cfg.flush_every == 0:
                merger.flush()
    table, _, counts, kinds = merger.flush()
    accepted = counts["accepted"] + counts["existing"]
    if accepted + counts["quarantined"] != listing.inputs:
        raise AssertionError(f"accounting broke: {listing.inputs} inputs != {accepted} accepted + "
                             f"{counts['quarantined']} quarantined")
    return IngestReport(inputs=listing.inputs, accepted_new=counts["accepted"],
                        accepted_existing=counts["existing"], quarantined=counts["quarantined"],
                        reasons=dict(kinds.most_common()),
                        manifest_rows=table.num_rows, fingerprint=manifest.fingerprint(table),
                        seconds=round(time.time() - start, 2))
