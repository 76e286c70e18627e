"""Loopback services for the reliability scenarios: an S3 server (moto), an MLflow server, a TCP switch.

Each server runs in its own session (process group) on a free 127.0.0.1 port and is stopped by
that group only. :class:`TcpSwitch` forwards a port to another and can be turned off and on: a
controllable outage of whatever is behind it (connections refused while off, open ones cut).
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Self

from pipelines.local_head import free_port, http_ok
from pipelines.tracking.store import MLFLOW_SERVER_ENV

BIN = Path(sys.executable).parent


def _wait_http(url: str, proc: subprocess.Popen, timeout: float, what: str, log: Path) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{what} exited with {proc.returncode}; see {log}")
        if http_ok(url, timeout=2):
            return
        time.sleep(0.3)
    raise RuntimeError(f"{what} did not answer {url} within {timeout:.0f}s; see {log}")


class _Server:
    """A subprocess in its own session, logging to ``log``, listening on a free loopback port;
    stopped by its process group."""

    def __init__(self, workdir: Path) -> None:
        self.proc: subprocess.Popen | None = None
        self.workdir, self.port = Path(workdir), free_port()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def _spawn(self, cmd: list[str], log: Path, env: dict[str, str] | None = None) -> None:
        log.parent.mkdir(parents=True, exist_ok=True)
        with open(log, "ab") as out:
            self.proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                         env={**os.environ, **(env or {})}, start_new_session=True, cwd=log.parent)

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def start(self) -> Self:
        raise NotImplementedError

    def stop(self) -> None:
        proc, self.proc = self.proc, None
        if proc is None or proc.poll() is not None:
            return
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


class MotoS3(_Server):
    """``moto_server`` on 127.0.0.1 (S3 in memory): ``url``; credentials are anything."""

    def start(self) -> Self:
        log = self.workdir / "moto.log"
        self._spawn([str(BIN / "moto_server"), "-H", "127.0.0.1", "-p", str(self.port)], log)
        _wait_http(f"{self.url}/moto-api/", self.proc, 60, "moto_server", log)
        return self

    def create_bucket(self, name: str) -> str:
        """Create ``name``; returns ``s3://name``."""
        import boto3

        boto3.client("s3", endpoint_url=self.url, region_name="us-east-1", aws_access_key_id="admin",
                     aws_secret_access_key="admin").create_bucket(Bucket=name)
        return f"s3://{name}"


class MlflowServer(_Server):
    """``mlflow server`` with a sqlite backend store and a local artifact root (clients write artifacts directly)."""

    @property
    def db_path(self) -> Path:
        return self.workdir / "mlflow.db"

    @property
    def artifact_root(self) -> Path:
        return self.workdir / "artifacts"

    def start(self) -> Self:
        return self.launch().wait_ready()

    def launch(self) -> Self:
        """Start the server without waiting for it (its ~10 s boot can overlap other start-ups)."""
        self.workdir.mkdir(parents=True, exist_ok=True)
        self._spawn([sys.executable, "-m", "mlflow", "server", "--backend-store-uri", f"sqlite:///{self.db_path}",
                     "--default-artifact-root", str(self.artifact_root), "--host", "127.0.0.1",
                     "--port", str(self.port), "--workers", "1", "--no-serve-artifacts"], self.workdir / "server.log",
                    env=MLFLOW_SERVER_ENV)  # no server-side job runner: its pollers would be measured
        return self

    def wait_ready(self) -> Self:
        """Wait until ``/health`` answers (raises if the server exited or took over 240 s)."""
        _wait_http(f"{self.url}/health", self.proc, 240, "mlflow server", self.workdir / "server.log")
        return self


class TcpSwitch:
    """``127.0.0.1:port`` forwarded to ``127.0.0.1:upstream_port`` while on; refused while off.

    :meth:`off` closes the listening socket and cuts every open connection, as a server
    that goes away does; :meth:`on` listens on the same port again.
    """

    def __init__(self, upstream_port: int) -> None:
        self.upstream_port, self.port = upstream_port, free_port()
        self._server: socket.socket | None = None
        self._conns: list[socket.socket] = []
        self._lock = threading.Lock()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def is_on(self) -> bool:
        return self._server is not None

    def on(self) -> None:
        if self._server is not None:
            return
        server = socket.socket()
        server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        server.bind(("127.0.0.1", self.port))
        server.listen(64)
        self._server = server
        threading.Thread(target=self._accept, args=(server,), daemon=True).start()

    def off(self) -> None:
        server, self._server = self._server, None
        if server is None:
            return
        server.close()
        with self._lock:
            conns, self._conns = self._conns, []
        for conn in conns:
            try:
                conn.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            conn.close()

    def _accept(self, server: socket.socket) -> None:
        while True:
            try:
                client, _ = server.accept()
            except OSError:
                return
            try:
                upstream = socket.create_connection(("127.0.0.1", self.upstream_port), timeout=10)
                upstream.settimeout(None)
            except OSError:
                client.close()
                continue
            with self._lock:
                self._conns += [client, upstream]
            for a, b in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pump, args=(a, b), daemon=True).start()

    @staticmethod
    def _pump(src: socket.socket, dst: socket.socket) -> None:
        try:
            while data := src.recv(65536):
                dst.sendall(data)
        except OSError:
            pass
        finally:
            for s in (src, dst):
                try:
                    s.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass
