"""Accurate random access to video frames, with decord as the fast path and PyAV as
the accurate fallback.

Frame ``i`` of a video is, by definition, the ``i``-th frame (0-based) that a full
FFmpeg/PyAV decode of its first video stream yields, in presentation order. Both
backends are held to that definition; :func:`read_frames` is the only entry point the
data pipeline uses, and it turns every failure into a :class:`DecodeError` whose
``kind`` becomes a quarantine record.

Backends:

* ``decord`` (decord2): fast batched access, but only on a local path. decord's
  ``VideoReader`` does accept file-like objects, yet both decord 0.6.0 and decord2
  3.4.0 implement that as ``bytearray(f.read())``, i.e. they download the whole
  object into memory, so remote objects are not handed to decord by ``auto``.
  decord also mis-seeks on open-GOP streams (measured: HEVC from x265, whatever the
  container; it maps keyframes by decode order), so ``auto`` trusts it only for the
  codecs in :data:`DECORD_TRUSTED_CODECS`.
* ``pyav``: reads through a seekable fsspec file object (ranged reads, never the
  whole object), seeks to the keyframe before the first needed frame and decodes
  forward in one pass, seeking again only when a keyframe lies between the current
  position and the next needed frame. Frame indices come from timestamps
  (constant frame rate, checked on every decoded frame); when timestamps are not
  a regular grid it falls back to counting frames from the start.

Shape legend: ``T`` frames, ``H`` height, ``W`` width, ``3`` RGB channels.
"""

from __future__ import annotations

import collections
import dataclasses
import os
from typing import IO, Iterator, Sequence

import av
import fsspec
from av.video.reformatter import VideoReformatter
import numpy as np
from fsspec.implementations.local import LocalFileSystem

from pipelines.io.probe import MediaError

BACKENDS = ("auto", "decord", "pyav")
# Codecs on which decord's frame indexing matched a full PyAV decode in
# tests/pipelines/io/test_video.py and bench/decoders.py (closed GOP or intra only).
DECORD_TRUSTED_CODECS = frozenset({"h264", "mpeg4", "vp9", "vp8", "mjpeg"})
# Which backend served each read_frames call: {"decord": n, "pyav": n}.
BACKEND_COUNTS: collections.Counter[str] = collections.Counter()


class DecodeError(MediaError):
    """A video could not be decoded; ``kind`` says why, for quarantine records.

    A :class:`~pipelines.io.probe.MediaError`, so ingest and the data pipeline handle
    probe and decode failures alike. Kinds: ``not_found``, ``permission``,
    ``empty``, ``not_a_video``, ``no_video_stream``, ``corrupt``,
    ``index_out_of_range``, ``bad_argument``.
    """

    KINDS = ("not_found", "permission", "empty", "not_a_video", "no_video_stream",
             "corrupt", "index_out_of_range", "bad_argument")

    def __init__(self, kind: str, uri: str, detail: str) -> None:
        assert kind in self.KINDS, kind
        super().__init__(kind, f"{uri}: {detail}")
        self.uri, self.detail = uri, detail


@dataclasses.dataclass
class ReadInfo:
    """What a :func:`read_frames` call did; pass one in to have it filled."""

    backend: str = ""
    fallback_reason: str | None = None
    seeks: int = 0
    frames_decoded: int = 0


def read_frames(uri: str, indices: Sequence[int], *, backend: str = "auto",
                threads: int = 1, info: ReadInfo | None = None) -> np.ndarray:
    """Decode the frames at ``indices`` (0-based, any order, repeats allowed).

    Args:
        uri: local path or fsspec URL (``file://``, ``s3://``, ``memory://``...).
        indices: frame indices; unsorted and repeated indices are served as asked.
        backend: ``auto`` (decord with checks, PyAV fallback), ``decord`` or ``pyav``.
        threads: decoder threads; explicit because decode runs inside Ray tasks that
            are already one per CPU.
        info: optional :class:`ReadInfo` filled with the serving backend and stats.

    Returns:
        frames_T HW3: ``(len(indices), H, W, 3)`` uint8 RGB.

    Raises:
        DecodeError: with ``kind`` naming the failure (see :class:`DecodeError`).
    """
    info = info if info is not None else ReadInfo()
    wanted_T = _check_indices(uri, indices, backend)
    unique_U, inverse_T = np.unique(wanted_T, return_inverse=True)
    if backend == "pyav" or (backend == "auto" and _local_path(uri) is None):
        frames_UHW3 = _read_pyav(uri, unique_U, threads, info)
    elif backend == "decord":
        frames_UHW3 = _read_decord(uri, unique_U, threads, info, strict=True)
    else:
        try:
            frames_UHW3 = _read_decord(uri, unique_U, threads, info, strict=False)
        except _Untrusted as exc:
            info.fallback_reason = str(exc)
            frames_UHW3 = _read_pyav(uri, unique_U, threads, info)
    BACKEND_COUNTS[info.backend] += 1
    return frames_UHW3[inverse_T.reshape(-1)]


