"""A sweep in MLflow: one parent run, one child run per trial, its results, and ``@best`` in the registry.

* Parent: the run ``<sweep>`` (the sweep's settings and space as params, tag
  ``vidray_sweep``); RunLogger's resume rule reuses it after a killed driver.
* Children: each trial's job run ``<sweep>.<trial_id>``, opened *by the trial* through the
  phase runner with the tags ``mlflow.parentRunId``, ``vidray_sweep`` and
  ``vidray_trial_id``; its phase runs nest under it. A restarted trial reuses its run (same
  name, not FINISHED), so a restored sweep has no duplicates. Ray's
  ``MLflowLoggerCallback`` is not used: it has no parent option, keeps run ids in memory
  (a restored sweep would duplicate every run) and cannot log from inside Train.
* :func:`close_trial`: the driver records how each trial ended (``vidray_trial_status``:
  ``finished``, ``stopped_early``, ``error``; ``vidray_trial_epochs``) and marks the runs a
  stopped trial's killed process left RUNNING as KILLED.
* :func:`log_results`: ``sweep/results.csv`` and ``sweep/parallel_coordinates.png`` on the parent.
* :func:`promote_best`: the best trial's encoders become versions of ``<model_name>-<key>``
  (the model a single run registers into) with the alias ``best`` — only if they beat the
  current holder of ``best`` on the model's pinned evaluation suite (:mod:`pipelines.tune.gate`),
  or with ``--no-gate`` unless the holder, scored on the same sweep metric and dataset
  fingerprint, is better; the decision and both scores are tags of the new version.
"""

from __future__ import annotations

import csv
import logging
import math
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

BEST_ALIAS = "best"
# How a run a trial's killed process left RUNNING is closed: a trial killed after training
# all its epochs (at its last report, or with its driver) did finish.
_END = {"finished": "FINISHED", "stopped_early": "KILLED", "error": "FAILED"}


def client():
    from mlflow import MlflowClient

    from pipelines.tracking import tracking_uri

    return MlflowClient(tracking_uri=tracking_uri(), registry_uri=tracking_uri())


def trial_runs(experiment: str, sweep: str) -> list[Any]:
    """Every trial run of ``sweep`` (duplicates included, so a test can count them)."""
    c = client()
    exp = c.get_experiment_by_name(experiment)
    if exp is None:
        return []
    runs = c.search_runs([exp.experiment_id], filter_string=f"tags.vidray_sweep = '{sweep}'", max_results=10_000)
    return [r for r in runs if "vidray_trial_id" in r.data.tags]  # not the parent


def close_trial(experiment: str, sweep: str, trial_id: str, status: str, epochs: int) -> None:
    """Tag the trial's run with how it ended and close the runs its killed process left RUNNING (its
    own and its phases', by :data:`_END`). A trial that ended by itself closed them already; a
    phase that saw its trial being stopped under it marked itself FAILED, and becomes KILLED."""
    c = client()
    for run in [r for r in trial_runs(experiment, sweep) if r.data.tags.get("vidray_trial_id") == trial_id]:
        c.set_tag(run.info.run_id, "vidray_trial_status", status)
        c.set_tag(run.info.run_id, "vidray_trial_epochs", str(epochs))
        children = c.search_runs([run.info.experiment_id],
                                 filter_string=f"tags.`mlflow.parentRunId` = '{run.info.run_id}'")
        for r in [run, *children]:
            if r.info.status == "RUNNING" or (status == "stopped_early" and r.info.status == "FAILED"):
                c.set_terminated(r.info.run_id, _END[status])


def log_results(logger, rows: list[dict[str, Any]], keys: Sequence[str], metric: str, mode: str) -> None:
    """The results table (CSV) and a parallel-coordinates plot of the space against ``metric``."""
    with tempfile.TemporaryDirectory(prefix="vidray-sweep-") as tmp:  # log_artifact stages its own copy
        _write_results(logger, Path(tmp), rows, keys, metric, mode)


