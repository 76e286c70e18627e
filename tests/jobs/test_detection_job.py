"""``jobs/detection.py --variant debug`` end to end on the session's Ray cluster and MLflow server: both
tiny synthetic sets made from nothing, pretraining then finetuning, the registered encoder and
detector load without unpickling, and the whole-video test scores, plots and progress are there.

The pretraining phase is the session's detection debug run (``tests/debug_runs.py``, which
``test_every_method`` checks too): the whole schedule is then submitted with the same run name,
as a user resumes a run, so the registered pretraining is skipped and finetuning starts from it."""

from __future__ import annotations

import pytest
import torch

from tests.scripts import load_script

pytestmark = pytest.mark.slow


def test_debug_schedule_registers_loadable_models_and_scores_the_test_videos(debug_runs, debug_data, mlflow_server,
                                                                             monkeypatch, capsys):
    from mlflow import MlflowClient

    from pipelines.tracking import load_registered_model

    monkeypatch.setenv("MLFLOW_TRACKING_URI", mlflow_server)
    pretrain = debug_runs.first_phase("detection", capsys)
    assert pretrain.phase.name == "pretrain_joint" and "[pretrain_joint] epoch 1/1" in pretrain.out
    sets = [*pretrain.set_args, "--set", f"finetune.manifest={debug_data / 'charades'}"]
    assert load_script("jobs/detection.py").main(["--variant", "debug", *sets], method="detection") == 0
    out = capsys.readouterr().out
    assert "phase pretrain_joint: already registered" in out and "[finetune_joint] epoch 1/1" in out
    assert "val_map25" in out and "finetune_joint     MAP25" in out and "WAP25" in out  # the finish hook's table

    encoder, info = load_registered_model("models:/detection-debug-rgb@pretrain_joint")
    assert info["backbone"] == "x3d_debug" and info["kwargs"]["num_classes"] == 0
    detector, info = load_registered_model("models:/detection-debug-detector@finetune_joint")
    with torch.no_grad():
        logits = detector.forward_frames(torch.zeros(1, 3, 8, 64, 64), 16)
    assert logits.shape == (1, 16, info["kwargs"]["num_classes"]) and torch.isfinite(logits).all()

    client = MlflowClient(tracking_uri=mlflow_server)
    version = client.get_model_version_by_alias("detection-debug-detector", "finetune_joint")
    metrics = client.get_run(version.run_id).data.metrics
    assert {"test/map25", "test/wap25", "test/frame_map", "epoch/val_map25"} <= set(metrics)
    artifacts = {a.path for a in client.list_artifacts(version.run_id, "eval")}
    assert {"eval/test_class_ap.png", "eval/test_timeline.png"} <= artifacts
