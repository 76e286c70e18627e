"""After the trials: how each ended, the results on the parent run, the best trial and ``@best``.

:func:`finish` (called by :func:`pipelines.tune.sweep.run_sweep` once ``Tuner.fit`` returns):

1. one row per trial from Tune's results: ``finished`` (trained all its epochs),
   ``stopped_early`` (the scheduler ended it) or ``error``, the epochs it trained, its last
   metric and sampled values, its MLflow run;
2. each trial's MLflow run gets those as tags, and runs a killed trial left RUNNING are
   closed (:func:`pipelines.tune.tracking.close_trial`; the driver's callback already did
   this as trials ended, this pass catches what a killed driver missed);
3. the parent run gets ``sweep/results.csv``, the parallel-coordinates plot, trial counts
   and the best value;
4. the best *finished* trial (stopped trials were judged at fewer epochs) is registered as
   ``<model_name>-<key>``, and takes ``@best`` if it beats the holder on the model's pinned
   evaluation suite (:func:`pipelines.tune.tracking.promote_best`, :mod:`pipelines.tune.gate`). If it ended
   before registering its encoders (a scheduler ended it at its last epoch, or the driver
   was killed then), that is completed here first: its job runs again under the same
   names, so every phase is skipped or resumes from its final checkpoint with nothing left
   to train, and only the export and registration run;
5. checkpoints nothing will read are deleted (:mod:`pipelines.tune.prune`: all of a stopped
   trial's, all but the latest of a finished trial's), unless ``--keep-checkpoints``.
"""

from __future__ import annotations

from typing import Any

from pipelines.tune import tracking
from pipelines.tune.trial import TIME_ATTR, TrialContext, complete_trial

STATUSES = ("finished", "stopped_early", "error")


def trial_rows(grid, space: dict, metric: str, max_t: int, runs: dict[str, str]) -> list[dict[str, Any]]:
    """One row per trial of a Tune ``ResultGrid``, sorted by trial id (module docstring, step 1)."""
    rows = []
    for result in grid:
        last = _latest(result)
        trial_id = last["trial_id"]  # Tune sets it even for a trial that never reported
        epochs = int(last.get(TIME_ATTR, 0))
        status = "error" if result.error else ("finished" if epochs >= max_t else "stopped_early")
        config = result.config or {}
        rows.append({"trial_id": trial_id, "status": status, "epochs": epochs, metric: last.get(metric),
                     **{k: config.get(k) for k in space}, "run_id": runs.get(trial_id)})
    return sorted(rows, key=lambda r: r["trial_id"])


def _latest(result) -> dict[str, Any]:
    """The trial's latest result. After a restore, Tune's ``metrics`` are those of its last saved
    experiment state, which can be older than what the trial reported before the driver died
    (its stored ``result.json``, read into ``metrics_dataframe``); a finished trial that Tune
    restarted then reports nothing new."""
    last = dict(result.metrics or {})
    frame = result.metrics_dataframe
    if frame is not None and TIME_ATTR in frame and len(frame) and frame[TIME_ATTR].max() > last.get(TIME_ATTR, 0):
        last.update({k: v for k, v in frame.loc[frame[TIME_ATTR].idxmax()].to_dict().items() if v == v})  # no NaN
    return last


def best_row(rows: list[dict[str, Any]], metric: str, mode: str) -> dict[str, Any] | None:
    """The finished trial with the best last ``metric``, or None when no trial finished."""
    scored = [r for r in rows if r["status"] == "finished" and isinstance(r.get(metric), (int, float))]
    if not scored:
        return None
    return (max if mode == "max" else min)(scored, key=lambda r: r[metric])


def finish(plan, ctx: TrialContext, grid, phases: list, parent):
    """Steps 1-4 of the module docstring; returns the :class:`~pipelines.tune.sweep.SweepResult`."""
    from pipelines.tune.sweep import SweepResult

    experiment, max_t = plan.job.experiment, sum(p.epochs for p in phases)
    runs = {r.data.tags.get("vidray_trial_id"): r.info.run_id for r in tracking.trial_runs(experiment, plan.name)}
    rows = trial_rows(grid, plan.space, plan.metric, max_t, runs)
    for row in rows:
        tracking.close_trial(experiment, plan.name, row["trial_id"], row["status"], row["epochs"])
    tracking.log_results(parent, rows, list(plan.space), plan.metric, plan.mode)
    parent.log_metrics({f"trials_{s}": sum(r["status"] == s for r in rows) for s in STATUSES})
    best, registered = best_row(rows, plan.metric, plan.mode), []
    if best is not None:
        parent.log_metrics({f"best_{plan.metric}": best[plan.metric]})
        parent.set_tags({"best_trial_id": best["trial_id"], "best_run_id": best["run_id"] or ""})
        registered = _register_best(plan, ctx, best, phases, grid)
    print_table(rows, list(plan.space), plan.metric, best, registered)
    if plan.cfg.prune:
        _prune(plan, rows, parent)
    return SweepResult(plan.name, plan.metric, plan.mode, ctx.parent_run_id, rows, best, registered)


