"""The sweep's decoded-clip cache: made once by the driver, read by every trial.

:func:`with_clip_cache` runs after the dataset checks of :func:`pipelines.tune.sweep.run_sweep`
and before any trial starts. It decodes the videos the trials will train on (the base job's
manifest, its split and ``limit``, plus their flow videos when a phase's recipe reads flow)
into ``<clip_cache_dir or storage_path/<sweep>.clip-cache>/<fingerprint>`` and returns the job
with ``data.clip_cache`` pointing there, which every trial's decode tasks then read
(:mod:`pipelines.data.clip_cache`). A resumed sweep finds the files already there. Once the
sweep has ended, :func:`release_clip_cache` deletes a cache in the sweep's own folder (with
the pruning of checkpoints; ``--keep-checkpoints`` keeps it); one in ``--clip-cache-dir`` is
the user's, kept for later sweeps of the same dataset.

It is skipped, with a line saying why, when ``--no-clip-cache`` is given or when the folder
is not on this machine's filesystem (an object-store URL: reading whole videos back from S3
per sample would cost more than decoding). Phases with their own dataset (e.g. a detection
finetune) read their own videos as usual.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from pipelines.data.clip_cache import ClipCache, local_root, materialise
from pipelines.io import manifest, storage


def cache_root(cfg: Any, job: Any, sweep: str, fingerprint: str) -> str:
    """Where the sweep's cache lives: ``--clip-cache-dir`` or the sweep's storage, by fingerprint."""
    return storage.join(cfg.clip_cache_dir or _own_folder(job, sweep), fingerprint)


def _own_folder(job: Any, sweep: str) -> str:
    return storage.join(job.storage_path, f"{sweep}.clip-cache")


def rows_to_cache(job: Any) -> list[dict[str, Any]]:
    """The base job's training rows, as the pipeline reads them (split, then the first ``limit``)."""
    table = manifest.read_manifest(job.data.manifest)
    rows = [r for r in table.select(["uri", "flow_uri", "num_frames", "codec", "height", "width", "split"])
            .to_pylist() if r["split"] == job.data.split]
    return rows[:job.data.limit] if job.data.limit else rows


def with_clip_cache(cfg: Any, spec: Any, job: Any, phases: list, sweep: str, progress=print) -> Any:
    """``job`` with ``data.clip_cache`` set to a cache made now, or ``job`` unchanged (with a reason printed)."""
    if not cfg.clip_cache:
        progress("clip cache: off (--no-clip-cache); every trial decodes its own clips")
        return job
    fingerprint = manifest.fingerprint(manifest.read_manifest(job.data.manifest))
    root = cache_root(cfg, job, sweep, fingerprint)
    if not local_root(root):
        progress(f"clip cache: skipped, {root} is not a local folder; pass --clip-cache-dir on a disk "
                 f"(or shared filesystem) the decode workers see")
        return job
    flow = any(spec.recipe(job, p).needs_flow for p in phases if p.data is None)
    report = materialise(ClipCache(root), rows_to_cache(job), budget_bytes=int(cfg.clip_cache_gb * 2**30),
                         flow=flow, progress=progress)
    progress(report.line())
    if report.over_budget:
        progress(f"clip cache: {report.over_budget} file(s) did not fit --clip-cache-gb {cfg.clip_cache_gb:g}; "
                 f"trials decode those")
    return dataclasses.replace(job, data=dataclasses.replace(job.data, clip_cache=root))


def release_clip_cache(cfg: Any, job: Any, sweep: str, progress=print) -> int:
    """Delete the cache in the sweep's own folder (not a ``--clip-cache-dir``); returns the bytes freed."""
    folder = _own_folder(job, sweep)
    if not cfg.clip_cache or cfg.clip_cache_dir or not cfg.prune or not storage.isdir(folder):
        return 0
    freed = sum(storage.size(f) for f in storage.list_files(folder, (".npy",)))
    fs, path = storage.get_fs(folder)
    fs.rm(path, recursive=True)
    progress(f"clip cache: deleted {folder} ({freed / 2**20:.1f} MB)")
    return freed