def count_frames(uri: str, *, method: str = "decode") -> int:
    """Number of frames of the first video stream.

    ``decode`` (default) decodes every frame without colour conversion: it is exact
    by the definition read_frames uses (a full decode), at the cost of a full
    decode. ``demux`` counts packets without decoding: fast and exact for the usual
    one-frame-per-packet codecs, but it counts packets a decoder drops (e.g. N-VOPs
    of packed MPEG-4 in AVI) and is meant for probing, not for ground truth.

    Raises:
        DecodeError: as :func:`read_frames`.
    """
    with _open_container(uri) as (container, stream):
        try:
            if method == "demux":
                return sum(1 for p in container.demux(stream) if p.size)
            return sum(1 for _ in container.decode(stream))
        except av.FFmpegError as exc:
            raise DecodeError("corrupt", uri, f"{type(exc).__name__}: {exc}") from exc


class _Untrusted(Exception):
    """decord failed or its answer failed a sanity check; auto falls back to PyAV."""


class _NotConstantRate(Exception):
    """Timestamps are not a regular grid; index frames by counting instead."""


def _check_indices(uri: str, indices: Sequence[int], backend: str) -> np.ndarray:
    if backend not in BACKENDS:
        raise DecodeError("bad_argument", uri, f"backend must be one of {BACKENDS}, got {backend!r}")
    wanted_T = np.asarray(indices, dtype=np.int64).reshape(-1)
    if wanted_T.size == 0:
        raise DecodeError("bad_argument", uri, "no frame indices requested")
    if wanted_T.min() < 0:
        raise DecodeError("index_out_of_range", uri, f"negative frame index {wanted_T.min()}")
    return wanted_T


def _open(uri: str) -> IO[bytes]:
    """A seekable binary file object for ``uri`` (ranged reads on object storage)."""
    try:
        from pipelines.io.storage import open_url
    except ImportError:  # storage layer not there yet: plain fsspec
        return fsspec.open(uri, "rb").open()
    return open_url(uri, mode="rb")


def _local_path(uri: str) -> str | None:
    """The filesystem path behind ``uri`` when it is a local file, else ``None``."""
    fs, path = fsspec.core.url_to_fs(uri)
    return path if isinstance(fs, LocalFileSystem) else None


def _classify_open_error(uri: str, exc: BaseException) -> DecodeError:
    detail = f"{type(exc).__name__}: {exc}"
    if isinstance(exc, FileNotFoundError):
        return DecodeError("not_found", uri, detail)
    if isinstance(exc, PermissionError):
        return DecodeError("permission", uri, detail)
    if isinstance(exc, av.FFmpegError):
        return DecodeError("not_a_video", uri, detail)
    return DecodeError("corrupt", uri, detail)


class _open_container:
    """``with _open_container(uri) as (container, stream)``: one fsspec open, errors typed."""

    def __init__(self, uri: str, threads: int = 1) -> None:
        self.uri, self.threads, self.file, self.container = uri, threads, None, None

    def __enter__(self) -> tuple[av.container.InputContainer, av.VideoStream]:
        try:
            self.file = _open(self.uri)
            if _size(self.file) == 0:
                raise DecodeError("empty", self.uri, "file has 0 bytes")
            self.container = av.open(self.file, "r")
        except DecodeError:
            self.__exit__()
            raise
        except Exception as exc:
            self.__exit__()
            raise _classify_open_error(self.uri, exc) from exc
        if not self.container.streams.video:
            self.__exit__()
            raise DecodeError("no_video_stream", self.uri, "container has no video stream")
        stream = self.container.streams.video[0]
        stream.codec_context.thread_count = self.threads
        return self.container, stream

    def __exit__(self, *exc_info) -> None:
        for handle in (self.container, self.file):
            if handle is not None:
                handle.close()


def _size(file: IO[bytes]) -> int:
    size = file.seek(0, os.SEEK_END)
    file.seek(0)
    return size


# ----------------------------------------------------------------------------- decord


