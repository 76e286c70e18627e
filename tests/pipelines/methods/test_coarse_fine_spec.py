"""The ``coarse_fine`` spec without Ray: schedules, refusals, each phase's recipe, and every phase built,
trained a step, handed off and registered (rebuilt from the backbone registry) on tiny tensors."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

import pipelines.methods.coarse_fine as cf
from pipelines.config import apply_overrides
from pipelines.eval.detection import DetectionEval, DetectionValidator, video_scores
from pipelines.methods import get_method
from pipelines.train.optim import OptimConfig, param_groups
from vidmodels import create_backbone, list_backbones
from vidmodels.methods.coarse_fine import X3DStream

torch.set_num_threads(1)
SPEC = get_method("coarse_fine")
K_PRE, K = 4, 5


@pytest.fixture
def classes(monkeypatch):
    """K without a manifest: 4 pretraining classes, 5 in the multi-action videos."""
    monkeypatch.setattr(cf, "_num_classes", lambda job, phase: K_PRE if phase.params["stage"] == "pretrain" else K)


def _job(variant="debug", *overrides):
    return apply_overrides(SPEC.variants[variant](), list(overrides))


@pytest.mark.parametrize("variant,overrides,names", [
    ("debug", (), ["pretrain_cls", "coarse", "fine", "joint"]),
    ("demo", (), ["pretrain_cls", "coarse", "fine", "joint"]),
    ("charades", (), ["coarse", "fine", "joint"]),
    ("debug", ("method.mode=fine_fine",), ["pretrain_cls", "fine", "joint"]),
    ("debug", ("pretrain_epochs=0",), ["coarse", "fine", "joint"]),
])
def test_schedules(variant, overrides, names):
    job = _job(variant, *overrides)
    phases = SPEC.phases(job)
    assert [p.name for p in phases] == names
    by = {p.name: p for p in phases}
    stage1 = {"rgb": "pretrain_cls"} if "pretrain_cls" in by else {}
    assert all(by[n].init_from == stage1 for n in ("coarse", "fine") if n in by)
    assert by["joint"].init_from == ({"coarse": "coarse", "fine": "fine"} if "coarse" in by else {"fine": "fine"})
    assert [p.registers for p in phases] == [{"pretrain_cls": ("rgb",), "coarse": ("coarse",), "fine": ("fine",),
                                              "joint": ("detector",)}[n] for n in names]
    assert all(p.data is job.videos for p in phases if p.name != "pretrain_cls")  # multi-action videos
    assert "pretrain_cls" not in by or by["pretrain_cls"].data is None  # job.data: single-action clips
    assert by["joint"].params["mode"] == job.method.mode


def test_seed_settings():
    job = _job("charades")
    assert job.init_encoder == "models:/detection-rgb@pretrain_cls" and job.method.arch == "x3d_m"
    assert (job.optim.optimizer, job.optim.lr, job.optim.milestones, job.loop.batch_size) == ("sgd", 0.02, (60, 80), 16)
    assert (job.coarse_epochs, job.fine_epochs, job.joint_epochs, job.fusion_lr_mult) == (100, 100, 100, 10.0)
    by = {p.name: SPEC.recipe(job, p) for p in SPEC.phases(job)}
    assert (by["coarse"].name, by["coarse"].clip_len, by["coarse"].stride, by["coarse"].crop_size) == \
        ("activity", 64, 10, 224)
    assert (by["fine"].clip_len, by["fine"].stride) == (16, 10)  # T / 4 (thesis L438)
    assert (by["joint"].name, by["joint"].clip_len, by["joint"].fine_len, by["joint"].stride) == \
        ("coarse_fine", 64, 128, 10)


def test_debug_and_demo_recipes():
    job = _job("debug")
    by = {p.name: SPEC.recipe(job, p) for p in SPEC.phases(job)}
    assert by["pretrain_cls"].name == "detection" and by["pretrain_cls"].volume is None
    assert (by["coarse"].clip_len, by["fine"].clip_len, by["joint"].fine_len) == (8, 4, 16)
    assert {r.crop_size for r in by.values()} == {64} and by["joint"].augment.flip_p == 0
    demo = _job("demo")
    joint = SPEC.recipe(demo, SPEC.phases(demo)[-1])
    assert (joint.clip_len, joint.fine_len, joint.stride) == (32, 64, 3)  # spec D
    assert SPEC.recipe(_job("debug", "fine_clip_len=6"), SPEC.phases(job)[2]).clip_len == 6


@pytest.mark.parametrize("overrides,match", [
    (("method.mode=coarse_only",), "stage-2 model"),
    (("init_encoder=models:/detection-rgb@pretrain_cls",), "not both"),
])
def test_impossible_schedules_are_refused(overrides, match):
    with pytest.raises(ValueError, match=match):
        SPEC.phases(_job("debug", *overrides))


def _batch(job, phase, B=2, S=32):
    rc = SPEC.recipe(job, phase)
    T = rc.clip_len
    if phase.params["stage"] == "pretrain":
        labels = torch.eye(K_PRE)[[0, 2]][:, None].expand(B, T, K_PRE)
        return {"rgb": torch.randn(B, 3, T, S, S), "frame_labels": labels}
    L = rc.clip_len * rc.stride
    batch = {"rgb": torch.randn(B, 3, T, S, S), "frame_labels": (torch.rand(B, L, K) > 0.7).float(),
             "frame_valid": torch.ones(B, L)}
    if phase.name == "joint":
        F = rc.fine_len
        batch.update(fine=torch.randn(B, 3, F, S, S), fine_valid=(torch.arange(F) < torch.tensor([[F], [12]])).float(),
                     offset=torch.tensor([0.0, 3.0]))
    return batch


def _rebuilt(enc):
    """What ``load_registered_model`` does: build from the registry by name and kwargs, load strictly."""
    module = create_backbone(enc.backbone_name, **enc.backbone_kwargs)
    module.load_state_dict(enc.state, strict=True)
    return module.eval()


@pytest.mark.parametrize("mode", ["coarse_fine", "fine_fine"])
def test_every_phase_builds_trains_hands_off_and_registers(classes, mode):
    job = _job("debug", f"method.mode={mode}", "method.freeze_fine=true")
    handed: dict[str, dict] = {}
    for phase in SPEC.phases(job):
        torch.manual_seed(0)
        model = SPEC.build(job, phase, {k: handed[src][k] for k, src in phase.init_from.items()})
        out = model(_batch(job, phase))
        out["loss"].backward()
        assert torch.isfinite(out["loss"]) and ("top1" in out if phase.name == "pretrain_cls" else "loc" in out)
        groups = param_groups(model, OptimConfig(lr=0.02))
        if phase.name == "joint":
            assert [(g["name"], g["lr"]) for g in groups] == [("streams", 0.02), ("fusion", pytest.approx(0.2))]
            trained = {id(p) for g in groups for p in g["params"]}
            assert not any(id(p) in trained for p in model.backbone.net.fine.parameters())  # frozen Fine stream
            assert not model.train().backbone.net.fine.training
        encoders = SPEC.export(job, phase, model)
        assert set(encoders) == set(phase.registers)
        for key, enc in encoders.items():
            handed.setdefault(phase.name, {})[key] = enc.state
            module, example = _rebuilt(enc), enc.example
            model.eval()
            with torch.no_grad():
                y = module(example)
                assert y.shape == (1, module.feature_dim if key == "rgb" else K) and torch.isfinite(y).all()
                if key != "rgb":  # the registered module is the trained one
                    torch.testing.assert_close(y, model.backbone(example))
    net = model.backbone.net
    fine_state = handed["fine"]["fine"]
    torch.testing.assert_close(net.fine.stem.conv_xy.weight, fine_state["net.coarse.stem.conv_xy.weight"])
    source = handed["coarse"]["coarse"] if mode == "coarse_fine" else fine_state
    key = "net.coarse.stages.2.0.conv_a.0.weight"
    torch.testing.assert_close(net.coarse.stages[2][0].conv_a[0].weight, source[key])


def test_stage1_starts_from_the_pretrained_x3d_and_refuses_another_arch(classes):
    job = _job("debug")
    coarse = SPEC.phases(job)[1]
    x3d = create_backbone("x3d_debug", num_classes=0).state_dict()
    model = SPEC.build(job, coarse, {"rgb": x3d})
    torch.testing.assert_close(model.backbone.net.coarse.head.fc1.weight, x3d["head_proj.weight"])
    other = create_backbone("x3d_m", num_classes=0).state_dict()
    with pytest.raises(ValueError, match="do not fit x3d_debug"):
        SPEC.build(job, coarse, {"rgb": other})


def test_x3d_weights_map_onto_the_stream():
    x3d = create_backbone("x3d_debug", num_classes=K, drop_rate=0.0).eval()
    stream = X3DStream(create_backbone("x3d_debug", num_classes=0), K, drop_rate=0.0).eval()
    assert cf.load_fitting(stream, cf.x3d_to_stream(x3d.state_dict())) == set(stream.state_dict())
    x_BCTHW = torch.randn(1, 3, 6, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(stream(x_BCTHW), x3d.forward_frames(x_BCTHW))


@pytest.mark.parametrize("mode,pool", [("coarse_fine", "grid"), ("coarse_only", "avg"), ("x3d", "grid")])
def test_whole_videos_are_scored_fully_convolutionally(mode, pool):
    backbone = cf.CoarseFineBackbone(num_classes=K, arch="x3d_debug", mode=mode, pool=pool, fine_frames=8)
    model = cf.CoarseFineDetector(backbone).eval()
    ev = DetectionEval("unused", "test", K, stride=2, crop_size=32, max_steps=16)
    for steps in (2, 13, 20):  # shorter than a pool, longer than the Fine cap, two chunks
        clip = np.random.default_rng(steps).integers(0, 255, (steps, 32, 32, 3), dtype=np.uint8)
        probs = video_scores([model.frame_logits], clip, 2 * steps - 1, ev, torch.device("cpu"))
        assert probs.shape == (2 * steps - 1, K) and np.all((probs >= 0) & (probs <= 1))


def test_validation_and_the_registered_backbone(classes):
    job = _job("debug")
    phases = {p.name: p for p in SPEC.phases(job)}
    assert SPEC.validate(job, phases["pretrain_cls"]) is None
    validator = SPEC.validate(job, phases["joint"])
    assert isinstance(validator, DetectionValidator)
    assert (validator.cfg.split, validator.cfg.stride, validator.cfg.crop_size, validator.cfg.max_steps,
            validator.cfg.limit, validator.cfg.num_classes) == ("test", 2, 64, 16, 1, K)
    assert SPEC.validate(dataclasses.replace(job, val_split=None), phases["joint"]) is None
    assert cf.BACKBONE in list_backbones(debug=False) and cf.BACKBONE not in list_backbones(debug=True)
    with pytest.raises(ValueError, match="num_classes"):
        create_backbone(cf.BACKBONE, arch="x3d_debug")


def test_finish_without_registered_models_says_so(capsys):
    assert SPEC.finish(_job("debug"), [{"phase": "joint", "model": None}]) == {}
    assert "nothing to evaluate" in capsys.readouterr().out
