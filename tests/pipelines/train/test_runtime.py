"""The generic parts of the training runtime that need no cluster."""

import random

import numpy as np
import pytest
import torch

from pipelines.data.normalize import normalize_batch
from pipelines.train.checkpoint import load_state, rng_state, save_state, set_rng_state
from pipelines.train.optim import OptimConfig, lr_factor, make_optimizer


def test_lr_schedules():
    cos = OptimConfig(schedule="cosine", warmup_epochs=1)
    assert lr_factor(0, 10, 5, cos) == pytest.approx(0.1)
    assert lr_factor(9, 10, 5, cos) == pytest.approx(1.0)
    assert lr_factor(10, 10, 5, cos) == pytest.approx(1.0)
    assert lr_factor(30, 10, 5, cos) == pytest.approx(0.5)
    assert lr_factor(50, 10, 5, cos) == pytest.approx(0.0, abs=1e-9)
    step = OptimConfig(schedule="step", milestones=(2, 4), gamma=0.1)
    assert [lr_factor(e * 10, 10, 6, step) for e in (0, 2, 4)] == pytest.approx([1.0, 0.1, 0.01])
    with pytest.raises(ValueError):
        lr_factor(0, 1, 1, OptimConfig(schedule="linear"))


def test_make_optimizer_skips_frozen_parameters():
    model = torch.nn.Sequential(torch.nn.Linear(2, 2), torch.nn.Linear(2, 2))
    model[0].requires_grad_(False)
    opt = make_optimizer(model.parameters(), OptimConfig(optimizer="sgd"))
    assert sum(p.numel() for g in opt.param_groups for p in g["params"]) == 6


def test_normalize_batch_layout_and_ranges():
    rgb = torch.full((2, 4, 8, 8, 3), 255, dtype=torch.uint8)
    flow = torch.full((2, 4, 8, 8, 3), 128, dtype=torch.uint8)
    out = normalize_batch({"rgb_0": rgb, "flow_0": flow, "label_index": torch.tensor([1, 2]),
                           "video_id": ["a", "b"]}, {"rgb_0": "rgb", "flow_0": "flow"}, torch.device("cpu"))
    assert out["rgb_0"].shape == (2, 3, 4, 8, 8) and out["rgb_0"].dtype == torch.float32
    assert out["rgb_0"][0, 0].mean().item() == pytest.approx((1 - 0.485) / 0.229, rel=1e-5)
    assert out["flow_0"].abs().max().item() == pytest.approx(0.5 / 127.5, rel=1e-4)  # 128 ~ zero motion
    assert out["label_index"].tolist() == [1, 2] and out["video_id"] == ["a", "b"]
    # only declared columns are normalised: an undeclared uint8 video stays as it is
    raw = normalize_batch({"blocks": rgb}, {}, torch.device("cpu"))["blocks"]
    assert raw.dtype == torch.uint8
    with pytest.raises(ValueError, match="must be uint8"):
        normalize_batch({"rgb": rgb.float()}, {"rgb": "rgb"}, torch.device("cpu"))
    with pytest.raises(ValueError, match="unknown normalisation"):
        normalize_batch({"rgb": rgb}, {"rgb": "lab"}, torch.device("cpu"))


def test_checkpoint_roundtrip_with_rng_and_weights_only(tmp_path):
    model = torch.nn.Linear(3, 2)
    opt = torch.optim.Adam(model.parameters())
    model(torch.randn(4, 3)).sum().backward()
    opt.step()
    random.seed(1), np.random.seed(2), torch.manual_seed(3)
    state = {"model": model.state_dict(), "optimizer": opt.state_dict(), "epoch": 3, "step": 70,
             "rng": rng_state()}
    expected = (random.random(), np.random.rand(), torch.rand(1).item())
    save_state(str(tmp_path), state)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["state.pt"]  # no temporary left
    back = load_state(str(tmp_path))
    set_rng_state(back["rng"])
    assert (random.random(), np.random.rand(), torch.rand(1).item()) == expected
    assert back["step"] == 70 and torch.equal(back["model"]["weight"], model.state_dict()["weight"])
