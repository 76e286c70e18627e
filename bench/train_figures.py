"""The figures of ``bench/train.py`` from the training loop's reports (driver side, no Ray): logging
windows, steady-state summaries, data-stage telemetry, goals and ratios."""

from __future__ import annotations

from typing import Any

import numpy as np


def windows_of(rows: list[dict], rank: int, *, world: int, batch_size: int, steps_per_epoch: int) -> list[dict]:
    """One rank's logging windows: clips, seconds, data-wait seconds, and report-call seconds inside.

    The loop's window time is ``world * clips / clips_per_s``; its clips are the steps since
    the previous window or the epoch's start (the loop restarts its timer every epoch).
    The ``ray.train.report`` call that closed the previous window of the same epoch is
    outside the loop's windows; it is attributed to this window as ``report_s``.
    """
    reports = sorted((r for r in rows if r["rank"] == rank), key=lambda r: (r["step"], "clips_per_s" not in r))
    out, prev_step, prev_report = [], 0, 0.0
    for r in reports:
        if "clips_per_s" not in r:  # the epoch's report (checkpoint): outside every window
            prev_step, prev_report = r["step"], 0.0
            continue
        epoch_start = r["epoch"] * steps_per_epoch
        clips = batch_size * (r["step"] - max(prev_step, epoch_start))
        seconds = world * clips / r["clips_per_s"]
        out.append({"epoch": r["epoch"], "step": r["step"], "clips": clips, "seconds": seconds,
                    "wait_s": r["data_wait_frac"] * seconds,
                    "report_s": prev_report if prev_step >= epoch_start else 0.0})
        prev_step, prev_report = r["step"], r["report_s"]
    return out


def summarise(rows: list[dict], *, world: int, batch_size: int, steps_per_epoch: int,
              skip: int = 1) -> dict[str, Any]:
    """Steady-state figures over every rank's windows after the first ``skip`` (the warm-up).

    The ``_excl_report`` pair is the loop's own figures; ``clips_per_s`` and
    ``data_wait_frac`` add the time spent inside ``ray.train.report`` (``report_frac``) back,
    as waiting. Figures are averaged over ranks (each rank's clips/s already
    counts all ranks: world size x its clips over its time).

    Raises:
        RuntimeError: a rank has no window after the warm-up.
    """
    per_rank = []
    for rank in range(world):
        windows = windows_of(rows, rank, world=world, batch_size=batch_size, steps_per_epoch=steps_per_epoch)
        kept = windows[skip:]
        if not kept:
            raise RuntimeError(f"rank {rank}: {len(windows)} logging windows, none after the first {skip}")
        clips, t = sum(w["clips"] for w in kept), sum(w["seconds"] for w in kept)
        wait, rep = sum(w["wait_s"] for w in kept), sum(w["report_s"] for w in kept)
        wall = t + rep  # the loop restarts its window timer after a report: add the calls back
        per_rank.append({"clips_per_s": world * clips / wall, "data_wait_frac": (wait + rep) / wall,
                         "report_frac": rep / wall, "clips_per_s_excl_report": world * clips / t,
                         "data_wait_frac_excl_report": wait / t, "windows": len(kept),
                         "clips_per_rank": clips,
                         "warm_up_clips_per_s": [round(world * w["clips"] / w["seconds"], 2) for w in windows[:skip]],
                         "window_clips_per_s": [round(world * w["clips"] / w["seconds"], 2) for w in kept]})
    keys = ("clips_per_s", "data_wait_frac", "clips_per_s_excl_report", "data_wait_frac_excl_report", "report_frac")
    epoch_reports = [r["report_s"] for r in rows if "clips_per_s" not in r and r["rank"] == 0]
    return {**{k: round(float(np.mean([r[k] for r in per_rank])), 3) for k in keys},
            "epoch_report_s_rank0": [round(s, 2) for s in epoch_reports],
            "per_rank": [{k: round(v, 3) if isinstance(v, float) else v for k, v in r.items()} for r in per_rank]}


def data_stages(rows: list[dict]) -> dict[str, float]:
    """Per-clip data-plane telemetry (decode, augment, Arrow ms; KB read) averaged over rank 0's
    epoch reports (:mod:`pipelines.data.telemetry`; a materialised dataset repeats its one pass)."""
    epochs = [r for r in rows if "clips_per_s" not in r and r["rank"] == 0]
    keys = sorted({k for r in epochs for k in r if k.startswith("epoch_data_") and k != "epoch_data_wait_frac"})
    return {k.removeprefix("epoch_data_"): round(float(np.mean([r[k] for r in epochs if k in r])), 3) for k in keys}


def goals(runs: dict[str, dict]) -> dict[str, bool]:
    """The issue's goal, reported and never asserted: the real pipeline keeps the loop's data wait
    (``data_wait_frac_excl_report``, what the loop logs as ``epoch_data_wait_frac``) <= 0.15."""
    return {f"{name}_data_wait_le_0.15": r["data_wait_frac_excl_report"] <= 0.15
            for name, r in runs.items() if name.startswith("real")}


def ratio(a: float, b: float) -> float | None:
    return round(a / b, 3) if b else None


def order(workers: tuple[int, ...]) -> list[tuple[str, int]]:
    """memory 1, real 1, real 2, memory 2, ...: each compared pair runs back to back."""
    pairs = [("memory", "real") if i % 2 == 0 else ("real", "memory") for i in range(len(workers))]
    return [(kind, w) for w, pair in zip(workers, pairs) for kind in pair]


def ratios(runs: dict[str, dict], compute: float) -> dict[str, float | None]:
    """real/memory per worker count, 2-worker/1-worker per feed, memory/compute-only (1 worker)."""
    out = {}
    for key in ("clips_per_s", "clips_per_s_excl_report"):
        c = {name: r[key] for name, r in runs.items()}
        tag = "" if key == "clips_per_s" else "_excl_report"
        for name in c:
            kind, w = name.split("_")
            if kind == "real" and f"memory_{w}" in c:
                out[f"real_over_memory_{w}{tag}"] = ratio(c[name], c[f"memory_{w}"])
        for kind in ("real", "memory"):
            if f"{kind}_1w" in c and f"{kind}_2w" in c:
                out[f"{kind}_2w_over_1w{tag}"] = ratio(c[f"{kind}_2w"], c[f"{kind}_1w"])
        if "memory_1w" in c:
            out[f"memory_1w_over_compute_only{tag}"] = ratio(c["memory_1w"], compute)
    return out
