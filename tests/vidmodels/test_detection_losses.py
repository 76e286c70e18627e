"""Detection losses against hand-computed values and transcriptions of the SSDet / Coarse-Fine code."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from vidmodels.losses import (
    frame_bce,
    localization_loss,
    mixed_source_ce,
    soft_frame_ce,
)

torch.set_num_threads(1)


def _softplus(x: float) -> float:
    return math.log1p(math.exp(x))


def test_frame_bce_hand_values() -> None:
    assert frame_bce(torch.zeros(2, 3, 4), torch.rand(2, 3, 4)).item() == pytest.approx(math.log(2))
    z_BTK, y_BTK = torch.tensor([[[2.0, -1.0]]]), torch.tensor([[[1.0, 0.0]]])
    assert frame_bce(z_BTK, y_BTK).item() == pytest.approx((_softplus(-2) + _softplus(-1)) / 2)


def test_frame_bce_ignores_padding() -> None:
    torch.manual_seed(0)
    z_BTK, y_BTK = torch.randn(2, 6, 3), (torch.rand(2, 6, 3) < 0.4).float()
    valid_BT = torch.tensor([[1, 1, 1, 1, 0, 0], [1, 1, 1, 1, 1, 1]])
    padded = z_BTK.clone()
    padded[0, 4:] = 1e4  # garbage on padding
    ref = torch.cat([F.binary_cross_entropy_with_logits(z_BTK[0, :4], y_BTK[0, :4], reduction="none"),
                     F.binary_cross_entropy_with_logits(z_BTK[1], y_BTK[1], reduction="none")]).mean()
    torch.testing.assert_close(frame_bce(padded, y_BTK, valid_BT), ref)
    with pytest.raises(ValueError):
        frame_bce(z_BTK, y_BTK, valid_BT[:, :5])


def test_localization_loss_max_over_valid_time() -> None:
    z_BTK = torch.tensor([[[0.0, 1.0], [3.0, -2.0], [5.0, 4.0]]])
    y_BTK = torch.tensor([[[0.0, 0.0], [1.0, 0.0], [0.0, 1.0]]])
    valid_BT = torch.tensor([[1, 1, 0]])  # the last frame (and its label) is padding
    loss, parts = localization_loss(z_BTK, y_BTK, valid_BT)
    cls = (_softplus(-3.0) + _softplus(1.0)) / 2  # max_t z = (3, 1), max_t y = (1, 0)
    loc = (_softplus(0.0) + _softplus(1.0) + _softplus(-3.0) + _softplus(-2.0)) / 4
    assert parts["cls"].item() == pytest.approx(cls, rel=1e-6)
    assert parts["loc"].item() == pytest.approx(loc, rel=1e-6)
    assert loss.item() == pytest.approx(0.5 * cls + 0.5 * loc, rel=1e-6)
    only_cls, _ = localization_loss(z_BTK, y_BTK, valid_BT, cls_weight=1.0)
    assert only_cls.item() == pytest.approx(cls, rel=1e-6)
    with pytest.raises(ValueError):
        localization_loss(z_BTK, y_BTK, cls_weight=1.5)


def test_localization_loss_equals_the_coarse_fine_code() -> None:
    torch.manual_seed(1)
    z_BKT = torch.randn(3, 5, 8)  # the code's (B, C, T) layout
    masks = torch.ones(3, 8)
    masks[0, 6:] = 0
    masks[2, 3:] = 0
    labels = (torch.rand(3, 5, 8) < 0.3).float() * masks[:, None]  # the dataset zeroes padded labels
    probs = torch.sigmoid(z_BKT) * masks.unsqueeze(1)
    cls = F.binary_cross_entropy(torch.max(probs, dim=2)[0], torch.max(labels, dim=2)[0])
    loc = F.binary_cross_entropy(probs, labels, reduction="sum") / (torch.sum(masks) * labels.shape[1])
    loss, parts = localization_loss(z_BKT.transpose(1, 2), labels.transpose(1, 2), masks)
    torch.testing.assert_close(parts["cls"], cls)
    torch.testing.assert_close(parts["loc"], loc)
    torch.testing.assert_close(loss, (cls + loc) / 2)


def test_gradients_are_finite_with_extreme_logits_and_empty_clips() -> None:
    z_BTK = torch.tensor([[[60.0, -60.0], [-60.0, 60.0]], [[1.0, 2.0], [3.0, 4.0]]], requires_grad=True)
    y_BTK = torch.tensor([[[0.0, 1.0], [1.0, 0.0]], [[1.0, 1.0], [0.0, 0.0]]])
    valid_BT = torch.tensor([[1, 1], [0, 0]])  # the second clip is all padding
    loss, _ = localization_loss(z_BTK, y_BTK, valid_BT)
    loss.backward()
    assert torch.isfinite(loss) and torch.isfinite(z_BTK.grad).all()
    assert (z_BTK.grad[1] == 0).all()
    # Only the argmax frame of each class gets the classification gradient.
    z2 = torch.tensor([[[0.0], [2.0], [1.0]]], requires_grad=True)
    localization_loss(z2, torch.zeros(1, 3, 1), cls_weight=1.0)[0].backward()
    assert z2.grad[0, :, 0].nonzero().flatten().tolist() == [1]


def test_soft_frame_ce_against_soft_target_cross_entropy() -> None:
    torch.manual_seed(2)
    z_BTK = torch.randn(2, 4, 4)  # K = 3 classes + background
    y_BTK = torch.tensor([[[0.3, 0.5, 0.0]] * 4, [[1.0, 0.0, 0.0], [0.0, 0.0, 0.0], [0.0, 0.6, 0.4], [0.0, 0.0, 0.0]]])
    q_BTK = torch.cat([y_BTK, 1 - y_BTK.sum(-1, keepdim=True)], -1)
    ref = F.cross_entropy(z_BTK.flatten(0, 1), q_BTK.flatten(0, 1))
    torch.testing.assert_close(soft_frame_ce(z_BTK, y_BTK, background="extra_class"), ref)
    # class_zero: the background mass lands on class 0; a frozen frame is plain CE with target 0.
    z3 = z_BTK[..., :3]
    q0 = y_BTK.clone()
    q0[..., 0] += 1 - y_BTK.sum(-1)
    torch.testing.assert_close(soft_frame_ce(z3, y_BTK, background="class_zero"),
                               F.cross_entropy(z3.flatten(0, 1), q0.flatten(0, 1)))
    # none: rows without labels leave the mean.
    keep = y_BTK.sum(-1).flatten() > 0
    ref_none = -(y_BTK.flatten(0, 1)[keep] * F.log_softmax(z3.flatten(0, 1)[keep], -1)).sum(-1).mean()
    torch.testing.assert_close(soft_frame_ce(z3, y_BTK, background="none"), ref_none)
    with pytest.raises(ValueError, match="columns"):
        soft_frame_ce(z3, y_BTK, background="extra_class")
    with pytest.raises(ValueError, match="background"):
        soft_frame_ce(z3, y_BTK, background="zero")  # type: ignore[arg-type]


def _code_loss(logits_BTK, targets_MBT, gammas_MBT, masks_MBT) -> torch.Tensor:
    """SSDet ``train_x3d_kinetics_multigrid.py``: Σ_m sum(γ_m · CE(logits, labels_m)) / sum(mask_m)."""
    criterion = torch.nn.CrossEntropyLoss(reduction="none")
    logits = logits_BTK.transpose(1, 2)  # B C T
    return sum(torch.sum(gammas_MBT[m] * criterion(logits, targets_MBT[m])) / torch.sum(masks_MBT[m])
               for m in range(targets_MBT.shape[0]))


def test_mixed_source_ce_transcribes_the_code_and_handles_background() -> None:
    torch.manual_seed(3)
    z_BTK = torch.randn(2, 6, 5)
    t_MBT = torch.randint(0, 4, (2, 2, 6))
    t_MBT[0, 0, 2:4] = -1  # a frozen segment in clip 0
    g_MBT = torch.rand(2, 2, 6)
    m_MBT = torch.ones(2, 2, 6)
    m_MBT[1, :, :2] = 0
    g_MBT[1, :, :2] = 0
    code_t = t_MBT.clamp_min(0)  # the code labels frozen frames 0
    torch.testing.assert_close(mixed_source_ce(z_BTK, t_MBT, g_MBT, m_MBT), _code_loss(z_BTK, code_t, g_MBT, m_MBT))
    ext_t = torch.where(t_MBT < 0, torch.full_like(t_MBT, 4), t_MBT)
    torch.testing.assert_close(mixed_source_ce(z_BTK, t_MBT, g_MBT, m_MBT, background="extra_class"),
                               _code_loss(z_BTK, ext_t, g_MBT, m_MBT))


def _soft_labels(t_MBT: torch.Tensor, g_MBT: torch.Tensor, k: int) -> torch.Tensor:
    onehot_MBTK = F.one_hot(t_MBT.clamp_min(0), k).float() * (t_MBT >= 0)[..., None]
    return (g_MBT[..., None] * onehot_MBTK).sum(0)  # background (−1) contributes missing mass


def test_masked_form_equals_soft_ce_only_when_every_source_covers_every_frame() -> None:
    torch.manual_seed(4)
    k = 4
    z_BTK = torch.randn(3, 8, k + 1)
    t_MBT = torch.randint(0, k, (2, 3, 8))
    t_MBT[1, 0, 5:] = -1
    g0 = torch.rand(3, 8)
    g_MBT = torch.stack([g0, 1 - g0])  # mixing weights sum to 1 on every frame
    full = torch.ones(2, 3, 8)
    soft = soft_frame_ce(z_BTK, _soft_labels(t_MBT, g_MBT, k), background="extra_class")
    torch.testing.assert_close(mixed_source_ce(z_BTK, t_MBT, g_MBT, full, background="extra_class"), soft)
    # A MixUp-like overlap: clip 2 visible on frames 4..7 only. Weights still sum to 1, but the
    # code normalises each source by its own visible frames, which up-weights clip 2 by 8/4.
    part = full.clone()
    part[1, :, :4] = 0
    g_MBT = torch.stack([torch.where(part[1] > 0, g0, torch.ones_like(g0)), part[1] * (1 - g0)])
    soft = soft_frame_ce(z_BTK, _soft_labels(t_MBT, g_MBT, k), background="extra_class")
    masked = mixed_source_ce(z_BTK, t_MBT, g_MBT, part, background="extra_class")
    ce_MBT = -F.log_softmax(z_BTK, -1).unsqueeze(0).expand(2, -1, -1, -1).gather(
        -1, torch.where(t_MBT < 0, k, t_MBT).unsqueeze(-1)).squeeze(-1)
    per_source = [(g_MBT[m] * ce_MBT[m]).sum() / part[m].sum() for m in range(2)]
    torch.testing.assert_close(masked, per_source[0] + per_source[1])
    torch.testing.assert_close(soft, (g_MBT * ce_MBT).sum() / 24)
    assert not torch.allclose(masked, soft)
