"""Coarse-Fine Networks: Grid Pool / Unpool against numpy (spec R1, R2), Gaussian fusion (R3),
model modes on the debug X3D, and the Table 3.2 compute (R6)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from vidmodels.layers import (
    ConfidenceNet,
    gaussian_aggregate,
    gaussian_weights,
    grid_pool,
    grid_pool_positions,
    grid_unpool,
)
from vidmodels.methods.coarse_fine import CoarseFine, temporal_pool, x3d_taps
from vidmodels.summary import CF_PAPER_GMACS, coarse_fine_rows

torch.set_num_threads(1)


def _np_positions(p_A: np.ndarray, T: int) -> np.ndarray:
    """The authors' sampling: c = [0, cumsum(1-p)/sum(1-p)], s = (T-1) c."""
    w = 1.0 - p_A
    return (T - 1) * np.concatenate([[0.0], np.cumsum(w) / w.sum()])


def _np_lerp(x_CT: np.ndarray, s_S: np.ndarray) -> np.ndarray:
    """Linear interpolation of each row of ``x`` at fractional indices ``s``."""
    return np.stack([np.interp(s_S, np.arange(x_CT.shape[1]), row) for row in x_CT])


def _rand_p(B: int, A: int, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.sigmoid(3 * torch.randn(B, A, generator=g, dtype=torch.float64))


def test_positions_match_numpy_monotone_both_ends_and_gaps() -> None:
    T, p_BA = 32, _rand_p(3, 8)
    s_BS = grid_pool_positions(p_BA, T)
    assert s_BS.shape == (3, 9)
    for p_A, s_S in zip(p_BA.numpy(), s_BS.numpy(), strict=True):
        np.testing.assert_allclose(s_S, _np_positions(p_A, T), rtol=0, atol=1e-12)
        assert np.all(np.diff(s_S) > 0) and s_S[0] == 0 and abs(s_S[-1] - (T - 1)) < 1e-12
        ratio = np.diff(s_S) / (1 - p_A)  # gap s_i - s_{i-1} proportional to 1 - p_i
        np.testing.assert_allclose(ratio, ratio[0], rtol=1e-10)
    uniform = grid_pool_positions(torch.full((2, 8), 0.3, dtype=torch.float64), T)
    torch.testing.assert_close(uniform, (torch.arange(9.0, dtype=torch.float64) * (T - 1) / 8).expand(2, 9))


def test_grid_pool_matches_numpy_lerp_and_grid_sample() -> None:
    g = torch.Generator().manual_seed(1)
    x_BCTHW = torch.randn(2, 3, 16, 4, 5, generator=g, dtype=torch.float64)
    p_BA = _rand_p(2, 4, seed=2)
    y_BCSHW, s_BS = grid_pool(x_BCTHW, p_BA), grid_pool_positions(p_BA, 16)
    assert y_BCSHW.shape == (2, 3, 5, 4, 5)
    for b in range(2):
        x_FT = x_BCTHW[b].permute(0, 2, 3, 1).reshape(-1, 16).numpy()
        ref = _np_lerp(x_FT, _np_positions(p_BA[b].numpy(), 16))
        np.testing.assert_allclose(y_BCSHW[b].permute(0, 2, 3, 1).reshape(-1, 5).numpy(), ref, atol=1e-12)
    # The authors' grid_sample(align_corners=True) with an identity spatial grid.
    gt_BS = 2 * s_BS / 15 - 1
    gh, gw = torch.linspace(-1, 1, 4, dtype=torch.float64), torch.linspace(-1, 1, 5, dtype=torch.float64)
    grid = torch.stack(torch.broadcast_tensors(gw[None, None, None, :], gh[None, None, :, None], gt_BS[:, :, None, None]), -1)
    ref = F.grid_sample(x_BCTHW, grid, align_corners=True)
    torch.testing.assert_close(y_BCSHW, ref, rtol=0, atol=1e-12)


def test_grid_pool_gradient_wrt_confidences() -> None:
    x_BCTHW = torch.randn(2, 3, 16, 2, 2, dtype=torch.float64)
    z_BA = torch.randn(2, 4, dtype=torch.float64, requires_grad=True)
    y = grid_pool(x_BCTHW, torch.sigmoid(z_BA))
    (y * torch.randn_like(y)).sum().backward()
    assert torch.isfinite(z_BA.grad).all() and z_BA.grad.abs().sum() > 0
    net = ConfidenceNet(3).double()
    y = grid_pool(x_BCTHW, net(x_BCTHW))
    (y * torch.randn_like(y)).sum().backward()
    assert net.conv1.weight.grad.abs().sum() > 0


@pytest.mark.parametrize("seed", range(4))
def test_unpool_of_pool_is_identity_on_linear_signals(seed: int) -> None:
    T, A = 32, 8
    p_BA = _rand_p(3, A, seed=seed)
    if seed == 3:  # near-empty gaps (p close to 1) must not break the inversion
        p_BA[:, 2] = 1 - 1e-9
    a_K, b_K = torch.randn(5, dtype=torch.float64), torch.randn(5, dtype=torch.float64)
    t_T = torch.arange(T, dtype=torch.float64)
    f_TK = a_K + t_T[:, None] * b_K
    x_BCTHW = f_TK.T[None, :, :, None, None].expand(3, 5, T, 2, 2)
    y_BCSHW, s_BS = grid_pool(x_BCTHW, p_BA), grid_pool_positions(p_BA, T)
    logits_BSK = y_BCSHW.mean((3, 4)).transpose(1, 2)
    out_BTK = grid_unpool(logits_BSK, s_BS, T)
    torch.testing.assert_close(out_BTK, f_TK.expand(3, T, 5), rtol=0, atol=1e-10)


def test_unpool_after_fixed_pools_is_identity_inside() -> None:
    T = 16
    f_T = 2.0 + 0.5 * torch.arange(T, dtype=torch.float64)
    x_BCTHW = f_T[None, None, :, None, None].expand(1, 1, T, 1, 1)
    for pool, first, last in (("stride", 0, 12), ("avg", 1.5, 13.5)):
        y, s_BJ = temporal_pool(x_BCTHW, pool)
        out = grid_unpool(y[:, :, :, 0, 0].transpose(1, 2), s_BJ, T)[0, :, 0]
        t = torch.arange(T)
        inside = (t >= first) & (t <= last)
        torch.testing.assert_close(out[inside], f_T[inside])
        assert torch.all(out[t > last] == 2 + 0.5 * last) and torch.all(out[t < first] == 2 + 0.5 * first)  # edges held


def test_confidence_net_length_and_params() -> None:
    net = ConfidenceNet(24)
    assert sum(p.numel() for p in net.parameters()) == 31_465  # spec R6
    for T in (8, 16, 128):
        p_BA = net(torch.randn(2, 24, T, 8, 8))
        assert p_BA.shape == (2, T // 4) and ((p_BA > 0) & (p_BA < 1)).all()


def test_gaussians_peak_one_and_constant_aggregation() -> None:
    g = torch.Generator().manual_seed(3)
    mu_BJ = torch.rand(2, 5, generator=g, dtype=torch.float64) * 40 - 4  # some centres off the clip
    G_BTJ = gaussian_weights(mu_BJ, torch.tensor([30.0 / 8, 2.0], dtype=torch.float64), 32)
    torch.testing.assert_close(G_BTJ.amax(dim=1), torch.ones(2, 5, dtype=torch.float64))
    t = torch.arange(32, dtype=torch.float64)[None, :, None]
    ratio = G_BTJ / torch.exp(-((t - mu_BJ[:, None]) ** 2) / (2 * torch.tensor([30 / 8, 2.0])[:, None, None] ** 2))
    torch.testing.assert_close(ratio, ratio[:, :1].expand_as(ratio))  # a rescaled Gaussian
    c_C = torch.tensor([1.5, -2.0, 7.0], dtype=torch.float64)
    x_BCTHW = c_C[None, :, None, None, None].expand(2, 3, 32, 3, 3)
    w_BTHW = torch.rand(2, 32, 3, 3, generator=g, dtype=torch.float64)
    w_BTHW[:, 25:] = 0  # masked (padded) frames
    out = gaussian_aggregate(x_BCTHW, w_BTHW, G_BTJ)
    torch.testing.assert_close(out, c_C[None, :, None, None, None].expand(2, 3, 5, 3, 3), rtol=1e-5, atol=1e-5)
    # Against the authors' broadcast form (RewightLayer): sum_t x w G mask / (sum_t w G mask + 1e-6).
    x_BCTHW = torch.randn(2, 3, 32, 3, 3, generator=g, dtype=torch.float64)
    wG = w_BTHW[:, None, :, None] * G_BTJ[:, None, :, :, None, None]  # B 1 T J H W
    ref = (x_BCTHW[:, :, :, None] * wG).sum(2) / (wG.sum(2) + 1e-6)
    torch.testing.assert_close(gaussian_aggregate(x_BCTHW, w_BTHW, G_BTJ), ref)


MODES = [
    ("coarse_fine", "grid", "CTHW"),
    ("coarse_fine", "grid", "C"),
    ("coarse_fine", "stride", "CTHW"),
    ("fine_fine", "grid", "CTHW"),
    ("coarse_only", "grid", "CTHW"),
    ("coarse_only", "stride", "CTHW"),
    ("coarse_only", "avg", "CTHW"),
    ("coarse_only", "max", "CTHW"),
    ("x3d", "grid", "CTHW"),
]


@pytest.mark.parametrize(("mode", "pool", "dims"), MODES)
def test_model_modes_forward_shapes(mode: str, pool: str, dims: str) -> None:
    torch.manual_seed(0)
    model = CoarseFine(arch="x3d_debug", num_classes=5, mode=mode, pool=pool, fusion_dims=dims)
    coarse, fine = torch.randn(2, 3, 16, 32, 32), torch.randn(2, 3, 24, 32, 32)
    mask = torch.ones(2, 24)
    mask[1, 18:] = 0
    out = model(coarse, fine, fine_mask_BT=mask, offset_B=torch.tensor([0.0, 4.0]))
    assert out.shape == (2, 16, 5) and torch.isfinite(out).all()
    assert model(coarse, fine, num_frames=40).shape == (2, 40, 5)
    out.sum().backward()
    if pool == "grid" and mode in ("coarse_fine", "coarse_only"):
        assert model.confidence.conv1.weight.grad.abs().sum() > 0  # Grid Pool learns through the lerp
    if mode in ("coarse_fine", "fine_fine"):
        assert model.fusion.mixes[0].to_bias.weight.grad is not None
        with pytest.raises(ValueError, match="needs the Fine"):
            model(coarse)


def test_precomputed_frozen_fine_features_and_param_groups() -> None:
    torch.manual_seed(0)
    model = CoarseFine(arch="x3d_debug", num_classes=5, freeze_fine=True).train()
    assert not model.fine.training and model.coarse.training
    assert not any(p.requires_grad for p in model.fine.parameters())
    coarse, fine = torch.randn(2, 3, 16, 32, 32), torch.randn(2, 3, 24, 32, 32)
    taps = model.fine_features(fine)
    assert [t.shape[1] for t in taps.values()] == [8, 16, 24, 48, 108] and not taps["res2"].requires_grad
    model.eval()
    torch.testing.assert_close(model(coarse, taps), model(coarse, fine))
    # A cache pooled to a smaller grid (the authors store 7x7 maps) is resized per level.
    small = {k: F.adaptive_avg_pool3d(v, (None, 2, 2)) for k, v in x3d_taps(model.fine, fine).items()}
    assert model(coarse, small).shape == (2, 16, 5)
    base, fusion = model.param_groups(0.01)
    assert fusion["lr"] == pytest.approx(0.1) and base["lr"] == 0.01
    ids = [id(p) for g in (base, fusion) for p in g["params"]]
    assert len(ids) == len(set(ids)) == sum(p.requires_grad for p in model.parameters())
    assert {id(p) for p in model.fusion.parameters()} == {id(p) for p in fusion["params"]}
    with pytest.raises(ValueError, match="mode"):
        CoarseFine(arch="x3d_debug", mode="slow_fast")


def test_compute_table_against_paper() -> None:
    """Table 3.2 / 3.3e GMACs (128 frames at 224², K = 157), counted on the meta device (~5 s).

    X3D, Coarse-only and Fine-Fine are within 2 % of the paper. The paper's Coarse-Fine
    figure (73.37) is X3D + Coarse-only (grid) + Fine-Fine's fusion; the fusion of the
    built Coarse-Fine runs on αT + 1 = 33 steps instead of 128 and costs about 6.9, so the
    counted model is 60.8 (see ``python -m vidmodels.summary --coarse-fine``).
    """
    rows = coarse_fine_rows()
    for name in ("x3d", "coarse_only/stride", "coarse_only/grid", "fine_fine"):
        assert rows[name]["paper"] == pytest.approx(CF_PAPER_GMACS[name], rel=0.02), name
    assert rows["coarse_fine (paper sum)"]["paper"] == pytest.approx(73.37, rel=0.02)
    x3d, cf = rows["x3d"], rows["coarse_fine"]
    assert x3d["stem+res2"] / 128 == pytest.approx(0.0617, abs=1e-4)
    assert x3d["res3-conv5"] / 128 == pytest.approx(0.2339, abs=1e-4)
    assert cf["grid pool h"] == pytest.approx(0.878, abs=1e-3)
    assert cf["paper"] == pytest.approx(60.8, abs=0.5)
    assert x3d["params"] == 3_296_415
    assert int(cf["params"] / 1e4) == 782 and round(rows["fine_fine"]["params"] / 1e4) == 780  # 7.82M, 7.80M
