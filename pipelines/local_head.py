"""A private Ray head node on this machine (:class:`LocalHead`) and the process bookkeeping that stops it.

Other people's clusters are never touched: :class:`LocalHead` starts a head node on free
loopback ports in its own temp dir and process group, and stops only that group and the
processes that left it (Ray workers), never with Ray's machine-wide stop command. Split out of
:mod:`pipelines.cluster`, which re-exports :class:`LocalHead`, :class:`PortInUseError`
and :func:`port_in_use`.
"""

from __future__ import annotations

import logging
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import ClassVar, Self

log = logging.getLogger(__name__)

# How jobs/demo.py lets a user choose the ports a LocalHead is asked for (named in PortInUseError).
PORT_OPTIONS = {"gcs": "--ray-port or VIDRAY_RAY_PORT", "dashboard": "--dashboard-port or VIDRAY_DASHBOARD_PORT"}


class PortInUseError(RuntimeError):
    """A port that the caller asked :class:`LocalHead` for is already bound on this machine."""


# Ports a head or node picks for itself, below the kernel's ephemeral range and above the
# worker ports of a `ray start` with Ray's defaults (10002-19999): its named ports (GCS,
# dashboard, agents, metrics) from 20000 up to the worker band, its workers' ranges above.
_LOW_PORT = 20000
_WORKER_BAND = 24000


def _ephemeral_start() -> int:
    """The first port of the kernel's ephemeral range (Linux: ``ip_local_port_range``; 32768 elsewhere)."""
    try:
        return int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return 32768


def free_port(avoid: set[int] | frozenset[int] = frozenset()) -> int:
    """A port free now, not in ``avoid``, from 20000 up to the worker band (below the kernel's
    ephemeral range, so no outgoing connection takes it before the server binds it; a kernel
    pick once did, and a head's dashboard agent failed to bind its metrics port). The kernel's
    pick where that range starts too low."""
    import random

    high = min(_WORKER_BAND, _ephemeral_start())
    for _ in range(200 if high - _LOW_PORT > 1000 else 0):
        port = random.randrange(_LOW_PORT, high)
        if port not in avoid and not port_in_use(port):
            return port
    while True:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        if port not in avoid:
            return port


def free_ports(n: int, avoid: set[int] | frozenset[int] = frozenset()) -> list[int]:
    """``n`` distinct ports of :func:`free_port`, none in ``avoid``."""
    ports: list[int] = []
    for _ in range(n):
        ports.append(free_port({*avoid, *ports}))
    return ports


def port_in_use(port: int) -> bool:
    """Whether some socket is bound (or listening) on ``port`` of this machine (IPv4, any address).

    SO_REUSEADDR, as Ray's servers use it: a port left in TIME_WAIT by a closed server is free.
    """
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(("0.0.0.0", port))
        except OSError:
            return True
    return False


def _free_port_range(size: int, avoid: set[int]) -> tuple[int, int]:
    """``size`` consecutive free ports in the worker band (24000 up to the kernel's ephemeral
    range), so that two heads get different worker ports and neither the kernel's picks nor
    any head's named ports (:func:`free_port`) land in them."""
    import random

    high = max(_WORKER_BAND + 2 * size, min(_ephemeral_start(), 32768))
    for _ in range(50):
        low = random.randrange(_WORKER_BAND, high - size)
        ports = range(low, low + size)
        if not avoid.intersection(ports) and not any(port_in_use(p) for p in ports):
            return low, low + size - 1
    raise RuntimeError(f"found no {size} consecutive free ports in {_WORKER_BAND}-{high} for Ray workers")


def _processes() -> dict[int, tuple[int, int, str, int]] | None:
    """``pid -> (ppid, pgid, state, start time)`` from /proc; None where there is no /proc (not Linux)."""
    if not Path("/proc/self/stat").exists():
        return None
    table = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            f = stat.read_text().rsplit(")", 1)[1].split()  # after "pid (comm)": state ppid pgrp ...
            table[int(stat.parent.name)] = (int(f[1]), int(f[2]), f[0], int(f[19]))
        except (OSError, IndexError, ValueError):
            continue
    return table


def _descendants(root: int) -> set[tuple[int, int]]:
    """``(pid, start time)`` of every live process below ``root``, whatever its group
    (Ray workers leave the head's process group)."""
    table = _processes() or {}
    found, todo = set(), [root]
    while todo:
        parent = todo.pop()
        for pid, (ppid, _, state, started) in table.items():
            if ppid == parent and state != "Z" and (pid, started) not in found:
                found.add((pid, started))
                todo.append(pid)
    return found


