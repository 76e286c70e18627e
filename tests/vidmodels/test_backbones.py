"""Backbone contract over the whole registry (debug sizes), plus pinned full-size figures.

Legend: B batch, C channels, T time, H/W spatial, D embedding dim, K classes.
"""

from __future__ import annotations

import pathlib
import re

import pytest
import torch
from torch import nn

import vidmodels
from vidmodels import create_backbone, get_model_info, list_backbones
from vidmodels.summary import count_gmacs, count_params

torch.set_num_threads(1)

B, K = 2, 5
DEBUG = list_backbones(debug=True)
# Registry entries plus the variants selected by kwargs.
CASES = [(n, {}) for n in DEBUG] + [
    ("vit_video_debug", {"attention": "divided"}),
    ("vit_video_debug", {"class_token": False, "global_pool": "avg"}),
    ("s3d_debug", {"gating": True}),
    ("r2d3d_debug", {"in_chans": 2}),
    ("x3d_debug", {"in_chans": 2}),
    ("s3d_debug", {"in_chans": 2}),
    ("vit_video_debug", {"in_chans": 2}),
]


def _clip(name: str, in_chans: int = 3) -> torch.Tensor:
    T, H, W = get_model_info(name).input_size
    return torch.randn(B, in_chans, T, H, W)


def _case_id(case: tuple[str, dict]) -> str:
    name, kw = case
    return name + "".join(f"-{k}={v}" for k, v in kw.items())


def test_registry_has_every_family_and_a_debug_size() -> None:
    full = set(list_backbones(debug=False))
    assert {"s3d", "r2d3d_18", "r2d3d_34", "r3d_18", "r2plus1d_18", "x3d_xs", "x3d_s", "x3d_m", "x3d_l",
            "vit_video_s", "vit_video_b"} <= full
    assert set(DEBUG) == {"s3d_debug", "r2d3d_debug", "r3d_debug", "r2plus1d_debug", "x3d_debug", "vit_video_debug"}
    with pytest.raises(KeyError):
        create_backbone("no_such_model")
    with pytest.raises(ValueError):
        vidmodels.register("s3d", input_size=(1, 1, 1))(lambda **_: nn.Identity())


@pytest.mark.parametrize("case", CASES, ids=_case_id)
def test_contract(case: tuple[str, dict]) -> None:
    name, kw = case
    torch.manual_seed(0)
    model = create_backbone(name, num_classes=K, **kw)
    x_BCTHW = _clip(name, kw.get("in_chans", 3))

    feats = model.forward_features(x_BCTHW)
    assert feats.shape[0] == B and torch.isfinite(feats).all()
    ch_dim = -1 if feats.ndim == 3 else 1  # ViT tokens (B, N, D) or a map (B, C, T, H, W)
    assert feats.shape[ch_dim] == model.feature_map_dim
    z_BD = model.forward_head(feats, pre_logits=True)
    assert z_BD.shape == (B, model.feature_dim)
    logits_BK = model(x_BCTHW)
    assert logits_BK.shape == (B, K) and torch.isfinite(logits_BK).all()

    logits_BK.square().mean().backward()
    first = next(p for p in model.parameters() if p.ndim > 1)  # stem / patch-embedding weight
    assert first.grad is not None and torch.isfinite(first.grad).all() and first.grad.abs().sum() > 0

    model.reset_classifier(0)
    assert model(x_BCTHW).shape == (B, model.feature_dim)
    model.reset_classifier(7)
    assert model(x_BCTHW).shape == (B, 7)


@pytest.mark.parametrize("name", DEBUG)
def test_headless_forward_returns_embedding(name: str) -> None:
    model = create_backbone(name).eval()
    with torch.no_grad():
        z_BD = model(_clip(name))
    assert z_BD.shape == (B, model.feature_dim)
    assert model.num_classes == 0


