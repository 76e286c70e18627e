import hashlib
import os

import pytest

from pipelines.io import storage


def test_local_roundtrip_atomic_and_listing(tmp_path):
    url = str(tmp_path / "a" / "b.bin")
    storage.write_bytes(url, b"hello")
    assert storage.read_bytes(url) == b"hello"
    assert os.listdir(tmp_path / "a") == ["b.bin"]  # no temporary left behind
    storage.write_bytes(str(tmp_path / "a" / "c.MP4"), b"x")
    assert storage.list_files(str(tmp_path), (".mp4",)) == [str(tmp_path / "a" / "c.MP4")]
    assert storage.relpath(str(tmp_path / "a" / "c.MP4"), str(tmp_path)) == "a/c.MP4"
    assert storage.size(url) == 5
    assert storage.sha256(url) == hashlib.sha256(b"hello").hexdigest()


def test_file_scheme_and_memory_urls(tmp_path):
    storage.write_bytes(f"file://{tmp_path}/x.txt", b"1")
    assert storage.list_files(f"file://{tmp_path}") == [f"file://{tmp_path}/x.txt"]
    storage.write_bytes("memory://vidray-test/d/y.txt", b"2")
    assert storage.read_text("memory://vidray-test/d/y.txt") == "2"
    (listed,) = storage.list_files("memory://vidray-test")
    assert listed.endswith("/vidray-test/d/y.txt") and storage.read_text(listed) == "2"


def test_join():
    assert storage.join("s3://b/", "videos", "/x.mp4") == "s3://b/videos/x.mp4"
    assert storage.join("/data", "m.parquet") == "/data/m.parquet"


def test_staged_output_uploads_only_on_success(tmp_path):
    target = str(tmp_path / "out.bin")
    with pytest.raises(RuntimeError):
        with storage.staged_output(target) as local:
            open(local, "wb").write(b"partial")
            raise RuntimeError("encoder died")
    assert not os.path.exists(target)
    with storage.staged_output(target) as local:
        open(local, "wb").write(b"whole")
    assert open(target, "rb").read() == b"whole"
    assert not os.path.exists(local)


def test_retry_backs_off_on_transient_errors_only():
    calls = []

    def flaky():
        calls.append(1)
        if len(calls) < 3:
            raise ConnectionResetError("reset by peer")
        return "ok"

    assert storage.retry(flaky, base_delay=0.001) == "ok" and len(calls) == 3

    def missing():
        calls.append(1)
        raise FileNotFoundError("gone")

    calls.clear()
    with pytest.raises(FileNotFoundError):
        storage.retry(missing, base_delay=0.001)
    assert len(calls) == 1


def test_throttling_codes_are_transient():
    class ClientError(Exception):
        def __init__(self, code):
            self.response = {"Error": {"Code": code}}

    assert storage.is_transient(ClientError("SlowDown"))
    assert not storage.is_transient(ClientError("AccessDenied"))
    wrapped = OSError("wrapped")
    wrapped.__cause__ = ClientError("503")
    assert storage.is_transient(wrapped)


def test_s3_settings_come_from_the_environment_without_credentials(monkeypatch):
    monkeypatch.setenv("AWS_ENDPOINT_URL", "http://general:1")
    monkeypatch.setenv("AWS_ENDPOINT_URL_S3", "http://s3-specific:2")
    monkeypatch.setenv("AWS_REGION", "eu-west-3")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "do-not-leak")
    opts = storage.s3_options()
    assert opts["client_kwargs"] == {"endpoint_url": "http://s3-specific:2", "region_name": "eu-west-3"}
    assert "do-not-leak" not in repr(opts)


def test_s3_roundtrip_ranged_reads(s3_env):
    """Real HTTP to the loopback server through s3fs: write, list, hash, and a ranged read."""
    blob = os.urandom(12 * 2**20)
    url = f"{s3_env}/videos/big.bin"
    storage.write_bytes(url, blob)
    storage.write_bytes(f"{s3_env}/videos/small.mp4", b"abc")
    assert storage.list_files(f"{s3_env}/videos", (".mp4",)) == [f"{s3_env}/videos/small.mp4"]
    assert storage.size(url) == len(blob)
    assert storage.sha256(url) == hashlib.sha256(blob).hexdigest()
    with storage.open_url(url) as f:
        f.seek(len(blob) - 100)
        assert f.read(100) == blob[-100:]
        fetched = f.cache.total_requested_bytes
    assert fetched < len(blob) / 2, f"ranged read fetched {fetched} of {len(blob)} bytes"
    assert storage.exists(url) and not storage.exists(f"{s3_env}/nope")
