"""Deadlines for reads that run in the calling thread: a hung decoder ends its worker process.

A decode task reads each video in its own thread, inside :meth:`Watchdog.guard`, which only
notes the read's deadline. One daemon monitor thread per process wakes every ``poll_s``
and checks the read in progress. A read past its deadline is stuck in native code, which
no Python thread can interrupt. So the monitor calls the guard's ``on_timeout`` (the task
records the video in the quarantine ledger, ``decode_timeout``) and ends the process. Ray
replaces the worker and retries the task, and the retry skips the recorded video
(:mod:`pipelines.data.ledger`). A hang therefore costs one worker restart, and the block's
samples before it are made again.

Why not a decode thread per read, or one long-lived decode thread that the task hands
each read to and waits on: both cost CPU on every read to guard against a rare hang.
The long-lived thread cost 5.7 against 5.2 ms of CPU per 16-frame read (6.0 against 5.5
pinned to one core; ``bench/RESULTS.md``). A guard here is two attribute writes, and the
monitor wakes about once a second.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import os
import threading
import time
from collections.abc import Callable, Iterator

log = logging.getLogger(__name__)
EXIT_CODE = 70  # EX_SOFTWARE: the process ended itself so that Ray retries its task
MAX_POLL_S = 1.0
MIN_POLL_S = 0.05


@dataclasses.dataclass
class _Read:
    deadline: float
    timeout_s: float
    on_timeout: Callable[[float], None]
    fired: bool = False


class Watchdog:
    """Deadlines of the reads in progress in this process, one per calling thread.

    Args:
        exit_fn: what ends the process after ``on_timeout`` (``os._exit``; a test passes a
            recorder).
    """

    def __init__(self, exit_fn: Callable[[int], None] = os._exit) -> None:
        self.exit_fn = exit_fn
        self.reads: dict[int, _Read] = {}
        self.poll_s = MAX_POLL_S
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._monitor: threading.Thread | None = None

    @contextlib.contextmanager
    def guard(self, timeout_s: float, on_timeout: Callable[[float], None]) -> Iterator[None]:
        """Run the body with a deadline ``timeout_s`` from now. Past it, the monitor calls
        ``on_timeout(timeout_s)`` and then ``exit_fn(EXIT_CODE)``."""
        poll_s = min(MAX_POLL_S, max(MIN_POLL_S, timeout_s / 4))
        if poll_s < self.poll_s:  # a shorter deadline: the monitor polls faster from now on
            self.poll_s = poll_s
            self._wake.set()
        if self._monitor is None or not self._monitor.is_alive():
            self._start()
        key = threading.get_ident()
        self.reads[key] = _Read(time.monotonic() + timeout_s, timeout_s, on_timeout)
        try:
            yield
        finally:
            self.reads.pop(key, None)

    def _start(self) -> None:
        with self._lock:
            if self._monitor is not None and self._monitor.is_alive():
                return
            self._monitor = threading.Thread(target=self._watch, name="vidray-read-watchdog", daemon=True)
            self._monitor.start()

    def _watch(self) -> None:
        while True:
            self._wake.wait(self.poll_s)
            self._wake.clear()
            now = time.monotonic()
            for read in list(self.reads.values()):
                if not read.fired and now > read.deadline:
                    read.fired = True
                    self._expire(read)

    def _expire(self, read: _Read) -> None:
        try:
            read.on_timeout(read.timeout_s)
        except Exception:  # the process ends either way; the retry pins the read down
            log.exception("recording a hung read failed")
        log.error("a read did not finish within %g s (a hung decoder); exiting so that Ray retries the task",
                  read.timeout_s)
        self.exit_fn(EXIT_CODE)


WATCHDOG = Watchdog()  # this process's
