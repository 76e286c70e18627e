"""Small videos and broken files made on the fly for tests (no downloads)."""

from __future__ import annotations

import os
from pathlib import Path

import av
import numpy as np

from pipelines.io.encode import write_video


def numbered_frames(n: int, h: int = 48, w: int = 64, seed: int = 0) -> np.ndarray:
    """``(n, h, w, 3)`` uint8 frames whose content encodes the frame number (noise + a moving bar)."""
    rng = np.random.default_rng(seed)
    base = rng.integers(0, 255, (h, w, 3), dtype=np.uint8)
    frames = np.repeat(base[None], n, axis=0)
    for t in range(n):
        x = (t * 3) % max(1, w - 8)
        frames[t, :, x:x + 8] = (t * 37) % 256
    return frames


def make_video(path: str | Path, n: int = 30, *, h: int = 48, w: int = 64, fps: float = 25.0,
               seed: int = 0, **kwargs) -> str:
    path = str(path)
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    write_video(path, numbered_frames(n, h, w, seed), fps=fps, **kwargs)
    return path


def make_audio_only(path: str | Path) -> str:
    container = av.open(str(path), "w")
    stream = container.add_stream("aac", rate=44100)
    frame = av.AudioFrame.from_ndarray(np.zeros((1, 1024), np.float32), format="fltp", layout="mono")
    frame.sample_rate = 44100
    for i in range(20):
        frame.pts = i * 1024
        for packet in stream.encode(frame):
            container.mux(packet)
    for packet in stream.encode():
        container.mux(packet)
    container.close()
    return str(path)


def make_zero_frame_video(path: str | Path) -> str:
    """A valid MP4 header with a video stream declared but no frame in it."""
    container = av.open(str(path), "w")
    stream = container.add_stream("libx264", rate=25)
    stream.width, stream.height, stream.pix_fmt = 64, 48, "yuv420p"
    container.start_encoding()
    container.close()
    return str(path)


def make_bad_files(folder: str | Path) -> dict[str, str]:
    """Every kind of bad input the ingest must quarantine; returns ``{expected_kind_hint: path}``.

    The permission-denied and vanishing files need the test's cooperation (root reads
    everything; a file can only vanish after listing) and are not made here.
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    good = make_video(folder / "_tmp_good.mp4", 40, faststart=False)
    data = Path(good).read_bytes()
    os.unlink(good)
    files = {
        "truncated": folder / "truncated.mp4",
        "empty": folder / "zero_bytes.mp4",
        "random": folder / "random_bytes.mp4",
        "text": folder / "notes.avi",
        "audio": folder / "audio_only.mp4",
        "no_frames": folder / "zero_frames.mp4",
    }
    files["truncated"].write_bytes(data[: len(data) // 2])
    files["empty"].write_bytes(b"")
    files["random"].write_bytes(np.random.default_rng(1).bytes(4096))
    files["text"].write_text("this is a text file, not a video\n" * 20)
    make_audio_only(files["audio"])
    make_zero_frame_video(files["no_frames"])
    bad_name = os.path.join(os.fsencode(str(folder)), b"caf\xe9-latin1.mp4")
    with open(bad_name, "wb") as f:
        f.write(Path(make_video(folder / "_tmp2.mp4", 10)).read_bytes())
    os.unlink(folder / "_tmp2.mp4")
    return {k: str(v) for k, v in files.items()}


def run_without_file_privileges(code: str) -> str:
    """Run Python ``code`` in a fresh interpreter that cannot bypass file permissions; its stdout.

    Root reads every file whatever its mode, so as root the child runs under ``setpriv``
    without CAP_DAC_OVERRIDE / CAP_DAC_READ_SEARCH (a fork would risk deadlocking on
    locks held by decoder threads). The repository root is put on ``sys.path``.
    """
    import subprocess
    import sys

    root = str(Path(__file__).resolve().parents[1])
    cmd = [sys.executable, "-c", f"import sys; sys.path.insert(0, {root!r})\n{code}"]
    if os.geteuid() == 0:
        drop = "-dac_override,-dac_read_search"
        cmd = ["setpriv", f"--bounding-set={drop}", f"--inh-caps={drop}", *cmd]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    return out.stdout.strip()


def unreadable_copy(src: str | Path) -> str:
    """A copy of ``src`` with mode 000 in a world-traversable temporary folder."""
    import shutil
    import tempfile

    folder = tempfile.mkdtemp(prefix="vidray-perm-")
    os.chmod(folder, 0o755)
    path = os.path.join(folder, os.path.basename(str(src)))
    shutil.copy(src, path)
    os.chmod(path, 0)
    return path
