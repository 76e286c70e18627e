"""The sweep's clip cache: where it goes, when it is skipped, and that only the sweep's own is deleted."""

from __future__ import annotations

import types

import numpy as np

from pipelines.data.clip_cache import ClipCache
from pipelines.methods.spec import DataConfig
from pipelines.tune.cache import cache_root, release_clip_cache, with_clip_cache


def _cfg(**kw):
    return types.SimpleNamespace(**{"clip_cache": True, "clip_cache_dir": None, "clip_cache_gb": 1.0,
                                    "prune": True, **kw})


def _job(tmp_path, manifest="m"):
    return types.SimpleNamespace(storage_path=str(tmp_path / "runs"), data=DataConfig(manifest=manifest))


def test_the_cache_lives_beside_the_sweep_by_fingerprint_or_in_the_users_folder(tmp_path):
    job = _job(tmp_path)
    assert cache_root(_cfg(), job, "sw", "fp") == str(tmp_path / "runs" / "sw.clip-cache" / "fp")
    assert cache_root(_cfg(clip_cache_dir=str(tmp_path / "mine")), job, "sw", "fp") == str(tmp_path / "mine" / "fp")


def test_off_leaves_the_job_alone_and_says_so(tmp_path):
    said = []
    job = _job(tmp_path)
    assert with_clip_cache(_cfg(clip_cache=False), None, job, [], "sw", progress=said.append) is job
    assert "--no-clip-cache" in said[0]


def test_release_deletes_the_sweeps_own_cache_only(tmp_path):
    job, frames = _job(tmp_path), np.zeros((2, 2, 2, 3), np.uint8)
    ClipCache(cache_root(_cfg(), job, "sw", "fp")).write("a.mp4", frames)
    assert release_clip_cache(_cfg(prune=False), job, "sw", progress=lambda _: None) == 0  # --keep-checkpoints
    mine = _cfg(clip_cache_dir=str(tmp_path / "mine"))
    ClipCache(cache_root(mine, job, "sw", "fp")).write("a.mp4", frames)
    assert release_clip_cache(mine, job, "sw", progress=lambda _: None) == 0
    assert (tmp_path / "mine" / "fp").is_dir()
    said = []
    assert release_clip_cache(_cfg(), job, "sw", progress=said.append) > frames.nbytes
    assert not (tmp_path / "runs" / "sw.clip-cache").exists() and "deleted" in said[0]
