"""After a sweep, checkpoints stay only where something may still read them.

A sweep's trials write checkpoints in two places: their Ray Train runs
(``<storage>/<sweep>.trials/<sweep>.<trial_id>.<phase>/checkpoint_*``, up to
``loop.keep_checkpoints`` each, with the trial's work folder ``<sweep>.<trial_id>/``) and, under
PBT, Tune's trial folders (``<storage>/<sweep>/<trial folder>/checkpoint_*``). Once the sweep
has ended (:func:`pipelines.tune.results.finish`):

* a trial **stopped early** is never run again (``--resume`` keeps it stopped): all of its
  checkpoints and its work folder are deleted. Its MLflow runs, and the encoders of the phases
  it finished, stay in MLflow;
* a **finished** trial keeps the latest checkpoint of each Ray Train run and of its Tune
  folder: what a resumed run, or the completion of a registration, reads. Older ones go (and
  leave the run's ``checkpoint_manager_snapshot.json``, which Ray Train restores from);
* a trial that **failed** keeps everything: ``--resume`` restarts it from its checkpoints.

``jobs/tune.py --keep-checkpoints`` turns this off.
"""

from __future__ import annotations

import dataclasses
import json
import logging
from typing import Any

from pipelines.io import storage

log = logging.getLogger(__name__)

SNAPSHOT = "checkpoint_manager_snapshot.json"  # Ray Train V2's record of a run's checkpoints


@dataclasses.dataclass
class Pruned:
    """What :func:`prune_sweep` deleted."""

    checkpoints: int = 0
    folders: int = 0
    bytes: int = 0

    def add(self, other: Pruned) -> None:
        self.checkpoints += other.checkpoints
        self.folders += other.folders
        self.bytes += other.bytes


def _rm(url: str) -> int:
    """Delete a folder; returns the bytes it held."""
    fs, path = storage.get_fs(url)
    held = int(storage.retry(lambda: fs.du(path, total=True), what=f"size {url}") or 0)
    storage.retry(lambda: fs.rm(path, recursive=True), what=f"remove {url}")
    return held


def _name(url: str) -> str:
    return url.rstrip("/").rsplit("/", 1)[-1]


def _checkpoints(folder: str) -> list[str]:
    return [d for d in storage.list_dirs(folder) if _name(d).startswith("checkpoint_")]


def prune_run(run_url: str, *, keep_latest: bool) -> Pruned:
    """One Ray Train run folder: all of it, or every checkpoint but the latest (its snapshot
    rewritten to match). A run whose snapshot cannot be read keeps its checkpoints."""
    out = Pruned()
    if not keep_latest:
        out.checkpoints, out.folders, out.bytes = len(_checkpoints(run_url)), 1, _rm(run_url)
        return out
    url = storage.join(run_url, SNAPSHOT)
    try:
        snapshot = json.loads(storage.read_text(url))
        latest = snapshot["latest_checkpoint_result"]["checkpoint_dir_name"]
        results, indices = snapshot["checkpoint_results"], snapshot["checkpoint_report_indices"]
    except (OSError, KeyError, TypeError, ValueError) as exc:
        log.info("%s: no readable checkpoint snapshot (%s); its checkpoints stay", run_url, exc)
        return out
    old = [d for d in _checkpoints(run_url) if _name(d) != latest]
    if not old:
        return out
    kept = [(r, i) for r, i in zip(results, indices) if r.get("checkpoint_dir_name") == latest]
    snapshot["checkpoint_results"], snapshot["checkpoint_report_indices"] = [r for r, _ in kept], [i for _, i in kept]
    storage.write_bytes(url, json.dumps(snapshot).encode())  # first: a restore never looks for a deleted one
    for d in old:
        out.bytes += _rm(d)
        out.checkpoints += 1
    return out


def prune_tune_trial(folder: str, *, keep_latest: bool) -> Pruned:
    """A Tune trial folder's checkpoints (PBT): all of them, or all but the highest-numbered."""
    out = Pruned()
    found = sorted(_checkpoints(folder), key=_name)
    for d in found[:-1] if keep_latest else found:
        out.bytes += _rm(d)
        out.checkpoints += 1
    return out


def prune_sweep(storage_path: str, sweep: str, rows: list[dict[str, Any]]) -> Pruned:
    """Apply the module docstring's rules to every trial of ``rows`` (``trial_id``, ``status``)."""
    total = Pruned()
    trials_url = storage.join(storage_path, f"{sweep}.trials")
    tune_url = storage.join(storage_path, sweep)
    runs = storage.list_dirs(trials_url) if storage.exists(trials_url) else []
    tune_dirs = storage.list_dirs(tune_url) if storage.exists(tune_url) else []
    for row in rows:
        if row["status"] not in ("finished", "stopped_early"):
            continue
        keep = row["status"] == "finished"
        prefix = f"{sweep}.{row['trial_id']}"
        for run in runs:
            name = _name(run)
            if name.startswith(prefix + "."):
                total.add(prune_run(run, keep_latest=keep))
            elif name == prefix and not keep:  # the stopped trial's work folder (encoder copies)
                total.add(Pruned(folders=1, bytes=_rm(run)))
        for folder in tune_dirs:
            if f"_{row['trial_id']}_" in _name(folder):
                total.add(prune_tune_trial(folder, keep_latest=keep))
    return total
