"""What every benchmark reports about the machine it ran on (figures are only comparable within one)."""

from __future__ import annotations

import os
import platform
import sys
import time
from typing import Any, Callable


def machine_info() -> dict[str, Any]:
    """CPU model, cores, memory and the versions of the libraries on the measured paths."""
    import cv2
    import numpy as np
    import pyarrow
    import ray
    import torch

    cpu = next((line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo")
                if line.startswith("model name")), platform.processor())
    mem = next(int(line.split()[1]) for line in open("/proc/meminfo") if line.startswith("MemTotal"))
    return {"cpu": cpu, "cores": os.cpu_count(), "cores_usable": len(os.sched_getaffinity(0)),
            "mem_gb": round(mem / 2**20, 1), "python": platform.python_version(), "platform": platform.platform(),
            "ray": ray.__version__, "torch": torch.__version__, "numpy": np.__version__,
            "pyarrow": pyarrow.__version__, "opencv": cv2.__version__, "cuda_available": torch.cuda.is_available()}


def load1() -> float:
    """The 1-minute load average, rounded: reported next to every figure on a shared machine."""
    return round(os.getloadavg()[0], 2)


def envelope(name: str, command: str, variant: str, report: dict[str, Any], *, machine: dict[str, Any],
             load_start: float, started: float) -> dict[str, Any]:
    """The JSON a benchmark prints: what ran, when, where (with the load before and after) and how long."""
    return {"benchmark": name, "date": time.strftime("%Y-%m-%d %H:%M:%S %Z", time.localtime(started)),
            "command": command, "variant": variant, **report,
            "machine": {**machine, "load_avg_start": load_start, "load_avg_end": load1()},
            "wall_s": round(time.time() - started, 1)}


def log(msg: str) -> None:
    """A timestamped progress line on stderr (stdout carries only the JSON object)."""
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


class PhaseTimer:
    """``timer("name", fn)`` runs ``fn``, logs the phase and records its seconds and the load around it."""

    def __init__(self) -> None:
        self.phases: list[dict[str, Any]] = []

    def __call__(self, name: str, fn: Callable[[], Any]) -> Any:
        log(f"phase {name}")
        before, start = load1(), time.perf_counter()
        out = fn()
        self.phases.append({"phase": name, "seconds": round(time.perf_counter() - start, 1),
                            "load_before": before, "load_after": load1()})
        return out


def run_seeds(seeds, run_seed, *, started: float, budget_s: float) -> tuple[list, list]:
    """``run_seed(seed)`` for each seed while the next one is expected to fit ``budget_s`` (measured from
    ``started``, a ``time.time()``; the first seed always runs: report what fits, not nothing).

    Returns:
        (results of the seeds run, seeds skipped for the budget).
    """
    import time

    done, skipped, seed_s = [], [], 0.0
    for seed in seeds:
        t0 = time.time()
        if done and time.time() - started + seed_s > budget_s:
            skipped.append(seed)
            continue
        done.append(run_seed(seed))
        seed_s = time.time() - t0
    return done, skipped

