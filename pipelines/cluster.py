"""Connecting to Ray: the cluster a job was submitted to, an embedded local one, or a private head node.

Security defaults (DEVELOPERS.md, rule 7): token authentication is on
(``RAY_AUTH_MODE=token``; a local ``ray.init`` generates its own token) and the
dashboard, when a local cluster starts one, binds to 127.0.0.1.

Other people's clusters are never touched: :class:`LocalHead` starts a head node on
free loopback ports in its own temp dir and process group, and stops only that group.
"""

from __future__ import annotations

import collections
import json
import logging
import os
import re
import subprocess
import sys
import time
from collections.abc import Callable, Mapping
from pathlib import Path

from pipelines.local_head import PORT_OPTIONS, LocalHead, PortInUseError, port_in_use  # noqa: F401 - re-exported

log = logging.getLogger(__name__)

LineSink = Callable[[str], None]
"""Receives each line of a streamed ``ray job submit`` (newline included)."""

_NO_AGENT = "No available agent"
_SUBMITTED = ("submitted successfully", "Tailing logs")  # `ray job submit` got past the submission itself
# Ray Data progress output: tqdm bars, their "Running Dataset:" title, and the block that the
# non-interactive progress logger (ray/data/_internal/progress/logging_progress.py) writes.
_PROGRESS = re.compile(r"Running Dataset[: ]|\slogging_progress\.py:\d+ -- |\d+%\|[^|]*\|")


def init_ray(*, num_cpus: int | None = None, dashboard: bool | None = None) -> None:
    """Connect to Ray once per process.

    Under ``ray job submit`` (``RAY_ADDRESS`` set) this joins that cluster; otherwise
    it starts an embedded local cluster with ``num_cpus`` CPUs (all by default), even
    when a ``ray start`` cluster runs on this machine (set ``RAY_ADDRESS=auto`` to join it).

    Ray Data progress bars are off (``RAY_DATA_DISABLE_PROGRESS_BARS=1`` and
    ``DataContext.enable_progress_bars = False``): in a job's log, and so in a streamed
    ``ray job submit``, they are a flood of progress blocks or carriage-return fragments.
    Set ``VIDRAY_PROGRESS_BARS=1`` to keep them.

    Args:
        num_cpus: CPUs of the embedded cluster; ignored when joining a cluster.
        dashboard: start the dashboard of an embedded cluster (default: only when
            ``VIDRAY_DASHBOARD=1``; it costs start-up time and memory on a laptop).
    """
    os.environ.setdefault("RAY_AUTH_MODE", "token")  # before ray is imported; see pipelines/__init__
    bars = os.environ.get("VIDRAY_PROGRESS_BARS") == "1"
    if not bars:
        os.environ.setdefault("RAY_DATA_DISABLE_PROGRESS_BARS", "1")  # read when ray.data is imported
    import ray

    _sync_auth_mode()

    if not bars:
        import ray.data

        ray.data.DataContext.get_current().enable_progress_bars = False  # ray.data may be imported already
    if ray.is_initialized():
        return
    if os.environ.get("RAY_ADDRESS"):
        ray.init(address=os.environ["RAY_ADDRESS"], log_to_driver=True)
        return
    if dashboard is None:
        dashboard = os.environ.get("VIDRAY_DASHBOARD") == "1"
    hook = None if dashboard else {"worker_process_setup_hook": f"{__name__}.{quiet_cleaner_warnings.__name__}"}
    # address="local": never attach silently to some other `ray start` cluster on this machine.
    ray.init(address="local", num_cpus=num_cpus, include_dashboard=dashboard, dashboard_host="127.0.0.1",
             log_to_driver=True, configure_logging=True, logging_level=logging.WARNING, runtime_env=hook)
    log.info("started a local Ray cluster with %s CPUs", ray.cluster_resources().get("CPU"))


def _sync_auth_mode() -> None:
    """Make this process use the authentication mode of ``RAY_AUTH_MODE`` even when ``ray`` was
    imported before it was set (``import ray`` ahead of any module of ours).

    Ray reads the mode once, into its cached config, when it is imported. Without this refresh
    the cluster's processes start with token authentication and this driver, still in the
    mode it read, is refused by its own GCS: a ten-second retry loop of ``InvalidAuthToken``
    lines, then "Failed to start GCS". The refresh is what Ray itself does when it turns
    token authentication on (``authentication_token_setup._enable_token_auth``).
    """
    from ray._raylet import AuthenticationMode, Config, get_authentication_mode

    wanted = os.environ.get("RAY_AUTH_MODE", "").lower()
    if (wanted == "token") != (get_authentication_mode() == AuthenticationMode.TOKEN):
        Config.initialize("")


_CLEANER_LOGGER = "ray.train.v2._internal.execution.controller.placement_group_cleaner"


def quiet_cleaner_warnings() -> None:
    """Worker setup hook of an embedded cluster without a dashboard: Ray Train's warnings that the
    State API does not answer are not logged.

    Each Ray Train run starts a ``PlacementGroupCleaner`` that asks the State API (served by the
    dashboard) once a second whether the run's controller lives, and logs a warning each time it
    gets no answer: without a dashboard, one line a second in the job's output for as long as
    the run trains. Its job, removing the placement group of a controller that died, is done
    for Tune's stopped trials by :func:`pipelines.tune.resources.release_orphaned_groups`. Its
    errors are still logged.
    """
    logging.getLogger(_CLEANER_LOGGER).setLevel(logging.ERROR)


