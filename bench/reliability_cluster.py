"""A multi-node Ray cluster on one machine: a :class:`~pipelines.cluster.LocalHead` and worker nodes.

Each worker node is ``ray start --address <head> --block`` in its own session (process
group) and its own short temp dir, with every port explicit and free, its own CPUs and a
custom resource naming it (``vr_node_<i>: 1``), so that a test can place work on it and
kill it. Like :class:`LocalHead`, nothing found by name is ever signalled and ``ray stop``
is never run: :meth:`WorkerNode.stop` signals the node's own process group and the
processes that :meth:`WorkerNode.start` created; :meth:`WorkerNode.kill_raylet` SIGKILLs the
node's raylet alone (a node crash as the rest of the cluster sees it).

    with LocalCluster(head_cpus=0, worker_cpus=(2, 2)) as cluster:
        env = {**cluster.env, "RAY_ADDRESS": cluster.address}   # a driver's environment
        ...
        cluster.workers[0].kill_raylet()
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, Self

from pipelines.local_head import (
    LocalHead,
    _alive,
    _descendants,
    _free_port_range,
    _processes,
    _signal,
    _signal_group,
    _wait_gone,
    auth_token,
    free_ports,
    http_get,
)

NODE_RESOURCE = "vr_node_{}"  # custom resource that names worker node i (1-based)


def alive_nodes(dashboard_url: str, token: str | None) -> list[dict[str, Any]]:
    """The ALIVE nodes of a cluster, from its state API (``/api/v0/nodes``)."""
    status, body = http_get(f"{dashboard_url}/api/v0/nodes?limit=100&detail=true", token)
    if status != 200:
        return []
    rows = json.loads(body)["data"]["result"]["result"]
    return [r for r in rows if r.get("state") == "ALIVE"]


def alive_actors(dashboard_url: str, token: str | None) -> list[dict[str, Any]]:
    """The ALIVE actors of a cluster (class, name, node), from its state API (``/api/v0/actors``)."""
    query = "limit=10000&detail=true&filter_keys=state&filter_predicates=%3D&filter_values=ALIVE"
    status, body = http_get(f"{dashboard_url}/api/v0/actors?{query}", token)
    if status != 200:
        return []
    rows = json.loads(body)["data"]["result"]["result"]
    return [{"class_name": r.get("class_name"), "name": r.get("name"), "node_id": r.get("node_id")
             or (r.get("address") or {}).get("node_id") or (r.get("address") or {}).get("raylet_id")} for r in rows]


class WorkerNode:
    """One ``ray start --address ... --block`` worker node joined to a head on this machine.

    Attributes:
        index: 1-based; the node offers the custom resource ``vr_node_<index>: 1``.
        temp_dir: its ``--temp-dir`` (logs in ``session_latest/logs``), kept after :meth:`stop`;
            a restarted node gets a new one (``temp_dirs`` lists them all).
        node_id: its Ray node id (hex), known once :meth:`start` returned.
    """

    PORT_FLAGS = {"node_manager": "--node-manager-port", "object_manager": "--object-manager-port",
                  "dashboard_agent_listen": "--dashboard-agent-listen-port",
                  "dashboard_agent_grpc": "--dashboard-agent-grpc-port",
                  "runtime_env_agent": "--runtime-env-agent-port", "metrics_export": "--metrics-export-port"}

    def __init__(self, head: LocalHead, index: int, *, num_cpus: int, object_store_bytes: int = 300 * 2**20,
                 resources: Mapping[str, float] | None = None, worker_ports: int = 200,
                 startup_timeout_s: float = 120.0, stop_timeout_s: float = 30.0,
                 echo: Callable[[str], None] = print) -> None:
        self.head, self.index, self.num_cpus, self.echo = head, index, num_cpus, echo
        self.object_store_bytes, self.worker_ports = object_store_bytes, worker_ports
        self.resources = {NODE_RESOURCE.format(index): 1, **(resources or {})}
        self.startup_timeout_s, self.stop_timeout_s = startup_timeout_s, stop_timeout_s
        self.temp_dir: str | None = None
        self.temp_dirs: list[str] = []
        self.node_id: str | None = None
        self.ports: dict[str, int] = {}
        self._proc: subprocess.Popen | None = None

    @property
    def pid(self) -> int | None:
        """The pid of ``ray start`` (also its process-group id), while it runs."""
        return self._proc.pid if self._proc else None

    @property
    def log_path(self) -> Path:
        return Path(self.temp_dir) / "node.log"

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _command(self) -> list[str]:
        cmd = [self.head.ray_bin, "start", "--address", self.head.address, "--block", "--temp-dir", self.temp_dir,
               "--num-cpus", str(self.num_cpus), "--resources", json.dumps(self.resources),
               "--object-store-memory", str(self.object_store_bytes), "--disable-usage-stats",
               "--min-worker-port", str(self.ports["min_worker"]), "--max-worker-port", str(self.ports["max_worker"])]
        for name, flag in self.PORT_FLAGS.items():
            cmd += [flag, str(self.ports[name])]
        return cmd

    def start(self) -> Self:
        """Start the node and wait until the head lists it ALIVE; raises (node stopped) on failure."""
        if self._proc is not None:
            raise RuntimeError(f"worker node {self.index} already runs (pid {self._proc.pid})")
        ports = dict(zip(self.PORT_FLAGS, free_ports(len(self.PORT_FLAGS), set(self.head.ports.values()))))
        low, high = _free_port_range(self.worker_ports, set(ports.values()) | set(self.head.ports.values()))
        self.ports = {**ports, "min_worker": low, "max_worker": high}
        self.temp_dir = tempfile.mkdtemp(prefix="vw", dir="/tmp")  # short: Ray's socket paths < 108 bytes
        self.temp_dirs.append(self.temp_dir)
        with open(self.log_path, "ab") as out:
            env = {**self.head.env, "RAY_GRACEFUL_SHUTDOWN_DRAIN_TIMEOUT_S": "0"}
            self._proc = subprocess.Popen(self._command(), env=env, start_new_session=True, stdin=subprocess.DEVNULL,
                                          stdout=out, stderr=subprocess.STDOUT)
        try:
            self._wait_alive()
        except BaseException:
            self.stop()
            raise
        self.echo(f"started Ray worker node {self.index} ({self.num_cpus} CPUs, node {self.node_id[:12]}, "
                  f"temp dir {self.temp_dir})")
        return self

    def _wait_alive(self) -> None:
        token, key = auth_token(self.head.env), NODE_RESOURCE.format(self.index)
        deadline = time.time() + self.startup_timeout_s
        while time.time() < deadline:
            if self._proc.poll() is not None:
                raise RuntimeError(f"`ray start --address` exited with {self._proc.returncode}:\n"
                                   f"{self.log_path.read_text(errors='replace')[-3000:]}")
            for node in alive_nodes(self.head.dashboard_url, token):
                if key in (node.get("resources_total") or {}):
                    self.node_id = node["node_id"]
                    return
            time.sleep(1)
        raise RuntimeError(f"worker node {self.index} was not ALIVE within {self.startup_timeout_s:.0f}s:\n"
                           f"{self.log_path.read_text(errors='replace')[-3000:]}")

    def raylet_pid(self) -> int | None:
        """The pid of this node's raylet (a child of its ``ray start``), or None."""
        if self._proc is None:
            return None
        for pid, _ in _descendants(self._proc.pid):
            try:
                exe = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")[0]
            except OSError:
                continue
            if exe.endswith(b"/raylet"):
                return pid
        return None

    def kill_raylet(self) -> float:
        """SIGKILL this node's raylet; returns the time of the kill (``time.time()``).

        Raises:
            RuntimeError: the node has no raylet running.
        """
        pid = self.raylet_pid()
        if pid is None:
            raise RuntimeError(f"worker node {self.index} has no raylet")
        killed_at = time.time()
        os.kill(pid, signal.SIGKILL)
        self.echo(f"killed the raylet of worker node {self.index} (pid {pid})")
        return killed_at

    def stop(self) -> None:
        """SIGTERM the node's process group, SIGKILL what is left after ``stop_timeout_s`` (as LocalHead)."""
        proc, self._proc = self._proc, None
        if proc is None:
            return
        spawned = _descendants(proc.pid)
        _signal_group(proc.pid, signal.SIGTERM)
        if not _wait_gone(proc, spawned, self.stop_timeout_s):
            _signal_group(proc.pid, signal.SIGKILL)
            for pid in _alive(proc.pid, spawned) - {proc.pid}:
                _signal(pid, signal.SIGKILL)
            _wait_gone(proc, spawned, 10)
        self.echo(f"stopped Ray worker node {self.index} (process group {proc.pid}; logs kept in {self.temp_dir})")


