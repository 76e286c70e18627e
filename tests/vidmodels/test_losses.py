"""Contrastive losses, positive masks and metrics against loop references written here."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from vidmodels.losses import (
    info_nce,
    label_positive_mask,
    mean_positive_nce,
    moco_logits,
    multi_positive_nce,
    topk_positive_mask,
)
from vidmodels.metrics import instance_accuracy, topk_accuracy

torch.set_num_threads(1)


# ---- references: plain loops over rows, float64, math.exp/math.log ----------------------------


def ref_multi_positive_nce(logits: torch.Tensor, mask: torch.Tensor) -> float:
    rows = []
    for row, pos in zip(logits.double().tolist(), mask.bool().tolist(), strict=True):
        num = sum(math.exp(v) for v, p in zip(row, pos, strict=True) if p)
        den = sum(math.exp(v) for v in row)
        rows.append(-math.log(num / den))
    return sum(rows) / len(rows)


def ref_mean_positive_nce(logits: torch.Tensor, mask: torch.Tensor) -> float:
    rows = []
    for row, pos in zip(logits.double().tolist(), mask.bool().tolist(), strict=True):
        den = sum(math.exp(v) for v in row)
        terms = [-math.log(math.exp(v) / den) for v, p in zip(row, pos, strict=True) if p]
        rows.append(sum(terms) / len(terms))
    return sum(rows) / len(rows)


def ref_info_nce(q: torch.Tensor, k: torch.Tensor, queue: torch.Tensor, tau: float) -> float:
    q, k, queue = q.double(), k.double(), queue.double()
    rows = []
    for i in range(q.shape[0]):
        pos = math.exp(float(q[i] @ k[i]) / tau)
        neg = sum(math.exp(float(q[i] @ queue[j]) / tau) for j in range(queue.shape[0]))
        rows.append(-math.log(pos / (pos + neg)))
    return sum(rows) / len(rows)


def ref_topk_mask(sim: torch.Tensor, k: int, exclude: torch.Tensor) -> torch.Tensor:
    out = torch.zeros_like(sim, dtype=torch.bool)
    for i in range(sim.shape[0]):
        cands = sorted((float(sim[i, j]), j) for j in range(sim.shape[1]) if not exclude[i, j])
        for _, j in cands[::-1][:k]:
            out[i, j] = True
    return out


def _random_mask(b: int, n: int, gen: torch.Generator) -> torch.Tensor:
    mask = torch.rand(b, n, generator=gen) < 0.3
    mask[torch.arange(b), torch.randint(0, n, (b,), generator=gen)] = True  # >= 1 positive per row
    return mask


def _unit(*shape: int, gen: torch.Generator) -> torch.Tensor:
    return F.normalize(torch.randn(*shape, generator=gen), dim=-1)


# ---- multi_positive_nce ----------------------------------------------------------------------


def test_multi_positive_nce_matches_reference() -> None:
    gen = torch.Generator().manual_seed(0)
    logits, mask = torch.randn(6, 11, generator=gen) * 3, _random_mask(6, 11, gen)
    assert multi_positive_nce(logits, mask).item() == pytest.approx(ref_multi_positive_nce(logits, mask), rel=1e-5)
    logits64 = logits.double()
    assert multi_positive_nce(logits64, mask).item() == pytest.approx(ref_multi_positive_nce(logits, mask), rel=1e-12)


def test_multi_positive_nce_gradient_matches_float64_autograd() -> None:
    gen = torch.Generator().manual_seed(1)
    logits, mask = torch.randn(4, 7, generator=gen, dtype=torch.float64, requires_grad=True), _random_mask(4, 7, gen)
    multi_positive_nce(logits, mask).backward()
    # Naive formula -log(Σ_P exp / Σ exp), fine at these magnitudes.
    x = logits.detach().clone().requires_grad_(True)
    (-(torch.log((x.exp() * mask).sum(1) / x.exp().sum(1)))).mean().backward()
    torch.testing.assert_close(logits.grad, x.grad)


def test_multi_positive_nce_is_stable_for_huge_logits() -> None:
    gen = torch.Generator().manual_seed(2)
    logits, mask = torch.randn(5, 9, generator=gen), _random_mask(5, 9, gen)
    scaled = logits * 50  # a range of about ±150: exp() overflows float32 beyond 88
    huge = (scaled + 1000.0).requires_grad_()  # and float64 beyond 709
    loss = multi_positive_nce(huge, mask)
    loss.backward()
    assert torch.isfinite(loss) and torch.isfinite(huge.grad).all()
    # The loss is invariant to a per-row shift; the reference works on the shifted values.
    shifted = scaled.double() - scaled.double().max(dim=1, keepdim=True).values
    assert loss.item() == pytest.approx(ref_multi_positive_nce(shifted, mask), rel=1e-5)
    equal = multi_positive_nce(torch.full((2, 3), 1e3), torch.eye(2, 3, dtype=torch.bool))
    assert equal.item() == pytest.approx(math.log(3.0), abs=1e-3)  # naive exp() would give nan


def test_multi_positive_nce_all_positive_is_zero_and_errors() -> None:
    logits = torch.randn(3, 4)
    assert multi_positive_nce(logits, torch.ones(3, 4, dtype=torch.bool)).item() == pytest.approx(0.0, abs=1e-6)
    mask = torch.ones(3, 4, dtype=torch.bool)
    mask[1] = False
    with pytest.raises(ValueError, match="at least one positive"):
        multi_positive_nce(logits, mask)
    with pytest.raises(ValueError, match="shapes"):
        multi_positive_nce(logits, torch.ones(3, 5, dtype=torch.bool))


def test_mean_positive_nce_matches_reference_and_single_positive_case() -> None:
    gen = torch.Generator().manual_seed(3)
    logits, mask = torch.randn(6, 10, generator=gen) * 2, _random_mask(6, 10, gen)
    assert mean_positive_nce(logits, mask).item() == pytest.approx(ref_mean_positive_nce(logits, mask), rel=1e-5)
    one = torch.zeros(6, 10, dtype=torch.bool)
    one[:, 0] = True  # one positive: both forms are InfoNCE
    torch.testing.assert_close(mean_positive_nce(logits, one), multi_positive_nce(logits, one))
    with pytest.raises(ValueError):
        mean_positive_nce(logits, torch.zeros(6, 10, dtype=torch.bool))


# ---- info_nce --------------------------------------------------------------------------------


def test_info_nce_matches_reference() -> None:
    gen = torch.Generator().manual_seed(4)
    q, k, queue = _unit(5, 8, gen=gen), _unit(5, 8, gen=gen), _unit(13, 8, gen=gen)
    assert info_nce(q, k, queue, 0.07).item() == pytest.approx(ref_info_nce(q, k, queue, 0.07), rel=1e-5)
    assert info_nce(q, k, queue, 0.5).item() == pytest.approx(ref_info_nce(q, k, queue, 0.5), rel=1e-5)
    with pytest.raises(ValueError):
        info_nce(q, k, queue, 0.0)


def test_k0_multi_positive_nce_reduces_to_info_nce() -> None:
    gen = torch.Generator().manual_seed(5)
    q, k, queue = _unit(5, 8, gen=gen), _unit(5, 8, gen=gen), _unit(13, 8, gen=gen)
    logits = moco_logits(q, k, queue, 0.07)
    assert logits.shape == (5, 14)
    no_mined = topk_positive_mask(torch.randn(5, 13, generator=gen), 0)
    mask = torch.cat([torch.ones(5, 1, dtype=torch.bool), no_mined], dim=1)
    torch.testing.assert_close(multi_positive_nce(logits, mask), info_nce(q, k, queue, 0.07))


# ---- positive masks --------------------------------------------------------------------------


def test_topk_positive_mask_matches_reference_and_excludes_same_video() -> None:
    gen = torch.Generator().manual_seed(6)
    sim = torch.randn(4, 12, generator=gen)
    vid_q, vid_queue = torch.tensor([0, 1, 2, 3]), torch.randint(0, 4, (12,), generator=gen)
    same = vid_q[:, None] == vid_queue[None, :]
    mask = topk_positive_mask(sim, 3, same)
    torch.testing.assert_close(mask, ref_topk_mask(sim, 3, same))
    assert not (mask & same).any()
    # Without exclusion the most similar same-video entries would have been picked.
    sim_same_best = sim.masked_fill(same, 100.0)
    assert not (topk_positive_mask(sim_same_best, 3, same) & same).any()
    assert (topk_positive_mask(sim_same_best, 3) & same).any()


def test_topk_positive_mask_edge_cases() -> None:
    sim = torch.randn(2, 4)
    assert not topk_positive_mask(sim, 0).any()
    exclude = torch.tensor([[True, True, True, False], [False] * 4])
    mask = topk_positive_mask(sim, 2, exclude)  # row 0 has one candidate only
    assert mask.sum(1).tolist() == [1, 2] and mask[0, 3]
    with pytest.raises(ValueError):
        topk_positive_mask(sim, 5)
    with pytest.raises(ValueError):
        topk_positive_mask(sim, -1)


def test_label_positive_mask() -> None:
    labels = torch.tensor([3, 7, -1])
    queue_labels = torch.tensor([7, 3, -1, 3, 5])
    expected = torch.tensor(
        [
            [False, True, False, True, False],
            [True, False, False, False, False],
            [False, False, False, False, False],  # unknown labels match nothing, not even -1
        ]
    )
    torch.testing.assert_close(label_positive_mask(labels, queue_labels), expected)


# ---- metrics ---------------------------------------------------------------------------------


def test_instance_accuracy() -> None:
    logits = torch.tensor([[5.0, 1.0, 0.0], [0.0, 3.0, 1.0], [0.0, 1.0, 2.0]])
    mask = torch.tensor([[True, False, False], [True, True, False], [True, False, False]])
    assert instance_accuracy(logits, mask).item() == pytest.approx(2 / 3)


def test_topk_accuracy() -> None:
    logits = torch.tensor([[0.1, 0.5, 0.4], [0.9, 0.05, 0.05], [0.2, 0.3, 0.5]])
    target = torch.tensor([2, 0, 0])
    top1, top2, top5 = topk_accuracy(logits, target, ks=(1, 2, 5))
    assert top1.item() == pytest.approx(1 / 3)
    assert top2.item() == pytest.approx(2 / 3)
    assert top5.item() == pytest.approx(1.0)  # k capped at the number of classes
