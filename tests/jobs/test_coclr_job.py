"""The documented path: ``ray start --head`` + ``ray job submit --working-dir . -- python jobs/coclr.py``,
then ``jobs/registry.py get`` retrieves the registered encoder and loads it (weights only)."""

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from pipelines.cluster import ray_job_submit
from tests.pipelines.data.test_dataset import tiny_datasets

pytestmark = pytest.mark.slow
ROOT = Path(__file__).resolve().parents[2]
RAY = str(Path(sys.executable).parent / "ray")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def head_node(tmp_path):
    """A real head node on loopback ports (token auth on), stopped with its process group."""
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    env.update(RAY_AUTH_MODE="token", PATH=f"{Path(sys.executable).parent}:{env.get('PATH', '')}")
    subprocess.run([RAY, "get-auth-token", "--generate"], env=env, capture_output=True)
    port, dash = _free_port(), _free_port()
    # Every per-node port explicit: the session's embedded cluster already holds the defaults.
    ports = ["--dashboard-agent-listen-port", str(_free_port()), "--dashboard-agent-grpc-port", str(_free_port()),
             "--runtime-env-agent-port", str(_free_port()), "--metrics-export-port", str(_free_port()),
             "--ray-client-server-port", str(_free_port())]
    temp = Path("/tmp") / f"vr{port}"  # short: Ray's socket paths must stay under 108 bytes
    proc = subprocess.Popen([RAY, "start", "--head", "--block", "--port", str(port), "--num-cpus", "2",
                             "--dashboard-host", "127.0.0.1", "--dashboard-port", str(dash),
                             "--temp-dir", str(temp), "--disable-usage-stats",
                             "--min-worker-port", "20000", "--max-worker-port", "29999", *ports],
                            env=env, start_new_session=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    address = f"http://127.0.0.1:{dash}"
    deadline = time.time() + 120
    while time.time() < deadline:
        ok = subprocess.run([RAY, "job", "list", "--address", address], env=env, capture_output=True)
        if ok.returncode == 0:
            break
        time.sleep(2)
    else:
        os.killpg(proc.pid, signal.SIGKILL)
        pytest.fail("the head node did not come up")
    yield address, env
    os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(timeout=30)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)


def test_submit_coclr_debug_then_get_it_from_the_registry(ray_cluster, tmp_path_factory, tmp_path, head_node,
                                                           mlflow_server):
    address, env = head_node
    data = tiny_datasets(tmp_path_factory)["ucf"]
    runtime_env = {"env_vars": {"MLFLOW_TRACKING_URI": mlflow_server, "VIDRAY_GIT_COMMIT": "test"}}
    entrypoint = ["python", "jobs/coclr.py", "--variant", "debug", "--stage", "infonce_rgb",
                  "--set", f"data.manifest={data}", "--set", f"storage_path={tmp_path / 'runs'}",
                  "--set", "loop.batch_size=2", "--set", "scaling.num_workers=1"]
    out = ray_job_submit(address, str(ROOT), entrypoint, runtime_env=runtime_env, env=env, capture=True)
    assert out.returncode == 0, (out.stdout + out.stderr)[-4000:]
    assert "coclr-debug-rgb" in out.stdout and "infonce_rgb" in out.stdout

    get = subprocess.run([sys.executable, "jobs/registry.py", "get", "coclr-debug-rgb@infonce_rgb", "--out",
                          str(tmp_path / "model")], cwd=ROOT, capture_output=True, text=True, timeout=300,
                         env={**env, "MLFLOW_TRACKING_URI": mlflow_server})
    assert get.returncode == 0, get.stderr[-3000:]
    assert "s3d_debug" in get.stdout
    listed = subprocess.run([sys.executable, "jobs/registry.py", "list"], cwd=ROOT, capture_output=True, text=True,
                            timeout=120, env={**env, "MLFLOW_TRACKING_URI": mlflow_server})
    assert "coclr-debug-rgb" in listed.stdout and "infonce_rgb" in listed.stdout
