"""The dataset manifest and the quarantine ledger: two Parquet tables in object storage.

``DST/manifest.parquet`` has one row per accepted video (schema :data:`MANIFEST_SCHEMA`,
documented in the README); ``DST/quarantine.parquet`` has one row per rejected input
(:data:`QUARANTINE_SCHEMA`). Every input of an ingest ends in exactly one of them,
so ``inputs = accepted + quarantined``.

Tables are written atomically (a whole new object replaces the old one), so a reader
never sees half a manifest.
"""

from __future__ import annotations

import hashlib
import io
from collections import Counter
from typing import Any, Iterable

import pyarrow as pa
import pyarrow.parquet as pq

from pipelines.io import storage

SEGMENT_TYPE = pa.struct([
    ("label", pa.string()),
    ("label_index", pa.int64()),
    ("start_s", pa.float64()),
    ("end_s", pa.float64()),
])

MANIFEST_SCHEMA = pa.schema([
    ("video_id", pa.string()),        # unique within the manifest
    ("uri", pa.string()),             # the file training reads (transcoded copy or the original)
    ("label", pa.string()),           # class name; null for unlabelled / multi-label videos
    ("label_index", pa.int64()),      # 0-based class index; null when label is null
    ("split", pa.string()),           # train / val / test / unused
    ("num_frames", pa.int64()),       # frames a full decode of `uri` yields
    ("fps", pa.float64()),            # average frame rate of `uri`
    ("width", pa.int32()),
    ("height", pa.int32()),
    ("duration_s", pa.float64()),
    ("codec", pa.string()),           # FFmpeg codec name of `uri`'s video stream
    ("content_hash", pa.string()),    # sha256 of the original file's bytes (source_uri)
    ("source_uri", pa.string()),      # the original file (== uri when not transcoded)
    ("size_bytes", pa.int64()),       # bytes of `uri`
    ("segments", pa.list_(SEGMENT_TYPE)),  # temporal action segments; empty for single-label clips
    ("flow_uri", pa.string()),        # optical-flow video aligned frame by frame with `uri` (jobs/flow.py)
    ("group_id", pa.string()),        # the source video this clip was cut from (see pipelines/prep/datasets)
])
# Columns later jobs add; manifests written before them read with nulls there.
OPTIONAL_COLUMNS = frozenset({"flow_uri", "group_id"})

QUARANTINE_SCHEMA = pa.schema([
    ("source_uri", pa.string()),      # the rejected file, or the annotation file for a bad row
    ("stage", pa.string()),           # annotation / read / probe / transcode / dedup / decode
    ("kind", pa.string()),            # machine-readable category, for counts
    ("reason", pa.string()),          # a sentence a person can act on, with the underlying error
    ("content_hash", pa.string()),    # when the bytes could be read
    ("video_id", pa.string()),        # when known
    ("origin", pa.string()),          # annotation file and line number, when the input came from one
])

MANIFEST_NAME = "manifest.parquet"
QUARANTINE_NAME = "quarantine.parquet"


def empty(schema: pa.Schema) -> pa.Table:
    return schema.empty_table()


def to_table(rows: Iterable[dict[str, Any]], schema: pa.Schema) -> pa.Table:
    """Rows (dicts) to a table of ``schema``; missing keys become nulls, extra keys are an error."""
    rows = list(rows)
    names = set(schema.names)
    for row in rows:
        extra = set(row) - names
        if extra:
            raise ValueError(f"unknown manifest columns {sorted(extra)}")
    columns = {name: [row.get(name) for row in rows] for name in schema.names}
    return pa.Table.from_pydict(columns, schema=schema)


def write_table(table: pa.Table, url: str) -> None:
    """Write ``table`` as Parquet to ``url`` atomically."""
    buf = io.BytesIO()
    pq.write_table(table, buf, compression="zstd")
    storage.write_bytes(url, buf.getvalue())


def read_table(url: str, schema: pa.Schema) -> pa.Table:
    """Read a table written by :func:`write_table`; an absent object reads as empty.

    Raises:
        ValueError: the table lacks a column of ``schema`` that is not optional.
    """
    if not storage.exists(url):
        return empty(schema)
    with storage.open_url(url, "rb") as f:
        table = pq.read_table(f)
    missing = [name for name in schema.names if name not in table.column_names]
    required = sorted(set(missing) - OPTIONAL_COLUMNS)
    if required:
        raise ValueError(f"{url} is not a {schema.names[0]!r} table of this version: it lacks {required}")
    for name in missing:
        table = table.append_column(name, pa.nulls(table.num_rows, schema.field(name).type))
    return table.select(schema.names).cast(schema)


def manifest_url(url: str) -> str:
    """The manifest object of a dataset folder or ``.parquet`` URL."""
    return url if url.endswith(".parquet") else storage.join(url, MANIFEST_NAME)


def exists(url: str) -> bool:
    """Whether a manifest is stored at ``url`` (an absent one reads as an empty table)."""
    return storage.exists(manifest_url(url))


def read_manifest(url: str) -> pa.Table:
    """The manifest at ``url`` (a ``.parquet`` URL, or a dataset folder holding one)."""
    return read_table(manifest_url(url), MANIFEST_SCHEMA)


def read_quarantine(url: str) -> pa.Table:
    if not url.endswith(".parquet"):
        url = storage.join(url, QUARANTINE_NAME)
    return read_table(url, QUARANTINE_SCHEMA)


def fingerprint(manifest: pa.Table) -> str:
    """A content fingerprint of a dataset: sha256 over sorted (video_id, content_hash, split, label).

    Two manifests with the same videos, splits and labels have the same fingerprint,
    whatever the row order or where the files live; runs and models are tagged with it.
    """
    keys = sorted(zip(*(manifest.column(c).to_pylist()
                        for c in ("video_id", "content_hash", "split", "label"))),
                  key=lambda k: tuple("" if v is None else str(v) for v in k))
    digest = hashlib.sha256()
    for key in keys:
        digest.update("\x1f".join("" if v is None else str(v) for v in key).encode())
        digest.update(b"\x1e")
    return digest.hexdigest()


def summarize(manifest: pa.Table, quarantine: pa.Table) -> dict[str, Any]:
    """Counts a person reads after an ingest: per split, per class, per quarantine kind."""
    splits = Counter(manifest.column("split").to_pylist())
    labels = Counter(l for l in manifest.column("label").to_pylist() if l is not None)
    kinds = Counter(quarantine.column("kind").to_pylist())
    frames = manifest.column("num_frames").to_pylist()
    return {
        "accepted": manifest.num_rows,
        "quarantined": quarantine.num_rows,
        "splits": dict(sorted(splits.items())),
        "classes": len(labels),
        "videos_with_segments": sum(1 for s in manifest.column("segments").to_pylist() if s),
        "total_frames": int(sum(frames)),
        "total_hours": round(sum(manifest.column("duration_s").to_pylist()) / 3600, 4),
        "quarantine_kinds": dict(sorted(kinds.items())),
        "fingerprint": fingerprint(manifest),
    }