def _alive(pgid: int, members: set[tuple[int, int]]) -> set[int]:
    """The live (non-zombie) pids of process group ``pgid`` and of ``members`` (same start time: no reused pid)."""
    table = _processes()
    if table is None:  # not Linux: only the group can be checked
        try:
            os.killpg(pgid, 0)
        except ProcessLookupError:
            return set()
        return {pgid}
    group = {pid for pid, (_, pg, state, _) in table.items() if pg == pgid and state != "Z"}
    return group | {pid for pid, started in members
                    if pid in table and table[pid][3] == started and table[pid][2] != "Z"}


def auth_token(env: Mapping[str, str]) -> str | None:
    """The Ray auth token a client with ``env`` sends, in Ray's order: ``RAY_AUTH_TOKEN``, the file at
    ``RAY_AUTH_TOKEN_PATH``, else ``~/.ray/auth_token``; None when there is none."""
    if env.get("RAY_AUTH_TOKEN"):
        return env["RAY_AUTH_TOKEN"].strip()
    path = Path(env.get("RAY_AUTH_TOKEN_PATH") or Path(env.get("HOME", str(Path.home()))) / ".ray" / "auth_token")
    return path.read_text().strip() if path.is_file() else None


def http_get(url: str, token: str | None = None, timeout: float = 10.0) -> tuple[int, str]:
    """``GET url`` on a local cluster (with ``Authorization: Bearer token`` when given, never via a
    proxy): ``(status, body)``; an HTTP error is its status, a refused connection raises ``OSError``."""
    import urllib.error
    import urllib.request

    headers = {"Authorization": f"Bearer {token}"} if token else {}
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    try:
        with opener.open(urllib.request.Request(url, headers=headers), timeout=timeout) as r:
            return r.status, r.read().decode(errors="replace")
    except urllib.error.HTTPError as err:
        return err.code, err.read().decode(errors="replace")


def http_ok(url: str, token: str | None = None, timeout: float = 10.0) -> bool:
    """Whether ``GET url`` on a local service answers 200 (see :func:`http_get`); a refused or
    reset connection, a half-up server and any other status are ``False``."""
    import http.client

    try:
        return http_get(url, token, timeout)[0] == 200
    except (OSError, http.client.HTTPException):
        return False


def job_server_answers(dashboard_url: str, token: str | None) -> bool:
    """Whether the job API answers ``GET /api/jobs/`` with 200, as ``ray job list`` needs it to
    (sent directly: a ``ray`` CLI start costs ~2.5 s of CPU, against the head's own boot)."""
    return http_ok(f"{dashboard_url}/api/jobs/", token)


