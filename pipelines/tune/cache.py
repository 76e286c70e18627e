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

from pipelines.data.clip_cache import cache_dataset, local_root
from pipelines.io import storage


def cache_base(cfg: Any, job: Any, sweep: str) -> str:
    """The folder of the sweep's caches: ``--clip-cache-dir`` or one beside the sweep's storage."""
    return cfg.clip_cache_dir or _own_folder(job, sweep)


def cache_root(cfg: Any, job: Any, sweep: str, fingerprint: str) -> str:
    """Where the sweep's cache of the dataset with ``fingerprint`` lives."""
    return storage.join(cache_base(cfg, job, sweep), fingerprint)


def _own_folder(job: Any, sweep: str) -> str:
    return storage.join(job.storage_path, f"{sweep}.clip-cache")


def with_clip_cache(cfg: Any, spec: Any, job: Any, phases: list, sweep: str, progress=print) -> Any:
    """``job`` with ``data.clip_cache`` set to a cache made now, or ``job`` unchanged (with a reason printed)."""
    if not cfg.clip_cache:
        progress("clip cache: off (--no-clip-cache); every trial decodes its own clips")
        return job
    base = cache_base(cfg, job, sweep)
    if not local_root(base):
        progress(f"clip cache: skipped, {base} is not a local folder; pass --clip-cache-dir on a disk "
                 f"(or shared filesystem) the decode workers see")
        return job
    flow = any(spec.recipe(job, p).needs_flow for p in phases if p.data is None)
    report = cache_dataset(job.data.manifest, base, split=job.data.split, limit=job.data.limit,
                           budget_bytes=int(cfg.clip_cache_gb * 2**30), flow=flow, progress=progress)
    progress(report.line())
    if report.over_budget:
        progress(f"clip cache: {report.over_budget} file(s) did not fit --clip-cache-gb {cfg.clip_cache_gb:g}; "
                 f"trials decode those")
    return dataclasses.replace(job, data=dataclasses.replace(job.data, clip_cache=report.root))


def release_clip_cache(cfg: Any, job: Any, sweep: str, progress=print) -> int:
    """Delete the cache in the sweep's own folder (not a ``--clip-cache-dir``); returns the bytes freed."""
    from pipelines.tune.prune import _rm

    folder = _own_folder(job, sweep)
    if not cfg.clip_cache or cfg.clip_cache_dir or not cfg.prune or not storage.isdir(folder):
        return 0
    freed = _rm(folder)
    progress(f"clip cache: deleted {folder} ({freed / 2**20:.1f} MB)")
    return freed
