"""DPC / MemDPC: the loss and the memory read against the thesis's equations written out here, the
models against a step-by-step construction, the context backbone's contract, and gathered negatives.

References below are loops over the equations' indices in float64 (seed 001: Eq. 2.1-2.5,
L348-L370; Eq. 3.3-3.5, L633-L643), not the vectorised code under test.
"""

from __future__ import annotations

import dataclasses
import itertools
import math
from pathlib import Path

import pytest
import torch
import torch.distributed as torch_dist
import torch.multiprocessing as mp

from vidmodels import create_backbone
from vidmodels.losses.dense_predictive_nce import (
    candidate_kinds,
    dense_nce_metrics,
    dense_predictive_logits,
    dense_predictive_nce,
)
from vidmodels.methods.dpc import DPC, DPCConfig, MemDPC, MemDPCConfig, memory_read

torch.set_num_threads(1)


# ---- the thesis's equations, written as loops ----------------------------------------------------


def ref_dense_nce(pred, target) -> float:
    """Eq. 2.5 averaged over queries: every (b, i, k) against every (b', j, m) of the q future blocks."""
    B, q, _, H, W = pred.shape
    places = list(itertools.product(range(B), range(q), range(H), range(W)))
    total = 0.0
    for b, i, h, w in places:
        zhat = pred[b, i, :, h, w].double()
        scores = {p: float(zhat @ target[p[0], p[1], :, p[2], p[3]].double()) for p in places}
        top = max(scores.values())
        log_den = top + math.log(sum(math.exp(s - top) for s in scores.values()))
        total += -(scores[(b, i, h, w)] - log_den)
    return total / len(places)


def ref_memory_read(logits, memory):
    """Eq. 3.3-3.4 per position: p = softmax over the K slots, ẑ = Σ_i p_i m_i."""
    B, K, H, W = logits.shape
    out = torch.zeros(B, memory.shape[1], H, W, dtype=torch.float64)
    for b, h, w in itertools.product(range(B), range(H), range(W)):
        e = [math.exp(v) for v in logits[b, :, h, w].double().tolist()]
        for i in range(K):
            out[b, :, h, w] += e[i] / sum(e) * memory[i].double()
    return out


def ref_kind(query, cand) -> int:
    """L376-L380: 0 positive, 1 temporal (same video and place), 2 spatial (same video), 3 easy."""
    (b, i, k), (b2, j, m) = query, cand
    if b != b2:
        return 3
    if k != m:
        return 2
    return 0 if i == j else 1


# ---- the loss ----------------------------------------------------------------------------------


@pytest.mark.parametrize("shape", [(2, 2, 3, 2, 2), (3, 1, 4, 2, 3), (1, 3, 2, 3, 3)])
def test_dense_predictive_nce_matches_eq_2_5(shape):
    gen = torch.Generator().manual_seed(sum(shape))
    pred, target = torch.randn(*shape, generator=gen), torch.randn(*shape, generator=gen)
    assert dense_predictive_nce(pred, target).item() == pytest.approx(ref_dense_nce(pred, target), rel=1e-5)


def test_dense_predictive_nce_has_no_temperature_or_normalisation():
    gen = torch.Generator().manual_seed(0)
    pred, target = torch.randn(2, 2, 3, 2, 2, generator=gen), torch.randn(2, 2, 3, 2, 2, generator=gen)
    assert dense_predictive_nce(2 * pred, target).item() == pytest.approx(ref_dense_nce(2 * pred, target), rel=1e-5)
    assert dense_predictive_nce(2 * pred, target).item() != pytest.approx(dense_predictive_nce(pred, target).item())


def test_perfect_predictions_of_orthogonal_targets_give_zero_loss_and_full_accuracy():
    B, q, H, W = 2, 2, 2, 2
    D = B * q * H * W
    target = torch.eye(D).view(B, q, H, W, D).permute(0, 1, 4, 2, 3)  # one axis per (b, t, h, w)
    logits, positive = dense_predictive_logits(50 * target, target)
    assert dense_predictive_nce(50 * target, target).item() < 1e-10
    assert dense_nce_metrics(logits, positive, q, H * W)["top1"].item() == 1.0


