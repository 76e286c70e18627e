"""Object-storage faults during ingest and a training epoch that reads its videos from S3.

CI-sized: 16 tiny videos (2 broken) on a one-node cluster, 10 % of S3 requests answered with a 500,
a 503 SlowDown, a connection reset or a 0.5 s stall (``make reliability`` stalls 2 s; both are
far below the client's 60 s read timeout, so a stall is a slow answer either way). Both finish; every video is accounted for
(``inputs = accepted + quarantined``), the broken ones with their reason, the good ones with their
own bytes (no substitution), and the epoch trains on every good video. ``make reliability`` runs
the larger comparison with a fault-free baseline (``bench/reliability.py``).
"""

from __future__ import annotations

import pytest

pytestmark = [pytest.mark.slow, pytest.mark.timeout(900)]


def test_ingest_and_an_epoch_survive_storage_faults(bench, one_node, monkeypatch):
    monkeypatch.setattr(one_node.proxy, "stall_s", 0.5)
    report = bench.s3_faults(one_node, videos=16, broken_frac=0.125, rate=0.1, baseline=False)
    ingest, train = report["faults"]["ingest"], report["faults"]["train"]

    assert ingest["proxy"]["failed_requests"] > 0 and train["proxy"]["faults"] > 0, (ingest["proxy"], train["proxy"])
    assert ingest["reconciles"] and ingest["accepted_equals_good"], ingest
    assert ingest["broken_quarantined_with_expected_kind"] == ingest["expected_broken"] == 2, ingest
    assert ingest["good_videos_quarantined"] == [] and ingest["accepted_with_other_bytes"] == []
    assert ingest["accepted_with_wrong_frame_count"] == [] and ingest["reasons_all_explained"]
    assert ingest["proxy"]["unretried_faults"] == 0, ingest["proxy"]

    assert train["exit"] == 0, train["tail"]
    assert train["decode_quarantined"] == 0, train["decode_quarantine_kinds"]
    assert train["epoch_steps"] == [train["expected_steps_per_epoch"]], train
