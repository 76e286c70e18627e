"""infra/local/stack.py up, use, down: the services answer, and down stops exactly what up started."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import pytest

from pipelines.local_head import free_port
from tests.infra.common import INFRA

STACK = INFRA / "local" / "stack.py"
BIN = Path(sys.executable).parent


def _stack(*args: str, state: Path, timeout: float = 150) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("RAY_", "AWS_", "MLFLOW_"))}
    return subprocess.run([sys.executable, str(STACK), *args, "--state-dir", str(state)], env=env,
                          capture_output=True, text=True, timeout=timeout)


def _exports(stdout: str) -> dict[str, str]:
    lines = [line.removeprefix("export ") for line in stdout.splitlines() if line.startswith("export ")]
    return dict(line.split("=", 1) for line in lines)


def _alive(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def _pgroup_members(pgid: int) -> list[int]:
    return [int(p) for p in os.listdir("/proc") if p.isdigit() and _alive(int(p))
            and int(Path(f"/proc/{p}/stat").read_text().rsplit(")", 1)[1].split()[2]) == pgid]


def _loopback_only(port: int) -> bool:
    """Every listening socket on ``port`` is bound to 127.0.0.1 (/proc/net/tcp{,6})."""
    binds = []
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for row in Path(table).read_text().splitlines()[1:]:
            local, state = row.split()[1], row.split()[3]
            if state == "0A" and int(local.rsplit(":", 1)[1], 16) == port:
                binds.append(local.rsplit(":", 1)[0])
    return bool(binds) and all(b == "0100007F" for b in binds)


@pytest.fixture
def decoy():
    """A moto server of our own, started before the stack: `down` must leave it running."""
    port = free_port()
    proc = subprocess.Popen([str(BIN / "moto_server"), "-H", "127.0.0.1", "-p", str(port)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    yield proc, f"http://127.0.0.1:{port}/moto-api/"
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()


@pytest.fixture
def state():
    """A short state dir (Ray's socket paths must stay under 108 bytes); the stack is always downed."""
    path = Path(tempfile.mkdtemp(prefix="vs", dir="/tmp"))
    yield path
    if (path / "stack.json").exists():
        _stack("down", state=path)
    shutil.rmtree(path, ignore_errors=True)


def _get(url: str) -> int:
    with urllib.request.urlopen(url, timeout=10) as r:
        return r.status


@pytest.mark.slow
@pytest.mark.timeout(240)
def test_up_serves_then_down_stops_only_the_stack(state, decoy):
    decoy_proc, decoy_url = decoy
    started = time.time()
    out = _stack("up", "--num-cpus", "1", "--timeout", "120", state=state)
    assert out.returncode == 0, out.stderr[-3000:]
    print(f"up took {time.time() - started:.1f}s", file=sys.stderr)
    env = _exports(out.stdout)
    assert {"AWS_ENDPOINT_URL", "MLFLOW_TRACKING_URI", "RAY_ADDRESS", "RAY_AUTH_TOKEN_PATH"} <= set(env)
    record = json.loads((state / "stack.json").read_text())
    pg = shutil.which("pg_ctl") or list(Path("/usr/lib/postgresql").glob("*/bin/pg_ctl"))
    assert record["db"] == ("postgresql" if pg else "sqlite")

    # MLflow answers over REST, and an artifact it receives lands in S3 (moto).
    mlflow = env["MLFLOW_TRACKING_URI"]
    assert _get(f"{mlflow}/health") == 200
    assert _get(f"{mlflow}/api/2.0/mlflow/experiments/search?max_results=5") == 200
    put = urllib.request.Request(f"{mlflow}/api/2.0/mlflow-artifacts/artifacts/smoke/hello.txt",
                                 data=b"hello", method="PUT")
    assert urllib.request.urlopen(put, timeout=10).status == 200

    import boto3

    s3 = boto3.client("s3", endpoint_url=env["AWS_ENDPOINT_URL"], region_name=env["AWS_REGION"],
                      aws_access_key_id=env["AWS_ACCESS_KEY_ID"], aws_secret_access_key=env["AWS_SECRET_ACCESS_KEY"])
    assert "vidray-mlflow" in [b["Name"] for b in s3.list_buckets()["Buckets"]]
    assert s3.get_object(Bucket="vidray-mlflow", Key="artifacts/smoke/hello.txt")["Body"].read() == b"hello"

    # Ray answers `ray job list` with the token, and refuses without it.
    client = {**os.environ, **env}
    ray = [str(BIN / "ray"), "job", "list"]
    listed = subprocess.run(ray, env=client, capture_output=True, text=True, timeout=60)
    assert listed.returncode == 0, listed.stderr[-2000:]
    wrong = state / "wrong_token"
    wrong.write_text("0" * 64)
    refused = subprocess.run(ray, env={**client, "RAY_AUTH_TOKEN_PATH": str(wrong)}, capture_output=True,
                             text=True, timeout=60)
    assert refused.returncode != 0 and "token" in refused.stderr.lower(), refused.stderr[-1000:]

    # Loopback only; the database password reached MLflow through its environment alone.
    ports = record["ports"]
    for name in ("dashboard", "mlflow", "s3") + (("postgres",) if record["db"] == "postgresql" else ()):
        assert _loopback_only(ports[name]), name
    if record["db"] == "postgresql":
        mlflow_pid = record["services"]["mlflow"]["pid"]
        environ = dict(kv.split("=", 1) for kv in Path(f"/proc/{mlflow_pid}/environ").read_text().split("\0") if "=" in kv)
        password = environ["PGPASSWORD"]
        assert password and password not in environ["MLFLOW_BACKEND_STORE_URI"]
        for pid in (p for rec in record["services"].values() for p in _pgroup_members(rec.get("pgid", -1))):
            assert password not in Path(f"/proc/{pid}/cmdline").read_text(errors="replace")
        for log in state.rglob("*.log"):
            assert password not in log.read_text(errors="replace"), log

    status = _stack("status", state=state)
    assert status.returncode == 0 and status.stdout.count("answering") == len(record["services"]), status.stdout

    # down: every recorded process is gone; the decoy started before `up` still serves.
    groups = {name: rec["pgid"] for name, rec in record["services"].items() if "pgid" in rec}
    down = _stack("down", state=state)
    assert down.returncode == 0, down.stderr[-3000:]
    for name, pgid in groups.items():
        assert _pgroup_members(pgid) == [], f"{name} left processes behind"
    if "postgres" in record["services"]:
        assert not _alive(record["services"]["postgres"]["pid"])
    assert decoy_proc.poll() is None and _get(decoy_url) == 200
    assert not (state / "stack.json").exists()
    print(f"up + checks + down took {time.time() - started:.1f}s", file=sys.stderr)
