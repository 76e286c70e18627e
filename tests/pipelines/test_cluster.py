"""LocalHead never touches other Ray clusters; ray_job_submit streams a job's output as it comes."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from pipelines.cluster import _submit_streaming, is_progress_bar, job_package_warning, ray_job_submit
from pipelines.local_head import LocalHead, PortInUseError, _descendants, _processes


def _job_list(head: LocalHead) -> subprocess.CompletedProcess:
    return subprocess.run([head.ray_bin, "job", "list", "--address", head.dashboard_url], env=head.env,
                          capture_output=True, text=True, timeout=60, check=False)


def _tree(pid: int) -> set[tuple[int, int]]:
    """``(pid, start time)`` of ``pid`` and every process below it."""
    return _descendants(pid) | {(pid, _processes()[pid][3])}


def _running(procs: set[tuple[int, int]]) -> set[tuple[int, int]]:
    """Those of ``procs`` still running (same start time, not a zombie)."""
    table = _processes()
    return {(pid, t) for pid, t in procs if pid in table and table[pid][3] == t and table[pid][2] != "Z"}


def _listening(pids: set[int]) -> set[int]:
    """The TCP ports (IPv4 and IPv6, any address) on which one of ``pids`` listens, from /proc."""
    ports_by_inode = {}
    for table in ("tcp", "tcp6"):
        for line in Path(f"/proc/net/{table}").read_text().splitlines()[1:]:
            fields = line.split()
            if fields[3] == "0A":  # LISTEN
                ports_by_inode[fields[9]] = int(fields[1].rsplit(":", 1)[1], 16)
    found = set()
    for pid in pids:
        try:
            fds = list(Path(f"/proc/{pid}/fd").iterdir())
        except OSError:  # gone
            continue
        for fd in fds:
            try:
                link = os.readlink(fd)
            except OSError:
                continue
            if link.startswith("socket:[") and link[8:-1] in ports_by_inode:
                found.add(ports_by_inode[link[8:-1]])
    return found


RAY_DEFAULT_METRIC_PORTS = {44217, 44227}  # AUTOSCALER_METRIC_PORT, DASHBOARD_METRIC_PORT


def _head_listening(head: LocalHead, timeout: float = 90.0) -> set[int]:
    """The ports the head's processes listen on, once its two Prometheus ports are among them
    (the autoscaler's monitor starts a little after the job server answers)."""
    wanted = {head.ports["dashboard_metric"], head.ports["autoscaler_metric"]}
    deadline = time.time() + timeout
    while True:
        ports = _listening({pid for pid, _ in _tree(head.pid)})
        if wanted <= ports or time.time() > deadline:
            return ports
        time.sleep(1)


# Ray's autoscaler monitor answers SIGTERM by reporting to the GCS, which the same group signal is
# stopping: when the GCS goes first, the monitor hangs ~25 s in that call (about one stop in three).
# Past this the rest is SIGKILLed, a path of stop() that the test then covers as well; a normal
# stop takes ~4 s.
STOP_TIMEOUT_S = 10.0


@pytest.fixture(scope="module")
def bystander():
    """Someone else's cluster: a head that must survive everything these tests do."""
    head = LocalHead(num_cpus=1, stop_timeout_s=STOP_TIMEOUT_S).start()
    yield head
    head.stop()
    shutil.rmtree(head.temp_dir, ignore_errors=True)


@pytest.mark.slow
@pytest.mark.skipif(_processes() is None, reason="reads /proc")
def test_stopping_a_head_leaves_other_clusters_running(bystander):
    theirs = _tree(bystander.pid)
    mine = LocalHead(num_cpus=1, stop_timeout_s=STOP_TIMEOUT_S).start()
    try:
        assert mine.address != bystander.address and mine.dashboard_url != bystander.dashboard_url
        assert mine.temp_dir != bystander.temp_dir
        ours = _tree(mine.pid)
        assert len(ours) > 3 and not {pid for pid, _ in ours} & {pid for pid, _ in theirs}
        for head in (mine, bystander):  # Prometheus ports chosen free, not Ray's fixed defaults
            chosen = {head.ports["dashboard_metric"], head.ports["autoscaler_metric"]}
            listening = _head_listening(head)
            assert chosen <= listening and not listening & RAY_DEFAULT_METRIC_PORTS, (chosen, listening)
        assert not {mine.ports[k] for k in LocalHead.PORT_ENV} & {bystander.ports[k] for k in LocalHead.PORT_ENV}
        ours |= _tree(mine.pid)  # and what the head started since start() returned (agents, monitor)
        assert not {pid for pid, _ in ours} & {pid for pid, _ in theirs}
    finally:
        mine.stop()
        shutil.rmtree(mine.temp_dir, ignore_errors=True)
    assert not _running(ours), "the stopped head left processes behind"
    assert _running(theirs) == theirs, "stopping one head killed processes of another cluster"
    assert _job_list(bystander).returncode == 0, "the bystander cluster no longer answers"


@pytest.mark.parametrize("name", ["dashboard", "gcs"])
def test_a_requested_port_in_use_is_a_clear_error(name):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        head = LocalHead(**{f"{name}_port": port})
        with pytest.raises(PortInUseError) as err:
            head.start()
    text = str(err.value)
    assert f"port {port} (Ray {name})" in text and "never stops" in text
    assert ("VIDRAY_DASHBOARD_PORT" if name == "dashboard" else "VIDRAY_RAY_PORT") in text
    assert head.pid is None and head.temp_dir is None  # nothing was started


def test_a_head_picks_its_ports_below_the_kernels_ephemeral_range(monkeypatch):
    """The kernel gives outgoing connections ports of its ephemeral range, so a port picked there
    could be taken before Ray binds it; a head's own picks are below it, distinct and free, its
    named ports in a band apart from every head's worker ports."""
    import random

    from pipelines import local_head

    monkeypatch.setattr(local_head, "_ephemeral_start", lambda: 32768)  # Linux's default, whatever this host's
    ports = LocalHead()._pick_ports()
    named = [v for k, v in ports.items() if k not in ("min_worker", "max_worker")]
    assert len(set(named)) == len(named) == len(LocalHead.PORT_FLAGS) + len(LocalHead.PORT_ENV)
    assert all(local_head._LOW_PORT <= p < local_head._WORKER_BAND for p in named)
    assert local_head._WORKER_BAND <= ports["min_worker"] and ports["max_worker"] < 32768

    with socket.socket() as taken:  # a port in use, and one to avoid, are stepped over
        taken.bind(("127.0.0.1", named[0]))
        taken.listen()
        picks = iter([named[0], named[1], named[2]])
        monkeypatch.setattr(random, "randrange", lambda *_: next(picks))
        assert local_head.free_port({named[1]}) == named[2]
    monkeypatch.setattr(local_head, "_ephemeral_start", lambda: 1024)  # no room below it: the kernel's pick
    assert local_head.free_port() >= 1024


def test_progress_bars_are_recognised():
    assert is_progress_bar("Running Dataset: dataset_3_0. Active & requested resources: 1/2 CPU\n")
    assert is_progress_bar("2026-01-01 00:00:00,000\tINFO logging_progress.py:231 -- ReadRange: 0/1\n")
    assert is_progress_bar("- ReadRange->Map:  40%|####      | 4/10 [00:01<00:02, 2.1 row/s]\n")
    assert is_progress_bar("noise\r 10%|#         | 1/10\r\n")
    assert not is_progress_bar("epoch 3: loss 0.51, 100% of the steps done\n")
    assert not is_progress_bar("INFO streaming_executor.py:371 -- Dataset execution finished in 6.83 seconds\n")


def test_streaming_forwards_lines_as_they_come_and_holds_back_a_failed_submission():
    script = ("import sys, time\n"
              "print('uploading'); print(\"Job 'x' submitted successfully\"); sys.stdout.flush()\n"
              "print('Running Dataset: d_0. 0/2 CPU'); print('\\r 10%|#   | 1/10\\r 20%|##  | 2/10')\n"
              "print('a', flush=True); time.sleep(1.5); print('b', file=sys.stderr, flush=True); sys.exit(3)\n")
    got: list[tuple[float, str]] = []
    out, held = _submit_streaming([sys.executable, "-c", script], {}, ".", lambda line: got.append((time.time(), line)))
    lines = [line for _, line in got]
    assert lines == ["uploading\n", "Job 'x' submitted successfully\n", "a\n", "b\n"]
    assert got[3][0] - got[2][0] > 1.0, "lines arrived together, not as they were printed"
    assert out.returncode == 3 and held == [] and "Running Dataset" in out.stdout

    failed = "print('Traceback ...'); print('RuntimeError: No available agent to submit job'); raise SystemExit(1)"
    sink: list[str] = []
    out, held = _submit_streaming([sys.executable, "-c", failed], {}, ".", sink.append)
    assert sink == [] and held[-1].startswith("RuntimeError: No available agent") and out.returncode == 1


@pytest.mark.slow
def test_ray_job_submit_streams_the_job_output(bystander, tmp_path, capsys):
    got: list[tuple[float, str]] = []
    code = "import os, time; print('a', os.getcwd(), flush=True); time.sleep(3); print('b', flush=True)"
    out = ray_job_submit(bystander.dashboard_url, str(tmp_path), ["python", "-c", code], env=bystander.env,
                         on_line=lambda line: got.append((time.time(), line)))
    assert out.returncode == 0, out.stdout[-3000:]
    cwd = next(line.split(" ", 1)[1].strip() for _, line in got if line.startswith("a /"))
    arrived = {line.split(" ")[0].strip() + "\n": at for at, line in got}
    assert {"a\n", "b\n"} <= arrived.keys(), out.stdout[-3000:]
    # the job runs in Ray's copy of the working dir: a relative storage_path there is warned about
    assert job_package_warning(os.path.join(cwd, "data", "runs")) is not None, cwd
    assert job_package_warning(str(tmp_path / "data" / "runs")) is None
    assert arrived["b\n"] - arrived["a\n"] > 2.0, "the job's output was not streamed"
    assert any("succeeded" in line for _, line in got[-3:])

    failing = ray_job_submit(bystander.dashboard_url, str(tmp_path), ["python", "-c", "print('c'); exit(3)"],
                             env=bystander.env)
    assert failing.returncode != 0
    printed = capsys.readouterr().out  # the default sink: this process's stdout
    assert "c\n" in printed and "failed" in printed


def test_a_path_in_a_submitted_jobs_package_is_warned_about():
    pkg = "/tmp/ray/session_1/runtime_resources/working_dir_files/_ray_pkg_0123abcd"
    warning = job_package_warning(f"{pkg}/data/runs")
    assert warning and f"{pkg}/data/runs" in warning and "--set storage_path=" in warning
    assert job_package_warning(pkg) is not None
    for elsewhere in ("/home/me/vidray/data/runs", "s3://bucket/runs", f"{pkg}x/runs".replace("_ray_pkg_", "pkg_")):
        assert job_package_warning(elsewhere) is None


@pytest.mark.slow
def test_ray_imported_before_us_still_gets_a_token_cluster_it_can_use():
    code = ("import ray\n"  # before pipelines sets RAY_AUTH_MODE: Ray has cached 'disabled'
            "from ray._raylet import AuthenticationMode, get_authentication_mode\n"
            "from pipelines.cluster import init_ray\n"
            "init_ray(num_cpus=1)\n"
            "assert get_authentication_mode() == AuthenticationMode.TOKEN\n"
            "print('answer', ray.get(ray.remote(lambda: 42).remote()))\n")
    env = {k: v for k, v in os.environ.items() if not k.startswith("RAY_")}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=180,
                         cwd=Path(__file__).resolve().parents[2])
    assert out.returncode == 0 and "answer 42" in out.stdout, out.stderr[-3000:]
    assert "InvalidAuthToken" not in out.stderr
