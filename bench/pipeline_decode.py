"""Decode efficiency and memory for ``bench/pipeline.py``: frames decoded per frame used, and the
resident memory of a long-lived decode process (started with the decode workers' env)."""

from __future__ import annotations

import gc
import multiprocessing
from typing import Any, Iterable

from bench.pipeline_loaders import Sample, decode_samples, items_of, plan
from pipelines.data import recipes
from pipelines.data.tasks import media_of
from pipelines.data.workers import init_decode_worker, spawn_env
from pipelines.io.video import ReadInfo, read_frames


def keyframe_interval(uris: Iterable[str]) -> float:
    """Mean frames per keyframe over the files (from packet flags, no decoding)."""
    import av

    packets = keys = 0
    for uri in uris:
        with av.open(uri) as container:
            for packet in container.demux(video=0):
                if packet.size:
                    packets += 1
                    keys += bool(packet.is_keyframe)
    return round(packets / max(keys, 1), 2)



def decoded_per_used(samples: list[Sample]) -> dict[str, Any]:
    """PyAV's decoded frames per requested frame over the reads (one-thread decode)."""
    decoded = used = seeks = reads = 0
    for sample in samples:
        for uri, idx in sample:
            info = ReadInfo()
            read_frames(uri, idx, backend="pyav", threads=1, info=info)
            decoded, used, seeks, reads = decoded + info.frames_decoded, used + len(idx), seeks + info.seeks, reads + 1
    return {"ratio": round(decoded / used, 3), "frames_decoded": decoded, "frames_used": used, "reads": reads,
            "seeks_per_read": round(seeks / reads, 2)}


def decode_ratios(cfg, data: dict[str, str], rcfg: recipes.RecipeConfig) -> dict[str, Any]:
    out: dict[str, Any] = {"backend": "pyav", "epoch": 1,
                           "decord": "not measured: decord exposes no decoded-frame counter"}
    for name, manifest_dir in data.items():
        items = items_of(manifest_dir, rcfg, cfg.videos)
        detail = decoded_per_used(plan(items, rcfg, cfg.seed, [1])[1])
        detail["mean_keyframe_interval"] = keyframe_interval(item["uri"] for item in items)
        out[name], out[f"{name}_detail"] = detail["ratio"], detail
    return out


def _vm_rss_mb() -> float:
    with open("/proc/self/status") as f:
        kb = next(int(line.split()[1]) for line in f if line.startswith("VmRSS:"))
    return round(kb / 1024, 1)


def _rss_worker(samples: list[Sample], clips: int, first: int, backend: str, media: dict, conn) -> None:
    from pipelines.io import video

    init_decode_worker()
    every, curve = max(first, clips // 10), []
    for k in range(1, clips + 1):
        decode_samples([samples[(k - 1) % len(samples)]], backend, media)
        if k == first or k % every == 0 or k == clips:
            gc.collect()
            curve.append([k, _vm_rss_mb()])
    conn.send({"curve": curve, "backends": dict(video.BACKEND_COUNTS)})
    conn.close()


def decode_worker_rss(cfg, manifest_dir: str, rcfg: recipes.RecipeConfig) -> dict[str, Any]:
    """RSS of one long-lived decode process after ``rss_first`` and after ``rss_clips`` clips."""
    items = items_of(manifest_dir, rcfg, cfg.videos)
    samples = [s for e in range(1, cfg.epochs + 1) for s in plan(items, rcfg, cfg.seed, [e])[e]]
    ctx = multiprocessing.get_context("spawn")
    recv, send = ctx.Pipe(duplex=False)
    proc = ctx.Process(target=_rss_worker, args=(samples, cfg.rss_clips, cfg.rss_first, cfg.backend,
                                                 media_of(items), send))
    with spawn_env():
        proc.start()
    send.close()
    result = recv.recv()
    proc.join()
    curve = result["curve"]
    first = next(mb for k, mb in curve if k == cfg.rss_first)
    last = curve[-1][1]
    return {"first_n": cfg.rss_first, "after_first_n": first, "after_last": last, "clips": cfg.rss_clips,
            "growth_pct": round(100 * (last - first) / first, 2), "curve": curve,
            "distinct_samples_cycled": len(samples), "read_backends": result["backends"],
            "at_least_5000_clips": cfg.rss_clips >= 5000}