class LocalHead:
    """A private Ray head node on this machine that never disturbs other Ray clusters.

    ``ray start --head --block`` runs in its own session (process group) with its own short
    temp dir (``/tmp/vrXXXXXXXX``: Ray's socket paths must stay under 108 bytes) and
    explicit ports, never Ray's defaults: GCS, dashboard (bound to 127.0.0.1), dashboard agent
    listen/grpc, runtime-env agent, metrics export, Ray client server, a worker-port range,
    and the Prometheus ports of the dashboard and the autoscaler, which Ray reads only from
    its processes' environment (``DASHBOARD_METRIC_PORT``, ``AUTOSCALER_METRIC_PORT``;
    defaults 44227 and 44217, on which a second head would collide with the first). Ports
    are free ones unless ``gcs_port`` / ``dashboard_port`` ask for specific ones; a requested
    port already in use raises :class:`PortInUseError` before anything starts. Token
    authentication is on (``RAY_AUTH_MODE=token``; ``ray get-auth-token --generate`` makes
    ``~/.ray/auth_token`` if there is none).

    :meth:`stop` signals only that process group (SIGTERM, then SIGKILL after
    ``stop_timeout_s``; Ray workers, which leave the group, die with their raylet) and
    deletes nothing: the temp dir keeps the logs. Use it as a context manager, or call
    :meth:`start` / :meth:`stop`. A head that is never stopped outlives this process
    (``kill -- -{pid}`` stops it).

    Attributes:
        env: the environment to run ``ray job submit --address {dashboard_url}`` (and the head)
            with: the caller's, without ``RAY_ADDRESS``, with token auth and this venv on PATH.
        temp_dir: the head's ``--temp-dir`` (set by :meth:`start`).
        ports: the ports by name (``gcs``, ``dashboard``, ...; set by :meth:`start`).
    """

    PORT_FLAGS: ClassVar[dict[str, str]] = {"gcs": "--port", "dashboard": "--dashboard-port",
                  "dashboard_agent_listen": "--dashboard-agent-listen-port",
                  "dashboard_agent_grpc": "--dashboard-agent-grpc-port",
                  "runtime_env_agent": "--runtime-env-agent-port", "metrics_export": "--metrics-export-port",
                  "ray_client_server": "--ray-client-server-port"}
    PORT_ENV: ClassVar[dict[str, str]] = {"dashboard_metric": "DASHBOARD_METRIC_PORT",
                                          "autoscaler_metric": "AUTOSCALER_METRIC_PORT"}

    def __init__(self, *, gcs_port: int | None = None, dashboard_port: int | None = None,
                 num_cpus: int | None = None, env: Mapping[str, str] | None = None, worker_ports: int = 500,
                 startup_timeout_s: float = 120.0, stop_timeout_s: float = 30.0,
                 echo: Callable[[str], None] = print) -> None:
        """Configure the head; nothing starts before :meth:`start` (or ``with``).

        Args:
            gcs_port / dashboard_port: ports to use instead of free ones (e.g. 6379 / 8265).
            num_cpus: CPUs the head offers (default: Ray's count of this machine's).
            env: base environment (default ``os.environ``).
            worker_ports: size of the worker-port range.
            echo: where the one-line start / stop messages go.
        """
        self.requested = {k: v for k, v in (("gcs", gcs_port), ("dashboard", dashboard_port)) if v}
        self.num_cpus, self.worker_ports, self.echo = num_cpus, worker_ports, echo
        self.startup_timeout_s, self.stop_timeout_s = startup_timeout_s, stop_timeout_s
        self.env = {k: v for k, v in (os.environ if env is None else env).items() if k != "RAY_ADDRESS"}
        self.env.setdefault("RAY_AUTH_MODE", "token")
        venv_bin = str(Path(sys.executable).parent)
        self.env["PATH"] = f"{venv_bin}{os.pathsep}{self.env.get('PATH', '')}"
        self.ray_bin = str(Path(venv_bin) / "ray")
        self.ports: dict[str, int] = {}
        self.temp_dir: str | None = None
        self._proc: subprocess.Popen | None = None

    @property
    def address(self) -> str:
        """The GCS address, ``127.0.0.1:<port>`` (for ``ray.init`` / ``RAY_ADDRESS``)."""
        return f"127.0.0.1:{self._port('gcs')}"

    @property
    def dashboard_url(self) -> str:
        """``http://127.0.0.1:<port>``, the address for ``ray job submit`` / ``ray job list``."""
        return f"http://127.0.0.1:{self._port('dashboard')}"

    @property
    def pid(self) -> int | None:
        """The pid of ``ray start`` (also the process-group id), while it runs."""
        return self._proc.pid if self._proc else None

    @property
    def log_path(self) -> Path:
        """The output of ``ray start --block`` (in :attr:`temp_dir`)."""
        if self.temp_dir is None:
            raise RuntimeError("the head is not started")
        return Path(self.temp_dir) / "head.log"

    def _port(self, name: str) -> int:
        if name not in self.ports:
            raise RuntimeError("the head is not started")
        return self.ports[name]

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def start(self) -> Self:
        """Start the head and wait until its job server answers; raises (head stopped) on failure."""
        if self._proc is not None:
            raise RuntimeError(f"this head already runs (pid {self._proc.pid})")
        self.ports = self._pick_ports()
        self.temp_dir = tempfile.mkdtemp(prefix="vr", dir="/tmp")
        if self.env.get("RAY_AUTH_MODE") == "token" and auth_token(self.env) is None:
            subprocess.run([self.ray_bin, "get-auth-token", "--generate"], env=self.env, capture_output=True,
                           check=False)
        with open(self.log_path, "ab") as out:  # the child keeps its own descriptor
            # No drain on SIGTERM: it would wait (up to 30 s) on a GCS that the group signal also stops.
            env = {**self.env, "RAY_GRACEFUL_SHUTDOWN_DRAIN_TIMEOUT_S": "0",
                   **{var: str(self.ports[name]) for name, var in self.PORT_ENV.items()}}
            self._proc = subprocess.Popen(self._command(), env=env, start_new_session=True,
                                          stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT)
        try:
            self._wait_ready()
        except BaseException:
            self.stop()
            raise
        self.echo(f"started a Ray head at {self.address} (temp dir {self.temp_dir}, dashboard {self.dashboard_url})")
        return self

    def _pick_ports(self) -> dict[str, int]:
        """The requested ports (checked free) and free ones for the rest."""
        for name, port in self.requested.items():
            if port_in_use(port):
                raise PortInUseError(
                    f"port {port} (Ray {name}) is already in use on this machine, probably by another Ray "
                    f"cluster. vidray starts its own Ray cluster and never stops anyone else's: choose another "
                    f"{name} port ({PORT_OPTIONS[name]}), or none to use a free one.")
        ports = dict(self.requested)
        missing = [name for name in (*self.PORT_FLAGS, *self.PORT_ENV) if name not in ports]
        ports.update(zip(missing, free_ports(len(missing), set(ports.values()))))
        low, high = _free_port_range(self.worker_ports, set(ports.values()))
        return {**ports, "min_worker": low, "max_worker": high}

    def _command(self) -> list[str]:
        """``ray start --head --block`` with every port explicit (none of Ray's defaults)."""
        cmd = [self.ray_bin, "start", "--head", "--block", "--dashboard-host", "127.0.0.1",
               "--include-dashboard", "true", "--temp-dir", str(self.temp_dir), "--disable-usage-stats",
               "--min-worker-port", str(self.ports["min_worker"]), "--max-worker-port", str(self.ports["max_worker"])]
        for name, flag in self.PORT_FLAGS.items():
            cmd += [flag, str(self.ports[name])]
        if self.num_cpus is not None:
            cmd += ["--num-cpus", str(self.num_cpus)]
        return cmd

    def _wait_ready(self) -> None:
        """Poll the job API (what ``ray job list`` asks, with this head's token) until it answers."""
        token = auth_token(self.env) if self.env.get("RAY_AUTH_MODE") == "token" else None
        deadline = time.time() + self.startup_timeout_s
        while time.time() < deadline:
            if self._proc.poll() is not None:
                raise RuntimeError(f"`ray start --head` exited with {self._proc.returncode}\n{self._log_tail()}")
            if job_server_answers(self.dashboard_url, token):
                return
            time.sleep(0.25)
        raise RuntimeError(f"the Ray head's job API ({self.dashboard_url}/api/jobs/) did not answer within "
                           f"{self.startup_timeout_s:.0f}s\n{self._log_tail()}")

    def _log_tail(self, lines: int = 40) -> str:
        try:
            text = self.log_path.read_text(errors="replace").splitlines()[-lines:]
        except OSError:
            text = []
        return "\n".join([f"--- last lines of {self.log_path} (session logs: {self.temp_dir}/session_latest/logs)",
                          *text])

    def stop(self) -> None:
        """SIGTERM this head's process group, wait up to ``stop_timeout_s``, then SIGKILL what is left.

        Touches only processes that :meth:`start` created: the ``ray start`` process group, and
        the processes below it that left the group (Ray workers; they exit with their raylet
        and are killed only if they outlive the timeout). Deletes nothing; a no-op when not running.
        """
        proc, self._proc = self._proc, None
        if proc is None:
            return
        pgid = proc.pid  # start_new_session: ray start leads its own group
        spawned = _descendants(pgid)
        _signal_group(pgid, signal.SIGTERM)
        if not _wait_gone(proc, spawned, self.stop_timeout_s):
            log.warning("the Ray head (process group %s) did not stop in %ss; killing it", pgid, self.stop_timeout_s)
            _signal_group(pgid, signal.SIGKILL)
            for pid in _alive(pgid, spawned) - {pgid}:
                _signal(pid, signal.SIGKILL)
            _wait_gone(proc, spawned, 10)
        self.echo(f"stopped the Ray head at {self.address} (process group {pgid}; logs kept in {self.temp_dir})")


def _signal_group(pgid: int, sig: signal.Signals) -> None:
    try:
        os.killpg(pgid, sig)
    except ProcessLookupError:
        pass


def _signal(pid: int, sig: signal.Signals) -> None:
    try:
        os.kill(pid, sig)
    except ProcessLookupError:
        pass


def _wait_gone(proc: subprocess.Popen, spawned: set[tuple[int, int]], timeout: float) -> bool:
    """Reap ``proc``, then wait until its group and ``spawned`` are gone; whether they went in ``timeout``."""
    deadline = time.time() + timeout
    try:
        proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        return False
    while _alive(proc.pid, spawned):
        if time.time() > deadline:
            return False
        time.sleep(0.2)
    return True
