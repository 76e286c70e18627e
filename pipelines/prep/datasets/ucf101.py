"""UCF101: ``classInd.txt`` + ``trainlist0N.txt`` / ``testlist0N.txt`` (split N = 1, 2 or 3).

Formats, as the dataset ships them (1-based class numbers):
``classInd.txt``: ``1 ApplyEyeMakeup``; ``trainlist01.txt``:
``ApplyEyeMakeup/v_ApplyEyeMakeup_g08_c01.avi 1``; ``testlist01.txt``:
``ApplyEyeMakeup/v_ApplyEyeMakeup_g01_c01.avi`` (label from the folder). Videos are
found anywhere under SRC by base name, case-insensitively (UCF101 itself spells
``HandStandPushups`` two ways), or by stem when they were re-encoded to another
container. ``label_index`` is the class number minus one.

``group_id``: UCF101 cuts each source video into several clips ``v_<Class>_gNN_cMM``; the
clips of one group ``gNN`` of one class come from one source video (the authors of CoCLR
read the same from ``video_source.json``), so ``group_id = "<Class>_gNN"``. A name that does
not follow the pattern is its own group.
"""

from __future__ import annotations

import re

from pipelines.prep.datasets import (Candidate, Listing, Rejection, VideoIndex, annotation_lines,
                                find_annotation, malformed, missing_video, stem)


def read_class_index(uri: str, rejections: list[Rejection]) -> dict[int, str]:
    """0-based index -> class name as written, from a ``classInd.txt``."""
    names: dict[int, str] = {}
    for _, text, origin in annotation_lines(uri):
        parts = (text or "").split()
        if len(parts) != 2 or not parts[0].isdigit() or int(parts[0]) < 1:
            rejections.append(malformed(uri, origin, f"expected '<number> <ClassName>', got {text!r}"))
            continue
        names[int(parts[0]) - 1] = parts[1]
    return names


_GROUP = re.compile(r"^v_(?P<cls>.+)_g(?P<group>\d+)_c\d+$")


def group_of(video_id: str) -> str:
    """``v_ApplyEyeMakeup_g08_c01`` -> ``ApplyEyeMakeup_g08``; other names are their own group."""
    m = _GROUP.match(video_id)
    return f"{m['cls']}_g{m['group']}" if m else video_id


def list_inputs(src: str, *, split_id: int = 1) -> Listing:
    index = VideoIndex(src)
    rejections: list[Rejection] = []
    class_uri = find_annotation(index, "classInd.txt", src)
    names = read_class_index(class_uri, rejections)
    classes = {n.lower(): i for i, n in names.items()}  # folder names differ in case from classInd
    candidates: list[Candidate] = []
    for split, list_name in (("train", f"trainlist{split_id:02d}.txt"), ("test", f"testlist{split_id:02d}.txt")):
        list_uri = find_annotation(index, list_name, src)
        for _, text, origin in annotation_lines(list_uri):
            row = _parse_row(text, split, list_uri, origin, classes, names, rejections)
            if row is None:
                continue
            path, label_index = row
            uri = index.find(path)
            if uri is None:
                rejections.append(missing_video(path, origin, video_id=stem(path)))
                continue
            candidates.append(Candidate(uri, stem(path), label=names[label_index], label_index=label_index,
                                        split=split, origin=origin, group_id=group_of(stem(path))))
    return Listing(candidates, rejections, [names[i] for i in sorted(names)])


def _parse_row(text, split, list_uri, origin, classes, names, rejections):
    """``(path, label_index)`` of one list row, or None after recording a rejection."""
    if text is None:
        rejections.append(malformed(list_uri, origin, "line is not valid UTF-8"))
        return None
    parts = text.split()
    expected = 2 if split == "train" else 1
    if len(parts) not in (1, 2) or (split == "train" and len(parts) != expected):
        rejections.append(malformed(list_uri, origin, f"expected {'<Class>/<video> <number>' if expected == 2 else '<Class>/<video>'}, got {text!r}"))
        return None
    path = parts[0]
    folder = path.split("/")[0].lower() if "/" in path else None
    if len(parts) == 2:
        if not parts[1].isdigit() or int(parts[1]) - 1 not in names:
            rejections.append(Rejection(list_uri, "unknown_class", f"class number {parts[1]!r} is not in "
                                        "classInd.txt", origin=origin, video_id=stem(path)))
            return None
        label_index = int(parts[1]) - 1
        if folder is not None and classes.get(folder, label_index) != label_index:
            rejections.append(Rejection(list_uri, "label_conflict", f"class number {parts[1]} "
                                        f"({names[label_index]}) disagrees with the folder {folder!r}",
                                        origin=origin, video_id=stem(path)))
            return None
        return path, label_index
    if folder is None or folder not in classes:
        rejections.append(Rejection(list_uri, "unknown_class", f"folder {folder!r} of {path!r} is not a "
                                    "class in classInd.txt", origin=origin, video_id=stem(path)))
        return None
    return path, classes[folder]
