"""bench/coclr_scale.py end to end on the tiny dataset (one pass per phase): every phase,
the equal-steps InfoNCE baseline and both supervised ceilings are trained and scored."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.pipelines.data.test_dataset import tiny_datasets

ROOT = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.slow


def test_quick_run_trains_and_scores_every_phase(ray_cluster, tmp_path_factory):
    manifest = tiny_datasets(tmp_path_factory)["ucf"]  # 4 train videos with flow
    proc = subprocess.run([sys.executable, str(ROOT / "bench" / "coclr_scale.py"), "--quick", "--manifest", manifest,
                           "--batch-size", "2"], capture_output=True, text=True, timeout=900, cwd=ROOT,
                          env={k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"})
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    assert out["samples"] == 4 and out["epochs_per_phase"] == 1
    names = [p["phase"] for p in out["phases"]]
    assert names == ["infonce_rgb", "infonce_flow", "coclr_rgb_c1", "coclr_flow_c1", "infonce_rgb_continued"]
    for row in [*out["phases"], *out["supervised"], *out["random_init"].values()]:
        assert 0.0 <= row["R@1"] <= row["R@5"] <= 100.0 and 0.0 <= row["linear_top1"] <= 100.0
    assert all(p["steps"] == 2 for p in out["phases"]) and [s["steps"] for s in out["supervised"]] == [2, 2]
    # 4 videos fill a 128-key queue only after 32 steps: no mining in one pass, and the bench says so.
    assert all(p["mined_precision"] is None for p in out["phases"])