class LocalCluster:
    """A :class:`LocalHead` and ``len(worker_cpus)`` :class:`WorkerNode` s; stops only what it started.

    Args:
        head_cpus: CPUs of the head (0: like the KubeRay head, only drivers and 0-CPU actors run there).
        worker_cpus: CPUs of each worker node.
        env: base environment of every node (credentials a job needs go here, never in a runtime env).
        keep_logs: keep the nodes' temp dirs after :meth:`stop` (else they are deleted).
    """

    def __init__(self, *, head_cpus: int = 0, worker_cpus: Sequence[int] = (2, 2),
                 env: Mapping[str, str] | None = None, keep_logs: bool = False,
                 echo: Callable[[str], None] = print) -> None:
        self.head = LocalHead(num_cpus=head_cpus, env=env, echo=echo)
        self.worker_cpus, self.keep_logs, self.echo = tuple(worker_cpus), keep_logs, echo
        self.workers: list[WorkerNode] = []

    @property
    def address(self) -> str:
        return self.head.address

    @property
    def dashboard_url(self) -> str:
        return self.head.dashboard_url

    @property
    def env(self) -> dict[str, str]:
        """The environment for a driver or ``ray job submit`` (token auth on, no ``RAY_ADDRESS``)."""
        return dict(self.head.env)

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def start(self) -> Self:
        self.head.start()
        try:
            for i, cpus in enumerate(self.worker_cpus, start=1):
                self.workers.append(WorkerNode(self.head, i, num_cpus=cpus, echo=self.echo).start())
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self) -> None:
        """Worker nodes first, then the head; temp dirs deleted unless ``keep_logs``."""
        for node in reversed(self.workers):
            node.stop()
        self.head.stop()
        if not self.keep_logs:
            for d in [d for n in self.workers for d in n.temp_dirs] + [self.head.temp_dir]:
                if d:
                    shutil.rmtree(d, ignore_errors=True)

    def node_label(self, node_id: str) -> str:
        """``head`` or ``worker<i>`` for a Ray node id of this cluster (``?`` when unknown)."""
        for node in self.workers:
            if node.node_id == node_id:
                return f"worker{node.index}"
        return "head" if node_id else "?"


