"""bench/coarse_fine_claims.py at smoke size: every arm is trained and scored, every claim is reported."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.slow

ARMS = {"x3d", "grid", "stride", "avg", "max", "coarse_fine", "coarse_fine_C", "fine_fine", "x3d_long"}


def test_quick_run_reports_every_arm_claim_and_gmacs():
    proc = subprocess.run([sys.executable, str(ROOT / "bench" / "coarse_fine_claims.py"), "--quick"],
                          capture_output=True, text=True, timeout=600, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    assert set(out["arms"]) == ARMS and set(out["gmacs"]["bench"]["gmacs"]) == ARMS - {"x3d_long"}
    for arm in ARMS:
        assert {"map25", "wap25", "frame_map"} <= set(out["arms"][arm])
        assert 0 <= out["arms"][arm]["frame_map"]["mean"] <= 100
    gm = out["gmacs"]["bench"]["gmacs"]
    assert gm["coarse_fine"] < gm["fine_fine"] and gm["grid"] < gm["x3d"]  # the counted compute ordering
    assert len(out["claims"]) == 14 and all(isinstance(c["holds"], bool) for c in out["claims"])
    assert out["videos"]["train"] == 2 and out["videos"]["test"] == 1 and out["seeds_skipped_for_budget"] == []