def _write_results(logger, folder: Path, rows: list[dict[str, Any]], keys: Sequence[str], metric: str,
                   mode: str) -> None:
    columns = ["trial_id", "status", "epochs", metric, *keys, "run_id"]
    with open(folder / "results.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=columns, extrasaction="ignore")
        writer.writeheader()
        writer.writerows(rows)
    logger.log_artifact(folder / "results.csv", "sweep")
    plot = parallel_coordinates(rows, keys, metric, mode, folder / "parallel_coordinates.png")
    if plot is not None:
        logger.log_artifact(plot, "sweep")


def _axis(values: list[float]) -> tuple[list[float], str]:
    """Values scaled to [0, 1] (log-scaled when positive and spanning more than a decade) and the
    axis's range as a label."""
    low, high = min(values), max(values)
    log = low > 0 and high / low > 10
    scaled = [math.log10(v) for v in values] if log else list(values)
    a, b = min(scaled), max(scaled)
    label = f"{low:.3g} .. {high:.3g}{' (log)' if log else ''}"
    return [0.5 if a == b else (v - a) / (b - a) for v in scaled], label


def parallel_coordinates(rows: list[dict[str, Any]], keys: Sequence[str], metric: str, mode: str,
                         path: Path) -> Path | None:
    """One line per trial through its numeric parameters and ``metric``, coloured by ``metric``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    scored = [r for r in rows if isinstance(r.get(metric), (int, float))]
    axes = [k for k in keys if all(isinstance(r.get(k), (int, float)) and not isinstance(r.get(k), bool)
                                   for r in scored)] + [metric]
    if len(scored) < 1 or len(axes) < 2:
        return None
    columns, labels = zip(*(_axis([float(r[k]) for r in scored]) for k in axes))
    fig, ax = plt.subplots(figsize=(1.8 * len(axes) + 2, 4))
    colour = plt.get_cmap("viridis" if mode == "max" else "viridis_r")
    for i, row in enumerate(scored):
        style = "--" if row.get("status") != "finished" else "-"
        ax.plot(range(len(axes)), [c[i] for c in columns], style, color=colour(columns[-1][i]), alpha=0.8)
    ax.set_xticks(range(len(axes)), [f"{k}\n{label}" for k, label in zip(axes, labels)], fontsize=8)
    ax.set_yticks([])
    ax.set_title(f"{len(scored)} trials; dashed: stopped early or failed; yellow: best {metric}")
    fig.savefig(path, dpi=100, bbox_inches="tight")
    plt.close(fig)
    return path


def registered(trial_model_name: str, keys: dict[str, str]) -> bool:
    """Whether ``<trial_model_name>-<key>@<phase>`` exists for every ``key: phase``."""
    from pipelines.train.phases import alias_for

    c = client()
    try:
        for key, phase in keys.items():
            c.get_model_version_by_alias(f"{trial_model_name}-{key}", alias_for(phase))
    except Exception:  # noqa: BLE001 - no such model or alias
        return False
    return True


def _better(a: float, b: float, mode: str) -> bool:
    return a > b if mode == "max" else a < b


def promote_best(*, model_name: str, trial_model_name: str, keys: dict[str, str], metric: str, mode: str,
                 value: float, sweep: str, trial_id: str, gating=None) -> list[dict[str, Any]]:
    """Register the best trial's encoders as ``<model_name>-<key>`` and move ``@best`` if they win.

    Args:
        keys: encoder key -> the phase whose alias holds the trial's final version of it.
        value: the trial's ``metric``.
        gating: a :class:`pipelines.tune.gate.GateSettings`: each new version must beat the holder
            on the model's pinned evaluation suite (:func:`pipelines.tune.gate.judge`); ``None``
            (``--no-gate``): on the sweep's ``metric`` (:func:`gate`).

    Returns:
        per key: ``model``, ``version``, ``promoted`` and ``decision`` (a sentence).
    """
    from mlflow.exceptions import MlflowException

    from pipelines.train.phases import alias_for

    c, out = client(), []
    for key, phase in keys.items():
        source = c.get_model_version_by_alias(f"{trial_model_name}-{key}", alias_for(phase))
        name = f"{model_name}-{key}"
        try:
            c.create_registered_model(name)
        except MlflowException:
            pass  # it exists: single runs register into it too
        fingerprint = (source.tags or {}).get("dataset_fingerprint", "")
        holder = _holder(c, name)
        legacy = None if gating is not None else gate(holder, metric=metric, mode=mode, value=value,
                                                      fingerprint=fingerprint)
        version = c.create_model_version(name, source.source, run_id=source.run_id, model_id=_model_id(source), tags={
            **{k: v for k, v in (source.tags or {}).items() if k in ("dataset_fingerprint", "git_commit", "phase")},
            "vidray_sweep": sweep, "vidray_trial_id": trial_id, "vidray_run_name": f"{sweep}.{trial_id}",
            "vidray_best_metric": metric, "vidray_best_value": repr(float(value))})
        if legacy is None:
            promoted, decision, unscorable = _judge(c, name, version, holder, gating, key)
            if unscorable:  # e.g. a detector: the suite scores embeddings; judged on the sweep's metric
                promoted, fallback = gate(holder, metric=metric, mode=mode, value=value, fingerprint=fingerprint)
                decision = f"{fallback} (on the sweep's {metric}: {decision})"
        else:
            promoted, decision = legacy
        c.set_model_version_tag(name, version.version, "vidray_best_decision", decision)
        if promoted:
            c.set_registered_model_alias(name, BEST_ALIAS, version.version)
        out.append({"model": name, "version": version.version, "promoted": promoted, "decision": decision})
    return out


def _judge(c, name: str, version, holder, gating, key: str) -> tuple[bool, str, bool]:
    """:func:`pipelines.tune.gate.judge` on the new ``version`` (its tags go on the version): promoted,
    decision, and whether the version could not be scored on the suite at all."""
    from pipelines.tune.gate import judge

    verdict = judge(c, name, version, holder, gating.suites[key], repin=gating.repin, score_fn=gating.score_fn)
    for tag, text in verdict.tags.items():
        c.set_model_version_tag(name, version.version, tag, text)
    return verdict.promoted, verdict.decision, verdict.unscorable


def gate(holder, *, metric: str, mode: str, value: float, fingerprint: str) -> tuple[bool, str]:
    """Whether a new best with ``metric = value`` on dataset ``fingerprint`` takes ``@best`` from
    ``holder`` (a model version or None), and why. Only a holder scored on the same metric and
    data can keep it; a tie keeps the holder."""
    if holder is None:
        return True, "no earlier holder of @best"
    tags = holder.tags or {}
    if tags.get("vidray_best_metric") != metric or tags.get("dataset_fingerprint") != fingerprint \
            or "vidray_best_value" not in tags:
        return True, f"v{holder.version} was not scored on {metric} for this dataset"
    old = float(tags["vidray_best_value"])
    if _better(value, old, mode):
        return True, f"beats v{holder.version}: {metric} {value:.4g} vs {old:.4g} ({mode})"
    return False, f"kept v{holder.version}: its {metric} {old:.4g} vs {value:.4g} ({mode})"


def _model_id(version) -> str | None:
    """The logged model behind ``version``: a tracking server refuses a ``models:/m-...`` source
    without it, and its REST answer leaves ``version.model_id`` empty, so it is read off the source."""
    if version.model_id:
        return version.model_id
    return version.source.removeprefix("models:/") if version.source.startswith("models:/m-") else None


def _holder(c, name: str):
    try:
        return c.get_model_version_by_alias(name, BEST_ALIAS)
    except Exception:  # noqa: BLE001 - no alias yet
        return None
