"""HMDB51: ``<class>_test_split<N>.txt`` files, one per class and split.

Each line is ``<video>.avi <mark>`` with mark 1 = train, 2 = test, 0 = not used in
this split (as the dataset defines it). Rows marked 0 are kept with split
``unused``, so every video stays accounted for. Class indices are the sorted class
names, the order the authors' and most code bases' label files use. ``group_id`` is the video
itself: HMDB51 names carry no reliable source-video id.
"""

from __future__ import annotations

import posixpath
import re

from pipelines.prep.datasets import (Candidate, Listing, Rejection, SourceError, VideoIndex,
                                annotation_lines, malformed, missing_video, stem)

MARKS = {"0": "unused", "1": "train", "2": "test"}


def list_inputs(src: str, *, split_id: int = 1) -> Listing:
    index = VideoIndex(src)
    pattern = re.compile(rf"^(.+)_test_split{split_id}\.txt$")
    split_files = {}
    for uri in index.files:
        match = pattern.match(posixpath.basename(uri))
        if match:
            split_files[match.group(1)] = uri
    if not split_files:
        raise SourceError(f"no <class>_test_split{split_id}.txt files under {src}")
    classes = sorted(split_files)
    candidates: list[Candidate] = []
    rejections: list[Rejection] = []
    for label_index, label in enumerate(classes):
        list_uri = split_files[label]
        for _, text, origin in annotation_lines(list_uri):
            parts = (text or "").split()
            if text is None or len(parts) != 2 or parts[1] not in MARKS:
                rejections.append(malformed(list_uri, origin, f"expected '<video>.avi <0|1|2>', got {text!r}"))
                continue
            name = f"{label}/{parts[0]}"
            uri = index.find(name)
            if uri is None:
                rejections.append(missing_video(name, origin, video_id=stem(parts[0])))
                continue
            candidates.append(Candidate(uri, stem(parts[0]), label=label, label_index=label_index,
                                        split=MARKS[parts[1]], origin=origin))
    return Listing(candidates, rejections, classes)
