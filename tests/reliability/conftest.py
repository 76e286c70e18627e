"""The reliability scenarios of ``bench/reliability.py`` as tests.

Tests marked ``reliability`` (a 3-node Ray cluster on this machine, minutes each) run only when
asked for: ``make reliability``, ``VIDRAY_RELIABILITY=1``, or ``pytest -m reliability``; the
others here (security, a small S3-fault run, the fault proxy itself) are CI-sized and always run.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import sys
import tempfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def load_bench():
    """``bench/reliability.py`` as a module (bench/ is not a package)."""
    if "vidray_bench_reliability" in sys.modules:
        return sys.modules["vidray_bench_reliability"]
    spec = importlib.util.spec_from_file_location("vidray_bench_reliability", ROOT / "bench" / "reliability.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def pytest_collection_modifyitems(config, items):
    """Skip ``reliability`` tests unless asked for (a hook, not a fixture: the session-scoped
    cluster fixtures would start before a fixture could skip)."""
    if "reliability" in (config.getoption("markexpr") or "") or os.environ.get("VIDRAY_RELIABILITY") == "1":
        return
    skip = pytest.mark.skip(reason="a reliability scenario at cluster scale: `make reliability` or -m reliability")
    for item in items:
        if item.get_closest_marker("reliability") is not None:
            item.add_marker(skip)


def _work(prefix: str) -> Path:
    return Path(tempfile.mkdtemp(prefix=prefix, dir="/tmp"))  # short: Ray's socket paths


@pytest.fixture(scope="session")
def bench():
    return load_bench()


@pytest.fixture(scope="package")
def one_node(bench):
    """S3 (moto) behind the fault proxy, MLflow, and a one-node Ray cluster (2 CPUs, token auth).

    Package-scoped: shared by the tests here, and stopped before the next package's tests run
    (an idle head with its dashboard costs ~8 % of a core)."""
    work = _work("vrt")
    try:
        with bench.stack(work, head_cpus=2, worker_cpus=()) as st:
            yield st
    finally:
        shutil.rmtree(work, ignore_errors=True)


@pytest.fixture(scope="module")
def three_nodes(bench):
    """The same services and a 0-CPU head with two 2-CPU worker nodes (``ray start --address``)."""
    work = _work("vrc")
    try:
        with bench.stack(work) as st:
            yield st
    finally:
        shutil.rmtree(work, ignore_errors=True)
