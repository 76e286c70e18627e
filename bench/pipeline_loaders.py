"""The four ways ``bench/pipeline.py`` produces the same samples: raw decode and decode + augment in a
process pool, a PyTorch DataLoader, and the Ray Data pipeline.

All four decode with ``read_frames`` naming the manifest's codec and frame size
(:func:`pipelines.data.tasks.media_of`, as the pipeline's tasks do) and run with the decode
workers' allocator and thread settings (:mod:`pipelines.data.workers`): the pool and the
DataLoader workers are started inside :func:`~pipelines.data.workers.spawn_env` and
initialised by :func:`~pipelines.data.workers.init_decode_worker`; Ray's decode tasks get
the same variables from the pipeline's runtime env.
"""

from __future__ import annotations

import dataclasses
import multiprocessing
import os
import time
from typing import Any, Callable, Iterable

import numpy as np
import torch

from pipelines.data import recipes, telemetry
from pipelines.data.tasks import epoch_order, media_of
from pipelines.data.workers import init_decode_worker, spawn_env
from pipelines.io import manifest
from pipelines.io.video import read_frames

Sample = list[tuple[str, np.ndarray]]  # the reads of one sample: (uri, frame indices) per file
Media = dict[str, tuple[str | None, tuple | None]]  # uri -> (codec, (H, W)) from the manifest
SPLIT = "train"
ORDER_EPOCH = 0  # the warm-up execution starts at this epoch (the measured ones at 1)


def items_of(manifest_dir: str, rcfg: recipes.RecipeConfig, limit: int) -> list[dict]:
    """The item rows ``build_pipeline`` turns into samples (its own private helper, so they match)."""
    from pipelines.data.dataset import _items

    items, excluded, _ = _items(manifest.read_manifest(manifest_dir), rcfg, SPLIT, limit)
    if excluded:
        raise RuntimeError(f"{len(excluded)} rows unusable by {rcfg.name!r}: {excluded[:2]}")
    return items


class _Planned(Exception):
    """Raised by the recording reader once a sample's reads are known (skips augmentation)."""


def sample_reads(item: dict, rcfg: recipes.RecipeConfig, seed: int, epoch: int) -> Sample:
    """The exact ``(uri, indices)`` reads of one sample, from :func:`recipes.make_sample` itself."""
    reads: Sample = []
    n_reads = 2 if rcfg.needs_flow else 1  # every sampler reads all its files before augmenting

    def record(video_id: str, uri: str, idx: np.ndarray) -> np.ndarray:
        reads.append((uri, np.asarray(idx, np.int64)))
        if len(reads) == n_reads:
            raise _Planned
        return np.zeros((len(idx), 2, 2, 3), np.uint8)

    try:
        recipes.make_sample(item, rcfg, seed=seed, epoch=epoch, num_classes=None, read=record)
    except _Planned:
        pass
    return reads


def plan(items: list[dict], rcfg: recipes.RecipeConfig, seed: int, epochs: Iterable[int]) -> dict[int, list[Sample]]:
    """``{epoch: [reads of each sample, in pipeline order]}``."""
    return {e: [sample_reads(items[i], rcfg, seed, e) for i in epoch_order(len(items), seed, e, rcfg.shuffle)]
            for e in epochs}


def first_clip_column(rcfg: recipes.RecipeConfig) -> str:
    return next(iter(rcfg.video_columns()))


def decode_samples(samples: list[Sample], backend: str, media: Media) -> int:
    """Only the reads of ``samples``, as the pipeline makes them."""
    for sample in samples:
        for uri, idx in sample:
            codec, size = media.get(uri, (None, None))
            read_frames(uri, idx, backend=backend, threads=1, codec=codec, size=size)
    return len(samples)


@dataclasses.dataclass(frozen=True)
class DecodeChunk:
    """Pool task of the raw-decode figure: the reads only."""

    backend: str
    media: Media

    def __call__(self, samples: list[Sample]) -> int:
        return decode_samples(samples, self.backend, self.media)


@dataclasses.dataclass(frozen=True)
class SampleChunk:
    """Pool task of the decode+augment figure: whole samples, no loader framework."""

    dataset: "ClipDataset"

    def __call__(self, keys: list[tuple[int, int]]) -> np.ndarray:
        """``[samples, CPU s of their reads, CPU s of the whole samples]`` (this worker's thread)."""
        read0, start = self.dataset.read_cpu_s, time.thread_time()
        for key in keys:
            self.dataset[key]
        return np.array([len(keys), self.dataset.read_cpu_s - read0, time.thread_time() - start])


