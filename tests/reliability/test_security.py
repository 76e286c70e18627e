"""Security on a real head: the job API refuses requests without the token, the dashboard listens on
127.0.0.1 only, and a job configured with S3 credentials leaves them in no MLflow param, tag, artifact
or log, nor in the job's output or any file of the node's Ray temp dir.

CI-sized: a one-node cluster (``LocalHead``, token auth with its own token file), one submitted job
that ingests 6 tiny videos from S3 and trains one epoch from them (~3 min on 2 loaded cores).
"""

from __future__ import annotations

import pytest

pytestmark = [pytest.mark.slow, pytest.mark.timeout(900)]


def test_token_binding_and_no_credentials_anywhere(bench, one_node):
    report = bench.security(one_node)
    status = report["http_status"]
    assert status["no_token"] == 401 and status["submit_no_token"] == 401, status
    assert status["wrong_token"] == 403 and status["token"] == 200, status
    assert status["dashboard_nodes_no_token"] == 401, status
    assert report["dashboard_bound_to"] == ["127.0.0.1"], report["head_listening"]

    assert report["job_exit"] == 0 and report["job_trained"], report["job_output_tail"]
    scan = report["secret_scan"]
    assert scan["runs_scanned"] >= 2 and scan["params_scanned"] > 20 and scan["artifact_files_scanned"] > 3
    assert scan["ray_files_scanned"] > 10
    assert scan["found"] == {name: [] for name in one_node.secrets}, scan["found"]