@pytest.mark.parametrize("name", DEBUG)
def test_bf16_autocast_and_channels_last(name: str) -> None:
    model = create_backbone(name, num_classes=K).eval()
    x_BCTHW = _clip(name)
    with torch.no_grad():
        ref_BK = model(x_BCTHW)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            bf_BK = model(x_BCTHW)
        model_cl = model.to(memory_format=torch.channels_last_3d)
        cl_BK = model_cl(x_BCTHW.to(memory_format=torch.channels_last_3d))
    assert torch.isfinite(bf_BK.float()).all()
    torch.testing.assert_close(cl_BK, ref_BK, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("name", DEBUG)
def test_compiles_without_graph_breaks(name: str) -> None:
    # backend="eager" runs Dynamo's full capture (what torch.compile needs) without the slow
    # Inductor codegen; fullgraph=True fails on any graph break, e.g. a Python loop on data.
    model = create_backbone(name, num_classes=K).eval()
    x_BCTHW = _clip(name)
    compiled = torch.compile(model, backend="eager", fullgraph=True)
    with torch.no_grad():
        torch.testing.assert_close(compiled(x_BCTHW), model(x_BCTHW))


# --- full sizes: pinned parameter counts (400 classes) and shapes, on the meta device ---

PINNED_PARAMS = {
    "s3d": 8_320_048,  # = torchvision S3D
    "r3d_18": 33_371_472,  # = torchvision r3d_18
    "r2plus1d_18": 31_505_325,  # = torchvision r2plus1d_18
    "r2d3d_18": 14_160_336,  # thesis: 14.2M
    "r2d3d_34": 32_525_008,  # thesis: 32.6M (counts the predictor; see resnet3d.py)
    "x3d_xs": 3_794_322,  # model zoo 3.79M
    "x3d_s": 3_794_322,
    "x3d_m": 3_794_322,
    "x3d_l": 6_153_432,  # model zoo 6.15M
    "vit_video_s": 22_117_264,  # VideoMAE ViT-S ~22M
    "vit_video_b": 86_701_456,  # VideoMAE ViT-B ~87M
}


@pytest.mark.parametrize("name", sorted(PINNED_PARAMS))
def test_full_size_param_count(name: str) -> None:
    assert count_params(name, num_classes=400) == PINNED_PARAMS[name]
    info = get_model_info(name)
    if info.ref_params is not None:
        assert abs(PINNED_PARAMS[name] - info.ref_params) / info.ref_params < 0.006


def test_r2d3d_headless_plus_predictor_matches_thesis_rounding() -> None:
    phi = 2 * (256 * 256 + 256)  # DPC's φ: two 1x1 convs 256->256
    assert round((count_params("r2d3d_18", 0) + phi) / 1e5) == 142
    assert round((count_params("r2d3d_34", 0) + phi) / 1e5) == 326


@pytest.mark.parametrize(
    ("name", "size", "ref", "tol"),
    [
        ("s3d", (16, 224, 224), 17.98, 0.005),
        ("r3d_18", (16, 112, 112), 40.70, 0.005),
        ("r2plus1d_18", (16, 112, 112), 40.52, 0.005),
        ("x3d_xs", (4, 160, 160), 0.60, 0.01),
        ("x3d_s", (13, 160, 160), 1.96, 0.005),
        ("x3d_m", (16, 224, 224), 4.73, 0.005),
        ("x3d_m", (16, 256, 256), 6.2, 0.005),
        ("x3d_l", (16, 312, 312), 18.37, 0.005),
        ("x3d_l", (16, 356, 356), 24.8, 0.005),
    ],
)
def test_full_size_macs_match_published(name: str, size: tuple[int, int, int], ref: float, tol: float) -> None:
    assert abs(count_gmacs(name, size) - ref) / ref < tol


@pytest.mark.parametrize(
    ("name", "size", "out"),
    [
        ("s3d", (32, 128, 128), (1024, 4, 4, 4)),  # CoCLR: 32x128² -> 1024x4x4x4
        ("r2d3d_18", (5, 128, 128), (256, 2, 4, 4)),  # DPC: 5x128² -> 256x2x4x4 (seed 001 L362)
        ("x3d_m", (16, 224, 224), (432, 16, 7, 7)),  # X3D keeps T
        ("r3d_18", (16, 112, 112), (512, 2, 7, 7)),
        ("vit_video_b", (16, 224, 224), (1 + 8 * 14 * 14, 768)),
    ],
)
def test_full_size_feature_shapes(name: str, size: tuple[int, int, int], out: tuple[int, ...]) -> None:
    with torch.device("meta"):
        model = create_backbone(name)
        feats = model.forward_features(torch.empty(1, 3, *size))
    assert tuple(feats.shape[1:]) == out


# --- video ViT: token dropout and attention maps for ATS ---


@pytest.mark.parametrize("attention", ["joint", "divided"])
def test_vit_keep_all_tokens_equals_no_dropout(attention: str) -> None:
    model = create_backbone("vit_video_debug", attention=attention).eval()
    x_BCTHW = _clip("vit_video_debug")
    T, Hp, Wp = model.grid_size
    n = T * Hp * Wp if attention == "joint" else Hp * Wp
    keep = torch.arange(n).expand(B, n)
    with torch.no_grad():
        torch.testing.assert_close(model.forward_features(x_BCTHW, keep_idx=keep), model.forward_features(x_BCTHW))


def test_vit_token_dropout_shapes() -> None:
    x_BCTHW = _clip("vit_video_debug")
    joint = create_backbone("vit_video_debug", num_classes=K)
    keep = torch.rand(B, 32).argsort(1)[:, :8]  # keep 8 of the 2x4x4 = 32 tokens
    assert joint.forward_features(x_BCTHW, keep_idx=keep).shape == (B, 1 + 8, 32)
    divided = create_backbone("vit_video_debug", num_classes=K, attention="divided")
    keep = torch.rand(B, 16).argsort(1)[:, :4]  # keep 4 of 16 positions at both steps
    feats = divided.forward_features(x_BCTHW, keep_idx=keep)
    assert feats.shape == (B, 1 + 2 * 4, 32)
    assert divided.forward_head(feats).shape == (B, K)


def test_vit_attention_weights_path_matches_sdpa() -> None:
    from vidmodels.backbones.vit import Attention

    attn = Attention(32, 4).eval()
    x_BND = torch.randn(B, 9, 32)
    out, a_BhNN, v_BhNd = attn(x_BND, return_attn=True)
    torch.testing.assert_close(out, attn(x_BND))
    torch.testing.assert_close(a_BhNN.sum(-1), torch.ones(B, 4, 9))
    assert v_BhNd.shape == (B, 4, 9, 8)


def test_vit_interpolates_position_embedding() -> None:
    model = create_backbone("vit_video_debug").eval()
    with torch.no_grad():
        feats = model.forward_features(torch.randn(1, 3, 8, 48, 48))
    assert feats.shape == (1, 1 + 4 * 6 * 6, 32)


def test_vit_rejects_bad_options() -> None:
    with pytest.raises(ValueError):
        create_backbone("vit_video_debug", attention="axial")
    with pytest.raises(ValueError):
        create_backbone("vit_video_debug", class_token=False, global_pool="token")


def test_vidmodels_imports_no_ray_mlflow_or_distributed() -> None:
    root = pathlib.Path(vidmodels.__file__).parent
    banned = re.compile(r"^\s*(import|from)\s+(ray|mlflow|torch\.distributed)\b", re.M)
    offenders = [str(p) for p in root.rglob("*.py") if p.name != "dist.py" and banned.search(p.read_text())]
    assert offenders == []


def test_s3d_bn_follows_the_coclr_code_and_s3d_tf_the_tf_reference() -> None:
    """s3d and s3d_debug: PyTorch's BN defaults, as the CoCLR authors' s3dg.py (eps 1e-5, momentum 0.1);
    s3d_tf: the TF reference's eps 1e-3 and decay 0.999 (momentum 1e-3)."""
    bn = {name: {(m.eps, m.momentum) for m in vidmodels.create_backbone(name).modules()
                 if isinstance(m, torch.nn.BatchNorm3d)} for name in ("s3d", "s3d_debug", "s3d_tf")}
    assert bn == {"s3d": {(1e-5, 0.1)}, "s3d_debug": {(1e-5, 0.1)}, "s3d_tf": {(1e-3, 1e-3)}}
