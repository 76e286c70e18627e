"""bench/train.py: the window accounting on hand-made reports, and one ``--tiny`` run end to end.

Only the shape of the report is checked: timing thresholds never go into tests
(DEVELOPERS.md); the figures themselves are for bench/RESULTS.md.
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[2]
RUNS = ("memory_2w", "real_2w")  # --tiny measures 2 workers only
FIGURES = ("clips_per_s", "data_wait_frac", "clips_per_s_excl_report", "data_wait_frac_excl_report", "report_frac")


def _bench():
    spec = importlib.util.spec_from_file_location("vidray_bench_train", ROOT / "bench" / "train.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def _positive(x) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool) and x > 0


def _fraction(x) -> bool:
    return isinstance(x, (int, float)) and 0.0 <= x <= 1.0


def test_windows_attribute_the_report_call_to_the_next_window():
    bench = _bench()
    # 1 worker, batch 2, 3 steps per epoch, a window every 2 steps: epoch 0 has a window at
    # step 2 and loses step 3 (the loop restarts its timer); epoch 1's first window is steps 4-5.
    rows = [{"rank": 0, "epoch": 0, "step": 2, "clips_per_s": 4.0, "data_wait_frac": 0.5, "report_s": 0.3},
            {"rank": 0, "epoch": 1, "step": 3, "report_s": 2.0},
            {"rank": 0, "epoch": 1, "step": 5, "clips_per_s": 2.0, "data_wait_frac": 0.5, "report_s": 0.4},
            {"rank": 0, "epoch": 1, "step": 6, "clips_per_s": 1.0, "data_wait_frac": 0.6, "report_s": 0.1},
            {"rank": 0, "epoch": 2, "step": 6, "report_s": 2.0}]
    windows = bench.windows_of(rows, 0, world=1, batch_size=2, steps_per_epoch=3)
    assert [(w["clips"], w["seconds"], w["report_s"]) for w in windows] == [(4, 1.0, 0.0), (4, 2.0, 0.0),
                                                                          (2, 2.0, 0.4)]
    out = bench.summarise(rows, world=1, batch_size=2, steps_per_epoch=3, skip=1)
    # the loop's windows exclude the report call; the plain figures add it back as waiting
    assert out["clips_per_s"] == pytest.approx(6 / 4.4, abs=1e-3)
    assert out["data_wait_frac"] == pytest.approx((1.0 + 1.2 + 0.4) / 4.4, abs=1e-3)
    assert out["report_frac"] == pytest.approx(0.4 / 4.4, abs=1e-3)
    assert out["clips_per_s_excl_report"] == pytest.approx(6 / 4, abs=1e-3)
    assert out["data_wait_frac_excl_report"] == pytest.approx((1.0 + 1.2) / 4, abs=1e-3)
    assert out["epoch_report_s_rank0"] == [2.0, 2.0]


def test_run_order_pairs_each_comparison_back_to_back():
    assert _bench().order((1, 2)) == [("memory", 1), ("real", 1), ("real", 2), ("memory", 2)]


def test_compute_only_step_runs_in_bf16_on_cpu():
    """The --gpu measurement's code path (bf16 autocast), at debug size on the CPU."""
    from pipelines.data import recipes
    from vidmodels.methods import CoCLRConfig

    bench = _bench()
    rcfg = recipes.recipe("coclr", debug_size=True)
    out = bench.compute_only(CoCLRConfig.debug(), rcfg, batch=2, steps=1, device=torch.device("cpu"),
                             bf16=True, warmup=1)
    assert _positive(out["clips_per_s"]) and out["dtype"] == "bf16 autocast"
    # Not asserted finite: CPU bf16 Conv3d (3,1,1) weight gradients come out NaN on 2x2 maps
    # with T=2 in torch 2.13 (oneDNN); the training loop only autocasts on CUDA.
    assert isinstance(out["loss_finite"], bool)
    assert "skipped" in bench.gpu_section(bench.tiny(), requested=False)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_gpu_section_measures_s3d_bf16_and_fp32():
    bench = _bench()
    out = bench.gpu_section(bench.tiny(), requested=True)
    assert _positive(out["clips_per_s_per_gpu_bf16"]) and _positive(out["clips_per_s_per_gpu_fp32"])
    assert out["clip_shape_TSS"] == [32, 128, 128]


@pytest.fixture(scope="module")
def report(tmp_path_factory) -> dict:
    """One ``--tiny`` run in a fresh process (its own embedded Ray cluster, never $RAY_ADDRESS's)."""
    data = tmp_path_factory.mktemp("bench-train")
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    proc = subprocess.run([sys.executable, str(ROOT / "bench" / "train.py"), "--tiny", "--gpu", "--data", str(data)],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=400)
    assert proc.returncode == 0, proc.stderr[-3000:]
    lines = proc.stdout.strip().splitlines()
    assert len(lines) == 1, "stdout must hold exactly one JSON object"
    return json.loads(lines[0])


@pytest.mark.slow
def test_tiny_run_reports_every_figure(report):
    for figure in FIGURES:
        assert set(report[figure]) == set(RUNS), figure
    for name in RUNS:
        assert _positive(report["clips_per_s"][name]) and _positive(report["clips_per_s_excl_report"][name])
        for figure in ("data_wait_frac", "data_wait_frac_excl_report", "report_frac"):
            assert _fraction(report[figure][name]), (figure, name)
        run = report["runs"][name]
        assert run["workers"] == 2 and len(run["per_rank"]) == 2 and len(run["worker_threads"]) == 2
        assert all(r["windows"] >= 1 and r["clips_per_rank"] > 0 for r in run["per_rank"])
    assert set(report["ratios"]) == {"real_over_memory_2w", "real_over_memory_2w_excl_report"}
    assert all(_positive(v) for v in report["ratios"].values())
    assert _positive(report["compute_only_clips_per_s_1_thread"])
    assert report["goals_met"] == {"real_2w_data_wait_le_0.15": report["goals_met"]["real_2w_data_wait_le_0.15"]}
    assert isinstance(report["goals_met"]["real_2w_data_wait_le_0.15"], bool)
    stages = report["data_stage_ms_per_clip"]["real_2w"]  # the pipeline's telemetry, via the epoch reports
    assert _positive(stages["decode_ms"]) and _positive(stages["augment_ms"]) and _positive(stages["read_kb"])


@pytest.mark.slow
def test_tiny_run_config_machine_and_gpu(report):
    assert report["variant"] == "tiny" and report["config"]["order"] == list(RUNS)
    assert report["config"]["clip_shape_TSS3"] == [8, 64, 64, 3]
    assert report["config"]["ray_cluster_cpus"] == report["config"]["cores"]
    machine = report["machine"]
    assert machine["cores"] >= 1 and {"load_avg_start", "load_avg_end", "ray", "torch"} <= set(machine)
    if not torch.cuda.is_available():
        assert "skipped" in report["gpu"]
    else:
        assert _positive(report["gpu"]["clips_per_s_per_gpu_bf16"])
    assert [p["phase"] for p in report["phases"]][:3] == ["generate+ingest+flow", "compute_only", "materialise"]
