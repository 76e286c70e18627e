"""A decoded-clip cache shared by the trials of a sweep.

Decoding is the deterministic part of every sample: which frames a clip takes changes per
epoch and per trial, but the pixels of frame ``i`` of a video do not. A sweep therefore
decodes each video of its dataset **once**, before any trial starts (:func:`materialise`,
Ray tasks of one CPU each), and stores all its frames, at the size they are decoded
(the manifest's), as one uint8 ``(T, H, W, 3)`` ``.npy`` file per video (flow videos too).
Every trial's decode task then reads the frames its recipe sampled from that file
(:meth:`ClipCache.read`, a memory-mapped slice) and applies its own random augmentation
on top, exactly as after a real decode: the bytes are those the decoder returned.

What is cached and when it is used:

* the folder is named by the manifest's fingerprint, so a changed dataset never meets old
  frames; files are keyed by the video's URI;
* a video that fails to decode is not cached: trials read it for real and quarantine it
  as usual (``inputs = accepted + quarantined`` holds with or without the cache);
* a miss (not cached, an index past the cached frames, an unreadable file) falls back to
  the decoder, so the cache can only make a read cheaper, never change what it returns;
* ``budget_bytes`` bounds the folder: videos are cached in manifest order until the next
  would exceed it, the rest decode as usual;
* the folder must be visible to every node that runs decode tasks (one node's disk, or a
  shared filesystem); other nodes miss and decode.
"""

from __future__ import annotations

import dataclasses
import hashlib
import io
import time
from typing import Any, Sequence

import numpy as np

from pipelines.io import storage

FRAME_BYTES = 3  # uint8 RGB


@dataclasses.dataclass(frozen=True)
class ClipCache:
    """Decoded videos under ``root`` (a local folder or fsspec URL), one ``.npy`` per URI."""

    root: str

    def path(self, uri: str) -> str:
        return storage.join(self.root, hashlib.sha1(uri.encode()).hexdigest()[:24] + ".npy")

    def read(self, uri: str, idx: Sequence[int]) -> np.ndarray | None:
        """Frames ``idx`` of ``uri`` as uint8 ``(len(idx), H, W, 3)``, or ``None`` on a miss."""
        idx = np.asarray(idx, dtype=np.int64)
        try:
            frames_THW3 = _load(self.path(uri))
        except (OSError, ValueError):
            return None
        if idx.size and (idx.min() < 0 or idx.max() >= frames_THW3.shape[0]):
            return None
        return np.ascontiguousarray(frames_THW3[idx])

    def write(self, uri: str, frames_THW3: np.ndarray) -> int:
        """Store every frame of ``uri`` (atomically); returns the bytes written."""
        buf = io.BytesIO()
        np.save(buf, np.ascontiguousarray(frames_THW3, dtype=np.uint8), allow_pickle=False)
        storage.write_bytes(self.path(uri), buf.getvalue())
        return buf.tell()

    def has(self, uri: str) -> bool:
        return storage.exists(self.path(uri))


def _load(path: str) -> np.ndarray:
    if storage.protocol(path) == "file":
        return np.load(path.removeprefix("file://"), mmap_mode="r", allow_pickle=False)
    return np.load(io.BytesIO(storage.read_bytes(path)), allow_pickle=False)


@dataclasses.dataclass(frozen=True)
class Item:
    """One file to cache: its URI, how many frames it has (None: count them), codec and size."""

    uri: str
    num_frames: int | None
    codec: str | None
    size: tuple[int, int] | None


@dataclasses.dataclass
class CacheReport:
    """What :func:`materialise` did: files cached now, already there, over budget, and failed."""

    root: str
    cached: int = 0
    present: int = 0
    over_budget: int = 0
    failed: dict[str, str] = dataclasses.field(default_factory=dict)  # uri -> reason
    bytes: int = 0
    seconds: float = 0.0

    @property
    def usable(self) -> int:
        return self.cached + self.present

    def line(self) -> str:
        return (f"clip cache {self.root}: {self.usable} file(s) ready ({self.cached} decoded now, {self.present} "
                f"already there), {self.bytes / 2**20:.1f} MB written in {self.seconds:.1f} s; "
                f"{self.over_budget} over the budget, {len(self.failed)} not decodable (trials quarantine them)")


def items_of(rows: Sequence[dict[str, Any]], *, flow: bool = True) -> list[Item]:
    """The files of manifest ``rows`` (and their flow videos with ``flow``), once each, in manifest order."""
    from pipelines.data.tasks import FLOW_CODEC

    out: dict[str, Item] = {}  # a file listed twice is one item
    for r in rows:
        size = (int(r["height"]), int(r["width"])) if r.get("height") and r.get("width") else None
        out.setdefault(r["uri"], Item(r["uri"], int(r["num_frames"]) if r.get("num_frames") else None,
                                      r.get("codec") or None, size))
        if flow and r.get("flow_uri"):
            out.setdefault(r["flow_uri"], Item(r["flow_uri"], None, FLOW_CODEC, size))  # its own frame count
    return list(out.values())