def test_gathering_without_a_process_group_is_the_per_rank_loss():
    gen = torch.Generator().manual_seed(1)
    pred, target = torch.randn(2, 2, 3, 2, 2, generator=gen), torch.randn(2, 2, 3, 2, 2, generator=gen)
    assert torch.equal(dense_predictive_nce(pred, target, gather_distributed=True), dense_predictive_nce(pred, target))


def test_shape_mismatch_is_refused():
    with pytest.raises(ValueError, match="B, q, D, H, W"):
        dense_predictive_nce(torch.zeros(2, 2, 3, 2, 2), torch.zeros(2, 3, 3, 2, 2))


@pytest.mark.parametrize("B,q,H,W", [(3, 2, 2, 2), (2, 3, 3, 3), (4, 1, 2, 3)])
def test_negative_kinds_follow_the_thesis_ratio(B, q, H, W):
    hw, M = H * W, B * q * H * W
    places = [(b, t, k) for b in range(B) for t in range(q) for k in range(hw)]  # the flat (b, t, k) order
    query, cand = torch.meshgrid(torch.arange(M), torch.arange(M), indexing="ij")
    kinds = candidate_kinds(query.reshape(-1), cand.reshape(-1), q, hw).view(M, M)
    for a in range(0, M, 5):  # spot rows against the definitions
        assert [ref_kind(places[a], places[c]) for c in range(M)] == kinds[a].tolist()
    counts = torch.stack([(kinds == k).sum(1) for k in range(4)], 1)  # per query
    assert (counts == torch.tensor([1, q - 1, (hw - 1) * q, (B - 1) * hw * q])).all()  # L384


def test_metrics_report_the_kind_ranked_first():
    B, q, H, W = 2, 2, 1, 2
    M = B * q * H * W
    logits = torch.zeros(M, M)
    picks = [0, 3, 1, 7, 4, 5, 6, 1]  # (b, t, k) flat: 0 pos; 1 temporal; 2 spatial; 3 easy; 4-6 pos; 7 easy
    logits[torch.arange(M), torch.tensor(picks)] = 1.0
    m = dense_nce_metrics(logits, torch.arange(M), q, H * W)
    assert [m[k].item() for k in ("top1", "top1_temporal", "top1_spatial", "top1_easy")] == [0.5, 0.125, 0.125, 0.25]


# ---- the memory ---------------------------------------------------------------------------------


def test_memory_read_matches_eq_3_3_and_3_4():
    gen = torch.Generator().manual_seed(2)
    logits, memory = torch.randn(2, 5, 3, 2, generator=gen), torch.randn(5, 4, generator=gen)
    torch.testing.assert_close(memory_read(logits, memory).double(), ref_memory_read(logits, memory))


def test_memory_read_is_a_convex_combination_and_scores_as_eq_3_5():
    gen = torch.Generator().manual_seed(3)
    logits, memory, z = torch.randn(1, 6, 1, 1, generator=gen), torch.randn(6, 4, generator=gen), torch.randn(4)
    same = memory_read(logits, torch.ones(6, 4))
    torch.testing.assert_close(same, torch.ones_like(same))  # Σ p = 1
    p = logits[0, :, 0, 0].softmax(0)
    psi = memory_read(logits, memory)[0, :, 0, 0] @ z
    torch.testing.assert_close(psi, (p * (memory @ z)).sum())  # ψ(ẑ, z) = Σ_i p_i m_iᵀz
    with pytest.raises(ValueError, match="slots"):
        memory_read(logits, torch.ones(5, 4))


# ---- the models against a step-by-step construction ----------------------------------------------


def _blocks(B=2, N=4, C=3, L=3, S=96, seed=0):
    return torch.randn(B, N, C, L, S, S, generator=torch.Generator().manual_seed(seed))


def ref_dpc_loss(model: DPC, x, agg, flip: bool = False) -> float:
    """Eq. 2.1-2.4 by hand: z_i = f(x_i) pooled over time; c = g(ReLU(z_1..z_t)); ẑ = φ(c), fed back."""
    ctx, q = model.context, model.cfg.pred_step
    z = torch.stack([ctx.encoder.forward_features(x[:, i]).mean(2) for i in range(x.shape[1])], 1)
    if flip:
        z = z.flip(1)
    h = None
    for i in range(z.shape[1] - q):
        h = agg.cells[0](torch.relu(z[:, i]), h)
    preds = []
    for _ in range(q):
        preds.append(model.predict(h))
        h = agg.cells[0](torch.relu(preds[-1]), h)
    return ref_dense_nce(torch.stack(preds, 1).detach(), z[:, -q:].detach())


