"""Object storage through fsspec URLs: local paths, ``file://``, ``s3://`` and ``memory://``.

Every read and write of the project goes through this module, so one place decides
how S3 is configured and how transient errors are retried.

S3 settings come only from the standard AWS variables, read when a filesystem is made:
``AWS_ENDPOINT_URL_S3`` (or ``AWS_ENDPOINT_URL``) for MinIO / a loopback test server,
``AWS_REGION`` (or ``AWS_DEFAULT_REGION``), and the credentials, which botocore reads
itself (``AWS_ACCESS_KEY_ID``/``AWS_SECRET_ACCESS_KEY``, profiles, instance roles).
Credentials are never passed through this module's arguments, so they cannot end up
in a repr, a log line or an MLflow param.

Large objects are read through seekable file objects with ranged GETs and a bounded
read-ahead cache, never downloaded whole.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import logging
import os
import posixpath
import random
import tempfile
import time
import uuid
from typing import Any, Callable, Iterator, TypeVar

import fsspec

log = logging.getLogger(__name__)
T = TypeVar("T")

READ_BLOCK_SIZE = 4 * 2**20  # bytes per ranged GET for seekable reads
HASH_CHUNK = 8 * 2**20

# Error codes S3-compatible services use for throttling and passing faults.
_TRANSIENT_S3_CODES = {
    "SlowDown", "Throttling", "ThrottlingException", "RequestTimeout", "RequestTimeTooSkewed",
    "InternalError", "ServiceUnavailable", "503", "500", "502", "504",
}
_TRANSIENT_ERRNOS = {errno.ECONNRESET, errno.ECONNREFUSED, errno.ETIMEDOUT, errno.EPIPE, errno.EAGAIN}


def protocol(url: str) -> str:
    """The URL's scheme: ``file`` for plain paths."""
    return url.split("://", 1)[0] if "://" in url else "file"


def s3_options() -> dict[str, Any]:
    """s3fs keyword arguments from the environment (no credentials in them)."""
    client_kwargs: dict[str, Any] = {}
    endpoint = os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL")
    if endpoint:
        client_kwargs["endpoint_url"] = endpoint
    region = os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION")
    if region:
        client_kwargs["region_name"] = region
    return {
        "client_kwargs": client_kwargs,
        # botocore's own retries handle throttling inside one call; retry() below
        # handles failures that surface to us (connection resets, timeouts).
        "config_kwargs": {"retries": {"max_attempts": 5, "mode": "adaptive"},
                          "connect_timeout": 10, "read_timeout": 60},
        "default_block_size": READ_BLOCK_SIZE,
        "use_listings_cache": False,  # a re-run must see what the last run wrote
    }


def get_fs(url: str) -> tuple[fsspec.AbstractFileSystem, str]:
    """The filesystem for ``url`` and the path inside it."""
    options = s3_options() if protocol(url) in ("s3", "s3a") else {}
    return fsspec.core.url_to_fs(url, **options)


def absolute(url: str) -> str:
    """A local path made absolute (so that it means the same in any working directory); URLs kept."""
    if protocol(url) != "file" or os.path.isabs(url) or url.startswith("file://"):
        return url
    return os.path.abspath(url)


def ray_storage(url: str) -> tuple[str, Any]:
    """``(path, pyarrow filesystem or None)``: a storage location as Ray Train and Tune take it (a
    local path made absolute and no filesystem; an object store through its fsspec filesystem)."""
    fs, path = get_fs(url)
    if protocol(url) == "file":
        return os.path.abspath(path), None
    import pyarrow.fs

    return path, pyarrow.fs.PyFileSystem(pyarrow.fs.FSSpecHandler(fs))


def join(base: str, *parts: str) -> str:
    """Join URL or path segments with ``/`` (object stores have no other separator)."""
    out = base.rstrip("/") if base not in ("/", "") else base
    for part in parts:
        part = part.strip("/")
        if part:
            out = f"{out}/{part}" if out and not out.endswith("/") else f"{out}{part}"
    return out


def relpath(url: str, base: str) -> str:
    """``url`` relative to ``base`` (both as returned by :func:`list_files`)."""
    _, path = get_fs(url)
    _, root = get_fs(base)
    return posixpath.relpath(path, root)


def _as_url(fs: fsspec.AbstractFileSystem, path: str, like: str) -> str:
    """Return ``path`` in the same style as the URL the caller gave (plain path stays plain)."""
    if "://" not in like:
        return path
    return fs.unstrip_protocol(path)


def is_transient(exc: BaseException) -> bool:
    """Whether an error from storage is worth retrying (throttling, resets, timeouts)."""
    if isinstance(exc, (FileNotFoundError, PermissionError, IsADirectoryError, NotADirectoryError)):
        return False
    if isinstance(exc, (ConnectionError, TimeoutError)):
        return True
    if isinstance(exc, OSError) and exc.errno in _TRANSIENT_ERRNOS:
        return True
    name = type(exc).__name__
    if name in ("EndpointConnectionError", "ConnectTimeoutError", "ReadTimeoutError",
                "ConnectionClosedError", "ServerDisconnectedError", "ClientPayloadError",
                "ClientConnectorError", "ResponseStreamingError", "IncompleteReadError"):
        return True
    response = getattr(exc, "response", None)
    if isinstance(response, dict):
        code = str(response.get("Error", {}).get("Code", ""))
        return code in _TRANSIENT_S3_CODES
    cause = exc.__cause__ or exc.__context__
    return cause is not None and cause is not exc and is_transient(cause)


