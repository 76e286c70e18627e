"""Which ``read_frames`` backend is faster per codec, frame size and GOP: the figures behind
:func:`pipelines.io.video.choose_backend`.

    python bench/decode_backends.py [--reads 16] [--frames 96]

Prints ONE JSON object on stdout. Synthetic UCF-101-style videos (:mod:`pipelines.prep.synthetic`,
``frames`` long) are re-encoded with x264 at 128x128, 240x320 and 360x640, GOP 8 and 32
(no B-frames) and 250 (3 B-frames), two files each. For each set and clip length ``T`` in
(8, 16, 32) the benchmark reads ``reads`` contiguous clips at random offsets with
``backend="decord"``, ``"pyav"`` and ``"auto"`` without a codec (header probe + decord),
alternating the order, one decoder thread, and reports the median **CPU** ms per read
(``time.process_time``, robust to other load on a shared machine).
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench import common  # noqa: E402

import av  # noqa: E402
import numpy as np  # noqa: E402

from pipelines.data.workers import init_decode_worker  # noqa: E402
from pipelines.io.encode import write_video  # noqa: E402
from pipelines.io.video import read_frames  # noqa: E402

SIZES = ((128, 128), (240, 320), (360, 640))
GOPS = ((8, 0), (32, 0), (250, 3))  # (keyframe interval, B-frames)
BACKENDS = ("decord", "pyav", "auto")


def make_videos(root: Path, frames: int) -> dict[str, list[str]]:
    """``{"<H>x<W>_gop<G>": [two files]}`` re-encoded from synthetic clips."""
    from pipelines.prep.synthetic import generate, preset

    out: dict[str, list[str]] = {}
    for h, w in SIZES:
        src = root / f"src_{h}x{w}"
        generate(str(src), preset("demo", num_classes=2, groups=1, clips_per_group=1, multi_videos=0,
                                  frames=frames, height=h, width=w, seed=0), workers=1, progress=False)
        for i, path in enumerate(sorted(src.glob("ucf101/UCF-101/*/*.mp4"))[:2]):
            with av.open(str(path)) as c:
                clip = np.stack([f.to_ndarray(format="rgb24") for f in c.decode(video=0)])
            for gop, bframes in GOPS:
                dst = str(root / f"h264_{h}x{w}_gop{gop}_{i}.mp4")
                write_video(dst, clip, fps=25, codec="libx264", gop=gop, bframes=bframes)
                out.setdefault(f"{h}x{w}_gop{gop}", []).append(dst)
    return out


def cpu_ms(files: list[str], T: int, reads: int, frames: int, rng: np.random.Generator) -> dict[str, float]:
    """Median CPU ms per read of each backend over ``reads`` clips of ``T`` frames."""
    times: dict[str, list[float]] = {b: [] for b in BACKENDS}
    for r in range(reads):
        start = int(rng.integers(0, frames - T))
        idx = np.arange(start, start + T)
        for backend in (BACKENDS if r % 2 else BACKENDS[::-1]):
            t0 = time.process_time()
            read_frames(files[r % len(files)], idx, backend=backend, threads=1)
            times[backend].append(1000 * (time.process_time() - t0))
    return {b: round(float(np.median(v)), 2) for b, v in times.items()}


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reads", type=int, default=16)
    parser.add_argument("--frames", type=int, default=96)
    args = parser.parse_args(argv)
    started, load_start = time.time(), common.load1()
    init_decode_worker()
    rng = np.random.default_rng(1)
    with tempfile.TemporaryDirectory(prefix="vidray-bench-backends-") as tmp:
        videos = make_videos(Path(tmp), args.frames)
        results = {f"{key}_T{T}": cpu_ms(files, T, args.reads, args.frames, rng)
                   for key, files in sorted(videos.items()) for T in (8, 16, 32)}
    for row in results.values():
        row["pyav_over_decord"] = round(row["pyav"] / row["decord"], 3)
    report = common.envelope("bench/decode_backends.py", " ".join(["python", *sys.argv]), "default",
                             {"cpu_ms_per_read": results}, machine=common.machine_info(),
                             load_start=load_start, started=started)
    print(json.dumps(report))
    return report


if __name__ == "__main__":
    main()