def listening_sockets(pids: set[int]) -> list[tuple[str, int]]:
    """``(address, port)`` of every TCP socket in LISTEN state owned by one of ``pids`` (Linux /proc).

    Addresses are dotted IPv4 (``0.0.0.0`` = every interface) or ``[::]``-style IPv6.
    """
    inodes: set[str] = set()
    for pid in pids:
        try:
            for fd in os.listdir(f"/proc/{pid}/fd"):
                target = os.readlink(f"/proc/{pid}/fd/{fd}")
                if target.startswith("socket:["):
                    inodes.add(target[8:-1])
        except OSError:
            continue
    found = []
    for table, v6 in (("/proc/net/tcp", False), ("/proc/net/tcp6", True)):
        for row in Path(table).read_text().splitlines()[1:]:
            cols = row.split()
            if cols[3] != "0A" or cols[9] not in inodes:
                continue
            addr_hex, port_hex = cols[1].rsplit(":", 1)
            found.append((_address(addr_hex, v6), int(port_hex, 16)))
    return sorted(set(found))


def _address(hex_addr: str, v6: bool) -> str:
    if not v6:
        return ".".join(str(int(hex_addr[i:i + 2], 16)) for i in (6, 4, 2, 0))
    words = [hex_addr[i:i + 8] for i in range(0, 32, 8)]
    raw = b"".join(bytes.fromhex(w)[::-1] for w in words)
    import ipaddress

    return f"[{ipaddress.IPv6Address(raw)}]"


def process_tree(pid: int) -> set[int]:
    """``pid`` and every live process below it."""
    return {pid} | {p for p, _ in _descendants(pid)} if _processes() is not None else {pid}


def grep_files(root: str | Path, needles: Sequence[str]) -> dict[str, list[str]]:
    """``needle -> [files under root containing it]`` (binary-safe)."""
    hits: dict[str, list[str]] = {n: [] for n in needles}
    encoded = [(n, n.encode()) for n in needles]
    for path in Path(root).rglob("*"):
        if not path.is_file() or path.is_symlink():
            continue
        try:
            data = path.read_bytes()
        except OSError:
            continue
        for needle, raw in encoded:
            if raw in data:
                hits[needle].append(str(path))
    return hits


