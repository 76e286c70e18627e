"""CPU time of this benchmark's own process tree while a measurement runs, by group of processes.

The driver (this process) and its descendants are split in two groups by the child of the
driver they descend from: ``spawn`` (``multiprocessing`` spawn children: process pools,
DataLoader workers, their resource tracker) and ``ray`` (everything else the driver
started: the embedded cluster's GCS, raylet, agents, log monitor and the workers the
raylet forks). A measurement of pools or loaders counts the driver and ``spawn``; one of
Ray counts the driver and ``ray`` (the cluster is this benchmark's own, ``init_ray`` with
``address="local"``), so each figure carries its own framework's daemons and no other's.

CPU is user + system time from ``/proc/<pid>/stat`` (Linux; what ``psutil`` reads too). A
background thread samples the tree every ``interval_s`` so that processes which start or end
during the measurement are counted up to their last sample (a process seen for the first time
counts from zero). One sample is one pass over ``/proc/*/stat``: parent, CPU and start time of
every process at once, the tree built from the parents (``psutil``'s ``children(recursive=True)``
scans ``/proc`` once per call: 13 ms per sample with Ray's ~10 processes, against about 3 ms
here, on a machine of ~65 processes). The sampling's own CPU (its thread's time) is taken off
the driver's: it is the meter's, not the measured loader's.
"""

from __future__ import annotations

import os
import threading
import time
from collections import defaultdict

GROUPS = ("spawn", "ray")
TICKS_PER_S = os.sysconf("SC_CLK_TCK")
Key = tuple[int, int]  # (pid, start time in clock ticks): a pid reused by a new process is a new key


def _proc_file(pid: int | str, name: str) -> bytes | None:
    """``/proc/<pid>/<name>``, or ``None`` if the process has ended."""
    try:
        with open(f"/proc/{pid}/{name}", "rb") as f:
            return f.read()
    except OSError:
        return None


def _stat(pid: int | str) -> tuple[int, float, int] | None:
    """``(parent pid, user + system CPU seconds, start time in ticks)`` of ``pid``; ``None`` if it ended."""
    line = _proc_file(pid, "stat")
    if line is None:
        return None
    fields = line[line.rindex(b")") + 2:].split()  # after "pid (comm) ": the command may hold spaces
    return int(fields[1]), (int(fields[11]) + int(fields[12])) / TICKS_PER_S, int(fields[19])


def _processes() -> dict[int, tuple[int, float, int]]:
    """Every process on the machine, as :func:`_stat`, in one pass over ``/proc``."""
    table = {}
    for pid in os.listdir("/proc"):
        if pid.isdigit() and (stat := _stat(pid)) is not None:
            table[int(pid)] = stat
    return table


class CpuMeter:
    """``with CpuMeter() as m: ...`` then ``m.seconds("ray")``: driver + group CPU seconds inside."""

    def __init__(self, interval_s: float = 0.5) -> None:
        self.interval_s = interval_s
        self.driver = os.getpid()
        self.first: dict[Key, float] = {}
        self.last: dict[Key, tuple[str, float]] = {}
        self.names: dict[Key, str] = {}
        self.groups: dict[Key, str] = {}
        self.own_s = 0.0  # CPU of the sampling itself (in the driver), left out of every figure
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="bench-cpu-meter", daemon=True)

    def _tree(self, table: dict[int, tuple[int, float, int]]) -> list[tuple[Key, float, str]]:
        """``(key, CPU s, group)`` of the driver's descendants in ``table``; each driver child's group
        (``spawn`` or ``ray``) is its whole subtree's."""
        children = defaultdict(list)
        for pid, (ppid, _, _) in table.items():
            children[ppid].append(pid)
        out = []
        for child in children[self.driver]:
            group = self._group(child, table[child][2])
            todo = [child]
            while todo:
                pid = todo.pop()
                _, cpu, start = table[pid]
                out.append(((pid, start), cpu, group))
                todo += children[pid]
        return out

    def _group(self, pid: int, start: int) -> str:
        key = (pid, start)
        if key not in self.groups:
            self.groups[key] = "spawn" if "multiprocessing" in _cmdline(pid) else "ray"
        return self.groups[key]

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
        driver = _stat(self.driver)
        at_driver = time.thread_time()
        readings = [((self.driver, driver[2]), driver[1], "driver")] + self._tree(_processes())
        for key, cpu, group in readings:
            self.first.setdefault(key, cpu if baseline else 0.0)
            self.last[key] = (group, cpu)
            if key not in self.names:
                self.names[key] = _name(key[0])
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


def _cmdline(pid: int) -> str:
    return (_proc_file(pid, "cmdline") or b"").replace(b"\0", b" ").decode(errors="replace").strip()


def _name(pid: int) -> str:
    """Ray's process title (e.g. ``ray::IDLE`` for a decode worker), else the script or command."""
    return _name_of(_cmdline(pid).split()) or (_proc_file(pid, "comm") or b"?").decode(errors="replace").strip()


def _name_of(words: list[str]) -> str:
    """The name of a command line: Ray's process title, a Python interpreter's script, else the
    executable (``gcs_server``, whose first path argument is its log folder); "" for none."""
    if not words:  # no command line (a zombie, a kernel thread)
        return ""
    if words[0].startswith("ray::"):
        return words[0]
    exe = words[0].rsplit("/", 1)[-1]
    if exe.startswith("python"):
        exe = next((w for w in words[1:] if w.endswith(".py") or "/" in w), exe).rsplit("/", 1)[-1]
    return exe[:40]
