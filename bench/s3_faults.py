"""A fault-injecting HTTP proxy in front of an S3 endpoint (moto, MinIO): object-storage faults on demand.

    proxy = FaultProxy("http://127.0.0.1:5000", rate=0.1, seed=0).start()
    env["AWS_ENDPOINT_URL"] = proxy.url          # clients talk to the proxy
    ...
    proxy.stats()   # {"requests": ..., "faults": {"500": ..}, "retried_faults": .., ...}

Each request is read whole, then, with probability ``rate`` (drawn from a seeded RNG), one of
the fault ``kinds`` replaces or delays it:

* ``500``: ``500 InternalError`` (an S3 XML error body), the upstream never sees the request;
* ``503``: ``503 SlowDown``, S3's throttling answer;
* ``reset``: the connection is reset (RST, SO_LINGER 0) without any response;
* ``stall``: the request waits ``stall_s`` seconds, then is forwarded normally.

Everything else is forwarded to the upstream and its response returned byte for byte. The
proxy counts requests (by method), faults (by kind) and *retried faults*: a failed request
(500, 503, reset) whose method, path and ``Range`` are seen again later, i.e. the client
retried it. ``unretried_faults`` are failures that no later request repeated: a client
gave up on them, or the request was not needed again.
"""

from __future__ import annotations

import collections
import http.client
import random
import socket
import struct
import threading
import time
import urllib.parse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Self

KINDS = ("500", "503", "reset", "stall")
_HOP = {"connection", "keep-alive", "proxy-authenticate", "proxy-authorization", "te", "trailer",
        "transfer-encoding", "upgrade"}
_ERRORS = {"500": (500, "InternalError", "We encountered an internal error. Please try again."),
           "503": (503, "SlowDown", "Please reduce your request rate.")}


class FaultProxy:
    """A threaded HTTP/1.1 proxy on 127.0.0.1 injecting S3 faults at ``rate`` (see the module docstring).

    Args:
        upstream: ``http://host:port`` of the real endpoint.
        rate: probability that a request gets a fault (can be changed while running: ``proxy.rate = x``).
        kinds: fault kinds drawn uniformly.
        stall_s: the delay of a ``stall``.
        seed: the RNG seed (the sequence of draws; which request gets a fault depends on arrival order).
    """

    def __init__(self, upstream: str, *, rate: float = 0.0, kinds: tuple[str, ...] = KINDS, stall_s: float = 2.0,
                 seed: int = 0) -> None:
        unknown = set(kinds) - set(KINDS)
        if unknown:
            raise ValueError(f"unknown fault kinds {sorted(unknown)}; choose from {KINDS}")
        parsed = urllib.parse.urlsplit(upstream)
        self.upstream = (parsed.hostname, parsed.port or 80)
        self.rate, self.kinds, self.stall_s = rate, tuple(kinds), stall_s
        self._rng = random.Random(seed)
        self._lock = threading.Lock()
        self._server: ThreadingHTTPServer | None = None
        self.reset_counts()

    @property
    def url(self) -> str:
        if self._server is None:
            raise RuntimeError("the proxy is not started")
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    def reset_counts(self) -> None:
        """Zero every counter (e.g. between a baseline and a faulty run)."""
        with getattr(self, "_lock", threading.Lock()):
            self._requests: collections.Counter = collections.Counter()
            self._faults: collections.Counter = collections.Counter()
            self._pending: collections.Counter = collections.Counter()  # failed keys not yet retried
            self._retried = 0
            self._upstream_errors = 0

    def stats(self) -> dict[str, Any]:
        """Requests (total and by method), faults by kind, retried and unretried failures."""
        with self._lock:
            failed = sum(n for k, n in self._faults.items() if k != "stall")
            return {"requests": sum(self._requests.values()), "requests_by_method": dict(self._requests),
                    "faults": sum(self._faults.values()), "faults_by_kind": dict(self._faults),
                    "failed_requests": failed, "retried_faults": self._retried,
                    "unretried_faults": sum(self._pending.values()), "upstream_errors": self._upstream_errors,
                    "rate": self.rate, "stall_s": self.stall_s}

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def start(self) -> Self:
        proxy = self

        class Handler(_Handler):
            owner = proxy

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        threading.Thread(target=self._server.serve_forever, name="s3-fault-proxy", daemon=True).start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def _draw(self, key: tuple[str, str, str], method: str) -> str | None:
        """Count the request and decide its fault (None: forward it)."""
        with self._lock:
            self._requests[method] += 1
            if self._pending[key]:
                self._retried += 1
                self._pending[key] -= 1
                if not self._pending[key]:
                    del self._pending[key]
            if self.rate <= 0 or self._rng.random() >= self.rate:
                return None
            kind = self._rng.choice(self.kinds)
            self._faults[kind] += 1
            if kind != "stall":
                self._pending[key] += 1
            return kind

    def _forward(self, method: str, path: str, headers: dict[str, str], body: bytes
                 ) -> tuple[int, list[tuple[str, str]], bytes]:
        conn = http.client.HTTPConnection(*self.upstream, timeout=120)
        try:
            conn.request(method, path, body=body if body or method in ("PUT", "POST") else None, headers=headers)
            resp = conn.getresponse()
            return resp.status, resp.getheaders(), resp.read()
        finally:
            conn.close()


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    owner: FaultProxy

    def log_message(self, *args: object) -> None:  # quiet: the counters say what happened
        pass

    def _read_body(self) -> bytes:
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            chunks = []
            while True:
                size = int(self.rfile.readline().split(b";")[0].strip() or b"0", 16)
                if size == 0:
                    while self.rfile.readline() not in (b"\r\n", b"\n", b""):  # trailers
                        pass
                    return b"".join(chunks)
                chunks.append(self.rfile.read(size))
                self.rfile.readline()
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length else b""

    def _handle(self) -> None:
        proxy, method = self.owner, self.command
        body = self._read_body()
        kind = proxy._draw((method, self.path, self.headers.get("Range", "")), method)
        if kind == "reset":
            self.close_connection = True
            self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            self.connection.close()  # RST, no response
            return
        if kind in _ERRORS:
            status, code, message = _ERRORS[kind]
            xml = (f'<?xml version="1.0" encoding="UTF-8"?>\n<Error><Code>{code}</Code><Message>{message}'
                   f'</Message><RequestId>vidray-fault</RequestId></Error>').encode()
            self._reply(status, [("Content-Type", "application/xml")], xml)
            return
        if kind == "stall":
            time.sleep(proxy.stall_s)
        headers = {k: v for k, v in self.headers.items() if k.lower() not in _HOP}
        if body or method in ("PUT", "POST"):
            headers["Content-Length"] = str(len(body))
        try:
            status, resp_headers, data = proxy._forward(method, self.path, headers, body)
        except OSError as exc:
            with proxy._lock:
                proxy._upstream_errors += 1
            self._reply(502, [("Content-Type", "text/plain")], f"upstream error: {exc}".encode())
            return
        self._reply(status, resp_headers, data)

    def _reply(self, status: int, headers: list[tuple[str, str]], data: bytes) -> None:
        self.send_response_only(status)
        keep_length = self.command == "HEAD"  # a HEAD answer describes the object; it has no body
        for key, value in headers:
            low = key.lower()
            if low in _HOP or (low == "content-length" and not keep_length):
                continue
            self.send_header(key, value)
        if not keep_length:
            self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(data)

    do_GET = do_PUT = do_POST = do_HEAD = do_DELETE = _handle