class WorkerPool:
    """A spawn ``multiprocessing.Pool`` of ``cores`` processes fed small chunks (balanced tails)."""

    def __init__(self, cores: int) -> None:
        self.cores = cores
        with spawn_env():
            self.pool = multiprocessing.get_context("spawn").Pool(cores, initializer=init_decode_worker)

    def run(self, fn: Callable[[list], int], tasks: list) -> int:
        size = max(1, len(tasks) // (self.cores * 8))
        return sum(self.pool.imap_unordered(fn, [tasks[i:i + size] for i in range(0, len(tasks), size)]))

    def close(self) -> None:
        self.pool.close()
        self.pool.join()


class ClipDataset(torch.utils.data.Dataset):
    """``dataset[(epoch, i)]``: sample ``i`` of ``epoch`` by :func:`recipes.make_sample`, tensors only."""

    def __init__(self, items: list[dict], rcfg: recipes.RecipeConfig, seed: int, backend: str) -> None:
        self.items, self.rcfg, self.seed, self.backend = items, rcfg, seed, backend
        self.media = media_of(items)
        self.drop = set(recipes.string_columns(rcfg))  # as LoaderOptions(strings=False)
        self.read_cpu_s = 0.0  # this process's CPU time inside read_frames

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, key: tuple[int, int]) -> dict[str, Any]:
        epoch, i = key
        sample = recipes.make_sample(self.items[i], self.rcfg, seed=self.seed, epoch=epoch, num_classes=None,
                                     read=self.read)
        return {k: v for k, v in sample.items() if k not in self.drop}

    def read(self, video_id: str, uri: str, idx: np.ndarray) -> np.ndarray:
        codec, size = self.media.get(uri, (None, None))
        start = time.thread_time()
        frames = read_frames(uri, idx, backend=self.backend, threads=1, codec=codec, size=size)
        self.read_cpu_s += time.thread_time() - start  # decoding runs in this thread (threads=1)
        return frames


class EpochSampler(torch.utils.data.Sampler):
    """Keys ``(epoch, i)`` in the pipeline's order; set ``.epoch`` before iterating (runs in the main process)."""

    def __init__(self, n: int, seed: int, shuffle: bool) -> None:
        self.n, self.seed, self.shuffle, self.epoch = n, seed, shuffle, 0

    def __iter__(self):
        return iter([(self.epoch, int(i)) for i in epoch_order(self.n, self.seed, self.epoch, self.shuffle)])

    def __len__(self) -> int:
        return self.n


class Loader:
    """The DataLoader baseline, workers kept across epochs and rounds (started in the decode env)."""

    def __init__(self, cfg, items: list[dict], rcfg: recipes.RecipeConfig) -> None:
        self.sampler = EpochSampler(len(items), cfg.seed, rcfg.shuffle)
        self.loader = torch.utils.data.DataLoader(
            ClipDataset(items, rcfg, cfg.seed, cfg.backend), batch_size=cfg.batch_size, sampler=self.sampler,
            num_workers=cfg.cores, persistent_workers=True, multiprocessing_context="spawn",
            worker_init_fn=init_decode_worker)
        self.key = first_clip_column(rcfg)

    def run(self, epochs: Iterable[int]) -> int:
        clips = 0
        with spawn_env():  # persistent workers start on the first iteration
            for epoch in epochs:
                self.sampler.epoch = epoch
                clips += sum(batch[self.key].shape[0] for batch in self.loader)
        return clips

    def close(self) -> None:
        del self.loader  # ends the persistent workers


class RayRunner:
    """The pipeline as training builds it: built once, with an epoch clock, its epochs drawn in one
    execution per run (``LoaderOptions.span_epochs``) and taken epoch by epoch from an
    :class:`~pipelines.data.epochs.EpochStream`.

    The warm-up (``run([ORDER_EPOCH])``) is one whole execution from that epoch, so the measured
    executions find its decode workers started. A warm-up through a separate per-epoch build
    did not: its workers were still leased to its tasks when the first measured execution
    began, which started two new ones (seconds of CPU each to start: 6.8 s in one warm-up), and
    that round came out at 13.2 against 10.1-10.5 CPU ms per clip (2026-12-01 14:13).

    ``stages`` sums the telemetry columns of every measured batch (decode, augment, Arrow ms).
    """

    def __init__(self, cfg, manifest_dir: str, rcfg: recipes.RecipeConfig, epochs: int) -> None:
        from pipelines.data.clock import epoch_clock
        from pipelines.data.dataset import LoaderOptions, build_pipeline

        self.clock = epoch_clock(f"vidray-bench-pipeline-{os.getpid()}-{rcfg.name}", ORDER_EPOCH)
        options = LoaderOptions(strings=False, rows_per_task=cfg.rows_per_task, backend=cfg.backend)
        self.options = options
        self.pipe = build_pipeline(manifest_dir, rcfg, SPLIT, seed=cfg.seed, epoch=self.clock, limit=cfg.videos,
                                   options=dataclasses.replace(options, span_epochs=epochs, total_epochs=epochs + 1))
        self.batch_size, self.key = cfg.batch_size, first_clip_column(rcfg)
        self.rows_per_task = self.pipe.rows_per_task
        self.stages = telemetry.StageTotals()

    def _set_epoch(self, epoch: int) -> None:
        self.clock.set(epoch)

    def run(self, epochs: Iterable[int]) -> int:
        """The samples of ``epochs`` (one execution); raises if one went missing. ``[ORDER_EPOCH]``:
        the warm-up, a whole execution from that epoch."""
        from pipelines.data.epochs import EpochStream

        epochs = list(epochs)
        if epochs == [ORDER_EPOCH]:
            epochs = list(range(ORDER_EPOCH, ORDER_EPOCH + self.pipe.span_epochs))
        stream = EpochStream(self.pipe.dataset, self.batch_size, start=self._set_epoch, drop_last=False)
        return sum(self._check(e, self.pipe, sum(self.stages.take(b)[self.key].shape[0]
                                                 for b in stream.batches(e))) for e in epochs)

    @staticmethod
    def _check(epoch: int, pipe, got: int) -> int:
        if not pipe.accounting(got)["balanced"] or got != len(pipe.inputs):
            raise RuntimeError(f"epoch {epoch}: {pipe.accounting(got)}")
        return got

    def close(self) -> None:
        self.clock.close()
