"""Connecting to Ray: the cluster a job was submitted to, or an embedded local one.

Security defaults (DEVELOPERS.md, rule 7): token authentication is on
(``RAY_AUTH_MODE=token``; a local ``ray.init`` generates its own token) and the
dashboard, when a local cluster starts one, binds to 127.0.0.1.
"""

from __future__ import annotations

import logging
import os

log = logging.getLogger(__name__)


def init_ray(*, num_cpus: int | None = None, dashboard: bool | None = None) -> None:
    """Connect to Ray once per process.

    Under ``ray job submit`` (``RAY_ADDRESS`` set) this joins that cluster; otherwise
    it starts an embedded local cluster with ``num_cpus`` CPUs (all by default), even
    when a ``ray start`` cluster runs on this machine (set ``RAY_ADDRESS=auto`` to join it).

    Args:
        num_cpus: CPUs of the embedded cluster; ignored when joining a cluster.
        dashboard: start the dashboard of an embedded cluster (default: only when
            ``VIDRAY_DASHBOARD=1``; it costs start-up time and memory on a laptop).
    """
    os.environ.setdefault("RAY_AUTH_MODE", "token")  # before ray is imported; see pipelines/__init__
    import ray

    if ray.is_initialized():
        return
    if os.environ.get("RAY_ADDRESS"):
        ray.init(address=os.environ["RAY_ADDRESS"], log_to_driver=True)
        return
    if dashboard is None:
        dashboard = os.environ.get("VIDRAY_DASHBOARD") == "1"
    # address="local": never attach silently to some other `ray start` cluster on this machine.
    ray.init(address="local", num_cpus=num_cpus, include_dashboard=dashboard, dashboard_host="127.0.0.1",
             log_to_driver=True, configure_logging=True, logging_level=logging.WARNING)
    log.info("started a local Ray cluster with %s CPUs", ray.cluster_resources().get("CPU"))


def ray_job_submit(address: str, working_dir: str, entrypoint: list[str], *, runtime_env: dict | None = None,
                   env: dict | None = None, capture: bool = False, wait_for_agent_s: float = 120.0):
    """``ray job submit --address A --working-dir D [--runtime-env-json J] -- ENTRYPOINT``, the CLI path.

    A head node answers on its dashboard before its job agent is up ("No available agent
    to submit job"); the submission is retried until ``wait_for_agent_s`` has passed.
    Returns the ``subprocess.CompletedProcess`` (output captured when ``capture``).
    """
    import json
    import subprocess
    import sys
    import time
    from pathlib import Path

    cmd = [str(Path(sys.executable).parent / "ray"), "job", "submit", "--address", address,
           "--working-dir", working_dir]
    if runtime_env:
        cmd += ["--runtime-env-json", json.dumps(runtime_env)]
    cmd += ["--", *entrypoint]
    deadline = time.time() + wait_for_agent_s
    while True:
        out = subprocess.run(cmd, env=env, cwd=working_dir, capture_output=True, text=True)
        if out.returncode == 0 or "No available agent" not in out.stdout + out.stderr or time.time() > deadline:
            break
        log.warning("the job agent is not up yet; retrying the submission")
        time.sleep(3)
    if not capture:
        sys.stdout.write(out.stdout)
        sys.stderr.write(out.stderr[-20000:])
    return out


def start_local_head(ray_bin: str, env: dict) -> str:
    """``ray start --head`` on this machine with token auth (a token is generated once) and the
    dashboard on 127.0.0.1; stops any Ray already running here first. Returns the GCS address."""
    import subprocess

    subprocess.run([ray_bin, "get-auth-token", "--generate"], env=env, check=False, capture_output=True)
    subprocess.run([ray_bin, "stop", "--force"], env=env, check=False, capture_output=True)
    subprocess.run([ray_bin, "start", "--head", "--num-cpus", str(os.cpu_count() or 2), "--dashboard-host",
                    "127.0.0.1", "--disable-usage-stats"], env=env, check=True)
    return "127.0.0.1:6379"
