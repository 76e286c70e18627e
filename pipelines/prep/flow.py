"""Optical flow for the flow stream of two-stream methods (MemDPC, CoCLR): compute, encode, store.

Method. TV-L1 (Zach et al. 2007; OpenCV contrib ``cv2.optflow.DualTVL1OpticalFlow``
with OpenCV's default parameters: tau 0.25, lambda 0.15, theta 0.3, 5 scales, scale
step 0.8, 5 warps, epsilon 0.01, 30 inner / 10 outer iterations, median filter 5)
as both seeds use it (MemDPC L703, CoCLR L971), or Farneback when asked
(:data:`FARNEBACK_DEFAULTS`). Flow is computed on the luma of the video as stored
(``uri``; ingest may have transcoded it to a short side of 128/256), never resized.

Frame alignment. ``compute_flow`` returns the T-1 fields between consecutive frames;
field ``t`` is the motion from frame ``t`` to ``t+1`` (OpenCV's convention:
``frame_t[y, x] ~ frame_{t+1}[y + dy, x + dx]``; +x is rightwards, +y downwards). A
flow *video* has exactly as many frames as the RGB video: flow frame ``t`` is field
``t`` for ``t < T-1``, and the last frame repeats field ``T-2`` (a 1-frame video gets
one zero field). So RGB frame ``i`` and flow frame ``i`` always describe the same
instant, which CoCLR's paired RGB/flow clips rely on.

Encoding (the seeds' I3D pre-processing, MemDPC L703 / CoCLR L971). Channel 0 is x,
channel 1 is y, channel 2 is 0. Each of x, y is truncated to ``[-bound, bound]``
(bound 20 px) and mapped linearly ``u8 = rint((f + bound) * 255 / (2 * bound))``
(round half to even), so -20 px -> 0, +20 px -> 255 and 0 px -> 127.5 -> 128. The
inverse is ``f = u8 * 2 * bound / 255 - bound`` (step 40/255 = 0.157 px; 128 decodes
to +0.078 px). Within the bound the uint8 error is at most half a step, 0.0784 px.

Storage. One file per video, ``<dataset>/flow/<video_id>.mkv``: lossless H.264 in
RGB (``libx264rgb``, ``qp=0``, keyframe every :data:`GOP` frames, Matroska), so the
stored file decodes to exactly the uint8 encoding. Measured by ``bench/flow.py`` on
TV-L1 flow of a 128x128, 32-frame synthetic camera move (texture panning 1.5/-0.7
px/frame and zooming 1 %/frame, a block moving 4 px/frame, grey-level noise sigma 2;
mean |flow| 0.94 px); errors vs float are over pixels inside the bound:

=================================  ===========  ===================  ========================
encoding                           bytes/frame  error vs uint8 (DN)  error vs float flow (px)
                                                mean / max           mean / max
=================================  ===========  ===================  ========================
x264rgb qp 0, GOP 16 (chosen)      2152         0 / 0                0.039 / 0.078
x264rgb qp 0, intra only           2300         0 / 0                0.039 / 0.078
FFV1 bgr0 (lossless)               3102         0 / 0                0.039 / 0.078
x264 yuv444p crf 0 (RGB->YUV)      2238         0.34 / 1             0.079 / 0.235
x264 yuv444p crf 18                268          0.60 / 35            0.107 / 5.5
JPEG q 2 (the seeds' storage)      1308         0.94 / 63            0.154 / 9.9
=================================  ===========  ===================  ========================

(raw uint8 would be 49152 bytes/frame.) The chosen encoding adds no error to the
uint8 quantisation (mean 0.039, max 0.078 px = half a step), at 1.6x the bytes of
the seeds' JPEG frames, whose error reaches 10 px at motion edges (and 35 grey levels
of leakage into the zero channel) -- exactly where flow carries the signal; lossy
H.264 is 8x smaller but as bad at edges. x264rgb beats FFV1 on size; PyAV (FFmpeg 8.1) and
decord2 3.4 both decode it to the same RGB bytes. TV-L1 costs ~4 fields/s per core at
128x128 (Farneback ~350; ``bench/flow.py``), so flow, not storage, is the expense.

Shape legend: ``T`` frames, ``T1`` = T-1 flow fields, ``H`` height, ``W`` width,
``2`` flow (x, y), ``3`` stored channels (x, y, 0).
"""

