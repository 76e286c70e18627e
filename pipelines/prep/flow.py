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

Layout. Flow fields, the encoding and flow files are in :mod:`pipelines.prep.flow_core`
(re-exported here); this module holds the manifest's flow column and the Ray job
(:func:`run_flow`).

Shape legend: ``T`` frames, ``T1`` = T-1 flow fields, ``H`` height, ``W`` width,
``2`` flow (x, y), ``3`` stored channels (x, y, 0).
"""

from __future__ import annotations

import dataclasses
import json
import time
from collections import Counter
from typing import Any

import cv2
import pyarrow as pa

from pipelines.io import manifest
from pipelines.io import storage
from pipelines.prep.ingest import safe_path, quarantine_row  # one naming rule for videos/ and flow/
from pipelines.io.probe import MediaError
from pipelines.prep.flow_core import (  # noqa: F401 - moved there (this file's size); re-exported
    BOUND,
    FARNEBACK_DEFAULTS,
    FLOW_SUFFIX,
    GOP,
    METHODS,
    STORE_OPTIONS,
    TAG_BOUND,
    TAG_METHOD,
    FlowInfo,
    align_to_frames,
    compute_flow,
    decode_flow,
    encode_flow,
    flow_video,
    iter_aligned_flow,
    pair_flow_fn,
    read_flow,
    stored_flow,
)

FLOW_DIR = "flow"
FLOW_COLUMN = "flow_uri"


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
