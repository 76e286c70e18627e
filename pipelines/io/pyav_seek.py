"""PyAV decoding for :func:`pipelines.io.video.read_frames`: seek-and-decode by timestamp, or by
counting frames when timestamps are not a regular grid, with one reused RGB conversion.

``info`` arguments are :class:`pipelines.io.video.ReadInfo` (filled with seeks and decoded frames).

Shape legend: ``U`` unique requested frames, ``H`` height, ``W`` width, ``3`` RGB channels.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Iterator

import av
import numpy as np
from av.video.reformatter import VideoReformatter

if TYPE_CHECKING:
    from pipelines.io.video import ReadInfo


class NotConstantRate(Exception):
    """Timestamps are not a regular grid; index frames by counting instead."""


class ToRGB:
    """YUV -> RGB with one reused swscale context on one thread.

    ``frame.to_ndarray(format="rgb24")`` builds a new context per frame with automatic
    slice threads: measured 3-5x slower than this on a busy 2-core machine, and
    bit-identical output (same BILINEAR swscale path).
    """

    def __init__(self) -> None:
        self._reformatter = VideoReformatter()

    def __call__(self, frame: av.VideoFrame) -> np.ndarray:
        return self._reformatter.reformat(frame, format="rgb24", threads=1).to_ndarray()


def decode_counting(container, stream, unique_U: np.ndarray,
                    info: ReadInfo) -> tuple[dict[int, np.ndarray], int]:
    """Fallback for irregular timestamps: decode from the start and count frames."""
    to_rgb = ToRGB()
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


class SeekingDecoder:
    """Seek-and-decode over sorted unique indices, indexing frames by timestamp.

    A frame's index is ``(pts - pts0) * time_base * fps`` where ``pts0`` is the pts
    of the first decoded frame; every decoded frame is checked to sit on that grid
    and to follow its predecessor, otherwise NotConstantRate is raised.
    """

    _MAX_BACK_OFFS = 8

    def __init__(self, container, stream, info: ReadInfo) -> None:
        self.container, self.stream, self.info = container, stream, info
        self.to_rgb = ToRGB()
        rate = stream.average_rate or stream.guessed_rate
        if not rate or stream.time_base is None:
            raise NotConstantRate("no frame rate")
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
                        raise NotConstantRate(f"cannot seek before frame {unique_U[j]}")
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
                raise NotConstantRate("frame without pts")
            if self.pts0 is None:
                self.pts0 = frame.pts
            exact = (frame.pts - self.pts0) * self.ticks_to_index
            index = round(exact)
            if abs(exact - index) > 0.25 or (previous is not None and index != previous + 1):
                raise NotConstantRate(f"pts {frame.pts} off the frame grid")
            if frame.key_frame or previous is None:  # a seek always starts a GOP
                if last_key is not None:
                    self.gop_max = max(self.gop_max, index - last_key)
                self.key = last_key = index
            self.info.frames_decoded += 1
            previous = index
            yield index, frame
