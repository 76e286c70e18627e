"""bench/ray_overhead.py end to end at its smallest size: one JSON object with every rung of the ladder.

Only the shape of the report is checked (no timing thresholds, DEVELOPERS.md); the figures
are for bench/RESULTS.md.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow
ROOT = Path(__file__).resolve().parents[2]
RUNGS = {"pool_discard", "pool_keep_block", "ray_task_block", "ray_task_stage", "ray_data_refs", "ray_data_batches"}


def test_every_rung_makes_the_same_clips_and_reports_cpu(tmp_path):
    proc = subprocess.run([sys.executable, str(ROOT / "bench" / "ray_overhead.py"), "--tiny", "--data", str(tmp_path)],
                          cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    lines = proc.stdout.strip().splitlines()
    assert len(lines) == 1, "stdout must hold exactly one JSON object"
    report = json.loads(lines[0])
    assert set(report["clips_per_s"]) == set(report["cpu_ms_per_clip"]) == RUNGS
    assert all(v > 0 for v in [*report["clips_per_s"].values(), *report["cpu_ms_per_clip"].values()])
    assert len(report["step_ms_per_clip"]) == len(RUNGS) - 1  # one step between each rung and the next
    for rung, rounds in report["rounds_detail"].items():
        assert len(rounds) == report["config"]["rounds"], rung
    assert any(name.startswith("ray::") for name in report["cpu_s_by_process"]["ray_data_batches"])
    assert report["clips_per_measurement"] == report["config"]["epochs"] * report["config"]["videos"]
