"""bench/coclr_scale.py end to end on the tiny dataset (2 seeds, 2 steps per phase): every phase, the
equal-steps InfoNCE baseline and both supervised ceilings are trained and scored per seed, the table is
mean ± std over the seeds, every target of issue 10 is judged, and the demo's reference file is written."""

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


def test_seeds_run_score_and_judge_every_row(ray_cluster, tmp_path_factory, tmp_path):
    manifest = tiny_datasets(tmp_path_factory)["ucf"]  # 4 train videos with flow
    ref = tmp_path / "reference.json"
    proc = subprocess.run([sys.executable, str(ROOT / "bench" / "coclr_scale.py"), "--manifest", manifest,
                           "--seeds", "0,1", "--steps", "2", "--set", "loop.batch_size=2", "--write-reference", str(ref)],
                          capture_output=True, text=True, timeout=900, cwd=ROOT,
                          env={**{k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}, "OMP_NUM_THREADS": "1"})
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    assert out["seeds"] == [0, 1] and out["steps_per_phase"] == 2 and len(out["per_seed"]) == 2
    rows = {"random_rgb", "infonce_rgb", "infonce_rgb_continued", "coclr_rgb_c1", "supervised_rgb",
            "random_flow", "infonce_flow", "coclr_flow_c1", "supervised_flow"}
    assert set(out["table_mean_std"]) == rows and all(set(run) == rows for run in out["per_seed"])
    for run in out["per_seed"]:
        for row in run.values():
            assert 0.0 <= row["R@1"] <= row["R@5"] <= 100.0 and 0.0 <= row["linear"] <= 100.0
    assert " ± " in out["table_mean_std"]["coclr_rgb_c1"]["R@1"]
    claims = out["claims"]
    assert {"infonce_flow > random_flow (R@1)", "coclr_rgb_c1 > infonce_rgb_continued by > 1 std (linear)",
            "coclr_flow_c1 > random_flow (linear)"} <= set(claims)
    assert all(isinstance(c["holds"], bool) and c["seeds_a_above_b"].endswith("/2") for c in claims.values())
    written = json.loads(ref.read_text())
    assert written["seeds"] == [0, 1] and len(written["dataset_fingerprint"]) == 64
    assert set(written["rows"]) == {"random init (rgb)", "InfoNCE (rgb)", "CoCLR (rgb)", "random init (flow)",
                                    "InfoNCE (flow)", "CoCLR (flow)"}