def within_budget(items: Sequence[Item], budget_bytes: int) -> tuple[list[Item], list[Item]]:
    """``items`` split into those that fit ``budget_bytes`` in order, and the rest (a flow video
    is estimated at its RGB video's frame count)."""
    keep: list[Item] = []
    rest: list[Item] = []
    used, frames = 0, 0
    for item in items:
        frames = item.num_frames or frames  # a flow video follows its RGB video
        h, w = item.size or (0, 0)
        need = frames * h * w * FRAME_BYTES
        if not rest and used + need <= budget_bytes:
            keep.append(item)
            used += need
        else:
            rest.append(item)
    return keep, rest


def cache_items(cache: ClipCache, items: Sequence[Item]) -> list[tuple[str, str, int]]:
    """Decode and store each item not yet cached: ``(uri, "cached"|"present"|"failed: <reason>", bytes)``."""
    from pipelines.data.workers import init_decode_worker
    from pipelines.io.video import count_frames, read_frames

    init_decode_worker()
    out = []
    for item in items:
        if cache.has(item.uri):
            out.append((item.uri, "present", 0))
            continue
        try:
            n = item.num_frames or count_frames(item.uri)
            frames = read_frames(item.uri, np.arange(n), threads=1, codec=item.codec, size=item.size)
            out.append((item.uri, "cached", cache.write(item.uri, frames)))
        except Exception as exc:  # noqa: BLE001 - recorded; the trials' own read quarantines the file
            out.append((item.uri, f"failed: {type(exc).__name__}: {exc}", 0))
    return out


def materialise(cache: ClipCache, rows: Sequence[dict[str, Any]], *, budget_bytes: int, flow: bool = True,
                chunk: int = 8, progress=print) -> CacheReport:
    """Decode every file of ``rows`` into ``cache`` with Ray tasks (one CPU each), within the budget."""
    import ray

    from pipelines.data.workers import ray_runtime_env

    start, report = time.perf_counter(), CacheReport(cache.root)
    storage.makedirs(cache.root)
    keep, rest = within_budget(items_of(rows, flow=flow), budget_bytes)
    report.over_budget = len(rest)
    task = ray.remote(num_cpus=1, runtime_env=ray_runtime_env())(cache_items)
    pending = [task.remote(cache, keep[i:i + chunk]) for i in range(0, len(keep), chunk)]
    done, step = 0, max(1, len(pending) // 4)
    while pending:
        ready, pending = ray.wait(pending, num_returns=1)
        for uri, status, nbytes in ray.get(ready[0]):
            report.cached += status == "cached"
            report.present += status == "present"
            report.bytes += nbytes
            if status.startswith("failed"):
                report.failed[uri] = status.removeprefix("failed: ")
        done += 1
        if done % step == 0 or not pending:
            progress(f"clip cache: {done}/{done + len(pending)} task(s), {report.usable} file(s), "
                     f"{report.bytes / 2**20:.1f} MB, {time.perf_counter() - start:.1f} s")
    report.seconds = time.perf_counter() - start
    return report


def split_rows(table, split: str, limit: int | None = None) -> list[dict[str, Any]]:
    """The rows of ``split`` in manifest order, the first ``limit`` of them: what a pipeline of that
    split and ``data.limit`` reads."""
    return [r for r in table.to_pylist() if r["split"] == split][:limit]


def cache_dataset(manifest_url: str, base: str, *, split: str, limit: int | None = None, budget_bytes: int,
                  flow: bool = True, progress=print) -> CacheReport:
    """Decode ``split`` of the manifest into ``base/<manifest fingerprint>`` (the report's ``root``),
    reading the manifest once.

    Raises:
        ValueError: the split has no rows (the message lists the manifest's splits).
    """
    from pipelines.io import manifest

    table = manifest.read_manifest(manifest_url)
    rows = split_rows(table, split, limit)
    if not rows:
        splits = ", ".join(sorted(set(table.column("split").to_pylist()))) or "none: no manifest there?"
        raise ValueError(f"split {split!r} of {manifest_url} has no videos (its splits: {splits})")
    root = storage.join(base, manifest.fingerprint(table))
    return materialise(ClipCache(root), rows, budget_bytes=budget_bytes, flow=flow, progress=progress)


def local_root(url: str) -> bool:
    """Whether ``url`` is on this machine's filesystem (the cache's fast path)."""
    return storage.protocol(url) == "file"


__all__ = ["CacheReport", "ClipCache", "Item", "cache_dataset", "cache_items", "items_of", "local_root", "materialise",
           "split_rows",
           "within_budget"]
