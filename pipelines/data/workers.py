"""How every process that decodes and augments clips is set up: allocator and threads, in one place.

Three kinds of process run the same decode + augmentation code, and all get these
settings: Ray Data decode tasks (:func:`ray_runtime_env`, passed to ``map_batches``),
PyTorch DataLoader workers and the benchmark's process pools (:func:`spawn_env` around
starting them, :func:`init_decode_worker` as their initialiser).

Allocator (glibc; read at process start, hence environment variables, not ``mallopt``):

* ``MALLOC_MMAP_THRESHOLD_`` = 32 MiB (glibc's largest allowed value on 64-bit): a clip's
  arrays (decoded frames, float32 augmentation intermediates, the output) come from the
  heap instead of a fresh ``mmap`` each, whose every page faults on first touch and is
  returned on ``free``. Setting it also turns off glibc's dynamic threshold, whose
  behaviour depends on the process's history (Ray workers took far fewer faults than a
  fresh DataLoader worker, so the baselines paid more than Ray).
* ``MALLOC_TRIM_THRESHOLD_`` = 128 MiB: freed heap at the top is kept for the next clip
  instead of being returned to the kernel after every sample.

Measured (``classification`` recipe, decode + augmentation in one process, 128x128 GOP-8
H.264, 150 clips): 16 x 112² clips 1,143 -> 3 minor page faults and 8.0 -> 6.5 CPU ms per
clip; 32 x 128² clips 2,314 -> 3 faults and 16.1 -> 10.1 ms; peak RSS unchanged (~130 MB).

Threads: one per process (each decode task or worker is one CPU): ``OMP_NUM_THREADS``,
``OPENBLAS_NUM_THREADS``, ``MKL_NUM_THREADS`` = 1, and OpenCV's and torch's pools set to 1
in :func:`init_decode_worker` (they have no environment variable that all builds read).
"""

from __future__ import annotations

import contextlib
import os
import sys
from typing import Iterator

MIB = 1 << 20
DECODE_WORKER_ENV: dict[str, str] = {
    "MALLOC_MMAP_THRESHOLD_": str(32 * MIB),
    "MALLOC_TRIM_THRESHOLD_": str(128 * MIB),
    "OMP_NUM_THREADS": "1",
    "OPENBLAS_NUM_THREADS": "1",
    "MKL_NUM_THREADS": "1",
}


def decode_worker_env() -> dict[str, str]:
    """The environment variables of a decode worker (a copy of :data:`DECODE_WORKER_ENV`)."""
    return dict(DECODE_WORKER_ENV)


def ray_runtime_env() -> dict[str, dict[str, str]]:
    """The Ray ``runtime_env`` of decode tasks (merged by Ray with the job's own runtime env)."""
    return {"env_vars": decode_worker_env()}


def init_decode_worker(*_: object) -> None:
    """In-process settings of a decode worker: one OpenCV thread, one torch thread (if torch is
    loaded). Takes and ignores any arguments (a DataLoader passes the worker id)."""
    import cv2

    cv2.setNumThreads(1)
    if "torch" in sys.modules:
        sys.modules["torch"].set_num_threads(1)


@contextlib.contextmanager
def patched_environ(updates: dict[str, str], unset: tuple[str, ...] = ()) -> Iterator[None]:
    """``os.environ`` with ``updates`` set and ``unset`` removed while inside; every touched key
    gets its previous value (or absence) back after."""
    saved = {k: os.environ.get(k) for k in (*updates, *unset)}
    for key in unset:
        os.environ.pop(key, None)
    os.environ.update(updates)
    try:
        yield
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def spawn_env() -> contextlib.AbstractContextManager[None]:
    """:data:`DECODE_WORKER_ENV` in ``os.environ`` while child processes are started (they
    inherit it); the previous values are restored after."""
    return patched_environ(DECODE_WORKER_ENV)
