"""Optical flow fields, their uint8 encoding, and stored flow files (the job-free half of flow).

Holds the TV-L1 / Farneback pair functions (:func:`pair_flow_fn`), frame alignment
(:func:`compute_flow`, :func:`align_to_frames`, :func:`iter_aligned_flow`), the uint8
encoding (:func:`encode_flow`, :func:`decode_flow`) and lossless MKV storage
(:func:`flow_video`, :func:`read_flow`, :func:`stored_flow`). The method, alignment,
encoding and storage choices are documented in :mod:`pipelines.prep.flow`, which
re-exports these names and runs the Ray job.

Shape legend: ``T`` frames, ``T1`` = T-1 flow fields, ``H`` height, ``W`` width,
``2`` flow (x, y), ``3`` stored channels (x, y, 0).
"""

from __future__ import annotations

import dataclasses
import time
from fractions import Fraction
from typing import Callable, Iterable, Iterator

import av
import cv2
import numpy as np

from pipelines.io import storage
from pipelines.io.probe import MediaError

METHODS = ("tvl1", "farneback")
BOUND = 20.0
FLOW_SUFFIX = ".mkv"
GOP = 16  # keyframe interval of stored flow: a random 32-frame clip decodes <= 15 extra frames
STORE_OPTIONS = {"qp": "0", "preset": "veryfast"}  # qp 0: lossless H.264
FARNEBACK_DEFAULTS = dict(pyr_scale=0.5, levels=3, winsize=15, iterations=3, poly_n=5,
                          poly_sigma=1.2, flags=0)
# Matroska tags of a stored flow file (Matroska upper-cases tag names).
TAG_METHOD, TAG_BOUND = "VIDRAY_FLOW_METHOD", "VIDRAY_FLOW_BOUND"


# --- flow fields -----------------------------------------------------------------------------

def _tvl1(**params) -> Callable[[np.ndarray, np.ndarray], np.ndarray]:
    """A TV-L1 pair function; ``params`` name setters in snake case (``scales_number=3``, ``lambda_=0.1``)."""
    algo = cv2.optflow.DualTVL1OpticalFlow_create()
    for key, value in params.items():
        setter = "set" + "".join(part.capitalize() for part in key.strip("_").split("_"))
        if not hasattr(algo, setter):
            raise ValueError(f"unknown TV-L1 parameter {key!r}")
        getattr(algo, setter)(value)
    return lambda prev_HW, next_HW: algo.calc(prev_HW, next_HW, None)


def _farneback(**params) -> Callable[[np.ndarray, np.ndarray], np.ndarray]:
    unknown = set(params) - set(FARNEBACK_DEFAULTS)
    if unknown:
        raise ValueError(f"unknown Farneback parameters {sorted(unknown)}")
    args = {**FARNEBACK_DEFAULTS, **params}
    return lambda prev_HW, next_HW: cv2.calcOpticalFlowFarneback(prev_HW, next_HW, None, **args)


def pair_flow_fn(method: str = "tvl1", **params) -> Callable[[np.ndarray, np.ndarray], np.ndarray]:
    """A function ``(gray_HW, gray_HW) -> flow_HW2`` (float32 px) for ``method``.

    Raises:
        ValueError: unknown method or parameter.
    """
    if method == "tvl1":
        return _tvl1(**params)
    if method == "farneback":
        return _farneback(**params)
    raise ValueError(f"unknown flow method {method!r}; expected one of {METHODS}")


def compute_flow(gray_THW: np.ndarray, method: str = "tvl1", **params) -> np.ndarray:
    """Flow between consecutive frames.

    Args:
        gray_THW: uint8 grey frames.
        method: ``tvl1`` or ``farneback``; ``params`` override its defaults.

    Returns:
        flow_T1HW2: float32, field ``t`` from frame ``t`` to ``t+1`` (x, y in px).
    """
    fn = pair_flow_fn(method, **params)
    T, H, W = gray_THW.shape
    flow_T1HW2 = np.zeros((max(T - 1, 0), H, W, 2), np.float32)
    for t in range(T - 1):
        flow_T1HW2[t] = fn(gray_THW[t], gray_THW[t + 1])
    return flow_T1HW2


