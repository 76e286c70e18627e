"""FrameDetector: the three objectives on one X3D with a per-frame head, and pretrained weights loading."""

from __future__ import annotations

import pytest
import torch

from vidmodels.methods import DetectionConfig, FrameDetector


def _batch(L: int = 8, K: int = 4) -> dict[str, torch.Tensor]:
    torch.manual_seed(0)
    labels = torch.zeros(2, L, K)
    labels[0, :, 1] = 1.0
    labels[1, : L // 2, 2] = 1.0  # second half: frozen (background)
    return {"rgb": torch.randn(2, 3, 8, 32, 32), "frame_labels": labels, "frame_valid": torch.ones(2, L)}


@pytest.mark.parametrize("objective,L,keys", [("clip", 8, {"loss", "top1"}), ("frames", 8, {"loss", "frame_top1"}),
                                              ("localize", 16, {"loss", "cls", "loc"})])
def test_objectives_give_finite_losses_and_gradients(objective, L, keys):
    model = FrameDetector(DetectionConfig(backbone="x3d_debug", num_classes=4, objective=objective))
    out = model(_batch(L))
    assert set(out) == keys and torch.isfinite(out["loss"])
    out["loss"].backward()
    first = next(p for p in model.parameters() if p.ndim > 1)  # the stem's first conv
    assert first.grad is not None and first.grad.abs().sum() > 0
    assert model.frame_logits(_batch()["rgb"]).shape == (2, 8, 4)
    assert model.frame_logits(_batch()["rgb"], num_frames=16).shape == (2, 16, 4)


def test_softmax_pretraining_with_an_extra_background_class():
    cfg = DetectionConfig(backbone="x3d_debug", num_classes=4, objective="frames", pretrain_loss="softmax",
                          background="extra_class")
    model = FrameDetector(cfg)
    assert cfg.outputs == 5 and model.frame_logits(_batch()["rgb"]).shape[-1] == 5
    assert torch.isfinite(model(_batch())["loss"])


def test_localize_ignores_invalid_frames():
    model = FrameDetector(DetectionConfig(backbone="x3d_debug", num_classes=4, objective="localize")).eval()
    batch = _batch(16)
    batch["frame_valid"][:, 8:] = 0
    noisy = {**batch, "frame_labels": batch["frame_labels"].clone()}
    noisy["frame_labels"][:, 8:] = 1.0 - noisy["frame_labels"][:, 8:]  # labels past the end do not count
    torch.testing.assert_close(model(batch)["loss"], model(noisy)["loss"])


def test_pretrained_backbone_loads_except_the_new_classifier():
    pre = FrameDetector(DetectionConfig(backbone="x3d_debug", num_classes=6, objective="frames"))
    fine = FrameDetector(DetectionConfig(backbone="x3d_debug", num_classes=4, objective="localize"))
    missing = fine.load_backbone_state(pre.backbone.state_dict())
    assert missing == ["head.fc.bias", "head.fc.weight"]  # only fc2 is new (seed 000 L733)
    torch.testing.assert_close(fine.backbone.head_proj.weight, pre.backbone.head_proj.weight)
    with pytest.raises(ValueError, match="num_classes"):
        FrameDetector(DetectionConfig(backbone="x3d_debug", num_classes=0))
    with pytest.raises(ValueError, match="per-frame head"):
        FrameDetector(DetectionConfig(backbone="s3d_debug", num_classes=3))
