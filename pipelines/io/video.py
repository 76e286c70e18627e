"""Accurate random access to video frames with PyAV or decord, whichever measured faster for
the codec and frame size, and PyAV whenever decord cannot be trusted.

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
  position and the next needed frame (:mod:`pipelines.io.pyav_seek`). Frame indices
  come from timestamps (constant frame rate, checked on every decoded frame); when
  timestamps are not a regular grid it falls back to counting frames from the start.

Choosing a backend (``auto``). A caller that knows the codec and frame size (the data
pipeline: the manifest's ``codec``, ``height``, ``width`` columns, filled by the probe at
ingest) passes them, and :func:`choose_backend` picks the faster backend without opening
the file: decord only for codecs and sizes where it measured faster
(:data:`DECORD_MIN_PIXELS`), PyAV everywhere else. Without a codec, ``auto`` probes the
header with PyAV on every read (0.5–2.3 ms, more on a busy worker) and tries decord on
trusted codecs. Measured CPU ms per read (one thread, median of 16 reads of a contiguous
clip of ``T`` frames from random offsets, synthetic UCF-101-style content, x264;
``bench/decode_backends.py``, ``bench/RESULTS.md``), decord / PyAV:

==================  ===========  ===========  ===========
h264, size, GOP     T = 8        T = 16       T = 32
==================  ===========  ===========  ===========
128x128, 8          2.7 / 2.3    4.4 / 3.4    6.3 / 5.5
128x128, 32         3.1 / 2.4    3.7 / 3.4    6.4 / 7.0
128x128, 250        4.3 / 4.2    5.1 / 4.9    5.5 / 5.9
240x320, 8          7.7 / 8.1    10.7 / 11.2  19.2 / 17.4
240x320, 250        14.9 / 15.2  14.3 / 16.3  19.8 / 18.8
360x640, 8          20.5 / 22.7  29.6 / 31.5  58.0 / 52.1
360x640, 250        34.0 / 37.7  36.6 / 38.6  57.4 / 57.1
==================  ===========  ===========  ===========

``auto`` with the header probe cost 1–2 ms more than either backend alone. decord pays
a fixed cost per open (it scans the whole packet index), so PyAV wins on small frames;
from 360x640 decord is 5–10 % ahead on short clips. ``bench/decoders.py`` measured PyAV
1.3–14x faster than decord on MPEG-4 Part 2, VP9 and MJPEG.

Shape legend: ``T`` frames, ``H`` height, ``W`` width, ``3`` RGB channels.
"""

from __future__ import annotations

import collections
import dataclasses
import os
from typing import IO, Sequence

import av
import fsspec
import numpy as np
from fsspec.implementations.local import LocalFileSystem

from pipelines.io.probe import MediaError
from pipelines.io.pyav_seek import NotConstantRate, SeekingDecoder, ToRGB, decode_counting

_ToRGB = ToRGB  # the conversion read_frames uses, as bench/decoders.py names it

BACKENDS = ("auto", "decord", "pyav")
# Codecs on which decord's frame indexing matched a full PyAV decode in
# tests/pipelines/io/test_video.py and bench/decoders.py (closed GOP or intra only).
DECORD_TRUSTED_CODECS = frozenset({"h264", "mpeg4", "vp9", "vp8", "mjpeg"})
# Codec -> frame size (pixels) from which ``auto`` uses decord when the caller names the codec;
# PyAV below it and for every other codec (measurements in the module docstring).
DECORD_MIN_PIXELS = {"h264": 360 * 640}
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


def choose_backend(uri: str, codec: str, size: tuple[int, int] | None = None) -> str:
    """The faster backend for a file of ``codec`` and frame ``size`` (H, W), without opening it.

    PyAV for remote objects (decord would read them whole), for codecs decord is not
    trusted with, and below :data:`DECORD_MIN_PIXELS`; decord otherwise. An unknown size
    counts as large.
    """
    if codec not in DECORD_TRUSTED_CODECS or codec not in DECORD_MIN_PIXELS or _local_path(uri) is None:
        return "pyav"
    if size is not None and size[0] * size[1] < DECORD_MIN_PIXELS[codec]:
        return "pyav"
    return "decord"


def read_frames(uri: str, indices: Sequence[int], *, backend: str = "auto", threads: int = 1,
                info: ReadInfo | None = None, codec: str | None = None,
                size: tuple[int, int] | None = None) -> np.ndarray:
    """Decode the frames at ``indices`` (0-based, any order, repeats allowed).

    Args:
        uri: local path or fsspec URL (``file://``, ``s3://``, ``memory://``...).
        indices: frame indices; unsorted and repeated indices are served as asked.
        backend: ``auto`` (decord with checks, PyAV fallback), ``decord`` or ``pyav``.
        threads: decoder threads; explicit because decode runs inside Ray tasks that
            are already one per CPU.
        info: optional :class:`ReadInfo` filled with the serving backend and stats.
        codec: the FFmpeg codec name of the video stream when the caller knows it (the
            manifest's ``codec``); ``auto`` then skips the header probe and picks the
            backend with :func:`choose_backend`.
        size: ``(height, width)`` of the frames, for :func:`choose_backend`.

    Returns:
        frames_T HW3: ``(len(indices), H, W, 3)`` uint8 RGB.

    Raises:
        DecodeError: with ``kind`` naming the failure (see :class:`DecodeError`).
    """
    info = info if info is not None else ReadInfo()
    wanted_T = _check_indices(uri, indices, backend)
    unique_U, inverse_T = np.unique(wanted_T, return_inverse=True)
    if backend == "auto" and codec:
        backend = "pyav" if choose_backend(uri, codec, size) == "pyav" else "auto"
    if backend == "pyav" or (backend == "auto" and _local_path(uri) is None):
        frames_UHW3 = _read_pyav(uri, unique_U, threads, info)
    elif backend == "decord":
        frames_UHW3 = _read_decord(uri, unique_U, threads, info, strict=True)
    else:  # auto: decord, PyAV if decord fails its checks; the header probe only when the codec is unknown
        try:
            frames_UHW3 = _read_decord(uri, unique_U, threads, info, strict=False, probe=not codec)
        except _Untrusted as exc:
            info.fallback_reason = str(exc)
            frames_UHW3 = _read_pyav(uri, unique_U, threads, info)
    BACKEND_COUNTS[info.backend] += 1
    if np.array_equal(unique_U, wanted_T):  # strictly increasing (a sampled clip): no reorder copy
        return frames_UHW3
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
                 strict: bool, probe: bool = True) -> np.ndarray:
    """Frames via decord; ``strict`` (backend="decord") raises DecodeError, else _Untrusted.

    ``probe``: check the codec with a PyAV header probe first (not strict, codec unknown).
    """
    path = _local_path(uri)
    if path is None and not strict:
        raise _Untrusted("remote object: decord would read it whole into memory")
    if not strict and probe:
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
                got, last = SeekingDecoder(container, stream, info).run(unique_U)
            except NotConstantRate as exc:
                info.fallback_reason = f"counting frames: {exc}"
                got, last = decode_counting(container, stream, unique_U, info)
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
