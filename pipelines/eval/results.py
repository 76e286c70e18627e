"""Comparing encoders and recording evaluation results on their MLflow runs."""

from __future__ import annotations

import dataclasses
import tempfile
from typing import Any, Sequence

from pipelines.eval.protocols import EvalConfig, build_from_state, match_modality, plot_confusion, run_protocols


def compare_encoders(models: dict[tuple[str, str], str], cfg: EvalConfig,
                     extra: dict[str, str] | None = None) -> list[dict[str, Any]]:
    """Retrieval + linear probe of several encoders, each logged on its own run.

    Args:
        models: ``(modality, label) -> model URI`` (``random:<backbone>`` or ``models:/...``);
            a flow encoder is scored on flow views (:func:`match_modality`).
        cfg: Evaluation settings shared by every encoder (``modality`` is set per model).
        extra: column title -> MLflow metric key of the model's training run, shown in %
            (a method spec's ``table_metrics``, e.g. CoCLR's mined-positive precision).

    Returns:
        One row per model: ``modality``, ``label``, ``model``, ``R@1``, ``R@5``, ``linear_top1``
        and ``extra`` (title -> value in %, None where the run has none).
    """
    import functools

    rows = []
    for (modality, label), uri in models.items():
        backbone, kwargs, state, run_id = load_encoder(uri)
        model_cfg, kwargs = match_modality(dataclasses.replace(cfg, modality=modality), kwargs)
        results = run_protocols(functools.partial(build_from_state, backbone, kwargs, state, cfg.seed),
                                ["retrieval", "linear"], model_cfg)
        if run_id:
            log_results(run_id, results)
        rows.append({"modality": modality, "label": label, "model": uri, "R@1": results["retrieval"]["R@1"],
                     "R@5": results["retrieval"]["R@5"], "linear_top1": results["linear"]["top1"],
                     "extra": {t: _last_metric(run_id, k, scale=100.0) for t, k in (extra or {}).items()}})
    return rows


def format_comparison(rows: Sequence[dict[str, Any]], *, num_classes: int, notes: Sequence[str] = (),
                      reference: dict[str, dict[str, str]] | None = None) -> str:
    """The table :func:`compare_encoders` results are printed as (``notes`` explain extra columns).

    ``reference``: ``"<label> (<modality>)" -> {"R@1": "m ± s", "linear": "m ± s"}``, the same
    rows measured over several seeds elsewhere (a benchmark), shown next to this run's figures
    so that a reader can tell a seed's spread from a difference.
    """
    titles = list(rows[0]["extra"]) if rows else []
    ref = " {:>13} {:>13}".format("ref R@1", "ref linear") if reference else ""
    head = f"{'encoder':<20} {'R@1':>7} {'R@5':>7} {'linear top-1':>13}" + "".join(f" {t:>17}" for t in titles)
    lines = [head + ref + "   model"]
    for r in rows:
        name = f"{r['label']} ({r['modality']})"
        cells = "".join(f" {'' if r['extra'][t] is None else format(r['extra'][t], '.1f'):>17}" for t in titles)
        if reference:
            known = reference.get(name, {})
            cells += f" {known.get('R@1', ''):>13} {known.get('linear', ''):>13}"
        lines.append(f"{name:<20} {r['R@1']:7.2f} {r['R@5']:7.2f} {r['linear_top1']:13.2f}{cells}   {r['model']}")
    lines.append(f"chance: R@1 and linear {100 / num_classes:.2f}." + "".join(f" {n}" for n in notes))
    return "\n".join(lines)


def _last_metric(run_id: str | None, key: str, scale: float = 1.0) -> float | None:
    if not run_id:
        return None
    from mlflow import MlflowClient

    from pipelines.tracking import tracking_uri

    value = MlflowClient(tracking_uri=tracking_uri()).get_run(run_id).data.metrics.get(key)
    return None if value is None else scale * value



def load_encoder(model: str):
    """``(backbone, kwargs, state, run_id)`` of a registered model URI or ``random:<backbone>``."""
    if model.startswith("random:"):
        return model.split(":", 1)[1], {"num_classes": 0}, None, None
    from mlflow import MlflowClient

    from pipelines.tracking import load_registered_model, tracking_uri

    module, info = load_registered_model(model)
    name, _, ref = model[len("models:/"):].partition("@")
    client = MlflowClient(tracking_uri=tracking_uri(), registry_uri=tracking_uri())
    version = (client.get_model_version_by_alias(name, ref) if ref
               else client.get_model_version(*model[len("models:/"):].split("/", 1)))
    return info["backbone"], info.get("kwargs", {}), module.state_dict(), version.run_id


def log_results(run_id: str, results: dict) -> None:
    from mlflow import MlflowClient

    from pipelines.tracking import tracking_uri

    client = MlflowClient(tracking_uri=tracking_uri())
    names = results["_class_names"]
    for protocol, scores in results.items():
        if protocol.startswith("_"):
            continue
        for metric, value in scores.items():
            if isinstance(value, float):
                client.log_metric(run_id, f"eval/{protocol}/{metric.replace('@', '_at_')}", value)
        if "confusion" in scores:
            with tempfile.TemporaryDirectory() as tmp:
                path = f"{tmp}/confusion_{protocol}.png"
                plot_confusion(scores["confusion"], names, f"{protocol} confusion").savefig(path, dpi=100)
                client.log_artifact(run_id, path, "eval")


def default_protocols(run_id: str | None) -> list[str]:
    """The protocols of the method that trained the model (its spec's ``eval_protocols``, found by the
    run's ``vidray_method`` tag); retrieval and linear for a random init or an unknown run."""
    if not run_id:
        return ["retrieval", "linear"]
    from mlflow import MlflowClient

    from pipelines.methods import METHODS
    from pipelines.tracking import tracking_uri

    method = MlflowClient(tracking_uri=tracking_uri()).get_run(run_id).data.tags.get("vidray_method")
    return list(METHODS[method].eval_protocols) if method in METHODS else ["retrieval", "linear"]
