"""CPU time of this benchmark's own process tree while a measurement runs, by group of processes.

The driver (this process) and its descendants are split in two groups by the child of the
driver they descend from: ``spawn`` (``multiprocessing`` spawn children: process pools,
DataLoader workers, their resource tracker) and ``ray`` (everything else the driver
started: the embedded cluster's GCS, raylet, agents, log monitor and the workers the
raylet forks). A measurement of pools or loaders counts the driver and ``spawn``; one of
Ray counts the driver and ``ray`` (the cluster is this benchmark's own, ``init_ray`` with
``address="local"``), so each figure carries its own framework's daemons and no other's.

CPU is user + system time from ``psutil``. A background thread samples the tree every
``interval_s`` so that processes which start or end during the measurement are counted
up to their last sample (a process seen for the first time counts from zero). The
sampling's own CPU (its thread's time: about 13 ms per sample with Ray's ~10 processes
to walk, 0.2 ms per clip of a 150 clips/s measurement) is taken off the driver's: it is
the meter's, not the measured loader's.
"""

from __future__ import annotations

import threading
import time
from typing import Iterable

import pipelines  # noqa: F401 - sets Ray's authentication default before ray is imported
import ray  # noqa: F401 - psutil is not a dependency of ours: Ray vendors it and puts it on sys.path
import psutil  # noqa: E402

GROUPS = ("spawn", "ray")


def _cpu(proc: psutil.Process) -> float:
    t = proc.cpu_times()
    return t.user + t.system


class CpuMeter:
    """``with CpuMeter() as m: ...`` then ``m.seconds("ray")``: driver + group CPU seconds inside."""

    def __init__(self, interval_s: float = 0.5) -> None:
        self.interval_s = interval_s
        self.driver = psutil.Process()
        self.first: dict[tuple[int, float], float] = {}
        self.last: dict[tuple[int, float], tuple[str, float]] = {}
        self.names: dict[tuple[int, float], str] = {}
        self.own_s = 0.0  # CPU of the sampling itself (in the driver), left out of every figure
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="bench-cpu-meter", daemon=True)

    def _tree(self) -> Iterable[tuple[psutil.Process, str]]:
        yield self.driver, "driver"
        for child in self.driver.children():
            try:
                group = "spawn" if "multiprocessing" in " ".join(child.cmdline()) else "ray"
                yield child, group
                for proc in child.children(recursive=True):
                    yield proc, group
            except psutil.Error:  # ended while we looked
                continue

    def sample(self, baseline: bool = False, final: bool = False) -> None:
        """Read every process's CPU. Only the sampling's CPU that falls between the driver's
        first and last readings is in the driver's figure, so only that is counted in ``own_s``."""
        start = time.thread_time()
        at_driver = self._sample(baseline)
        end = time.thread_time()
        counted_from = at_driver if baseline else start  # before the driver's first reading: not in its figure
        counted_to = at_driver if final else end         # after its last reading: not in it either
        self.own_s += counted_to - counted_from

    def _sample(self, baseline: bool) -> float:
        """One reading of the tree; returns this thread's CPU time just after reading the driver."""
        at_driver = time.thread_time()
        for proc, group in self._tree():
            try:
                key, cpu = (proc.pid, proc.create_time()), _cpu(proc)
            except psutil.Error:
                continue
            if proc is self.driver:
                at_driver = time.thread_time()
            self.first.setdefault(key, cpu if baseline else 0.0)
            self.last[key] = (group, cpu)
            if key not in self.names:
                self.names[key] = _name(proc)
        return at_driver

    def _loop(self) -> None:
        while not self._stop.wait(self.interval_s):
            self.sample()

    def __enter__(self) -> "CpuMeter":
        self.sample(baseline=True)  # every process alive now counts from here
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()
        self.sample(final=True)

    def seconds(self, group: str) -> float:
        """CPU seconds of the driver and ``group`` during the measurement."""
        return sum(cpu - self.first.get(key, 0.0) for key, (g, cpu) in self.last.items()
                   if g in ("driver", group)) - self.own_s

    def by_process(self, group: str, top: int = 8) -> dict[str, float]:
        """CPU seconds of the driver's and ``group``'s processes during the measurement, the largest
        first (name: Ray's process title, e.g. ``ray::IDLE`` for a decode worker, or the command)."""
        spent: dict[str, float] = {}
        for key, (g, cpu) in self.last.items():
            if g in ("driver", group):
                name = f"{self.names.get(key, '?')} [{key[0]}]"
                own = self.own_s if g == "driver" else 0.0
                spent[name] = round(cpu - self.first.get(key, 0.0) - own, 3)
        return dict(sorted(spent.items(), key=lambda kv: -kv[1])[:top])


def _name(proc: psutil.Process) -> str:
    try:
        words = proc.cmdline()
    except psutil.Error:
        return "?"
    if not words:
        return proc.name()
    if words[0].startswith("ray::"):
        return words[0]
    script = next((w for w in words[1:] if w.endswith(".py") or "/" in w), words[0])
    return script.rsplit("/", 1)[-1][:40]