def _register_best(plan, ctx: TrialContext, best: dict[str, Any], phases: list, grid) -> list[dict[str, Any]]:
    keys = {key: p.name for p in phases for key in p.registers}  # the last phase registering each key
    trial_model = f"{plan.job.model_name}-{best['trial_id']}"
    if not tracking.registered(trial_model, keys):
        print(f"best trial {best['trial_id']} ended before registering its encoders: completing that here",
              flush=True)
        values = {k: best[k] for k in plan.space}
        if ctx.segmented:  # PBT: from the trial's last checkpoint, which Tune holds
            from pipelines.tune.pbt import complete_pbt_trial

            result = next(r for r in grid if _latest(r).get("trial_id") == best["trial_id"])
            complete_pbt_trial(ctx, dict(result.config or values), best["trial_id"], result.checkpoint)
        else:
            complete_trial(ctx, values, best["trial_id"])
    return tracking.promote_best(model_name=plan.job.model_name, trial_model_name=trial_model, keys=keys,
                                 metric=plan.metric, mode=plan.mode, value=float(best[plan.metric]),
                                 sweep=plan.name, trial_id=best["trial_id"], gating=gate_settings(plan, phases))


def gate_settings(plan, phases: list):
    """The :class:`~pipelines.tune.gate.GateSettings` of the sweep (``None`` with ``--no-gate``)."""
    if not plan.cfg.gate:
        return None
    from pipelines.tune.gate import GateSettings, sweep_suites
    from pipelines.tune.resources import release_orphaned_groups

    release_orphaned_groups()  # the suite's feature extraction needs the CPUs a stopped trial's group may hold
    suites = sweep_suites(plan.job, plan.spec, phases, manifest=plan.cfg.gate_manifest,
                          protocol=plan.cfg.gate_protocol)
    return GateSettings(suites, repin=plan.cfg.repin_suite)


def _prune(plan, rows: list[dict[str, Any]], parent) -> None:
    from pipelines.tune.prune import prune_sweep

    try:
        pruned = prune_sweep(plan.job.storage_path, plan.name, rows)
    except Exception as exc:  # noqa: BLE001 - the sweep's results stand; say what is left behind
        print(f"could not prune the sweep's checkpoints: {exc}", flush=True)
        return
    parent.log_metrics({"pruned_checkpoints": pruned.checkpoints, "pruned_mb": pruned.bytes / 2**20})
    print(f"pruned {pruned.checkpoints} checkpoint(s) and {pruned.folders} folder(s) of stopped or finished "
          f"trials ({pruned.bytes / 2**20:.1f} MiB)", flush=True)


def print_table(rows: list[dict[str, Any]], keys: list[str], metric: str, best: dict[str, Any] | None,
                registered: list[dict[str, Any]]) -> None:
    """The sweep's results as a table on stdout, then what was registered."""
    print(f"\n{'trial':<14} {'status':<14} {'epochs':>6} {metric:>12}  " + "  ".join(f"{k:>18}" for k in keys))
    for r in rows:
        value = r.get(metric)
        shown = f"{value:12.4g}" if isinstance(value, (int, float)) else f"{'-':>12}"
        mark = "  <- best" if best is not None and r["trial_id"] == best["trial_id"] else ""
        print(f"{r['trial_id']:<14} {r['status']:<14} {r['epochs']:>6} {shown}  "
              + "  ".join(f"{_fmt(r.get(k)):>18}" for k in keys) + mark)
    for reg in registered:
        print(f"{reg['model']} v{reg['version']}: {'@best' if reg['promoted'] else 'not promoted'} "
              f"({reg['decision']})")
    if best is None:
        print("no trial finished its schedule: nothing registered as @best")


def _fmt(value: Any) -> str:
    return f"{value:.4g}" if isinstance(value, float) else str(value)