from __future__ import annotations

import dataclasses
import json
import time
from collections import Counter
from fractions import Fraction
from typing import Any, Callable, Iterable, Iterator

import av
import cv2
import numpy as np
import pyarrow as pa

from pipelines.io import manifest
from pipelines.io import storage
from pipelines.prep.ingest import safe_path, quarantine_row  # one naming rule for videos/ and flow/
from pipelines.io.probe import MediaError

METHODS = ("tvl1", "farneback")
BOUND = 20.0
FLOW_DIR = "flow"
FLOW_SUFFIX = ".mkv"
FLOW_COLUMN = "flow_uri"
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
    """Truncate to ``±bound`` px and map linearly to uint8 (module docstring: exact mapping).

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

    The flow video has as many frames as ``uri_in`` (module docstring) and its fps.

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


# --- the manifest's flow column --------------------------------------------------------------

manifest_url = manifest.manifest_url


def read_manifest_with_flow(url: str) -> pa.Table:
    """The manifest at ``url`` (``flow_uri`` is null on rows without flow).

    Raises:
        FileNotFoundError: no manifest at ``url``.
        ValueError: the table lacks manifest columns.
    """
    url = manifest_url(url)
    if not storage.exists(url):
        raise FileNotFoundError(f"no manifest at {url}")
    return manifest.read_manifest(url)


def with_flow_column(table: pa.Table, flow_uris: list[str | None]) -> pa.Table:
    """``table`` with its ``flow_uri`` column replaced by ``flow_uris`` (other columns untouched)."""
    index = table.column_names.index(FLOW_COLUMN)
    return table.set_column(index, pa.field(FLOW_COLUMN, pa.string()), pa.array(flow_uris, pa.string()))


# --- the job ---------------------------------------------------------------------------------

@dataclasses.dataclass
class FlowConfig:
    """Arguments of one flow run."""

    manifest: str                   # dataset folder or manifest .parquet URL
    method: str = "tvl1"
    out: str | None = None          # folder for flow files (default: <dataset>/flow)
    bound: float = BOUND
    params: dict[str, Any] = dataclasses.field(default_factory=dict)  # method parameters
    flush_every: int = 200

    @property
    def dataset(self) -> str:
        url = manifest_url(self.manifest)
        return url.rsplit("/", 1)[0] if "/" in url else "."

    @property
    def out_dir(self) -> str:
        return self.out or storage.join(self.dataset, FLOW_DIR)


@dataclasses.dataclass
class FlowReport:
    rows: int
    computed: int
    existing: int
    quarantined: int
    reasons: dict[str, int]
    seconds: float

    @property
    def with_flow(self) -> int:
        return self.computed + self.existing


def flow_target(out_dir: str, video_id: str) -> str:
    """Where a video's flow file goes: next to ``videos/``, named like the transcoded copy."""
    return storage.join(out_dir, safe_path(video_id) + FLOW_SUFFIX)


def is_done(uri: str, num_frames: int, method: str, bound: float) -> bool:
    """Whether ``uri`` holds this method's flow with ``num_frames`` frames (an earlier run's work)."""
    stored = stored_flow(uri)
    if stored is None:
        return False
    n, tags = stored
    return n == num_frames and tags.get(TAG_METHOD) == method and tags.get(TAG_BOUND) == f"{bound:g}"


def process_row(row: dict, *, out_dir: str, method: str, bound: float, params: dict) -> dict[str, Any]:
    """Compute one manifest row's flow file unless it exists (runs in a Ray task).

    Returns:
        ``{"status": "computed" | "existing", "flow_uri": ...}`` or
        ``{"status": "quarantined", "row": <quarantine row>}``.
    """
    target = flow_target(out_dir, row["video_id"])
    if is_done(target, row["num_frames"], method, bound):
        return {"status": "existing", "flow_uri": target}
    bad = dict(content_hash=row.get("content_hash"), video_id=row["video_id"])
    try:
        flow_video(row["uri"], target, method=method, bound=bound, expected_frames=row["num_frames"],
                   **params)
    except MediaError as exc:
        return {"status": "quarantined", "row": quarantine_row(row["uri"], "flow", exc.kind, exc.reason, **bad)}
    except Exception as exc:  # noqa: BLE001 - one video's failure, recorded with its reason
        return {"status": "quarantined", "row": quarantine_row(
            row["uri"], "flow", "error", f"flow failed: {type(exc).__name__}: {exc}", **bad)}
    return {"status": "computed", "flow_uri": target}


