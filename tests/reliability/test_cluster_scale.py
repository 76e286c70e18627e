"""Reliability on a 3-node Ray cluster on this machine (a 0-CPU head, two 2-CPU worker nodes):
a tracking outage during a 2-node run, 1,000 videos with 5 % broken over S3, and a worker node
whose raylet is killed mid-epoch. Minutes each: run with ``make reliability`` (or ``-m reliability``).

The node-failure test runs last: it kills a node (and starts it again for any later test). The
quarantine ledger lives on the driver's node, the head (``pipelines.cluster.on_this_node``), and
the epoch clock in the head's GCS, so the run recovers on the remaining worker node; the resumed
epoch skips the batches its checkpoint had already trained on (the planned number of steps), and
rank 0's metrics up to the checkpoint were delivered to MLflow before the checkpoint was reported.
"""

from __future__ import annotations

import os

import pytest

pytestmark = [pytest.mark.reliability, pytest.mark.timeout(3600)]
OUTAGE_S = float(os.environ.get("VIDRAY_RELIABILITY_OUTAGE_S", "20"))  # `make reliability`'s bench: 60 s


def test_training_goes_on_through_a_tracking_outage(bench, three_nodes):
    report = bench.tracking_outage(three_nodes, videos=96, epochs=3, outage_s=OUTAGE_S)
    assert report["exit"] == 0, report["tail"]
    assert report["training_continued"] and report["ended_after_outage"], report
    assert report["step_metrics_logged"] > 0 and report["missing_steps"] == [], report
    assert report["outage_steps_in_mlflow"] == report["reports_during_outage"], report
    assert report["run_status"] == "FINISHED" and int(report["tracking_outages_tag"] or 0) >= 1, report


def test_a_thousand_videos_with_five_percent_broken(bench, three_nodes):
    report = bench.bad_data(three_nodes, videos=1000, broken_frac=0.05)
    ingest, train = report["ingest"], report["train"]
    assert ingest["inputs"] == 1000 and ingest["reconciles"], ingest
    assert ingest["expected_broken"] == 50 and ingest["broken_quarantined_with_expected_kind"] == 50, ingest
    assert ingest["good_videos_quarantined"] == [] and ingest["accepted_equals_good"], ingest
    assert ingest["accepted_with_other_bytes"] == [] and ingest["reasons_all_explained"]
    assert train["exit"] == 0, train["tail"]
    assert train["decode_quarantined"] == 0 and train["epoch_steps"] == [train["expected_steps_per_epoch"]], train


def test_a_worker_node_dies_mid_epoch(bench, three_nodes):
    report = bench.node_failure(three_nodes, videos=96, epochs=1, checkpoint_every=4, log_every=2)
    assert report["data_actors"] == {"QuarantineLedger": "head"}, report
    assert report["exit"] == 0 and report["finished"], report["tail"]
    assert set(report["initial_placement"].values()) == {"worker1", "worker2"}, report  # spread over both
    assert report["group_starts"] == 2 and report["restarted_placement"], report
    survivor = ({"worker1", "worker2"} - {report["killed_node"]}).pop()
    assert set(report["restarted_placement"].values()) == {survivor}, report  # the remaining capacity
    assert 0 <= report["steps_lost"] <= report["checkpoint_every"], report
    assert report["first_step_after_restart"] == report["checkpoint_step_restored"] + report["log_every"], report
    assert report["recover_s"] is not None and report["recover_s"] > 0
    assert report["extra_steps_run"] == 0 and report["steps_redone_from_epoch_start"] == 0, report
    assert report["mlflow_steps_before_kill"] >= report["checkpoint_step_restored"], report