def _read_decord(uri: str, unique_U: np.ndarray, threads: int, info: ReadInfo, *,
                 strict: bool) -> np.ndarray:
    """Frames via decord; ``strict`` (backend="decord") raises DecodeError, else _Untrusted."""
    path = _local_path(uri)
    if path is None and not strict:
        raise _Untrusted("remote object: decord would read it whole into memory")
    if not strict:
        _check_decord_codec(uri)  # also raises the typed not_found/empty/... errors
    try:
        import decord

        if path is None:  # explicit request: decord only takes the whole object in memory
            with _open(uri) as file:
                reader = decord.VideoReader(file, num_threads=threads)
        else:
            _check_local_file(uri, path)
            reader = decord.VideoReader(path, num_threads=threads)
        n_frames = _decord_sanity(reader)
    except DecodeError:
        raise
    except Exception as exc:  # decord raises RuntimeError/DECORDError/AssertionError
        if not strict:
            raise _Untrusted(f"decord: {type(exc).__name__}: {exc}") from exc
        raise DecodeError("not_a_video", uri, f"decord: {type(exc).__name__}: {exc}") from exc
    if unique_U[-1] >= n_frames:
        raise DecodeError("index_out_of_range", uri, f"index {unique_U[-1]} >= {n_frames} frames")
    try:
        frames_UHW3 = reader.get_batch(unique_U.tolist()).asnumpy()
    except Exception as exc:
        if not strict:
            raise _Untrusted(f"decord get_batch: {type(exc).__name__}: {exc}") from exc
        raise DecodeError("corrupt", uri, f"decord: {type(exc).__name__}: {exc}") from exc
    if frames_UHW3.dtype != np.uint8 or frames_UHW3.shape[0] != len(unique_U) or frames_UHW3.shape[-1] != 3:
        raise _Untrusted(f"decord returned {frames_UHW3.dtype} {frames_UHW3.shape}")
    info.backend = "decord"
    return frames_UHW3


def _check_local_file(uri: str, path: str) -> None:
    """Typed errors for a local file before decord, whose own errors are untyped."""
    try:
        size = os.stat(path).st_size
        if not os.access(path, os.R_OK):
            raise PermissionError(f"no read permission on {path}")
    except OSError as exc:
        raise _classify_open_error(uri, exc) from exc
    if size == 0:
        raise DecodeError("empty", uri, "file has 0 bytes")


def _check_decord_codec(uri: str) -> None:
    """Header probe with PyAV: decord is trusted only on codecs it indexes correctly."""
    with _open_container(uri) as (_, stream):
        codec = stream.codec_context.name
    if codec not in DECORD_TRUSTED_CODECS:
        raise _Untrusted(f"codec {codec!r} not in DECORD_TRUSTED_CODECS")


def _decord_sanity(reader) -> int:
    """Frame count from decord, cross-checked against decord's own packet index.

    ``len(reader)`` comes from the container header (or duration x fps when the
    header has none), the timestamp table from a scan of every packet: when they
    disagree decord's index-to-frame mapping cannot be trusted.
    """
    n_frames = len(reader)
    stamps_N2 = reader.get_frame_timestamp(np.arange(n_frames))
    if len(reader._frame_pts) != n_frames:  # table length: read after it is loaded
        raise _Untrusted(f"decord frame count {n_frames} != {len(reader._frame_pts)} packets")
    if n_frames > 1 and not np.all(np.diff(stamps_N2[:, 0]) > 0):
        raise _Untrusted("decord timestamps not strictly increasing")
    return n_frames


# ------------------------------------------------------------------------------- PyAV


def _read_pyav(uri: str, unique_U: np.ndarray, threads: int, info: ReadInfo) -> np.ndarray:
    """Frames via PyAV, one open, one forward pass over the needed GOPs."""
    with _open_container(uri, threads) as (container, stream):
        try:
            try:
                got, last = _SeekingDecoder(container, stream, info).run(unique_U)
            except _NotConstantRate as exc:
                info.fallback_reason = f"counting frames: {exc}"
                got, last = _decode_counting(container, stream, unique_U, info)
        except av.FFmpegError as exc:
            raise DecodeError("corrupt", uri, f"{type(exc).__name__}: {exc}") from exc
        missing = [int(i) for i in unique_U if int(i) not in got]
        if missing:
            raise _out_of_range_or_truncated(uri, stream, missing, last)
    info.backend = "pyav"
    return np.stack([got[int(i)] for i in unique_U])


def _out_of_range_or_truncated(uri: str, stream: av.VideoStream, missing: list[int],
                               last: int) -> DecodeError:
    if stream.frames and missing[0] < stream.frames:  # header promised more frames
        return DecodeError("corrupt", uri, f"stream ends after frame {last} although "
                           f"the header lists {stream.frames} frames")
    return DecodeError("index_out_of_range", uri, f"frame indices {missing[:5]} beyond the "
                       f"last frame ({last})")


class _ToRGB:
    """YUV -> RGB with one reused swscale context on one thread.

    ``frame.to_ndarray(format="rgb24")`` builds a new context per frame with automatic
    slice threads: measured 3-5x slower than this on a busy 2-core machine, and
    bit-identical output (same BILINEAR swscale path).
    """

    def __init__(self) -> None:
        self._reformatter = VideoReformatter()

    def __call__(self, frame: av.VideoFrame) -> np.ndarray:
        return self._reformatter.reformat(frame, format="rgb24", threads=1).to_ndarray()


