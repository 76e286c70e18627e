"""Kinetics: CSV files with ``label,youtube_id,time_start,time_end,split``; ``group_id`` is the
``youtube_id`` (clips of one YouTube video are one source).

Videos are named ``<youtube_id>_<time_start:06d>_<time_end:06d>.mp4`` and found
anywhere under SRC by that stem (flat, per-split or per-class folders all work).
Every ``*.csv`` under SRC with that header is read; extra columns (``is_cc``) are
ignored. Class indices are the sorted label names. Rows without a label (the test
split of some releases) get a null label. ``validate`` is normalised to ``val``.
"""

from __future__ import annotations

import csv
import io

from pipelines.io import storage
from pipelines.prep.datasets import (Candidate, Listing, Rejection, SourceError, VideoIndex, malformed,
                                missing_video)

REQUIRED = ("label", "youtube_id", "time_start", "time_end", "split")
SPLITS = {"train": "train", "val": "val", "validate": "val", "validation": "val", "test": "test"}


def _read_rows(uri: str, rejections: list[Rejection]):
    """Yield ``(origin, row)`` from one CSV; malformed rows become rejections."""
    try:
        text = storage.read_bytes(uri).decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        rejections.append(malformed(uri, f"{uri}:0", f"file is not UTF-8 ({exc})"))
        return
    reader = csv.reader(io.StringIO(text))
    header = next(reader, None)
    if header is None or not set(REQUIRED) <= {h.strip() for h in header}:
        return
    header = [h.strip() for h in header]
    for row in reader:
        origin = f"{uri}:{reader.line_num}"
        if not any(cell.strip() for cell in row):
            continue
        if len(row) != len(header):
            rejections.append(malformed(uri, origin, f"{len(row)} fields, expected {len(header)}: {row!r}"))
            continue
        yield origin, dict(zip(header, (c.strip() for c in row)))


def list_inputs(src: str) -> Listing:
    index = VideoIndex(src)
    rejections: list[Rejection] = []
    rows = []
    csvs = [f for f in index.files if f.lower().endswith(".csv")]
    for uri in csvs:
        rows.extend((uri, origin, row) for origin, row in _read_rows(uri, rejections))
    if not rows and not rejections:
        raise SourceError(f"no Kinetics CSV (columns {','.join(REQUIRED)}) under {src}")
    classes = sorted({row["label"] for _, _, row in rows if row["label"]})
    class_index = {c: i for i, c in enumerate(classes)}
    candidates = []
    for uri, origin, row in rows:
        try:
            start, end = int(float(row["time_start"])), int(float(row["time_end"]))
        except ValueError:
            rejections.append(malformed(uri, origin, f"time_start/time_end are not numbers: {row!r}"))
            continue
        split = SPLITS.get(row["split"].lower())
        if end <= start or start < 0 or split is None or not row["youtube_id"]:
            rejections.append(malformed(uri, origin, "needs a youtube_id, 0 <= time_start < time_end and a "
                                        f"split in {sorted(SPLITS)}: {row!r}"))
            continue
        video_id = f"{row['youtube_id']}_{start:06d}_{end:06d}"
        video = index.find(video_id)
        if video is None:
            rejections.append(missing_video(f"{video_id}.mp4", origin, video_id=video_id))
            continue
        label = row["label"] or None
        candidates.append(Candidate(video, video_id, label=label,
                                    label_index=class_index[label] if label else None,
                                    split=split, origin=origin, group_id=row["youtube_id"]))
    return Listing(candidates, rejections, classes)
