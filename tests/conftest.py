"""Shared fixtures: an embedded Ray cluster and a loopback S3 server, both owned by the tests."""

from __future__ import annotations

import atexit
import os
import shutil
import tempfile

import pytest

os.environ.setdefault("RAY_AUTH_MODE", "token")
# Ray Train's preemption watcher only observes node drains, which no test makes; it is one more
# actor process per worker-group start (~2.5 s of a fit on 2 busy cores). Inherited by every cluster and
# driver the tests start; an explicit setting wins.
os.environ.setdefault("RAY_TRAIN_ENABLE_PREEMPTION_WATCHER", "0")
# Runs and models of tests never land in the user's store (~/.vidray): a fresh home per session,
# inherited by the embedded Ray cluster's workers.
os.environ["VIDRAY_HOME"] = tempfile.mkdtemp(prefix="vidray-test-home-")
atexit.register(shutil.rmtree, os.environ["VIDRAY_HOME"], ignore_errors=True)


@pytest.fixture(scope="session")
def ray_cluster():
    """One embedded 2-CPU Ray cluster for the whole session (token auth on, no dashboard)."""
    import ray

    from pipelines.cluster import init_ray

    init_ray(num_cpus=2)
    yield ray
    ray.shutdown()


@pytest.fixture(scope="session")
def s3_endpoint():
    """A moto S3 server on 127.0.0.1, started and stopped by the test session."""
    from moto.server import ThreadedMotoServer

    from pipelines.local_head import free_port

    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    yield f"http://127.0.0.1:{port}"
    server.stop()


@pytest.fixture
def s3_env(s3_endpoint, monkeypatch):
    """AWS variables pointing at the loopback server, and a fresh bucket; yields ``s3://bucket``."""
    import uuid

    import boto3

    env = {"AWS_ENDPOINT_URL": s3_endpoint, "AWS_ACCESS_KEY_ID": "testing",
           "AWS_SECRET_ACCESS_KEY": "testing", "AWS_REGION": "us-east-1"}
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    monkeypatch.delenv("AWS_ENDPOINT_URL_S3", raising=False)
    bucket = f"vidray-{uuid.uuid4().hex[:10]}"
    boto3.client("s3", endpoint_url=s3_endpoint, region_name="us-east-1").create_bucket(Bucket=bucket)
    yield f"s3://{bucket}"


def _parent_death_signal():
    """A preexec_fn giving the child SIGTERM when the test process dies (Linux), else None.

    prctl is resolved here, in the parent, so the forked child runs no imports (a lock held
    by another thread, e.g. moto's, could otherwise deadlock it).
    """
    import ctypes
    import signal

    try:
        prctl = ctypes.CDLL("libc.so.6", use_errno=True).prctl
    except OSError:
        return None  # not Linux: the fixtures' teardown still stops the server
    return lambda: prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


def launch_mlflow_server(workdir, *, artifact_root: str, env: dict | None = None):
    """Launch ``mlflow server`` (sqlite backend) on a free loopback port; returns ``(process, uri)``.

    Does not wait (see :func:`wait_for_mlflow_server`). Artifacts go straight from the
    clients to ``artifact_root`` (``--no-serve-artifacts``), as on a cluster where every
    node can reach the bucket. MLflow's server-side job runner is off
    (``pipelines.tracking.store.MLFLOW_SERVER_ENV``).
    """
    import subprocess
    import sys
    from pathlib import Path

    from pipelines.local_head import free_port
    from pipelines.tracking.store import MLFLOW_SERVER_ENV

    workdir = Path(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    port = free_port()
    cmd = [sys.executable, "-m", "mlflow", "server", "--backend-store-uri", f"sqlite:///{workdir / 'mlflow.db'}",
           "--default-artifact-root", artifact_root, "--host", "127.0.0.1", "--port", str(port),
           "--workers", "1", "--no-serve-artifacts"]
    with open(workdir / "server.log", "ab") as logfile:  # the child keeps its own descriptor
        proc = subprocess.Popen(cmd, stdout=logfile, stderr=subprocess.STDOUT, cwd=workdir,
                                env={**os.environ, **MLFLOW_SERVER_ENV, **(env or {})}, start_new_session=True,
                                preexec_fn=_parent_death_signal())  # noqa: PLW1509 - see its docstring
    return proc, f"http://127.0.0.1:{port}"


def wait_for_mlflow_server(proc, uri: str, timeout: float = 180.0) -> None:
    """Wait until ``uri/health`` answers (a fresh server takes 10-20 s: imports, DB migrations).

    Raises:
        RuntimeError: the server exited or did not answer in time (it is then stopped).
    """
    import time
    import urllib.request

    deadline = time.time() + timeout
    while time.time() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"mlflow server exited with {proc.returncode}; see server.log beside {proc.args[5]}")
        try:
            with urllib.request.urlopen(f"{uri}/health", timeout=1) as r:
                if r.status == 200:
                    return
        except OSError:
            time.sleep(0.25)
    stop_mlflow_server(proc)
    raise RuntimeError(f"mlflow server did not answer /health within {timeout}s")