def _decode_counting(container, stream, unique_U: np.ndarray,
                     info: ReadInfo) -> tuple[dict[int, np.ndarray], int]:
    """Fallback for irregular timestamps: decode from the start and count frames."""
    to_rgb = _ToRGB()
    container.seek(0)
    info.seeks += 1
    got, wanted, index = {}, set(int(i) for i in unique_U), -1
    for index, frame in enumerate(container.decode(stream)):
        info.frames_decoded += 1
        if index in wanted:
            got[index] = to_rgb(frame)
            if len(got) == len(wanted):
                break
    return got, index


class _SeekingDecoder:
    """Seek-and-decode over sorted unique indices, indexing frames by timestamp.

    A frame's index is ``(pts - pts0) * time_base * fps`` where ``pts0`` is the pts
    of the first decoded frame; every decoded frame is checked to sit on that grid
    and to follow its predecessor, otherwise _NotConstantRate is raised.
    """

    _MAX_BACK_OFFS = 8

    def __init__(self, container, stream, info: ReadInfo) -> None:
        self.container, self.stream, self.info = container, stream, info
        self.to_rgb = _ToRGB()
        rate = stream.average_rate or stream.guessed_rate
        if not rate or stream.time_base is None:
            raise _NotConstantRate("no frame rate")
        self.ticks_to_index = float(stream.time_base * rate)
        self.pts0: int | None = None
        self.key = 0  # index of the keyframe that opened the GOP being decoded
        self.gop_max = 0  # largest keyframe interval seen in contiguous decoding
        self.no_key_until = 0  # a seek to this index landed on self.key

    def run(self, unique_U: np.ndarray) -> tuple[dict[int, np.ndarray], int]:
        """Decode the frames at ``unique_U``; returns them by index and the last index."""
        got: dict[int, np.ndarray] = {}
        frames, j, last, back_offs, seek_to = self._frames(), 0, -1, 0, None
        while (item := next(frames, None)) is not None:
            index, frame = item
            if seek_to is not None:  # first frame after a seek
                if index > unique_U[j]:  # landed past the target: go back further
                    back_offs += 1
                    if back_offs > self._MAX_BACK_OFFS:
                        raise _NotConstantRate(f"cannot seek before frame {unique_U[j]}")
                    frames = self._seek(int(unique_U[j]) - 4 ** back_offs)
                    continue
                # The seek landed on the last keyframe at or before seek_to.
                self.no_key_until = max(self.no_key_until, seek_to)
                seek_to, back_offs = None, 0
            last = index
            if index == unique_U[j]:
                got[index] = self.to_rgb(frame)
                j += 1
                if j == len(unique_U):
                    break
            if index < unique_U[j] and self._should_seek(index, int(unique_U[j])):
                seek_to = int(unique_U[j])
                frames = self._seek(seek_to)
        return got, last

    def _should_seek(self, cur: int, target: int) -> bool:
        """Seek only when a keyframe surely or probably lies in (cur, target]."""
        if target - cur <= 1 or target <= self.no_key_until:
            return False
        if self.gop_max:  # a keyframe follows within the largest interval seen so far
            return target >= self.key + self.gop_max
        # Keyframe spacing unknown: seeking costs at worst re-decoding (cur - key)
        # frames if it lands on the same keyframe; decoding on costs (target - cur).
        return target - cur > cur - self.key

    def _seek(self, target: int) -> Iterator[tuple[int, av.VideoFrame]]:
        ts = self.pts0 + int(max(target, -1) / self.ticks_to_index)
        self.container.seek(ts, stream=self.stream, backward=True, any_frame=False)
        self.info.seeks += 1
        return self._frames()

    def _frames(self) -> Iterator[tuple[int, av.VideoFrame]]:
        previous, last_key = None, None
        for frame in self.container.decode(self.stream):
            if frame.pts is None:
                raise _NotConstantRate("frame without pts")
            if self.pts0 is None:
                self.pts0 = frame.pts
            exact = (frame.pts - self.pts0) * self.ticks_to_index
            index = round(exact)
            if abs(exact - index) > 0.25 or (previous is not None and index != previous + 1):
                raise _NotConstantRate(f"pts {frame.pts} off the frame grid")
            if frame.key_frame or previous is None:  # a seek always starts a GOP
                if last_key is not None:
                    self.gop_max = max(self.gop_max, index - last_key)
                self.key = last_key = index
            self.info.frames_decoded += 1
            previous = index
            yield index, frame
