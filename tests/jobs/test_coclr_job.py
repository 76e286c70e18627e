"""The documented path from a fresh clone: ``ray start --head`` + ``ray job submit --working-dir . --
python jobs/coclr.py --variant debug`` with no prepared data and no tracking setup, then
``jobs/registry.py get`` in the checkout retrieves the registered encoder and loads it (weights only)."""

import subprocess
import sys
from pathlib import Path

import pytest

from pipelines.cluster import LocalHead, ray_job_submit

pytestmark = pytest.mark.slow
ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def head_node():
    """A real head node on free loopback ports (token auth on), stopped with its process group."""
    with LocalHead(num_cpus=2) as head:
        yield head.dashboard_url, {**head.env, "VIDRAY_GCS_ADDRESS": head.address}


def test_submit_coclr_debug_from_scratch_then_get_it_from_the_registry(head_node, tmp_path):
    address, env = head_node
    # A user's job and checkout share ~/.vidray; the tests' session home stands in for it.
    runtime_env = {"env_vars": {"VIDRAY_GIT_COMMIT": "test", "VIDRAY_HOME": env["VIDRAY_HOME"],
                                "RAY_ADDRESS": env["VIDRAY_GCS_ADDRESS"]}}  # other clusters run here
    entrypoint = ["python", "jobs/coclr.py", "--variant", "debug", "--stage", "infonce_rgb",
                  "--set", "scaling.num_workers=1"]
    out = ray_job_submit(address, str(ROOT), entrypoint, runtime_env=runtime_env, env=env, capture=True)
    assert out.returncode == 0, (out.stdout + out.stderr)[-4000:]
    assert "rendering the 'tiny' synthetic set" in out.stdout  # no data: the debug variant made it
    assert "[infonce_rgb] epoch 1/1" in out.stdout
    # the debug variant's relative storage_path lies in Ray's copy of the checkout: the job says so
    assert "checkpoints go to /" in out.stdout and "inside this job's uploaded working directory" in out.stdout
    assert "coclr-debug-rgb" in out.stdout and "infonce_rgb" in out.stdout

    get = subprocess.run([sys.executable, "jobs/registry.py", "get", "coclr-debug-rgb@infonce_rgb", "--out",
                          str(tmp_path / "model")], cwd=ROOT, capture_output=True, text=True, timeout=300, env=env)
    assert get.returncode == 0, get.stderr[-3000:]
    assert "s3d_debug" in get.stdout
    listed = subprocess.run([sys.executable, "jobs/registry.py", "list"], cwd=ROOT, capture_output=True, text=True,
                            timeout=120, env=env)
    assert "coclr-debug-rgb" in listed.stdout and "infonce_rgb" in listed.stdout
