"""Video encoding through PyAV (FFmpeg's libraries), shared by ingest transcoding,
the synthetic dataset and test fixtures.

Frames are ``(H, W, 3)`` uint8 RGB arrays. Output goes to a *local* path: MP4's
``+faststart`` rewrites the file in a second pass, which needs a real file; callers
that target object storage encode to a temporary file and upload it
(:func:`pipelines.io.storage.put_file`).
"""

from __future__ import annotations

from fractions import Fraction
from typing import Iterable

import av
import numpy as np

# Encoders that take x264-style private options.
_X264 = {"libx264"}


class VideoWriter:
    """Streaming encoder: ``with VideoWriter(path, 64, 48, fps=25) as w: w.write(frame_HW3)``.

    Args:
        path: local output path; the container is picked from its extension.
        width: frame width in pixels (rounded down to even for yuv420p).
        height: frame height in pixels (rounded down to even for yuv420p).
        fps: constant output frame rate.
        codec: FFmpeg encoder name (``libx264``, ``mpeg4``, ``libvpx-vp9``, ``mjpeg``...).
        gop: keyframe interval in frames (``None``: the encoder's default).
        crf: constant-rate-factor quality for x264 (lower is better).
        bframes: B-frames for x264 (``None``: the encoder's default).
        faststart: put the MP4 index (moov) first so readers can seek without
            reading the whole file.
        pix_fmt: encoder pixel format.
        preset: x264 speed preset.
    """

    def __init__(self, path: str, width: int, height: int, *, fps: float = 25.0,
                 codec: str = "libx264", gop: int | None = None, crf: int = 20,
                 bframes: int | None = None, faststart: bool = True,
                 pix_fmt: str = "yuv420p", preset: str = "veryfast") -> None:
        options = {"movflags": "+faststart"} if faststart and str(path).endswith((".mp4", ".mov", ".m4v")) else {}
        self._container = av.open(str(path), "w", options=options)
        rate = Fraction(fps).limit_denominator(1001)
        self._stream = self._container.add_stream(codec, rate=rate)
        if pix_fmt.endswith("420p"):  # 4:2:0 chroma needs even sizes
            width, height = width - width % 2, height - height % 2
        self.width, self.height = width, height
        self._stream.width, self._stream.height, self._stream.pix_fmt = width, height, pix_fmt
        if gop is not None:
            self._stream.codec_context.gop_size = gop
        opts: dict[str, str] = {}
        if codec in _X264:
            params = []
            if gop is not None:
                params += [f"keyint={gop}", f"min-keyint={gop}", "scenecut=0"]
            if bframes is not None:
                params.append(f"bframes={bframes}")
            opts = {"preset": preset, "crf": str(crf)}
            if params:
                opts["x264-params"] = ":".join(params)
        self._stream.options = opts
        self.frames_written = 0
        self._closed = False

    def write(self, frame_HW3: np.ndarray) -> None:
        """Encode one RGB frame; it is resized if its size differs from the stream's."""
        frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(frame_HW3), format="rgb24")
        if frame.width != self.width or frame.height != self.height:
            frame = frame.reformat(width=self.width, height=self.height)
        self.write_av_frame(frame)

    def write_av_frame(self, frame: av.VideoFrame) -> None:
        """Encode a decoded PyAV frame (any pixel format), resizing it to the stream's size."""
        frame = frame.reformat(width=self.width, height=self.height, format=self._stream.pix_fmt)
        frame.pts = self.frames_written
        frame.time_base = Fraction(1, 1) / self._stream.codec_context.framerate
        for packet in self._stream.encode(frame):
            self._container.mux(packet)
        self.frames_written += 1

    def close(self) -> None:
        """Flush the encoder and finish the file (idempotent)."""
        if self._closed:
            return
        self._closed = True
        for packet in self._stream.encode():
            self._container.mux(packet)
        self._container.close()

    def abandon(self) -> None:
        """Close the file without flushing, after a failure (no-op once closed)."""
        if self._closed:
            return
        self._closed = True
        try:
            self._container.close()
        except Exception:  # noqa: BLE001 - the file is discarded anyway
            pass

    def __enter__(self) -> "VideoWriter":
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            self.close()
        else:
            self.abandon()


def write_video(path: str, frames_THW3: Iterable[np.ndarray] | np.ndarray, *, fps: float = 25.0,
                **kwargs) -> int:
    """Encode a sequence of RGB frames to ``path``; returns the number of frames written.

    Keyword arguments are those of :class:`VideoWriter`.
    """
    frames = iter(frames_THW3)
    first = next(frames)
    h, w = first.shape[:2]
    with VideoWriter(path, w, h, fps=fps, **kwargs) as writer:
        writer.write(first)
        for frame in frames:
            writer.write(frame)
    return writer.frames_written
