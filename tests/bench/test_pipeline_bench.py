"""bench/pipeline.py end to end at its smallest size: one JSON object with every figure.

Only the shape of the report is checked: timing thresholds never go into tests
(DEVELOPERS.md); the figures themselves are for bench/RESULTS.md.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow
ROOT = Path(__file__).resolve().parents[2]
RATES = ("raw_decode_clips_per_s", "ray_clips_per_s", "dataloader_clips_per_s", "decode_augment_clips_per_s")


@pytest.fixture(scope="module")
def report(tmp_path_factory) -> dict:
    """One ``--tiny`` run in a fresh process (it starts its own Ray cluster and worker pools)."""
    data = tmp_path_factory.mktemp("bench-pipeline")
    proc = subprocess.run([sys.executable, str(ROOT / "bench" / "pipeline.py"), "--tiny", "--data", str(data)],
                          cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    lines = proc.stdout.strip().splitlines()
    assert len(lines) == 1, "stdout must hold exactly one JSON object"
    return json.loads(lines[0])


def _positive(x) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool) and x > 0


def test_throughput_figures_and_ratios(report):
    for key in RATES:
        assert _positive(report[key]), key
    assert set(report["ratios"]) >= {"ray_over_raw", "ray_over_dataloader"}
    assert all(_positive(v) for v in report["ratios"].values())
    for name, rounds in report["rounds_detail"].items():
        assert len(rounds) == report["config"]["rounds"], name
        assert all(r["clips"] == report["config"]["clips_per_measurement"] for r in rounds), name


def test_cpu_per_clip_of_every_way(report):
    cpu = report["cpu_ms_per_clip"]
    assert set(cpu) == {"raw_decode", "decode_augment", "dataloader", "ray"}
    assert all(_positive(v) for v in cpu.values())
    assert isinstance(report["augment_over_decode_cpu"], float)
    assert _positive(report["augment_over_decode_cpu_in_worker"])  # sampling + augmentation over the reads
    assert _positive(report["ratios"]["ray_cpu_over_decode_augment_cpu"])
    assert all(_positive(r["cpu_ms_per_clip"]) for rounds in report["rounds_detail"].values() for r in rounds)
    stages = report["ray_stage_ms_per_clip"]
    assert _positive(stages["data_decode_ms"]) and _positive(stages["data_augment_ms"])
    assert report["config"]["decode_worker_env"]["MALLOC_MMAP_THRESHOLD_"]
    assert report["config"]["ray_rows_per_task"] >= 1


def test_decode_ratio_and_memory(report):
    decode = report["decoded_per_used_frames"]
    for name in ("transcoded", "long_gop"):
        assert _positive(decode[name]), name
        assert decode[f"{name}_detail"]["frames_used"] > 0
    assert decode["transcoded_detail"]["mean_keyframe_interval"] < decode["long_gop_detail"]["mean_keyframe_interval"]
    rss = report["decode_worker_rss_mb"]
    assert _positive(rss["after_first_n"]) and _positive(rss["after_last"])
    assert isinstance(rss["growth_pct"], float) and rss["clips"] == report["config"]["rss_clips"]
    assert rss["at_least_5000_clips"] is False  # the tiny run says that it is short


def test_goals_config_and_machine(report):
    assert report["goals_met"] and all(isinstance(v, bool) for v in report["goals_met"].values())
    assert {"ray_cpu_le_1.2x_decode_augment", "ray_ge_dataloader", "ray_ge_0.85x_decode_augment"} <= set(
        report["goals_met"])
    assert report["variant"] == "tiny" and report["config"]["clip_shape_TSS3"][-1] == 3
    assert report["config"]["ray_cluster_cpus"] == report["config"]["cores"]
    assert report["machine"]["cores"] >= 1 and "load_avg_start" in report["machine"]
    assert [p["phase"] for p in report["phases"]][:2] == ["generate+ingest", "throughput"]