def align_to_frames(flow_T1HW2: np.ndarray, num_frames: int) -> np.ndarray:
    """The flow video's frames: the T-1 fields plus a repeat of the last (zeros when T = 1).

    Returns:
        flow_THW2 with ``T = num_frames``, frame-aligned with the RGB video.
    """
    if len(flow_T1HW2) != num_frames - 1:
        raise ValueError(f"{len(flow_T1HW2)} fields do not belong to {num_frames} frames")
    last_1HW2 = flow_T1HW2[-1:] if len(flow_T1HW2) else None
    if last_1HW2 is None:
        return np.zeros((1, *flow_T1HW2.shape[1:]), np.float32)
    return np.concatenate([flow_T1HW2, last_1HW2])


def iter_aligned_flow(gray_frames: Iterable[np.ndarray], method: str = "tvl1",
                      **params) -> Iterator[np.ndarray]:
    """Streaming :func:`compute_flow` + :func:`align_to_frames`: one ``flow_HW2`` per input frame.

    Holds two frames at a time, so videos of any length fit in memory.
    """
    fn = pair_flow_fn(method, **params)
    prev_HW = flow_HW2 = None
    for gray_HW in gray_frames:
        if prev_HW is not None:
            flow_HW2 = fn(prev_HW, gray_HW)
            yield flow_HW2
        prev_HW = gray_HW
    if prev_HW is not None:
        yield flow_HW2 if flow_HW2 is not None else np.zeros((*prev_HW.shape, 2), np.float32)


# --- encoding --------------------------------------------------------------------------------

def encode_flow(flow_THW2: np.ndarray, bound: float = BOUND) -> np.ndarray:
    """Truncate to ``±bound`` px and map linearly to uint8 (:mod:`pipelines.prep.flow` docstring: exact mapping).

    Args:
        flow_THW2: float flow; any leading shape ``(..., 2)`` works.

    Returns:
        uint8_THW3: channels x, y, 0.
    """
    flow = np.nan_to_num(np.asarray(flow_THW2, np.float32), nan=0.0)
    scaled = (np.clip(flow, -bound, bound) + bound) * np.float32(255.0 / (2 * bound))
    out = np.zeros((*flow.shape[:-1], 3), np.uint8)
    out[..., :2] = np.rint(scaled)
    return out


def decode_flow(uint8_THW3: np.ndarray, bound: float = BOUND) -> np.ndarray:
    """Inverse of :func:`encode_flow`: ``f = u8 * 2 * bound / 255 - bound``.

    Returns:
        flow_THW2: float32 px (the third channel is ignored).
    """
    return uint8_THW3[..., :2].astype(np.float32) * np.float32(2 * bound / 255.0) - np.float32(bound)


# --- flow videos -----------------------------------------------------------------------------

@dataclasses.dataclass
class FlowInfo:
    """What :func:`flow_video` wrote."""

    num_frames: int
    width: int
    height: int
    size_bytes: int
    seconds: float


def _iter_gray(uri: str, stats: dict) -> Iterator[np.ndarray]:
    """Every frame of ``uri``'s first video stream as uint8 luma; records ``fps`` in ``stats``.

    Raises:
        MediaError: the file cannot be opened or decoded (kinds as in ingest).
    """
    try:
        with storage.open_url(uri, "rb") as f, av.open(f) as container:
            if not container.streams.video:
                raise MediaError("no_video_stream", f"{uri} has no readable video stream (a truncated "
                                                    f"file or not a video)")
            stream = container.streams.video[0]
            stream.thread_count = 1  # Ray runs one task per CPU
            stats["fps"] = stream.average_rate or stream.guessed_rate or Fraction(25)
            for frame in container.decode(stream):
                yield frame.to_ndarray(format="gray")
    except FileNotFoundError as exc:
        raise MediaError("not_found", f"video not found: {exc}") from exc
    except av.error.FFmpegError as exc:
        raise MediaError("corrupt", f"FFmpeg cannot decode {uri}: {exc}") from exc
    except OSError as exc:  # e.g. seeking in an empty file; a re-run retries quarantined rows
        raise MediaError("read_error", f"cannot read {uri}: {type(exc).__name__}: {exc}") from exc