@pytest.mark.parametrize("pred_step", [1, 2])
def test_dpc_loss_matches_the_sequential_construction(pred_step):
    torch.manual_seed(0)
    model = DPC(DPCConfig(backbone="dpc_context_tiny", pred_step=pred_step)).eval()  # no GRU dropout
    x = _blocks()
    with torch.no_grad():
        out = model({"blocks": x})
        ref = ref_dpc_loss(model, x, model.context.agg)
    assert out["loss"].item() == pytest.approx(ref, rel=1e-4)
    assert out["chance"].item() == pytest.approx(1 / (2 * pred_step * 9))  # 96 px: 3x3 maps
    assert sum(out[k].item() for k in ("top1", "top1_temporal", "top1_spatial", "top1_easy")) == pytest.approx(1)


@pytest.mark.parametrize("reduction", ["sum", "mean"])
def test_bidirectional_memdpc_shares_f_phi_memory_and_reduces_as_configured(reduction):
    torch.manual_seed(0)
    cfg = MemDPCConfig(backbone="dpc_context_tiny", pred_step=2, memory_size=16, bidirectional=True,
                       loss_reduction=reduction)
    model = MemDPC(cfg).eval()
    x = _blocks(seed=1)
    with torch.no_grad():
        out = model({"blocks": x})
        forward = ref_dpc_loss(model, x, model.context.agg)
        backward = ref_dpc_loss(model, x, model.context.agg_b, flip=True)
    expected = forward + backward if reduction == "sum" else (forward + backward) / 2
    assert out["loss"].item() == pytest.approx(expected, rel=1e-4)
    assert "top1_backward" in out
    assert model.predictor.net[-1].out_channels == 16 and model.memory.shape == (16, 32)


def test_every_parameter_gets_a_gradient_in_training():
    for cfg in (DPCConfig(backbone="dpc_context_tiny", pred_step=1),
                MemDPCConfig(backbone="dpc_context_tiny", pred_step=2, memory_size=8, bidirectional=True),
                DPCConfig(backbone="dpc_context_tiny", pred_step=2, dense=False)):
        model = DPC(cfg) if type(cfg) is DPCConfig else MemDPC(cfg)
        model({"blocks": _blocks(N=3 if cfg.pred_step == 1 else 4)})["loss"].backward()
        assert [n for n, p in model.named_parameters() if p.grad is None] == []  # DDP needs no unused ones


def test_vector_variant_pools_the_map():
    model = DPC(DPCConfig(backbone="dpc_context_tiny", pred_step=2, dense=False))
    out = model({"blocks": _blocks()})
    assert out["chance"].item() == pytest.approx(1 / (2 * 2)) and out["top1_spatial"].item() == 0


def test_forward_refuses_too_few_blocks_or_a_tiny_map():
    model = DPC(DPCConfig(backbone="dpc_context_tiny", pred_step=3))
    with pytest.raises(ValueError, match="at least 4 blocks"):
        model({"blocks": _blocks(N=3)})
    with pytest.raises(ValueError, match="2x2"):
        model({"blocks": _blocks(N=4, S=32)})
    for bad in ({"pred_step": 0}, {"in_chans": 1}):
        with pytest.raises(ValueError):
            DPC(DPCConfig(backbone="dpc_context_tiny", **bad))
    with pytest.raises(ValueError, match="loss_reduction"):
        MemDPC(MemDPCConfig(backbone="dpc_context_tiny", loss_reduction="max"))


def test_init_follows_the_code():
    dpc = DPC(DPCConfig(backbone="dpc_context_tiny"))
    mem = MemDPC(MemDPCConfig(backbone="dpc_context_tiny", memory_size=8))
    for model, gain in ((dpc, 1.0), (mem, 0.1)):
        w = model.predictor.net[0].weight.flatten(1)  # orthogonal rows scaled by the gain
        torch.testing.assert_close(w @ w.t(), gain**2 * torch.eye(w.shape[0]), atol=1e-5, rtol=0)
        assert model.context.agg.cells[0].out_gate.bias.abs().sum() == 0


# ---- the registered context backbone --------------------------------------------------------------


