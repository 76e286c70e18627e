"""``jobs/evaluate.py``: the finetune protocol end to end, flow encoders on flow views, and the
multi-view averaging of the protocols."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from pipelines.eval.protocols import EvalConfig, FeatureExtractor, match_modality
from pipelines.eval.results import format_comparison
from tests.pipelines.data.test_dataset import tiny_datasets
from tests.scripts import load_script



def _job():
    return load_script("jobs/evaluate.py")


class _Fixed(torch.nn.Module):
    """Logits/features chosen per view: the mean of the view's first channel, times a fixed matrix."""

    def __init__(self) -> None:
        super().__init__()
        self.proj = torch.tensor([[1.0, -1.0, 0.5]])

    def forward(self, x):
        return x[:, 0].mean(dim=(1, 2, 3))[:, None] * self.proj


def test_multi_view_averaging_of_features_and_probabilities():
    rng = np.random.default_rng(0)
    views = rng.integers(0, 256, (2, 3, 2, 4, 4, 3), dtype=np.uint8)  # B=2 videos, V=3 views
    batch = {"views": views, "video_id": np.array(["a", "b"]), "label_index": np.array([0, 1])}
    mean = torch.tensor([0.485, 0.456, 0.406]) * 255
    std = torch.tensor([0.229, 0.224, 0.225]) * 255
    x0 = (torch.from_numpy(views[..., 0]).float() - mean[0]) / std[0]  # (B, V, T, H, W), channel 0
    per_view = x0.mean(dim=(2, 3, 4))[..., None] * torch.tensor([1.0, -1.0, 0.5])  # (B, V, 3)
    probs = FeatureExtractor(_Fixed, kind="logits")(batch)["feats"]
    np.testing.assert_allclose(probs, per_view.softmax(-1).mean(1).numpy(), rtol=1e-5)
    feats = FeatureExtractor(_Fixed)(batch)["feats"]
    expected = torch.nn.functional.normalize(torch.nn.functional.normalize(per_view, dim=-1).mean(1), dim=-1)
    np.testing.assert_allclose(feats, expected.numpy(), rtol=1e-5, atol=1e-6)


def test_match_modality():
    cfg, kwargs = match_modality(EvalConfig(modality="flow"), {"num_classes": 0})
    assert cfg.modality == "flow" and kwargs["in_chans"] == 2  # a random flow encoder
    cfg, _ = match_modality(EvalConfig(), {"in_chans": 2})
    assert cfg.modality == "flow"  # a registered flow encoder is scored on flow views
    with pytest.raises(ValueError, match="2-channel"):
        match_modality(EvalConfig(modality="flow"), {"in_chans": 3})
    table = format_comparison([{"modality": "flow", "label": "CoCLR", "model": "m", "R@1": 50.0, "R@5": 75.0,
                                "linear_top1": 25.0, "extra": {"mined same-class": 40.0}}], num_classes=4,
                              notes=["'mined same-class': ..."])
    assert "CoCLR (flow)" in table and "40.0" in table and "chance: R@1 and linear 25.00" in table
    assert "mined same-class" in table.splitlines()[0] and table.endswith("'mined same-class': ...")
    with_ref = format_comparison([{"modality": "flow", "label": "CoCLR", "model": "m", "R@1": 50.0, "R@5": 75.0,
                                   "linear_top1": 25.0, "extra": {}}], num_classes=4,
                                 reference={"CoCLR (flow)": {"R@1": "47.2 ± 3.1", "linear": "30.0 ± 2.0"}})
    assert "ref R@1" in with_ref.splitlines()[0] and "47.2 ± 3.1" in with_ref.splitlines()[1]


@pytest.mark.slow
def test_finetune_and_flow_protocols_through_the_job(ray_cluster, tmp_path_factory, tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlflow.db'}")
    manifest = tiny_datasets(tmp_path_factory)["ucf"]
    common = ["--manifest", manifest, "--json", "--set", "debug_size=true", "--set", "num_clips=2",
              "--set", "spatial_crops=1", "--set", f"storage_path={tmp_path / 'runs'}", "--set", "batch_size=2"]
    job = _job()
    assert job.main(["--model", "random:s3d_debug", "--protocol", "finetune", "--set", "finetune_epochs=2",
                     *common]) == 0
    out = json.loads(capsys.readouterr().out.strip().splitlines()[-1])["finetune"]
    assert out["train_epochs"] == 2 and np.isfinite(out["train_loss"])
    assert out["top1"] in (0.0, 25.0, 50.0, 75.0, 100.0)  # 4 test videos, all scored
    assert job.main(["--model", "random:s3d_debug", "--protocol", "retrieval,linear", "--set", "modality=flow",
                     *common]) == 0
    out = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert set(out) == {"model", "retrieval", "linear"} and out["retrieval"]["R@20"] == 100.0
    assert job.main(["--model", "random:s3d_debug", "--fuse", "random:s3d_debug", "--protocol", "retrieval,linear",
                     *common]) == 0
    out = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert {"fused_retrieval", "fused_linear", "fused_videos", "streams"} <= set(out)
    assert sorted(name.split()[0] for name in out["streams"]) == ["flow", "rgb"]
    assert out["fused_videos"] == {"videos": 8.0, "dropped": 0.0}  # 4 train + 4 test, all in both streams
    with pytest.raises(ValueError, match="flow encoders support"):
        job.main(["--model", "random:s3d_debug", "--protocol", "finetune", "--set", "modality=flow", *common])
