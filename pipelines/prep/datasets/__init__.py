"""Dataset adapters: a dataset's own on-disk layout in, manifest candidates out.

Each adapter reads the real annotation formats of its dataset and returns a
:class:`Listing`: one :class:`Candidate` per video to probe, and one
:class:`Rejection` per annotation row or file that cannot become a video (missing
file, unknown class, malformed row), with the file and line number. Adapters never
raise on bad rows; they raise only when the source itself is unusable (no
annotations where the format needs them).
"""

from __future__ import annotations

import dataclasses
import posixpath
from typing import Callable, Iterator

from pipelines.io import storage

VIDEO_SUFFIXES = (".mp4", ".avi", ".mkv", ".webm", ".mov", ".m4v", ".mpg", ".mpeg", ".flv", ".3gp", ".ogv", ".wmv")


@dataclasses.dataclass
class Candidate:
    """A video an annotation (or a folder) says exists, before probing."""

    source_uri: str
    video_id: str
    label: str | None = None
    label_index: int | None = None
    split: str = "train"
    segments: list[dict] = dataclasses.field(default_factory=list)
    origin: str | None = None  # "annotation-file:line" when it came from one
    group_id: str | None = None  # the source video the clip was cut from; None: the video itself


@dataclasses.dataclass
class Rejection:
    """An input that cannot become a video; it becomes a quarantine row."""

    source_uri: str
    kind: str
    reason: str
    origin: str | None = None
    video_id: str | None = None
    stage: str = "annotation"


@dataclasses.dataclass
class Listing:
    candidates: list[Candidate]
    rejections: list[Rejection]
    classes: list[str]

    @property
    def inputs(self) -> int:
        return len(self.candidates) + len(self.rejections)


class SourceError(Exception):
    """The source cannot be read as this format at all (e.g. its annotation files are missing)."""


def safe_name(name: str) -> str:
    """``name`` as valid UTF-8 text: undecodable bytes (surrogate escapes) shown as ``\\xNN``."""
    return name.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")


def is_utf8(name: str) -> bool:
    try:
        name.encode("utf-8")
        return True
    except UnicodeEncodeError:
        return False


def bad_name_rejection(uri: str) -> Rejection:
    shown = safe_name(uri)
    raw = uri.encode("utf-8", "surrogateescape")
    return Rejection(shown, "bad_name", f"file name is not valid UTF-8 (raw bytes {raw[-40:]!r}); "
                     "rename the file to a UTF-8 name so it can be tracked", stage="listing")


def stem(uri: str) -> str:
    base = posixpath.basename(uri)
    return base.rsplit(".", 1)[0] if "." in base else base


class VideoIndex:
    """Case-insensitive lookup of the video files under a folder, by base name or stem.

    Annotation files name videos by base name (UCF101, HMDB51), by stem (Kinetics,
    Charades) and sometimes with another extension than the files have (a dataset
    re-encoded from ``.avi`` to ``.mp4``); all three resolve here.
    """

    def __init__(self, src: str) -> None:
        self.files = storage.list_files(src)
        self.videos = [f for f in self.files if f.lower().endswith(VIDEO_SUFFIXES)]
        self._by_name: dict[str, list[str]] = {}
        self._by_stem: dict[str, list[str]] = {}
        for uri in self.videos:
            self._by_name.setdefault(posixpath.basename(uri).lower(), []).append(uri)
            self._by_stem.setdefault(stem(uri).lower(), []).append(uri)

    def find(self, name: str) -> str | None:
        """The file for ``name`` (``dir/file.avi``, ``file.avi`` or ``file``), or None."""
        base = posixpath.basename(name).lower()
        hits = self._by_name.get(base) or self._by_stem.get(stem(base))
        if not hits:
            return None
        if len(hits) > 1 and "/" in name:  # disambiguate with the folder the annotation names
            parent = name.rsplit("/", 2)[-2].lower()
            narrowed = [h for h in hits if h.rsplit("/", 2)[-2].lower() == parent]
            hits = narrowed or hits
        return hits[0]


def find_annotation(index: VideoIndex, name: str, src: str) -> str:
    """The annotation file called ``name`` anywhere under ``src``.

    Raises:
        SourceError: there is none.
    """
    hits = [f for f in index.files if posixpath.basename(f) == name]
    if not hits:
        raise SourceError(f"{name} not found under {src}")
    return min(hits, key=len)


def annotation_lines(uri: str) -> Iterator[tuple[int, str | None, str]]:
    """``(line_number, text or None, origin)`` for each non-empty line; None when not UTF-8."""
    raw = storage.read_bytes(uri)
    for number, line in enumerate(raw.splitlines(), start=1):
        origin = f"{uri}:{number}"
        try:
            text = line.decode("utf-8-sig" if number == 1 else "utf-8").strip()
        except UnicodeDecodeError:
            yield number, None, origin
            continue
        if text:
            yield number, text, origin


def missing_video(name: str, origin: str, video_id: str | None = None) -> Rejection:
    return Rejection(name, "missing_file", f"annotation names video {name!r} but no such file exists "
                     "under the source folder", origin=origin, video_id=video_id)


def malformed(uri: str, origin: str, what: str) -> Rejection:
    return Rejection(uri, "malformed_row", f"malformed annotation row: {what}", origin=origin)


def _registry() -> dict[str, Callable[..., Listing]]:
    from pipelines.prep.datasets import charades, folder, hmdb51, kinetics, ucf101

    return {"folder": folder.list_inputs, "ucf101": ucf101.list_inputs, "hmdb51": hmdb51.list_inputs,
            "kinetics": kinetics.list_inputs, "charades": charades.list_inputs}


FORMATS = ("folder", "ucf101", "hmdb51", "kinetics", "charades")


def list_inputs(fmt: str, src: str, **options) -> Listing:
    """Run the adapter for ``fmt`` over ``src``.

    Args:
        fmt: one of :data:`FORMATS`.
        src: the dataset's root folder (any fsspec URL).
        **options: adapter options (``split_id`` for ucf101/hmdb51, ``split`` for folder).

    Raises:
        ValueError: unknown format.
        SourceError: the source is not in that format.
    """
    registry = _registry()
    if fmt not in registry:
        raise ValueError(f"unknown dataset format {fmt!r}; choose one of {', '.join(FORMATS)}")
    return registry[fmt](src, **options)
