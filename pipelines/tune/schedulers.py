"""The sweep's trial schedulers: ASHA that survives ``Tuner.restore``, and HyperBand.

Both run on :data:`~pipelines.tune.trial.TIME_ATTR`, the epochs a trial has trained (Tune's
``training_iteration`` counts reports and restarts from 1 in a restored trial; the epoch
comes back with the trial's Ray Train checkpoint).

``Tuner.restore`` brings back the searcher and the trials, but the scheduler is rebuilt from
the copy pickled when the sweep started: ASHA's rungs are empty again, so after a killed
driver the next trial to reach a rung would pass it unopposed and the sweep would stop
different trials than an uninterrupted one. :class:`ReplayingASHA` refills the rungs when
Tune re-adds a restored trial, from the results Tune stored for it (``result.json`` in the
trial's folder, or the driver's staged copy of it, see :func:`stored_results`), exactly as
they were first recorded. It also lets a trial that has trained all its epochs finish
(registration, MLflow) instead of stopping it.

HyperBand (synchronous; it pauses trials at a rung and resumes the best, which here means
a new trial process whose Ray Train run resumes from its checkpoint) is Tune's own and is
not replayed: a restored HyperBand sweep starts its brackets afresh. It may end a trial at
its last epoch before the trial registered its encoders; the driver then completes the
best trial's registration itself (:func:`pipelines.tune.sweep.run_sweep`).

PBT (:class:`FinalPBT`) is Tune's PBT (asynchronous, or synchronous with ``--pbt-synch``) on the
same clock, over trials that train
in their own process and report checkpoints (:mod:`pipelines.tune.pbt`); every
``perturbation_interval`` epochs a trial of the lower quantile restarts from a top trial's
checkpoint with that trial's values, perturbed (x0.8 / x1.2) or resampled. It never perturbs
a trial at its last epoch, which then exports and registers what it trained.
"""

from __future__ import annotations

import json
import logging
from typing import Any

from ray.tune.schedulers import ASHAScheduler, HyperBandScheduler, PopulationBasedTraining

from pipelines.tune.trial import TIME_ATTR

log = logging.getLogger(__name__)

RESULT_FILE = "result.json"  # ray.tune.result.EXPR_RESULT_FILE: one JSON line per result


def stored_results(trial) -> list[dict[str, Any]]:
    """The results Tune stored for ``trial`` (empty for a new trial, or when unreadable).

    Tune writes a trial's ``result.json`` in the driver's staging folder (under the Ray session's
    temp dir) and copies it to the storage path only when it syncs the experiment: a driver
    killed in between leaves the stored copy behind the staged one. A restore on the same
    node reuses that staging folder, so the longer of the two is the trial's record.
    """
    storage = getattr(trial, "storage", None)
    if storage is None:
        return []
    import pyarrow.fs

    copies = ((storage.storage_filesystem, "trial_fs_path"),
              (pyarrow.fs.LocalFileSystem(), "trial_driver_staging_path"))
    return max((_read_results(fs, storage, folder) for fs, folder in copies), key=len)


def _read_results(fs, storage, folder: str) -> list[dict[str, Any]]:
    """The JSON lines of ``result.json`` in ``storage``'s ``folder`` attribute on ``fs`` ([] when
    there is none yet: a new trial, or a trial folder not named yet)."""
    try:
        with fs.open_input_stream(f"{getattr(storage, folder)}/{RESULT_FILE}") as f:
            text = f.readall().decode()
    except Exception:  # noqa: BLE001 - no folder or file yet: a new trial
        return []
    out = []
    for line in text.splitlines():
        try:
            out.append(json.loads(line))
        except json.JSONDecodeError:
            continue  # a line cut by the killed driver
    return out


class ReplayingASHA(ASHAScheduler):
    """ASHA whose rungs are refilled from a restored trial's stored results (module docstring),
    and which never stops a trial that has trained all its epochs.

    Tune's ASHA stops a trial at ``max_t`` (``stop_last_trials``), on the report of its last
    epoch: that would kill the trial while it exports and registers its encoders and ends
    its MLflow runs. Such a trial is let run to its end instead (it reports nothing more).
    """

    def on_trial_result(self, tune_controller, trial, result: dict) -> str:
        action = super().on_trial_result(tune_controller, trial, result)
        if action == self.STOP and result.get(self._time_attr, 0) >= self._max_t:
            self._num_stopped -= 1
            return self.CONTINUE
        return action

    def on_trial_add(self, tune_controller, trial) -> None:
        super().on_trial_add(tune_controller, trial)
        bracket = self._trial_info[trial.trial_id]
        replayed = 0
        for result in stored_results(trial):
            if self._time_attr in result and self._metric in result:
                bracket.on_result(trial, result[self._time_attr], self._metric_op * result[self._metric])
                replayed += 1
        if replayed:
            log.info("ASHA: replayed %d result(s) of restored trial %s", replayed, trial.trial_id)


class FinalPBT(PopulationBasedTraining):
    """Tune's PBT, except at a trial's last epoch: an exploit there would restart the trial with
    nothing left to train, killing it while it registers its encoders."""

    def __init__(self, *, max_t: int, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._max_t = max_t

    def on_trial_result(self, tune_controller, trial, result: dict) -> str:
        if result.get(self._time_attr, 0) >= self._max_t:
            return self.CONTINUE
        return super().on_trial_result(tune_controller, trial, result)


def pbt_mutations(space: dict) -> dict[str, Any]:
    """PBT's ``hyperparam_mutations`` of a space: each domain as Tune samples it, a grid as its values."""
    from pipelines.tune.space import Grid

    return {k: list(d.values) if isinstance(d, Grid) else d.to_tune() for k, d in space.items()}


def make_scheduler(kind: str, *, max_t: int, grace_period: int, reduction_factor: float,
                   space: dict | None = None, perturbation_interval: int = 1, quantile_fraction: float = 0.25,
                   synch: bool = False):
    """``asha`` (:class:`ReplayingASHA`), ``hyperband`` or ``pbt`` (:class:`FinalPBT`, mutating ``space``)
    on :data:`TIME_ATTR` up to ``max_t`` epochs.

    Raises:
        ValueError: another kind.
    """
    if kind == "pbt":
        return FinalPBT(max_t=max_t, time_attr=TIME_ATTR, perturbation_interval=perturbation_interval,
                        hyperparam_mutations=pbt_mutations(space or {}), quantile_fraction=quantile_fraction,
                        synch=synch)
    if kind == "asha":
        return ReplayingASHA(time_attr=TIME_ATTR, max_t=max_t, grace_period=max(1, min(grace_period, max_t)),
                             reduction_factor=reduction_factor)
    if kind == "hyperband":
        return HyperBandScheduler(time_attr=TIME_ATTR, max_t=max_t, reduction_factor=reduction_factor)
    raise ValueError(f"unknown scheduler {kind!r}")