def _write_flow_file(path: str, frames_HW3: Iterable[np.ndarray], fps: Callable[[], Fraction],
                     tags: dict[str, str]) -> tuple[int, int, int]:
    """Encode uint8 flow frames losslessly to a local MKV; returns (frames, width, height).

    ``fps`` is called once the first frame exists (the decoder knows the rate by then).
    """
    container = av.open(path, "w")
    container.metadata.update(tags)
    stream = n = None
    try:
        for n, frame_HW3 in enumerate(frames_HW3):
            if stream is None:
                rate = Fraction(fps()).limit_denominator(1001)
                stream = container.add_stream("libx264rgb", rate=rate)
                stream.height, stream.width = frame_HW3.shape[:2]
                stream.pix_fmt, stream.options = "rgb24", dict(STORE_OPTIONS)
                stream.codec_context.gop_size = GOP
            frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(frame_HW3), format="rgb24")
            frame.pts, frame.time_base = n, 1 / rate
            for packet in stream.encode(frame):
                container.mux(packet)
        if stream is None:
            raise MediaError("no_frames", "the video decodes to no frames")
        for packet in stream.encode():
            container.mux(packet)
    finally:
        container.close()
    return n + 1, stream.width, stream.height


def flow_video(uri_in: str, uri_out: str, *, method: str = "tvl1", bound: float = BOUND,
               expected_frames: int | None = None, **params) -> FlowInfo:
    """Decode ``uri_in``, compute and encode its flow, and store it at ``uri_out`` (lossless MKV).

    The flow video has as many frames as ``uri_in`` (:mod:`pipelines.prep.flow` docstring) and its fps.

    Args:
        expected_frames: the manifest's ``num_frames``; a different decoded count fails.

    Raises:
        MediaError: ``uri_in`` cannot be decoded, has no frames, or has another frame count.
        ValueError: unknown method or parameter.
    """
    start, stats = time.time(), {}
    flows = iter_aligned_flow(_iter_gray(uri_in, stats), method, **params)
    frames = (encode_flow(flow_HW2, bound) for flow_HW2 in flows)
    tags = {TAG_METHOD: method, TAG_BOUND: f"{bound:g}"}
    with storage.staged_output(uri_out, suffix=FLOW_SUFFIX) as tmp:
        n, width, height = _write_flow_file(tmp, frames, lambda: stats["fps"], tags)
        if expected_frames is not None and n != expected_frames:
            raise MediaError("frame_count", f"{uri_in} decodes to {n} frames, the manifest says "
                                            f"{expected_frames}: the file changed since ingest")
    return FlowInfo(num_frames=n, width=width, height=height, size_bytes=storage.size(uri_out),
                    seconds=round(time.time() - start, 3))


def read_flow(uri: str, bound: float = BOUND) -> np.ndarray:
    """Every frame of a stored flow video, decoded back to px.

    Returns:
        flow_THW2: float32.
    """
    with storage.open_url(uri, "rb") as f, av.open(f) as container:
        frames_THW3 = np.stack([fr.to_ndarray(format="rgb24") for fr in container.decode(video=0)])
    return decode_flow(frames_THW3, bound)


def stored_flow(uri: str) -> tuple[int, dict[str, str]] | None:
    """Frame count (packets, without decoding) and tags of a stored flow file; ``None`` if absent or unreadable."""
    try:
        with storage.open_url(uri, "rb") as f, av.open(f) as container:
            tags = {k.upper(): v for k, v in container.metadata.items()}
            n = sum(1 for packet in container.demux(video=0) if packet.size)
    except (FileNotFoundError, av.error.FFmpegError, IndexError):
        return None
    return n, tags