def _map_fn(item: dict, **kwargs) -> dict:
    """Ray Data stage: one row in, its JSON-encoded result out."""
    cv2.setNumThreads(1)  # one task per CPU: OpenCV's own threads would oversubscribe
    result = process_row(json.loads(item["row"]), **kwargs)
    return {"order": item["order"], "result": json.dumps(result)}


class _Merger:
    """This run's results over the manifest and quarantine tables; writes them only when they change."""

    def __init__(self, cfg: FlowConfig, table: pa.Table) -> None:
        self.table = table
        self.q_url = storage.join(cfg.dataset, manifest.QUARANTINE_NAME)
        self.m_url = manifest_url(cfg.manifest)
        self.old_q = manifest.read_quarantine(self.q_url).to_pylist()
        self.ids = table.column("video_id").to_pylist()
        self.results: dict[int, dict] = {}

    def tables(self) -> tuple[pa.Table, list[dict], Counter]:
        flow_uris = self.table.column(FLOW_COLUMN).to_pylist()
        retried = {self.ids[order] for order in self.results}
        quarantine = [q for q in self.old_q if not (q["stage"] == "flow" and q["video_id"] in retried)]
        counts: Counter = Counter()
        for order, result in sorted(self.results.items()):
            counts[result["status"]] += 1
            flow_uris[order] = result.get("flow_uri")
            if result["status"] == "quarantined":
                quarantine.append(result["row"])
        return with_flow_column(self.table, flow_uris), quarantine, counts

    def flush(self) -> tuple[Counter, Counter]:
        """Write what changed; returns status counts and this run's quarantine kinds."""
        table, quarantine, counts = self.tables()
        if quarantine != self.old_q:  # the quarantine first: a crash then never loses a failure
            manifest.write_table(manifest.to_table(quarantine, manifest.QUARANTINE_SCHEMA), self.q_url)
            self.old_q = quarantine
        if not table.equals(self.table):
            manifest.write_table(table, self.m_url)
            self.table = table
        kinds = Counter(r["row"]["kind"] for r in self.results.values() if r["status"] == "quarantined")
        return counts, kinds


def run_flow(cfg: FlowConfig) -> FlowReport:
    """Compute (in parallel on Ray) and record the flow of every manifest row.

    Raises:
        FileNotFoundError: no manifest at ``cfg.manifest``.
        ValueError: not a manifest, or an unknown method / parameter.
        AssertionError: the accounting invariant broke (a bug, never bad input).
    """
    import ray

    start = time.time()
    pair_flow_fn(cfg.method, **cfg.params)  # fail fast on a bad method or parameter
    table = read_manifest_with_flow(cfg.manifest)
    merger = _Merger(cfg, table)
    keep = ("video_id", "uri", "num_frames", "content_hash")
    items = [{"order": i, "row": json.dumps({k: r[k] for k in keep})}
             for i, r in enumerate(table.select(list(keep)).to_pylist())]
    if items:
        blocks = max(1, min(len(items), int(ray.cluster_resources().get("CPU", 1)) * 4))
        ds = ray.data.from_items(items, override_num_blocks=blocks).map(
            _map_fn, fn_kwargs=dict(out_dir=cfg.out_dir, method=cfg.method, bound=cfg.bound,
                                    params=cfg.params), num_cpus=1)
        for n, item in enumerate(ds.iter_rows(), start=1):
            merger.results[item["order"]] = json.loads(item["result"])
            if n % cfg.flush_every == 0:
                merger.flush()
    counts, kinds = merger.flush()
    if counts["computed"] + counts["existing"] + counts["quarantined"] != table.num_rows:
        raise AssertionError(f"accounting broke: {table.num_rows} rows != {dict(counts)}")
    return FlowReport(rows=table.num_rows, computed=counts["computed"], existing=counts["existing"],
                      quarantined=counts["quarantined"], reasons=dict(kinds.most_common()),
                      seconds=round(time.time() - start, 2))