def ray_job_submit(address: str, working_dir: str, entrypoint: list[str], *, runtime_env: dict | None = None,
                   env: Mapping[str, str] | None = None, capture: bool = False, wait_for_agent_s: float = 120.0,
                   on_line: LineSink | None = None) -> subprocess.CompletedProcess[str]:
    """``ray job submit --address A --working-dir D [--runtime-env-json J] -- ENTRYPOINT``, the CLI path.

    A head node answers on its dashboard before its job agent is up ("No available agent
    to submit job"); the submission is retried until ``wait_for_agent_s`` has passed.

    With ``capture`` the output is collected and returned (tests). Otherwise it is streamed:
    each line of stdout and stderr (merged) goes to ``on_line`` (default: this process's
    stdout) as it arrives, so a long job shows its progress. Lines before "submitted
    successfully" are held back until the submission got through, so a retried "No available
    agent" error is not shown; Ray Data progress-bar lines are dropped (see :func:`init_ray`).

    Returns:
        the ``CompletedProcess`` of the last attempt; when streaming, its ``stdout`` holds the
        last 2000 lines (stderr merged in, progress bars included) and ``stderr`` is empty.
    """
    cmd = [str(Path(sys.executable).parent / "ray"), "job", "submit", "--address", address,
           "--working-dir", working_dir]
    if runtime_env:
        cmd += ["--runtime-env-json", json.dumps(runtime_env)]
    cmd += ["--", *entrypoint]
    run_env = {**(os.environ if env is None else env), "PYTHONUNBUFFERED": "1"}  # the CLI's own prints
    deadline = time.time() + wait_for_agent_s
    while True:
        if capture:
            out = subprocess.run(cmd, env=run_env, cwd=working_dir, capture_output=True, text=True, check=False)
            held = []
        else:
            out, held = _submit_streaming(cmd, run_env, working_dir, on_line or _to_stdout)
        if out.returncode == 0 or _NO_AGENT not in out.stdout + out.stderr or time.time() > deadline:
            for line in held:  # the submission failed for good: show why
                (on_line or _to_stdout)(line)
            return out
        log.warning("the job agent is not up yet; retrying the submission")
        time.sleep(3)


def _to_stdout(line: str) -> None:
    sys.stdout.write(line)
    sys.stdout.flush()


def visible_part(line: str) -> str:
    """What a terminal shows of ``line``: the text after its last carriage return (tqdm redraws)."""
    text = line.rstrip("\r\n")
    return line if "\r" not in text else text.rsplit("\r", 1)[-1] + "\n"


def is_progress_bar(line: str) -> bool:
    """Whether ``line`` is Ray Data progress output (a tqdm bar, its title, or a progress-log block line)."""
    return bool(_PROGRESS.search(visible_part(line)))


def _submit_streaming(cmd: list[str], env: Mapping[str, str], cwd: str,
                      sink: LineSink) -> tuple[subprocess.CompletedProcess[str], list[str]]:
    """Run ``cmd``, handing each output line to ``sink`` once the job is submitted.

    Returns the process (``stdout``: the last 2000 lines) and the lines held back because
    the submission never got through (the caller shows them, or retries silently).
    """
    tail: collections.deque[str] = collections.deque(maxlen=2000)
    held: list[str] | None = []  # None once submitted: lines then go straight to sink
    # Bytes, split on "\n" only: text mode would turn each carriage return of a progress bar into a line.
    with subprocess.Popen(cmd, env=dict(env), cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                          stdin=subprocess.DEVNULL) as proc:
        for raw in proc.stdout:
            line = raw.decode(errors="replace")
            tail.append(line)
            if held is not None:
                held.append(line)
                if any(marker in line for marker in _SUBMITTED):
                    for early in held:
                        sink(early)
                    held = None
            elif not is_progress_bar(line):
                sink(visible_part(line))
    return subprocess.CompletedProcess(cmd, proc.returncode, "".join(tail), ""), held or []


def on_this_node():
    """Scheduling on the calling process's node (hard affinity): the driver's bookkeeping actor (the
    quarantine ledger) must not land on a worker node whose loss would end the run."""
    import ray
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    return NodeAffinitySchedulingStrategy(ray.get_runtime_context().get_node_id(), soft=False)


_JOB_PACKAGE = re.compile(r"/runtime_resources/working_dir_files/_ray_pkg_[^/]+(/|$)")


def job_package_warning(url: str, what: str = "checkpoints") -> str | None:
    """A warning when ``url`` lies inside a submitted job's uploaded working directory, else None.

    Under ``ray job submit --working-dir .`` a relative ``storage_path`` resolves inside Ray's
    copy of the package (``<session>/runtime_resources/working_dir_files/_ray_pkg_<hash>``). Ray
    deletes that copy when it collects unused packages, and a changed checkout is a new package:
    a resubmitted job finds its checkpoints there only while both hold.
    """
    if not _JOB_PACKAGE.search(str(url)):
        return None
    return (f"warning: {what} go to {url}, inside this job's uploaded working directory, which Ray "
            "deletes when it collects unused packages (a changed checkout uploads a new one); to keep "
            "them, --set storage_path=/shared/path or s3://bucket/runs")
