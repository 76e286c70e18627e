"""bench/augment.py at its smallest size: one JSON object with every recipe's figures.

Only the shape of the report is checked: timing thresholds never go into tests
(DEVELOPERS.md); the figures themselves are for bench/RESULTS.md.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_tiny_run_reports_every_recipe():
    proc = subprocess.run([sys.executable, str(ROOT / "bench" / "augment.py"), "--tiny"], check=False, cwd=ROOT,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    lines = proc.stdout.strip().splitlines()
    assert len(lines) == 1, "stdout must hold exactly one JSON object"
    report = json.loads(lines[0])
    assert report["benchmark"] == "augment" and report["variant"] == "tiny"
    assert set(report["recipes"]) == {"classification_16x112", "classification_32x128", "coclr", "dpc", "detection"}
    for name, r in report["recipes"].items():
        figures = [r["decode_cpu_ms"], r["augment_cpu_ms"]["new"], r["augment_cpu_ms"]["reference"],
                   r["new_over_reference"], r["augment_over_decode_cpu"]]
        assert all(isinstance(v, float) and v > 0 for v in figures), name
        assert all(len(v) == report["config"]["rounds"] for v in r["rounds_detail"].values()), name
    assert report["recipes"]["classification_16x112"]["video_columns_shape"] == {"rgb": [16, 112, 112, 3]}
    assert set(report["recipes"]["coclr"]["video_columns_shape"]) == {"rgb_0", "rgb_1", "flow_0", "flow_1"}
    assert report["config"]["cv2_threads"] == 1
    assert all(isinstance(v, bool) for v in report["goals_met"].values()) and len(report["goals_met"]) == 2
    assert "load_avg_start" in report["machine"]
