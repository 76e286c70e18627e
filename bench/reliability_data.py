"""Tiny UCF101-layout datasets with a known share of broken inputs, for the reliability scenarios.

:func:`make_ucf_source` writes ``n`` videos (``frames`` x ``size``² H.264, a keyframe every 8
frames) in the layout the ``ucf101`` ingest adapter reads::

    ROOT/UCF-101/<Class>/v_<Class>_g<GG>_c<CC>.mp4
    ROOT/ucfTrainTestlist/{classInd,trainlist01,testlist01}.txt

Every video is rendered (not copied): its noise background and bar colour come from its own
seed, so no two have the same bytes (ingest would quarantine copies as ``duplicate``). About
20 ms per video on one core. The class is the direction a bar moves in. A share
``broken_frac`` of the listed inputs is broken, the kinds in turn:

=============  ==========================================  ===================================
broken as      the file                                    the quarantine kind ingest must give
=============  ==========================================  ===================================
corrupt        a Matroska header, then random bytes          ``corrupt``
truncated      the first 40 % of a good video (index last)  ``truncated``
empty          0 bytes                                      ``empty``
non_video      a text file with a video's name              ``not_a_video``
missing        listed in trainlist01.txt, no file           ``missing_file``
=============  ==========================================  ===================================
"""

from __future__ import annotations

import concurrent.futures
import json
from pathlib import Path
from typing import Any

import numpy as np

CLASSES = ("MoveLeft", "MoveRight", "MoveUp", "MoveDown")
BROKEN = {"corrupt": "corrupt", "truncated": "truncated", "empty": "empty", "non_video": "not_a_video",
          "missing": "missing_file"}


def frames_for(index: int, cls: int, frames: int, size: int) -> np.ndarray:
    """``(frames, size, size, 3)`` uint8: seeded noise and a bar moving in the class's direction."""
    rng = np.random.default_rng([7, index])
    base = rng.integers(0, 200, (size, size, 3), dtype=np.uint8)
    colour = rng.integers(200, 256, 3, dtype=np.uint8)
    out = np.repeat(base[None], frames, axis=0)
    bar = max(2, size // 8)
    for t in range(frames):
        pos = (t * 3) % (size - bar)
        pos = size - bar - pos if cls in (0, 2) else pos  # left and up: decreasing positions
        if cls in (0, 1):
            out[t, :, pos:pos + bar] = colour
        else:
            out[t, pos:pos + bar, :] = colour
    return out


def _render(path: Path, index: int, cls: int, frames: int, size: int) -> None:
    from pipelines.io.encode import write_video

    path.parent.mkdir(parents=True, exist_ok=True)
    write_video(str(path), frames_for(index, cls, frames, size), fps=25.0, gop=8)


def _break(path: Path, how: str, good: bytes, rng: np.random.Generator) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    if how == "corrupt":
        path.write_bytes(b"\x1aE\xdf\xa3" + rng.bytes(4096))
    elif how == "truncated":
        path.write_bytes(good[: int(len(good) * 0.4)])
    elif how == "empty":
        path.write_bytes(b"")
    elif how == "non_video":
        path.write_text("this is a text file with a video's name, not a video\n" * 40)
    elif how != "missing":
        raise ValueError(f"unknown breakage {how!r}; choose from {sorted(BROKEN)}")


def make_ucf_source(root: str | Path, n: int, *, broken_frac: float = 0.0, frames: int = 16, size: int = 64,
                    test_frac: float = 0.0, workers: int = 1) -> dict[str, Any]:
    """Write the dataset; returns what ingest must find (also saved as ``ROOT/expected.json``).

    Returns:
        ``{"inputs": n, "good": [video ids], "broken": {video_id: quarantine kind}, "broken_as":
        {video_id: how}, "frames": frames, "size": size}``.
    """
    root = Path(root)
    lists = root / "ucfTrainTestlist"
    lists.mkdir(parents=True, exist_ok=True)
    n_broken = round(n * broken_frac)
    broken_at = set(np.linspace(0, n - 1, n_broken).round().astype(int).tolist()) if n_broken else set()
    kinds = list(BROKEN)
    rng = np.random.default_rng(0)
    train, test, good, broken, broken_as, jobs = [], [], [], {}, {}, []
    for i in range(n):
        cls = i % len(CLASSES)
        name = CLASSES[cls]
        vid = f"v_{name}_g{i // (len(CLASSES) * 5) + 1:02d}_c{(i // len(CLASSES)) % 5 + 1:02d}"
        rel = f"{name}/{vid}.mp4"
        in_test = test_frac > 0 and i % round(1 / test_frac) == 1
        (test if in_test else train).append(rel if in_test else f"{rel} {cls + 1}")
        if i in broken_at:
            how = kinds[len(broken) % len(kinds)]
            broken[vid], broken_as[vid] = BROKEN[how], how
        else:
            good.append(vid)
            jobs.append((root / "UCF-101" / rel, i, cls))
    with concurrent.futures.ProcessPoolExecutor(workers) if workers > 1 else _Inline() as pool:
        list(pool.map(_render_job, [(p, i, c, frames, size) for p, i, c in jobs]))
    # A truncated upload of an MP4 whose index is at the end (not +faststart) is what ingest calls truncated.
    from pipelines.io.encode import write_video

    write_video(str(root / "unlisted.mp4"), frames_for(n, 0, frames, size), fps=25.0, gop=8, faststart=False)
    good_bytes = (root / "unlisted.mp4").read_bytes()
    (root / "unlisted.mp4").unlink()
    for vid, how in broken_as.items():
        name = vid.split("_")[1]
        _break(root / "UCF-101" / name / f"{vid}.mp4", how, good_bytes, rng)
    (lists / "classInd.txt").write_text("".join(f"{i + 1} {c}\n" for i, c in enumerate(CLASSES)))
    (lists / "trainlist01.txt").write_text("".join(f"{r}\n" for r in train))
    (lists / "testlist01.txt").write_text("".join(f"{r}\n" for r in test))
    expected = {"inputs": n, "good": good, "broken": broken, "broken_as": broken_as, "frames": frames,
                "size": size, "train": len(train), "test": len(test)}
    (root / "expected.json").write_text(json.dumps(expected, indent=1))
    return expected


def _render_job(args: tuple) -> None:
    _render(*args)


class _Inline:
    """A stand-in for an executor that maps in this process."""

    def __enter__(self) -> "_Inline":
        return self

    def __exit__(self, *exc: object) -> None:
        pass

    @staticmethod
    def map(fn, items):
        return map(fn, items)


def upload_tree(local: str | Path, url: str, *, endpoint: str, threads: int = 8) -> int:
    """Copy every file under ``local`` to ``url`` (``s3://bucket/prefix``) on ``endpoint``; returns the count."""
    import boto3

    bucket, _, prefix = url.removeprefix("s3://").partition("/")
    client = boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1", aws_access_key_id="admin",
                          aws_secret_access_key="admin")
    files = [p for p in Path(local).rglob("*") if p.is_file()]

    def put(path: Path) -> None:
        key = "/".join(x for x in (prefix.strip("/"), str(path.relative_to(local))) if x)
        client.put_object(Bucket=bucket, Key=key, Body=path.read_bytes())

    with concurrent.futures.ThreadPoolExecutor(threads) as pool:
        list(pool.map(put, files))
    return len(files)
