"""Probe videos exactly, and optionally transcode them, in one decode pass.

A probe decodes every frame of the first video stream (without colour conversion):
it is the only way to know the exact frame count a decoder will see and to catch
files that are corrupt half-way through. Container headers alone are often wrong
(missing or estimated frame counts, truncated uploads whose index still claims the
whole length).

Failures raise :class:`MediaError` with a ``kind`` for counting and a sentence a
person can act on; ingest turns them into quarantine rows.
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
import struct
from fractions import Fraction
from typing import BinaryIO

import av

from pipelines.io import storage
from pipelines.io.encode import VideoWriter

SNIFF_BYTES = 64


class MediaError(Exception):
    """A file that cannot be used as a video, with a category and a readable reason.

    Attributes:
        kind: machine-readable category (``empty``, ``not_found``, ``permission``,
            ``not_a_video``, ``truncated``, ``corrupt``, ``no_video_stream``,
            ``no_frames``, ``transcode_failed``...).
        reason: a sentence naming what is wrong and the underlying error.
    """

    def __init__(self, kind: str, reason: str) -> None:
        super().__init__(f"{kind}: {reason}")
        self.kind = kind
        self.reason = reason


@dataclasses.dataclass
class VideoInfo:
    """What the manifest records about one video file."""

    num_frames: int
    fps: float
    width: int
    height: int
    duration_s: float
    codec: str


def _describe_bytes(head: bytes) -> str:
    """A short description of what a non-video file seems to hold."""
    if not head:
        return "no data"
    printable = sum(32 <= b < 127 or b in (9, 10, 13) for b in head)
    if printable / len(head) > 0.95:
        text = head[:24].decode("ascii", "replace").replace("\n", " ").strip()
        return f"text (starts with {text!r})"
    return "unrecognised binary data (first bytes " + head[:8].hex(" ") + ")"


def _mp4_index_problem(f: BinaryIO, total: int) -> str | None:
    """Walk the top-level MP4 boxes; describe a missing index or a cut-off box, if any."""
    pos, seen = 0, []
    while pos + 8 <= total:
        f.seek(pos)
        header = f.read(16)
        size, box = struct.unpack(">I4s", header[:8])
        if size == 1 and len(header) >= 16:
            size = struct.unpack(">Q", header[8:16])[0]
        elif size == 0:
            size = total - pos
        name = box.decode("latin-1")
        seen.append(name)
        if size < 8:
            return f"box {name!r} at byte {pos} has an invalid size {size}"
        if pos + size > total:
            return (f"the file ends at byte {total} inside box {name!r} that should end at byte "
                    f"{pos + size} (boxes seen: {', '.join(seen)})")
        pos += size
    if "moov" not in seen:
        return f"the 'moov' index box is missing (boxes seen: {', '.join(seen) or 'none'})"
    return None


def _open_error(uri: str, f: BinaryIO, total: int, exc: Exception) -> MediaError:
    """Turn a container-open failure into the most specific reason we can give."""
    f.seek(0)
    head = f.read(SNIFF_BYTES)
    if head[4:8] == b"ftyp":
        problem = _mp4_index_problem(f, total)
        if problem:
            return MediaError("truncated", f"incomplete MP4/MOV file: {problem}; it was probably cut off "
                                           f"during upload or download ({exc})")
        return MediaError("corrupt", f"MP4/MOV file that FFmpeg cannot open: {exc}")
    if isinstance(exc, av.error.EOFError):
        return MediaError("truncated", f"the file ends before its header and first frame are complete "
                                       f"({total} bytes; {exc})")
    if head[:4] == b"RIFF" or head[:4] == b"\x1aE\xdf\xa3":
        return MediaError("corrupt", f"AVI/Matroska file that FFmpeg cannot open: {exc}")
    return MediaError("not_a_video", f"not a video: the file holds {_describe_bytes(head)}, "
                                     f"and FFmpeg recognises no container in it ({exc})")


def _stream_fps(stream: av.video.stream.VideoStream) -> Fraction | None:
    for rate in (stream.average_rate, stream.guessed_rate, stream.base_rate):
        if rate and rate > 0:
            return Fraction(rate)
    return None


def inspect(uri: str, *, transcode_to: str | None = None, short_side: int | None = None,
            gop: int | None = None, crf: int = 20) -> VideoInfo:
    """Probe ``uri`` by decoding every frame; optionally transcode it on the way.

    Args:
        uri: the video (any fsspec URL); read through a seekable file, not downloaded.
        transcode_to: when given, write an H.264 MP4 (``+faststart``) here and describe
            that file instead of the source.
        short_side: resize so the shorter side has this many pixels (aspect kept, even
            sizes); sources already smaller are not upscaled.
        gop: keyframe interval of the transcoded file, in frames (short GOPs make
            random access cheap: a clip needs at most one GOP of extra decoding).
        crf: x264 quality of the transcoded file.

    Returns:
        The exact frame count, average frame rate, size, duration and codec.

    Raises:
        MediaError: the file is missing, unreadable, empty, not a video, has no video
            stream or no frames, or is corrupt or truncated.
    """
    try:
        total = storage.size(uri)
    except FileNotFoundError as exc:
        raise MediaError("not_found", f"file not found: it was listed but is gone (deleted or moved "
                                      f"between listing and reading): {exc}") from exc
    except PermissionError as exc:
        raise MediaError("permission", f"cannot be read: permission denied ({exc})") from exc
    if total == 0:
        raise MediaError("empty", "empty file (0 bytes): nothing to decode; copy it again from its source")
    try:
        f = storage.open_url(uri, "rb")
    except PermissionError as exc:
        raise MediaError("permission", f"cannot be read: permission denied ({exc})") from exc
    except FileNotFoundError as exc:
        raise MediaError("not_found", f"file not found when opening it: {exc}") from exc
    with f:
        try:
            container = av.open(f, mode="r", metadata_errors="ignore")
        except av.error.FFmpegError as exc:
            raise _open_error(uri, f, total, exc) from exc
        with container:
            return _decode_all(container, transcode_to, short_side, gop, crf)


def _target_size(width: int, height: int, short_side: int | None) -> tuple[int, int]:
    if not short_side or min(width, height) <= short_side:
        w, h = width, height
    else:
        scale = short_side / min(width, height)
        w, h = round(width * scale), round(height * scale)
    return max(2, w - w % 2), max(2, h - h % 2)


def _decode_all(container: av.container.InputContainer, transcode_to: str | None,
                short_side: int | None, gop: int | None, crf: int) -> VideoInfo:
    if not container.streams:
        raise MediaError("no_frames", "no streams at all: the container is valid but empty (a video "
                                      "shorter than one frame)")
    if not container.streams.video:
        kinds = ", ".join(sorted({s.type for s in container.streams}))
        raise MediaError("no_video_stream", f"no video stream: the file holds only {kinds} data")
    stream = container.streams.video[0]
    stream.thread_type = "AUTO"
    fps = _stream_fps(stream) or Fraction(25)
    declared = stream.frames
    width, height = stream.codec_context.width, stream.codec_context.height
    count, writer = 0, None
    # The staged output is uploaded only if the whole block succeeds; on any error it
    # is deleted, so no half-transcoded file reaches storage.
    with contextlib.ExitStack() as stack:
        try:
            for frame in container.decode(stream):
                if count == 0:
                    width, height = frame.width, frame.height
                    if transcode_to:
                        local = stack.enter_context(storage.staged_output(transcode_to, suffix=".mp4"))
                        tw, th = _target_size(width, height, short_side)
                        writer = VideoWriter(local, tw, th, fps=float(fps), codec="libx264",
                                             gop=gop, crf=crf, faststart=True)
                        stack.callback(writer.abandon)
                if writer is not None:
                    writer.write_av_frame(frame)
                count += 1
        except av.error.FFmpegError as exc:
            of = f" of {declared} declared" if declared else ""
            raise MediaError("corrupt", f"corrupt or truncated video: decoding failed after "
                                        f"{count}{of} frames: {exc}") from exc
        if count == 0:
            raise MediaError("no_frames", "no decodable video frames: the video stream is empty "
                                          "(shorter than one frame)")
        if declared and declared - count > max(1, 0.02 * declared):
            raise MediaError("truncated", f"truncated video: the container declares {declared} "
                                          f"frames but only {count} could be decoded")
        if writer is None:
            return VideoInfo(num_frames=count, fps=float(fps), width=width, height=height,
                             duration_s=round(_duration(stream, container, count, fps), 6),
                             codec=stream.codec_context.name)
        try:
            writer.close()
        except av.error.FFmpegError as exc:
            raise MediaError("transcode_failed", f"transcoding to H.264 failed: {exc}") from exc
    return VideoInfo(num_frames=count, fps=float(fps), width=writer.width, height=writer.height,
                     duration_s=round(count / float(fps), 6), codec="h264")


def _duration(stream, container, count: int, fps: Fraction) -> float:
    if stream.duration and stream.time_base:
        return float(stream.duration * stream.time_base)
    if container.duration:
        return container.duration / 1e6
    return count / float(fps) if fps else math.nan
