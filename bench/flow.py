"""Optical-flow benchmark: TV-L1 vs Farneback speed, and the flow storage encodings, one run.

    python bench/flow.py [--quick]

Prints ONE JSON object on stdout (progress goes to stderr). OpenCV runs with one
thread, as in the Ray job (one task per CPU).

Content: a synthetic camera move that TV-L1 has to follow everywhere: a smooth
random texture panning (1.5, -0.7) px/frame while zooming 1 %/frame, a bright block
moving 4 px/frame, and Gaussian sensor noise (sigma 2 grey levels).

  speed        frames/s (flow fields/s) of TV-L1 (OpenCV defaults) and Farneback
               (pipelines.prep.flow.FARNEBACK_DEFAULTS) at 112x112, 128x128 and 256x340
               (short side 256); ratio = tvl1 / farneback (the baseline).
  quantisation the seeds' uint8 mapping alone: error of decode(encode(flow)) vs the
               float TV-L1 flow (px), inside the +-20 px bound, and the clipped fraction.
  storage      each encoding of the same uint8 flow frames at 128x128: bytes/frame,
               error vs the uint8 frames (grey levels) and vs the float flow (px), decode
               frames/s; ratios against the seeds' storage (JPEG frames, here MJPEG
               q=2) and against raw uint8 (H*W*3 bytes/frame). "chosen" is written by
               pipelines.prep.flow_core's writer (what the flow job stores with).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from fractions import Fraction
from pathlib import Path

import av
import cv2
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from pipelines.prep import flow_core as flow  # noqa: E402 - computation, encoding and storage

# name -> (codec, pix_fmt, options, gop, container suffix)
ENCODINGS = {
    "jpeg_q2 (seeds)": ("mjpeg", "yuvj444p", {"q:v": "2"}, None, ".avi"),
    "ffv1_bgr0": ("ffv1", "bgr0", {}, None, ".mkv"),
    "x264rgb_qp0_gop1": ("libx264rgb", "rgb24", dict(flow.STORE_OPTIONS), 1, ".mkv"),
    "x264_yuv444_crf0": ("libx264", "yuv444p", {"crf": "0", "preset": "veryfast"}, flow.GOP, ".mkv"),
    "x264_yuv444_crf18": ("libx264", "yuv444p", {"crf": "18", "preset": "veryfast"}, flow.GOP, ".mkv"),
}


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def camera_clip(T: int, h: int, w: int, seed: int = 0) -> np.ndarray:
    """gray_THW uint8: panning + zooming texture, a moving block, sensor noise."""
    rng = np.random.default_rng(seed)
    tex = cv2.GaussianBlur(rng.random((2 * h, 2 * w)).astype(np.float32), (0, 0), 3)
    tex = (255 * (tex - tex.min()) / np.ptp(tex)).astype(np.float32)
    frames = []
    for t in range(T):
        s = 1.01 ** t
        M = np.float32([[s, 0, w / 2 + 1.5 * t - s * w / 2], [0, s, h / 2 - 0.7 * t - s * h / 2]])
        M[:, 2] += [w / 2, h / 2]
        f = cv2.warpAffine(tex, M, (w, h), flags=cv2.INTER_LINEAR + cv2.WARP_INVERSE_MAP)
        x = (4 * t) % max(1, w - w // 4)
        f[h // 3: h // 3 + h // 4, x: x + w // 4] = 230
        frames.append(np.clip(f + rng.normal(0, 2, f.shape), 0, 255).astype(np.uint8))
    return np.stack(frames)


def speed(sizes: list[tuple[int, int]], T: int) -> dict:
    out = {}
    for h, w in sizes:
        gray_THW = camera_clip(T, h, w)
        row = {}
        for method in flow.METHODS:
            start = time.perf_counter()
            flow.compute_flow(gray_THW, method)
            row[f"{method}_fps"] = round((T - 1) / (time.perf_counter() - start), 2)
            log(f"speed {h}x{w} {method}: {row[f'{method}_fps']} fields/s")
        row["tvl1_over_farneback"] = round(row["tvl1_fps"] / row["farneback_fps"], 4)
        out[f"{h}x{w}"] = row
    return out


def _write(path: str, frames_THW3: np.ndarray, codec: str, pix_fmt: str, options: dict, gop) -> None:
    with av.open(path, "w") as c:
        s = c.add_stream(codec, rate=25)
        s.height, s.width = frames_THW3.shape[1:3]
        s.pix_fmt, s.options = pix_fmt, options
        if gop:
            s.codec_context.gop_size = gop
        for i, fr in enumerate(frames_THW3):
            frame = av.VideoFrame.from_ndarray(fr, format="rgb24")
            frame.pts = i
            for p in s.encode(frame):
                c.mux(p)
        for p in s.encode():
            c.mux(p)


def _measure(path: str, u8_THW3: np.ndarray, float_THW2: np.ndarray, inside: np.ndarray) -> dict:
    start = time.perf_counter()
    with av.open(path) as c:
        back_THW3 = np.stack([f.to_ndarray(format="rgb24") for f in c.decode(video=0)])
    decode_fps = len(back_THW3) / (time.perf_counter() - start)
    assert back_THW3.shape == u8_THW3.shape, (path, back_THW3.shape)
    err_dn = np.abs(back_THW3.astype(np.int16) - u8_THW3.astype(np.int16))
    err_px = np.abs(flow.decode_flow(back_THW3) - float_THW2)[inside]
    return {"bytes_per_frame": round(os.path.getsize(path) / len(u8_THW3), 1),
            "err_vs_uint8_mean_dn": round(float(err_dn[..., :2].mean()), 4),
            "err_vs_uint8_max_dn": int(err_dn[..., :2].max()),
            "third_channel_max": int(back_THW3[..., 2].max()),
            "err_vs_float_mean_px": round(float(err_px.mean()), 4),
            "err_vs_float_max_px": round(float(err_px.max()), 4),
            "decode_fps": round(decode_fps, 1)}


def storage_figures(T: int, size: int, tmp: str) -> tuple[dict, dict]:
    gray_THW = camera_clip(T, size, size, seed=1)
    float_THW2 = flow.align_to_frames(flow.compute_flow(gray_THW, "tvl1"), T)
    u8_THW3 = flow.encode_flow(float_THW2)
    inside = np.abs(float_THW2) <= flow.BOUND
    quant = np.abs(flow.decode_flow(u8_THW3) - float_THW2)[inside]
    quantisation = {"step_px": round(2 * flow.BOUND / 255, 5), "mean_px": round(float(quant.mean()), 4),
                    "max_px": round(float(quant.max()), 4), "clipped_fraction": float(1 - inside.mean()),
                    "flow_abs_mean_px": round(float(np.abs(float_THW2).mean()), 3)}
    results = {}
    chosen = os.path.join(tmp, "chosen" + flow.FLOW_SUFFIX)
    flow._write_flow_file(chosen, iter(u8_THW3), lambda: Fraction(25), {})
    results[f"chosen: x264rgb_qp0_gop{flow.GOP}"] = _measure(chosen, u8_THW3, float_THW2, inside)
    for name, (codec, pix_fmt, options, gop, suffix) in ENCODINGS.items():
        path = os.path.join(tmp, name.split()[0] + suffix)
        _write(path, u8_THW3, codec, pix_fmt, options, gop)
        results[name] = _measure(path, u8_THW3, float_THW2, inside)
    raw = size * size * 3
    jpeg = results["jpeg_q2 (seeds)"]["bytes_per_frame"]
    for row in results.values():
        row["bytes_vs_jpeg"] = round(row["bytes_per_frame"] / jpeg, 4)
        row["bytes_vs_raw_uint8"] = round(row["bytes_per_frame"] / raw, 4)
    log("storage: " + ", ".join(f"{k} {v['bytes_per_frame']} B" for k, v in results.items()))
    return quantisation, results


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="fewer frames (a smoke run)")
    args = p.parse_args()
    cv2.setNumThreads(1)
    T = 4 if args.quick else 9
    start, load = time.time(), os.getloadavg()[0]
    figures = {"speed_fields_per_s": speed([(112, 112), (128, 128), (256, 340)], T)}
    with tempfile.TemporaryDirectory() as tmp:
        quant, storage = storage_figures(8 if args.quick else 32, 128, tmp)
    figures.update(quantisation_uint8=quant, storage_128x128=storage)
    print(json.dumps({"machine": {"python": platform.python_version(), "opencv": cv2.__version__,
                                  "pyav": av.__version__, "cpus": os.cpu_count(),
                                  "loadavg_1min_start": round(load, 2),
                                  "loadavg_1min_end": round(os.getloadavg()[0], 2)},
                      "frames_per_clip": T, "seconds": round(time.time() - start, 1), **figures}, indent=1))


if __name__ == "__main__":
    main()
