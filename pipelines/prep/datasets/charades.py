"""Charades: ``Charades_v1_train.csv`` / ``Charades_v1_test.csv`` and ``Charades_v1_classes.txt``.

The CSVs have the columns ``id,subject,scene,quality,relevance,verified,script,
objects,descriptions,actions,length``; ``actions`` is ``c092 11.90 21.20;c147 0.00
12.60`` (class, start and end in seconds), possibly empty. Each video becomes one
candidate with null ``label`` and its actions as ``segments`` (label = the class
description from the classes file, label_index = the class number). Videos
``<id>.mp4`` are found anywhere under SRC. A row with a malformed action, an
unknown class or an action outside ``[0, length]`` (beyond a 0.5 s tolerance for
rounding in the released files) is rejected whole, with its line number.
"""

from __future__ import annotations

import csv
import io

from pipelines.io import storage
from pipelines.prep.datasets import (Candidate, Listing, Rejection, VideoIndex, annotation_lines,
                                find_annotation, malformed, missing_video)

SPLIT_FILES = (("train", "Charades_v1_train.csv"), ("test", "Charades_v1_test.csv"))
LENGTH_TOLERANCE_S = 0.5


def read_classes(uri: str, rejections: list[Rejection]) -> dict[str, tuple[int, str]]:
    """``cNNN`` -> (index, description)."""
    classes = {}
    for _, text, origin in annotation_lines(uri):
        code, _, name = (text or "").partition(" ")
        if not (len(code) == 4 and code[0] == "c" and code[1:].isdigit() and name.strip()):
            rejections.append(malformed(uri, origin, f"expected 'cNNN description', got {text!r}"))
            continue
        classes[code] = (int(code[1:]), name.strip())
    return classes


def parse_actions(actions: str, length: float | None, classes) -> list[dict]:
    """Segments of an ``actions`` cell.

    Raises:
        ValueError: with a readable description of the first bad action.
    """
    segments = []
    for item in filter(None, (a.strip() for a in actions.split(";"))):
        parts = item.split()
        if len(parts) != 3:
            raise ValueError(f"action {item!r} is not 'cNNN start end'")
        code, start, end = parts[0], float(parts[1]), float(parts[2])
        if code not in classes:
            raise ValueError(f"action class {code!r} is not in the classes file")
        if not 0 <= start <= end or (length is not None and end > length + LENGTH_TOLERANCE_S):
            raise ValueError(f"action {item!r} is outside the video (length {length} s)")
        index, name = classes[code]
        segments.append({"label": name, "label_index": index, "start_s": start, "end_s": end})
    return segments


def list_inputs(src: str) -> Listing:
    index = VideoIndex(src)
    rejections: list[Rejection] = []
    class_uri = find_annotation(index, "Charades_v1_classes.txt", src)
    classes = read_classes(class_uri, rejections)
    candidates = []
    for split, name in SPLIT_FILES:
        list_uri = find_annotation(index, name, src)
        reader = csv.DictReader(io.StringIO(storage.read_bytes(list_uri).decode("utf-8-sig")))
        for row in reader:
            origin = f"{list_uri}:{reader.line_num}"
            video_id = (row.get("id") or "").strip()
            try:
                if not video_id or None in row or any(v is None for v in row.values()):
                    raise ValueError(f"wrong number of fields or no id: {row!r}")
                length = float(row["length"]) if (row.get("length") or "").strip() else None
                segments = parse_actions(row.get("actions") or "", length, classes)
            except ValueError as exc:
                rejections.append(malformed(list_uri, origin, str(exc)))
                continue
            video = index.find(video_id)
            if video is None:
                rejections.append(missing_video(f"{video_id}.mp4", origin, video_id=video_id))
                continue
            candidates.append(Candidate(video, video_id, split=split, segments=segments, origin=origin))
    ordered = [name for _, name in sorted(classes.values())]
    return Listing(candidates, rejections, ordered)
