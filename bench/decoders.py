"""Decoder benchmark: decord 0.6.0 vs decord2 3.4.0 vs PyAV (pipelines.io.video), one run.

    python bench/decoders.py [--quick]

Prints ONE JSON object on stdout (progress goes to stderr). Each decoder runs in its
own subprocess: the two decord distributions both install the ``decord`` module, so
each is pip-installed into ``.bench-deps/<name>`` (git-ignored) and put first on
PYTHONPATH; a native abort then shows up as a failed worker, not a dead benchmark.

Measured per decoder and video, all with one decoder thread (Ray runs one decode
task per CPU; the machine is shared):
  correctness   fraction of returned frames whose nearest reference frame (full PyAV
                decode) is the requested one, and the max abs pixel diff.
  probe_per_s   open + frame count + fps + frame size (decord must decode frame 0
                for the size; PyAV reads the header: the stream's frame count, or
                duration x fps where the container has none).
  random_fps    frames/s over reads of 16 random indices, one open per read.
  seq_fps       frames/s of a full sequential decode to RGB.
  leak          RSS growth over N open + 4-frame-read cycles, after a warm-up.
Ratios are decoder / pyav (pyav is the baseline), per video and as geometric means.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
DEPS = ROOT / ".bench-deps"
DECORDS = {"decord": "0.6.0", "decord2": "3.4.0"}  # name -> pinned version
DECODERS = ("decord", "decord2", "pyav")
BATCH = 16

# name: (file name, frames, (H, W), write_video kwargs)
VIDEOS = {
    "h264_gop250_b3_640x360": ("h264_gop250.mp4", 300, (360, 640), dict(codec="libx264", gop=250, bframes=3)),
    "h264_gop8_640x360": ("h264_gop8.mp4", 300, (360, 640), dict(codec="libx264", gop=8, bframes=0)),
    "h264_gop32_b2_320x240": ("h264_gop32.mp4", 150, (240, 320), dict(codec="libx264", gop=32, bframes=2)),
    "mpeg4_gop12_320x240_avi": ("mpeg4.avi", 150, (240, 320), dict(codec="mpeg4", gop=12)),
    "vp9_gop30_320x180_webm": ("vp9.webm", 120, (180, 320), dict(codec="libvpx-vp9", gop=30)),
    "hevc_gop24_320x240_mkv": ("hevc.mkv", 150, (240, 320), dict(codec="hevc", gop=24)),
    "mjpeg_176x144_avi": ("mjpeg.avi", 100, (144, 176), dict(codec="mjpeg", pix_fmt="yuvj420p")),
}
LEAK_VIDEO = "h264_gop32_b2_320x240"


# ------------------------------------------------------------------------ parent side


def ensure_deps() -> None:
    """pip-install each decord distribution into its own folder when missing."""
    for name, version in DECORDS.items():
        if not (DEPS / name / "decord").is_dir():
            subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "--target",
                            str(DEPS / name), f"{name}=={version}", "--no-deps"], check=True)


def numbered_frames(T: int, H: int, W: int) -> np.ndarray:
    """``(T, H, W, 3)``: moving gradients on top, the frame number in binary blocks below."""
    t_T11 = np.arange(T)[:, None, None]
    frames_THW3 = np.zeros((T, H, W, 3), np.uint8)
    frames_THW3[..., 0] = (np.arange(W)[None, None, :] * 3 + t_T11 * 7) % 256
    frames_THW3[..., 1] = (np.arange(H)[None, :, None] * 5 + t_T11 * 11) % 256
    for bit in range(9):
        on_T = ((np.arange(T) >> bit) & 1).astype(np.uint8) * 255
        frames_THW3[:, H // 2:, bit * (W // 9):(bit + 1) * (W // 9), :] = on_T[:, None, None, None]
    return frames_THW3


def make_videos(root: Path, quick: bool) -> dict:
    """Encode the test set and its reference decode; returns the worker manifest."""
    import av

    from pipelines.io.encode import write_video

    manifest = {}
    for name, (file_name, T, (H, W), kwargs) in VIDEOS.items():
        T = min(T, 120) if quick else T
        path = root / file_name
        write_video(str(path), numbered_frames(T, H, W), fps=25, **kwargs)
        with av.open(str(path)) as container:
            ref_NHW3 = np.stack([f.to_ndarray(format="rgb24") for f in container.decode(video=0)])
        np.save(root / f"{name}.ref.npy", ref_NHW3)
        manifest[name] = {"path": str(path), "ref": str(root / f"{name}.ref.npy"),
                          "frames": len(ref_NHW3), "size": path.stat().st_size}
    return manifest


def run_worker(decoder: str, manifest_path: Path, quick: bool, timeout: float) -> dict:
    """Run one decoder's measurements in a subprocess; a crash becomes a failure record."""
    paths = [str(DEPS / decoder)] if decoder in DECORDS else []
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(paths + [str(ROOT)]),
               OMP_NUM_THREADS="1")
    cmd = [sys.executable, __file__, "--worker", decoder, "--manifest", str(manifest_path)]
    try:
        proc = subprocess.run(cmd + (["--quick"] if quick else []), env=env, capture_output=True,
                              text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return {"worker_failure": f"timeout after {timeout}s"}
    if proc.returncode != 0:
        return {"worker_failure": f"exit status {proc.returncode}", "stderr_tail": proc.stderr[-2000:]}
    return json.loads(proc.stdout.strip().splitlines()[-1])


def ratios(results: dict) -> dict:
    """decoder / pyav per metric and video, and their geometric mean over videos."""
    out = {}
    for decoder in DECODERS:
        per_metric = {}
        for metric in ("probe_per_s", "random_fps", "seq_fps"):
            per_video = {}
            for video, base in results["pyav"].get("videos", {}).items():
                mine = results[decoder].get("videos", {}).get(video, {})
                if mine.get(metric) and base.get(metric):
                    per_video[video] = round(mine[metric] / base[metric], 3)
            values = list(per_video.values())
            geo = float(np.exp(np.mean(np.log(values)))) if values else None
            per_metric[metric] = {"geomean": None if geo is None else round(geo, 3), "per_video": per_video}
        out[decoder] = per_metric
    return out


def machine_info() -> dict:
    import av

    cpu = next((line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo")
                if line.startswith("model name")), platform.processor())
    return {"cpu": cpu, "cores": os.cpu_count(), "python": platform.python_version(),
            "platform": platform.platform(), "pyav": av.__version__,
            "ffmpeg_pyav": av.ffmpeg_version_info, "numpy": np.__version__,
            "load_avg_1_5_15": os.getloadavg()}  # the machine is shared: context for the figures


def main_parent(quick: bool) -> None:
    ensure_deps()
    started, load_before = time.time(), os.getloadavg()
    with tempfile.TemporaryDirectory(prefix="vidray-bench-") as tmp:
        print("encoding test videos...", file=sys.stderr)
        manifest = make_videos(Path(tmp), quick)
        manifest_path = Path(tmp) / "manifest.json"
        manifest_path.write_text(json.dumps(manifest))
        results = {}
        for decoder in DECODERS:
            print(f"running {decoder}...", file=sys.stderr)
            results[decoder] = run_worker(decoder, manifest_path, quick, timeout=300)
    report = {"date": time.strftime("%Y-%m-%d %H:%M:%S %Z"), "command": " ".join(["python"] + sys.argv),
              "quick": quick, "machine": machine_info(), "load_avg_at_start": load_before,
              "videos": {k: {"frames": v["frames"], "bytes": v["size"]} for k, v in manifest.items()},
              "results": results, "ratios_vs_pyav": ratios(results),
              "wall_s": round(time.time() - started, 1)}
    print(json.dumps(report))


# ------------------------------------------------------------------------ worker side


class Decoder:
    """Uniform calls over decord (either distribution) and pipelines.io.video's PyAV path."""

    def __init__(self, name: str) -> None:
        self.name = name
        if name in DECORDS:
            import decord

            self.decord = decord
            self.version = decord.__version__
            assert decord.__file__.startswith(str(DEPS / name)), decord.__file__
        else:
            import av

            from pipelines.io import video

            self.av, self.video, self.version = av, video, av.__version__

    def probe(self, path: str) -> tuple[int, float, tuple[int, int]]:
        if self.name in DECORDS:
            reader = self.decord.VideoReader(path, num_threads=1)
            return len(reader), reader.get_avg_fps(), reader[0].shape[:2]
        with self.av.open(path) as container:
            stream = container.streams.video[0]
            rate = float(stream.average_rate)
            count = stream.frames or round(float(container.duration or 0) / 1e6 * rate)
            return count, rate, (stream.codec_context.height, stream.codec_context.width)

    def read(self, path: str, indices: list[int]) -> np.ndarray:
        if self.name in DECORDS:
            return self.decord.VideoReader(path, num_threads=1).get_batch(indices).asnumpy()
        return self.video.read_frames(path, indices, backend="pyav", threads=1)

    def sequential(self, path: str) -> int:
        if self.name in DECORDS:
            reader, n = self.decord.VideoReader(path, num_threads=1), 0
            for _ in range(len(reader)):
                reader.next().asnumpy()
                n += 1
            return n
        to_rgb = self.video._ToRGB()  # the conversion read_frames uses
        with self.av.open(path) as container:
            container.streams.video[0].codec_context.thread_count = 1
            return sum(1 for f in container.decode(video=0) if to_rgb(f) is not None)


def rss_mb() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def index_sets(n_frames: int, n_sets: int, seed: int) -> list[list[int]]:
    """Sorted unique random index sets (the shape read_frames hands to decoders)."""
    rng = np.random.default_rng(seed)
    return [sorted(set(rng.integers(0, n_frames, BATCH).tolist())) for _ in range(n_sets)]


def correctness(dec: Decoder, video: dict, n_sets: int) -> dict:
    ref_NHW3 = np.load(video["ref"], mmap_mode="r")
    ref_Nhw3 = np.asarray(ref_NHW3[:, ::8, ::8]).astype(np.int16)
    exact, total, max_diff = 0, 0, 0
    for indices in index_sets(video["frames"], n_sets, seed=1) + [[0, video["frames"] - 1]]:
        got_THW3 = dec.read(video["path"], indices)
        diff_TN = np.abs(got_THW3[:, None, ::8, ::8].astype(np.int16) - ref_Nhw3[None]).mean(axis=(2, 3, 4))
        exact += int((diff_TN.argmin(axis=1) == np.array(indices)).sum())
        total += len(indices)
        max_diff = max(max_diff, int(np.abs(got_THW3.astype(np.int16) - ref_NHW3[indices]).max()))
    return {"exact_fraction": round(exact / total, 4), "frames_checked": total, "max_abs_diff": max_diff}


def timed_rate(fn, min_seconds: float) -> float:
    """Calls per second of ``fn`` (returning a count of units) over at least ``min_seconds``."""
    units, start = 0, time.perf_counter()
    while (elapsed := time.perf_counter() - start) < min_seconds or units == 0:
        units += fn()
    return units / elapsed


def measure_video(dec: Decoder, video: dict, quick: bool) -> dict:
    out: dict = {}
    steps = {
        "correctness": lambda: correctness(dec, video, 2 if quick else 6),
        "probe_per_s": lambda: round(timed_rate(lambda: (dec.probe(video["path"]), 1)[1], 0.3 if quick else 1.0), 2),
        "random_fps": lambda: round(random_fps(dec, video, 2 if quick else 6), 2),
        "seq_fps": lambda: round(timed_rate(lambda: dec.sequential(video["path"]), 0.2 if quick else 0.5), 2),
    }
    for key, step in steps.items():
        try:
            out[key] = step()
        except Exception as exc:  # recorded, not fatal: other measurements still run
            out.setdefault("failures", {})[key] = f"{type(exc).__name__}: {str(exc)[:300]}"
    return out


def random_fps(dec: Decoder, video: dict, n_sets: int) -> float:
    sets = index_sets(video["frames"], n_sets, seed=2)
    start = time.perf_counter()
    frames = sum(len(dec.read(video["path"], indices)) for indices in sets)
    return frames / (time.perf_counter() - start)


def leak_check(dec: Decoder, video: dict, cycles: int) -> dict:
    sets = index_sets(video["frames"], 16, seed=3)
    for i in range(20):  # warm-up: allocator pools, lazy imports
        dec.read(video["path"], sets[i % 16][:4])
    gc.collect()
    before = rss_mb()
    for i in range(cycles):
        dec.read(video["path"], sets[i % 16][:4])
    gc.collect()
    after = rss_mb()
    return {"cycles": cycles, "rss_before_mb": round(before, 1), "rss_after_mb": round(after, 1),
            "growth_mb": round(after - before, 1),
            "growth_kb_per_cycle": round((after - before) * 1024 / cycles, 2)}


def main_worker(name: str, manifest_path: str, quick: bool) -> None:
    dec = Decoder(name)
    manifest = json.loads(Path(manifest_path).read_text())
    report: dict = {"version": dec.version, "videos": {}}
    for video_name, video in manifest.items():
        print(f"  {name}: {video_name}", file=sys.stderr)
        report["videos"][video_name] = measure_video(dec, video, quick)
    try:
        report["leak"] = leak_check(dec, manifest[LEAK_VIDEO], 60 if quick else 300)
    except Exception as exc:
        report["leak"] = {"failure": f"{type(exc).__name__}: {exc}"}
    print(json.dumps(report))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="short run: fewer frames and repeats")
    parser.add_argument("--worker", choices=DECODERS, help=argparse.SUPPRESS)
    parser.add_argument("--manifest", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        main_worker(args.worker, args.manifest, args.quick)
    else:
        main_parent(args.quick)


if __name__ == "__main__":
    sys.path.insert(0, str(ROOT))
    main()
