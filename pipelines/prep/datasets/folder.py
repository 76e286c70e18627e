"""``SRC/<class_name>/<video>``: the layout UCF101 and HMDB51 videos ship in.

Also accepts ``SRC/<split>/<class_name>/<video>`` when every top-level folder is a
split name (train / val / validation / test), as Kinetics downloaders write it.
Class indices are the sorted class-folder names, so they do not depend on which
files happen to be readable. Files that are not inside a class folder, or whose
extension is not a video's, are inputs too: they are rejected with a reason, never
ignored.

``group_id``: a UCF101-style file name (``v_<Class>_gNN_cMM``) gives its group (the clips of
one source video), any other file is its own group.
"""

from __future__ import annotations

import posixpath

from pipelines.io import storage
from pipelines.prep.datasets import (VIDEO_SUFFIXES, Candidate, Listing, Rejection, SourceError,
                                bad_name_rejection, is_utf8)

SPLIT_NAMES = {"train": "train", "val": "val", "validation": "val", "valid": "val", "test": "test"}


def list_inputs(src: str, *, split: str = "train") -> Listing:
    """One candidate per file under ``src``; ``split`` labels them when the layout has no split folders."""
    if not storage.isdir(src):
        raise SourceError(f"{src} is not a folder")
    files = storage.list_files(src)
    rel = {uri: storage.relpath(uri, src) for uri in files}
    tops = {r.split("/", 1)[0] for r in rel.values() if "/" in r}
    by_split = bool(tops) and all(t.lower() in SPLIT_NAMES for t in tops)
    depth = 3 if by_split else 2
    classes = sorted({r.split("/")[depth - 2] for r in rel.values()
                      if r.count("/") == depth - 1 and is_utf8(r.split("/")[depth - 2])})
    class_index = {c: i for i, c in enumerate(classes)}
    candidates, rejections = [], []
    for uri, r in rel.items():
        if not is_utf8(uri):
            rejections.append(bad_name_rejection(uri))
            continue
        parts = r.split("/")
        if len(parts) != depth:
            where = "split/class folder" if by_split else "class folder"
            rejections.append(Rejection(uri, "bad_layout", f"file is not directly inside a {where} "
                                        f"(expected {'<split>/' if by_split else ''}<class>/<video>)",
                                        stage="listing"))
            continue
        if not uri.lower().endswith(VIDEO_SUFFIXES):
            ext = posixpath.splitext(uri)[1] or "(none)"
            rejections.append(Rejection(uri, "not_a_video", f"extension {ext} is not a video file "
                                        "extension; the file was not probed", stage="listing"))
            continue
        label = parts[-2]
        video_id = posixpath.splitext(r)[0]
        candidates.append(Candidate(uri, video_id, label=label, label_index=class_index[label],
                                    split=SPLIT_NAMES[parts[0].lower()] if by_split else split,
                                    group_id=_group(video_id)))
    return Listing(candidates, rejections, classes)


def _group(video_id: str) -> str:
    """UCF101-style names (``v_<Class>_gNN_cMM``) share their group; any other video is its own."""
    from pipelines.prep.datasets.ucf101 import group_of

    return posixpath.join(posixpath.dirname(video_id), group_of(posixpath.basename(video_id)))
