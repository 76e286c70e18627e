"""bench/s3_faults.py: the fault proxy injects what it says at the rate it is given, and counts it;
the project's storage layer gets every byte through it intact."""

from __future__ import annotations

import os
import time

import boto3
import botocore.config
import botocore.exceptions
import pytest

from bench.s3_faults import FaultProxy


@pytest.fixture
def proxy(s3_env, s3_endpoint, monkeypatch):
    fault_proxy = FaultProxy(s3_endpoint, rate=0.0, seed=3, stall_s=0.2).start()
    monkeypatch.setenv("AWS_ENDPOINT_URL", fault_proxy.url)  # every client of pipelines.io.storage
    yield fault_proxy, s3_env
    fault_proxy.stop()


def _raw_client(url: str):
    """A client that does not retry: it sees each injected fault."""
    return boto3.client("s3", endpoint_url=url, region_name="us-east-1", aws_access_key_id="x",
                        aws_secret_access_key="y",
                        config=botocore.config.Config(retries={"total_max_attempts": 1, "mode": "standard"},
                                                      read_timeout=5, connect_timeout=5))


def test_each_fault_kind_reaches_the_client(proxy):
    fault_proxy, bucket = proxy
    name = bucket.removeprefix("s3://")
    client = _raw_client(fault_proxy.url)
    client.put_object(Bucket=name, Key="k", Body=b"hello")
    fault_proxy.rate = 1.0
    for kind, code in (("500", "InternalError"), ("503", "SlowDown")):
        fault_proxy.kinds = (kind,)
        with pytest.raises(botocore.exceptions.ClientError) as err:
            client.get_object(Bucket=name, Key="k")
        assert err.value.response["Error"]["Code"] == code
    fault_proxy.kinds = ("reset",)
    with pytest.raises((botocore.exceptions.ConnectionClosedError, botocore.exceptions.EndpointConnectionError)):
        client.get_object(Bucket=name, Key="k")
    fault_proxy.kinds = ("stall",)
    started = time.perf_counter()
    assert client.get_object(Bucket=name, Key="k")["Body"].read() == b"hello"  # late, not lost
    assert time.perf_counter() - started >= 0.2
    stats = fault_proxy.stats()
    assert stats["faults_by_kind"] == {"500": 1, "503": 1, "reset": 1, "stall": 1}
    assert stats["requests"] == 5 and stats["failed_requests"] == 3


def test_storage_layer_retries_through_faults(proxy):
    from pipelines.io import storage

    fault_proxy, bucket = proxy
    blobs = {f"{bucket}/obj{i}.bin": os.urandom(50_000 + i) for i in range(12)}
    fault_proxy.rate = 0.3
    for url, data in blobs.items():
        storage.write_bytes(url, data)
    for url, data in blobs.items():
        assert storage.exists(url) and storage.size(url) == len(data)
        assert storage.read_bytes(url) == data
        with storage.open_url(url) as f:  # ranged reads, as the decoders do
            f.seek(10_000)
            assert f.read(2_000) == data[10_000:12_000]
    stats = fault_proxy.stats()
    assert stats["failed_requests"] >= 5 and set(stats["faults_by_kind"]) == {"500", "503", "reset", "stall"}
    # Every failed request was sent again by a client (botocore, s3fs or storage.retry), none given up.
    assert stats["retried_faults"] == stats["failed_requests"] and stats["unretried_faults"] == 0