def retry(fn: Callable[[], T], *, attempts: int = 5, base_delay: float = 0.2,
          max_delay: float = 10.0, what: str = "storage call") -> T:
    """Call ``fn`` and retry transient errors with exponential backoff and full jitter.

    Raises:
        The last exception when it is not transient or attempts run out.
    """
    for attempt in range(1, attempts + 1):
        try:
            return fn()
        except Exception as exc:  # noqa: BLE001 - classified below
            if attempt == attempts or not is_transient(exc):
                raise
            delay = random.uniform(0, min(max_delay, base_delay * 2 ** (attempt - 1)))
            log.warning("%s failed (%s: %s); retry %d/%d in %.2fs",
                        what, type(exc).__name__, exc, attempt, attempts - 1, delay)
            time.sleep(delay)
    raise AssertionError("unreachable")


def open_url(url: str, mode: str = "rb", *, block_size: int | None = None):
    """Open ``url``; reads return a seekable file doing ranged reads with read-ahead.

    The caller closes the file (use it as a context manager).
    """
    fs, path = get_fs(url)
    if "r" in mode and protocol(url) not in ("file", "memory"):
        return retry(lambda: fs.open(path, mode, block_size=block_size or READ_BLOCK_SIZE,
                                     cache_type="readahead"), what=f"open {url}")
    return retry(lambda: fs.open(path, mode), what=f"open {url}")


def exists(url: str) -> bool:
    fs, path = get_fs(url)
    return retry(lambda: fs.exists(path), what=f"exists {url}")


def isdir(url: str) -> bool:
    fs, path = get_fs(url)
    return retry(lambda: fs.isdir(path), what=f"isdir {url}")


def size(url: str) -> int:
    """Size in bytes.

    Raises:
        FileNotFoundError: no such object.
    """
    fs, path = get_fs(url)
    return int(retry(lambda: fs.size(path), what=f"size {url}"))


def read_bytes(url: str) -> bytes:
    """Whole object as bytes: for small files (annotations, tables), not videos."""
    fs, path = get_fs(url)
    return retry(lambda: fs.cat_file(path), what=f"read {url}")


def read_text(url: str, encoding: str = "utf-8", errors: str = "strict") -> str:
    return read_bytes(url).decode(encoding, errors)


def list_files(url: str, suffixes: tuple[str, ...] | None = None, *, recursive: bool = True) -> list[str]:
    """Files under ``url`` (sorted), optionally only those ending in ``suffixes`` (case-insensitive)."""
    fs, root = get_fs(url)
    if recursive:
        paths = retry(lambda: fs.find(root), what=f"list {url}")
    else:
        paths = [p for p in retry(lambda: fs.ls(root, detail=False), what=f"list {url}")
                 if not fs.isdir(p)]
    if suffixes:
        lowered = tuple(s.lower() for s in suffixes)
        paths = [p for p in paths if p.lower().endswith(lowered)]
    return sorted(_as_url(fs, p, url) for p in paths)


def list_dirs(url: str) -> list[str]:
    """Immediate sub-directories of ``url`` (sorted), as URLs."""
    fs, root = get_fs(url)
    entries = retry(lambda: fs.ls(root, detail=True), what=f"list {url}")
    return sorted(_as_url(fs, e["name"], url) for e in entries if e.get("type") == "directory")


def makedirs(url: str) -> None:
    fs, path = get_fs(url)
    if protocol(url) == "file":
        os.makedirs(path, exist_ok=True)
    else:
        fs.makedirs(path, exist_ok=True)


def remove(url: str) -> None:
    fs, path = get_fs(url)
    retry(lambda: fs.rm(path), what=f"remove {url}")


@contextlib.contextmanager
def _atomic_local(path: str) -> Iterator[Any]:
    """A binary file that appears at ``path`` only whole: written to a sibling, synced, renamed."""
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    tmp = f"{path}.tmp-{uuid.uuid4().hex[:8]}"
    try:
        with open(tmp, "wb") as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def write_bytes(url: str, data: bytes) -> None:
    """Write ``data`` atomically: readers see the old object or the whole new one.

    Local files are written to a temporary sibling and renamed; an S3 PUT is atomic
    by itself.
    """
    fs, path = get_fs(url)
    if protocol(url) == "file":
        with _atomic_local(path) as f:
            f.write(data)
        return
    retry(lambda: fs.pipe_file(path, data), what=f"write {url}")


def put_file(local_path: str, url: str) -> None:
    """Copy a local file to ``url`` (atomically for local destinations)."""
    fs, path = get_fs(url)
    if protocol(url) == "file":
        with open(local_path, "rb") as src, _atomic_local(path) as dst:
            while chunk := src.read(HASH_CHUNK):
                dst.write(chunk)
        return
    retry(lambda: fs.put_file(local_path, path), what=f"upload {url}")


@contextlib.contextmanager
def staged_output(url: str, suffix: str = "") -> Iterator[str]:
    """Yield a local temporary path; on success it is uploaded to ``url``, always deleted.

    For writers that need a real file (MP4 ``+faststart`` rewrites the file).
    """
    fd, tmp = tempfile.mkstemp(suffix=suffix, prefix="vidray-")
    os.close(fd)
    try:
        yield tmp
        put_file(tmp, url)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def sha256(url: str) -> str:
    """Hex sha256 of the object's bytes, streamed in chunks (constant memory)."""

    def _hash() -> str:
        digest = hashlib.sha256()
        with open_url(url, "rb", block_size=HASH_CHUNK) as f:
            while chunk := f.read(HASH_CHUNK):
                digest.update(chunk)
        return digest.hexdigest()

    return retry(_hash, what=f"hash {url}")