def stop_mlflow_server(proc) -> None:
    """Stop a server started by :func:`launch_mlflow_server` (its whole process group)."""
    import signal
    import subprocess

    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            # uvicorn stops at once (a job runner, were it on, would take ~10 s), and a test
            # server holds nothing worth a graceful exit.
            proc.wait(timeout=3)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


@pytest.fixture(scope="session")
def _mlflow_s3_launched(tmp_path_factory, s3_endpoint):
    """The S3-backed server's process, launched but not yet waited for (see ``mlflow_server``)."""
    import uuid

    import boto3

    bucket = f"mlflow-{uuid.uuid4().hex[:10]}"
    boto3.client("s3", endpoint_url=s3_endpoint, region_name="us-east-1",
                 aws_access_key_id="testing", aws_secret_access_key="testing").create_bucket(Bucket=bucket)
    env = {"AWS_ENDPOINT_URL": s3_endpoint, "AWS_ACCESS_KEY_ID": "testing",
           "AWS_SECRET_ACCESS_KEY": "testing", "AWS_REGION": "us-east-1"}
    proc, uri = launch_mlflow_server(tmp_path_factory.mktemp("mlflow-s3"),
                                     artifact_root=f"s3://{bucket}/mlflow", env=env)
    yield proc, uri, f"s3://{bucket}/mlflow", env
    stop_mlflow_server(proc)


@pytest.fixture(scope="session")
def mlflow_server(request, tmp_path_factory):
    """A real ``mlflow server`` (sqlite backend, local artifact folder) for the session; yields its URI."""
    workdir = tmp_path_factory.mktemp("mlflow")
    proc, uri = launch_mlflow_server(workdir, artifact_root=str(workdir / "artifacts"))
    try:
        wait_for_mlflow_server(proc, uri)
        if any("mlflow_server_s3" in getattr(item, "fixturenames", ()) for item in request.session.items):
            # The session will need the S3-backed server too: boot it now, while the tests
            # before it run, instead of making its first test wait 10-20 s.
            request.getfixturevalue("_mlflow_s3_launched")
        yield uri
    finally:
        stop_mlflow_server(proc)


@pytest.fixture(scope="session")
def mlflow_server_s3(_mlflow_s3_launched):
    """An ``mlflow server`` whose artifact root is a bucket on the loopback S3 server.

    Yields ``(uri, artifact_root, aws_env)``: clients need ``aws_env`` in their environment
    to write artifacts (the server process has it too).
    """
    proc, uri, artifact_root, env = _mlflow_s3_launched
    wait_for_mlflow_server(proc, uri)
    yield uri, artifact_root, env


@pytest.fixture(scope="session")
def debug_data(tmp_path_factory):
    """The session's ``data/debug`` folder: the debug variants' tiny synthetic sets (``ucf101``,
    ``charades``), made by the first test that needs each, from nothing, as on a fresh clone."""
    return tmp_path_factory.mktemp("fresh-clone") / "data" / "debug"


@pytest.fixture(scope="session")
def debug_runs(ray_cluster, mlflow_server, debug_data, tmp_path_factory):
    """First phases of the methods' debug variants, each trained once per session (tests/debug_runs.py)."""
    from tests.debug_runs import DebugRuns

    return DebugRuns(debug_data, tmp_path_factory.mktemp("debug-runs"), mlflow_server)