def test_context_backbone_contract_and_the_registered_state():
    torch.manual_seed(0)
    model = MemDPC(MemDPCConfig(backbone="dpc_context_tiny", memory_size=8, bidirectional=True)).eval()
    kwargs = model.cfg.context_kwargs()
    registered = create_backbone("dpc_context_tiny", **kwargs).eval()
    registered.load_state_dict(model.context_state())  # strict: the exported state is f + g exactly
    x_BCTHW = torch.randn(2, 3, 12, 96, 96)
    with torch.no_grad():
        c = torch.cat(model.context.contexts(model.context.encode_blocks(model.context.blocks(x_BCTHW))), 1)
        feats = registered.forward_features(x_BCTHW)
        torch.testing.assert_close(feats, c.unsqueeze(2))
        torch.testing.assert_close(registered(x_BCTHW), c.mean((2, 3)))  # spatially pooled c_t
        assert registered(x_BCTHW[:, :, :2]).shape == (2, 64)  # shorter than a block: looped
        assert registered.blocks(x_BCTHW[:, :, :11]).shape == (2, 3, 3, 3, 96, 96)  # remainder dropped
    registered.reset_classifier(5)
    assert registered(x_BCTHW).shape == (2, 5)


def test_context_backbone_compiles_without_graph_breaks():
    model = create_backbone("dpc_context_tiny", num_classes=3).eval()
    x_BCTHW = torch.randn(1, 3, 9, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(torch.compile(model, backend="eager", fullgraph=True)(x_BCTHW), model(x_BCTHW))


def test_running_statistics_follow_the_config():
    frozen = create_backbone("dpc_context_tiny", track_running_stats=False)
    assert not any("running_mean" in k for k in frozen.state_dict())
    assert any("running_mean" in k for k in create_backbone("dpc_context_tiny").state_dict())


# ---- gathered negatives under 2 gloo processes -----------------------------------------------------

WORLD = 2


def _inputs(rank: int):
    gen = torch.Generator().manual_seed(10 + rank)
    return torch.randn(2, 2, 3, 2, 2, generator=gen, dtype=torch.float64), \
        torch.randn(2, 2, 3, 2, 2, generator=gen, dtype=torch.float64)


def _worker(rank: int, init_file: str, out_dir: str) -> None:
    torch.set_num_threads(1)
    torch_dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=WORLD)
    try:
        pred, target = (t.requires_grad_() for t in _inputs(rank))
        logits, positive = dense_predictive_logits(pred, target, gather_distributed=True)
        loss = dense_predictive_nce(pred, target, gather_distributed=True)
        loss.backward()
        torch.save({"shape": tuple(logits.shape), "positive": positive, "loss": loss.detach(),
                    "grad_pred": pred.grad, "grad_target": target.grad}, Path(out_dir) / f"{rank}.pt")
    finally:
        torch_dist.destroy_process_group()


@pytest.mark.dist
def test_gathered_targets_are_every_ranks_candidates(tmp_path):
    mp.spawn(_worker, args=(str(tmp_path / "init"), str(tmp_path)), nprocs=WORLD, join=True)
    res = [torch.load(tmp_path / f"{r}.pt", weights_only=True) for r in range(WORLD)]
    preds, targets = zip(*(_inputs(r) for r in range(WORLD)))
    preds, targets = [p.requires_grad_() for p in preds], [t.requires_grad_() for t in targets]
    all_target = torch.cat(targets)
    total = 0
    for r in range(WORLD):
        assert res[r]["shape"] == (16, 32) and res[r]["positive"].tolist() == list(range(16 * r, 16 * (r + 1)))
        logits = preds[r].permute(0, 1, 3, 4, 2).reshape(-1, 3) @ all_target.permute(0, 1, 3, 4, 2).reshape(-1, 3).t()
        loss = torch.nn.functional.cross_entropy(logits, torch.arange(16) + 16 * r)
        assert res[r]["loss"].item() == pytest.approx(loss.item(), rel=1e-6)  # scores are float32
        total = total + loss
    total.backward()  # each rank's gradient is that of the sum of every rank's loss (dist.gather)
    for r in range(WORLD):
        torch.testing.assert_close(res[r]["grad_pred"], preds[r].grad, rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(res[r]["grad_target"], targets[r].grad, rtol=1e-5, atol=1e-6)


def test_configs_are_plain_dataclasses():
    assert {f.name for f in dataclasses.fields(MemDPCConfig)} >= {"memory_size", "bidirectional", "loss_reduction"}
