"""bench/dpc_claims.py at smoke size: every arm is pretrained or scored and every claim is reported."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.slow


def test_quick_run_reports_every_arm_and_claim():
    proc = subprocess.run([sys.executable, str(ROOT / "bench" / "dpc_claims.py"), "--quick"], capture_output=True,
                          text=True, timeout=600, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    assert set(out["arms"]) == {"random_rgb", "random_flow", "dpc_rgb", "vector_rgb", "memdpc_rgb", "dpc_flow",
                                "two_stream"}
    assert "finetune" in out["arms"]["dpc_rgb"] and "ssl_top1" in out["arms"]["memdpc_rgb"]
    assert len(out["claims"]) == 13 and all(isinstance(c["holds"], bool) for c in out["claims"])
    assert out["videos"] == {"train": 12, "test": 6} and out["seeds_skipped_for_budget"] == []
