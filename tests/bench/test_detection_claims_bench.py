"""bench/detection_claims.py at smoke size: every arm is pretrained, finetuned and scored, every claim is reported."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.slow


def test_quick_run_reports_every_arm_and_claim():
    proc = subprocess.run([sys.executable, str(ROOT / "bench" / "detection_claims.py"), "--quick"], capture_output=True,
                          text=True, timeout=600, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    assert set(out["arms"]) == {"none", "cls", "freeze", "mixup", "cutmix", "joint", "ensemble"}
    for arm, row in out["arms"].items():
        assert {"map25", "wap25", "frame_map", "frame_wap", "single_map", "multi_map"} <= set(row), arm
    assert "pretrain_loss" in out["arms"]["joint"] and "pretrain_loss" not in out["arms"]["none"]
    assert "gain_multi" in out["arms"]["ensemble"] and "gain_single" in out["arms"]["freeze"]
    assert len(out["claims"]) == 23 and all(isinstance(c["holds"], bool) for c in out["claims"])
    assert all(0 <= c["seeds_holding"] <= 1 for c in out["claims"])
    assert out["videos"] == {"pretrain_clips": 12, "finetune": 4, "test": 4}
    assert out["test_frames"]["one_label"] > 0 and out["test_frames"]["more_labels"] > 0
    assert out["seeds_skipped_for_budget"] == [] and out["threads"] == 1
