"""CoCLR method on the debug S3D: queue, stages, gradients, EMA, mining, checkpoints, schedule."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

import vidmodels
from vidmodels.losses import topk_positive_mask
from vidmodels.methods import METHODS, CoCLR, CoCLRConfig, KeyQueue, build_method, coclr_schedule
from vidmodels.methods.coclr import mined_precision

torch.set_num_threads(1)

B = 4


def make_batch(seed: int, *, vid_offset: int = 0, labels: list[int] | None = None) -> dict[str, torch.Tensor]:
    """A batch following the contract of vidmodels.methods.coclr (debug size 8x32x32)."""
    gen = torch.Generator().manual_seed(seed)
    batch = {k: torch.randn(B, 3, 8, 32, 32, generator=gen) for k in ("rgb_0", "rgb_1")}
    for k in ("flow_0", "flow_1"):
        flow = torch.rand(B, 3, 8, 32, 32, generator=gen) * 2 - 1
        flow[:, 2] = 0  # (x, y, 0)
        batch[k] = flow
    batch["vid_index"] = torch.arange(B) + vid_offset
    batch["label_index"] = torch.tensor(labels if labels is not None else [0, 1, 0, -1])
    return batch


def _params_equal(a: torch.nn.Module, b: torch.nn.Module) -> bool:
    return all(torch.equal(x, y) for x, y in zip(a.parameters(), b.parameters(), strict=True))


# ---- KeyQueue --------------------------------------------------------------------------------


def test_key_queue_wraps_around_and_sets_full() -> None:
    queue = KeyQueue(5, 3)
    assert not queue.is_full and torch.allclose(queue.keys.norm(dim=1), torch.ones(5))
    batches = [torch.full((2, 3), float(i)) for i in range(1, 4)]
    queue.enqueue(batches[0], torch.tensor([10, 11]), torch.tensor([0, 1]))
    queue.enqueue(batches[1], torch.tensor([20, 21]))
    assert not queue.is_full and int(queue.ptr) == 4
    queue.enqueue(batches[2], torch.tensor([30, 31]), torch.tensor([5, 6]))  # slots 4, 0
    assert queue.is_full and int(queue.ptr) == 1
    assert queue.vid.tolist() == [31, 11, 20, 21, 30]
    assert queue.labels.tolist() == [6, 1, -1, -1, 5]
    assert queue.keys[:, 0].tolist() == [3.0, 1.0, 2.0, 2.0, 3.0]


def test_key_queue_validates() -> None:
    with pytest.raises(ValueError):
        KeyQueue(0, 8)
    queue = KeyQueue(4, 8)
    with pytest.raises(ValueError, match="exceeds"):
        queue.enqueue(torch.randn(5, 8), torch.arange(5))
    with pytest.raises(ValueError):
        queue.enqueue(torch.randn(2, 7), torch.arange(2))


# ---- config and registry ---------------------------------------------------------------------


def test_config_defaults_follow_the_seed_and_validate() -> None:
    cfg = CoCLRConfig()
    assert (cfg.backbone, cfg.queue_size, cfg.topk, cfg.temperature, cfg.momentum, cfg.proj_dim) == (
        "s3d", 2048, 5, 0.07, 0.999, 128
    )
    for bad in ({"stage": "simclr"}, {"modality": "depth"}, {"topk": 17}, {"temperature": 0.0},
                {"momentum": 1.5}, {"queue_size": 0}):
        with pytest.raises(ValueError):
            CoCLR(CoCLRConfig.debug(**bad))
    assert METHODS["coclr"] is CoCLR
    with pytest.raises(KeyError):
        build_method("simclr", cfg)


def test_full_size_encoder_has_coclr_head() -> None:
    model = CoCLR(CoCLRConfig(queue_size=8))  # S3D: 1024 -> 1024 -> 128
    head = model.encoder_q.head
    assert (head.fc1.in_features, head.fc1.out_features, head.fc2.out_features) == (1024, 1024, 128)
    assert model.queue.keys.shape == (8, 128)


# ---- forward / backward per stage ------------------------------------------------------------


@pytest.mark.parametrize(("stage", "modality"), [("infonce", "rgb"), ("infonce", "flow"), ("coclr", "rgb"),
                                                 ("coclr", "flow"), ("ubernce", "rgb")])
def test_gradients_reach_only_the_trained_encoder(stage: str, modality: str) -> None:
    torch.manual_seed(0)
    model = build_method("coclr", CoCLRConfig.debug(stage=stage, modality=modality)).train()
    out = model(make_batch(0))
    assert set(out) >= {"loss", "top1", "num_positives", "mining"}
    assert out["loss"].ndim == 0 and torch.isfinite(out["loss"])
    out["loss"].backward()
    trainable = {id(p) for p in model.trainable_parameters()}
    assert trainable == {id(p) for p in model.encoder_q.parameters()}
    for name, p in model.named_parameters():
        if id(p) in trainable:
            assert p.grad is not None, name
        else:
            assert p.grad is None and not p.requires_grad, name
    first_conv = next(m for m in model.encoder_q.modules() if isinstance(m, torch.nn.Conv3d))
    assert first_conv.in_channels == (3 if modality == "rgb" else 2)
    if stage == "coclr":
        assert model.encoder_other is not None and not model.encoder_other.training


def test_ema_update_moves_the_key_encoder() -> None:
    torch.manual_seed(0)
    model = CoCLR(CoCLRConfig.debug(momentum=0.9)).train()
    assert _params_equal(model.encoder_q, model.encoder_k)
    opt = torch.optim.SGD(model.trainable_parameters(), lr=1.0)
    model(make_batch(0))["loss"].backward()
    opt.step()
    k_before = [p.clone() for p in model.encoder_k.parameters()]
    q_now = [p.clone() for p in model.encoder_q.parameters()]
    model(make_batch(1))  # forward applies the EMA before computing the keys
    moved = False
    for k_old, q, k_new in zip(k_before, q_now, model.encoder_k.parameters(), strict=True):
        torch.testing.assert_close(k_new, 0.9 * k_old + 0.1 * q)
        moved |= not torch.equal(k_new, k_old)
    assert moved
    # Eval mode: neither the EMA nor the queue changes.
    model.eval()
    k_eval, ptr = [p.clone() for p in model.encoder_k.parameters()], int(model.queue.ptr)
    with torch.no_grad():
        model(make_batch(2))
    assert all(torch.equal(a, b) for a, b in zip(k_eval, model.encoder_k.parameters(), strict=True))
    assert int(model.queue.ptr) == ptr


def test_forward_enqueues_keys_and_video_ids() -> None:
    torch.manual_seed(0)
    model = CoCLR(CoCLRConfig.debug(stage="coclr", queue_size=8)).train()
    batch = make_batch(0, vid_offset=100)
    model(batch)
    assert model.queue.vid[:B].tolist() == batch["vid_index"].tolist()
    with torch.no_grad():
        model.eval()
        flow_keys = model.encoder_other(batch["flow_1"][:, :2])
    torch.testing.assert_close(model.queue_other.keys[:B], flow_keys)
    torch.testing.assert_close(model.queue.keys[:B].norm(dim=1), torch.ones(B))


# ---- CoCLR mining ----------------------------------------------------------------------------


def _fill_queues(model: CoCLR, steps: int) -> None:
    with torch.no_grad():
        for s in range(steps):
            model(make_batch(100 + s, vid_offset=B * s))


def test_mining_starts_when_the_queue_is_full() -> None:
    torch.manual_seed(0)
    model = CoCLR(CoCLRConfig.debug(stage="coclr", queue_size=8, topk=3)).train()
    with torch.no_grad():
        out = [model(make_batch(s, vid_offset=B * s)) for s in range(3)]
    assert [float(o["mining"]) for o in out] == [0.0, 0.0, 1.0]
    assert [float(o["num_positives"]) for o in out] == [1.0, 1.0, 4.0]


def test_mined_positives_are_topk_in_other_view_excluding_same_video() -> None:
    torch.manual_seed(0)
    model = CoCLR(CoCLRConfig.debug(stage="coclr", queue_size=16, topk=5, same_video_positive=False))
    gen = torch.Generator().manual_seed(0)
    model.queue_other.keys.copy_(F.normalize(torch.randn(16, 32, generator=gen), dim=1))
    model.queue.vid.copy_(torch.arange(16) % 6)
    model.queue_other.full.fill_(True)
    vid = torch.tensor([0, 1, 2, 3])
    o = model.queue_other.keys[[0, 1, 2, 9]] + 0.01  # each query's nearest entry is its own video
    pos, mining = model._queue_positives(vid, None, o)
    same = vid[:, None] == model.queue.vid[None, :]
    sim = o @ model.queue_other.keys.t()
    assert mining
    torch.testing.assert_close(pos, topk_positive_mask(sim, 5, same))
    assert not (pos & same).any() and pos.sum(1).tolist() == [5] * 4
    # Reference: the 5 largest similarities among other-video entries, by sorting.
    for i in range(4):
        order = [j for j in sim[i].argsort(descending=True).tolist() if not same[i, j]][:5]
        assert sorted(order) == pos[i].nonzero().flatten().tolist()
    with_siblings = CoCLR(CoCLRConfig.debug(stage="coclr", queue_size=16, topk=5, same_video_positive=True))
    with_siblings.load_state_dict(model.state_dict())
    pos2, _ = with_siblings._queue_positives(vid, None, o)
    assert torch.equal(pos2, pos | same)


def test_mined_precision_counts_same_class_mined_pairs_with_known_labels() -> None:
    pos = torch.tensor([[1, 1, 0, 1], [0, 0, 1, 1], [1, 1, 1, 1]], dtype=torch.bool)
    labels = torch.tensor([2, 5, -1])           # the third query is unlabelled: ignored
    queue_labels = torch.tensor([2, 3, 5, -1])  # the last entry is unlabelled: ignored
    # query 0 mined entries 0 (2: same), 1 (3: other); query 1 mined entry 2 (5: same)
    assert float(mined_precision(pos, labels, queue_labels)) == pytest.approx(2 / 3)
    assert mined_precision(pos, torch.tensor([-1, -1, -1]), queue_labels) is None
    torch.manual_seed(0)
    model = CoCLR(CoCLRConfig.debug(stage="coclr", queue_size=8, topk=3)).train()
    with torch.no_grad():
        outs = [model(make_batch(s, vid_offset=B * s, labels=[0, 1, 0, 1])) for s in range(3)]
    assert "mined_precision" not in outs[1]  # no mining before the queue is full
    assert 0.0 <= float(outs[2]["mined_precision"]) <= 1.0


def test_k0_coclr_equals_infonce() -> None:
    torch.manual_seed(0)
    coclr = CoCLR(CoCLRConfig.debug(stage="coclr", queue_size=8, topk=0, same_video_positive=False,
                                    own_key_drop_p=0.0)).train()
    infonce = CoCLR(CoCLRConfig.debug(stage="infonce", queue_size=8)).train()
    infonce.load_state_dict({k: v for k, v in coclr.state_dict().items() if "_other" not in k})
    for model in (coclr, infonce):
        _fill_queues(model, 3)
    assert coclr.queue_other.is_full
    batch = make_batch(7, vid_offset=1)  # videos 1-4 are also in the queue
    out_c, out_i = coclr(batch), infonce(batch)
    assert float(out_c["num_positives"]) == 1.0
    torch.testing.assert_close(out_c["loss"], out_i["loss"], rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(out_c["top1"], out_i["top1"])


def test_ubernce_positives_come_from_labels() -> None:
    torch.manual_seed(0)
    model = CoCLR(CoCLRConfig.debug(stage="ubernce", queue_size=8)).train()
    model(make_batch(0, labels=[0, 1, 2, -1]))
    pos, _ = model._queue_positives(torch.arange(B), torch.tensor([2, 0, 5, -1]), None)
    expected = torch.zeros(B, 8, dtype=torch.bool)
    expected[0, 2] = expected[1, 0] = True
    assert torch.equal(pos, expected)
    out = model(make_batch(1, labels=[2, 0, 5, -1]))
    assert float(out["num_positives"]) == pytest.approx((2 + 2 + 1 + 1) / 4)
    multi = CoCLR(CoCLRConfig.debug(stage="ubernce", queue_size=8, ubernce_loss="multi_positive"))
    assert torch.isfinite(multi(make_batch(0))["loss"])


# ---- checkpoints between phases --------------------------------------------------------------


def test_encoder_state_initialises_the_next_phase() -> None:
    torch.manual_seed(0)
    rgb = CoCLR(CoCLRConfig.debug(stage="infonce", modality="rgb"))
    flow = CoCLR(CoCLRConfig.debug(stage="infonce", modality="flow"))
    phase = CoCLR(CoCLRConfig.debug(stage="coclr", modality="rgb"))
    phase.load_encoder_state("rgb", rgb.encoder_state("rgb"))
    phase.load_encoder_state("flow", flow.encoder_state("flow"))
    assert _params_equal(phase.encoder_q, rgb.encoder_q) and _params_equal(phase.encoder_k, rgb.encoder_q)
    assert _params_equal(phase.encoder_other, flow.encoder_q)
    with pytest.raises(ValueError):
        rgb.load_encoder_state("flow", flow.encoder_state("flow"))
    # Without the head: a plain registry backbone.
    backbone = vidmodels.create_backbone("s3d_debug", in_chans=2)
    backbone.load_state_dict(phase.encoder_state("flow", with_head=False))
    x = torch.randn(2, 2, 8, 32, 32)
    backbone.eval(), phase.eval()
    with torch.no_grad():
        torch.testing.assert_close(backbone(x), phase.encoder_other.backbone(x))


def test_schedule_follows_the_thesis() -> None:
    phases = coclr_schedule()  # UCF101: 300 InfoNCE epochs per stream, 2 cycles of 100 + 100
    assert [(p.name, p.epochs) for p in phases] == [
        ("infonce_rgb", 300), ("infonce_flow", 300), ("coclr_rgb_c1", 100), ("coclr_flow_c1", 100),
        ("coclr_rgb_c2", 100), ("coclr_flow_c2", 100),
    ]
    assert phases[3].init_from == {"rgb": "coclr_rgb_c1", "flow": "infonce_flow"}
    k400 = coclr_schedule(cycles=1, epochs_per_network=50)
    assert [p.epochs for p in k400[2:]] == [50, 50]


def test_own_key_is_dropped_from_rows_with_other_positives_as_the_authors_do() -> None:
    """main_coclr.py: on 90 % of steps ``mask_clone[mask_sum != 1, 0] = 0``; metrics keep the own key."""
    pos_BN = torch.tensor([[1, 0, 1, 0], [1, 0, 0, 0], [1, 1, 1, 0]], dtype=torch.bool)
    always = CoCLR(CoCLRConfig.debug(stage="coclr", queue_size=8, own_key_drop_p=1.0)).train()
    expected = torch.tensor([[0, 0, 1, 0], [1, 0, 0, 0], [0, 1, 1, 0]], dtype=torch.bool)
    assert torch.equal(always._loss_positives(pos_BN), expected)
    assert torch.equal(always.eval()._loss_positives(pos_BN), pos_BN)  # evaluation never drops it
    never = CoCLR(CoCLRConfig.debug(stage="coclr", queue_size=8, own_key_drop_p=0.0)).train()
    assert torch.equal(never._loss_positives(pos_BN), pos_BN)
    torch.manual_seed(0)
    share = CoCLR(CoCLRConfig.debug(stage="coclr", queue_size=8)).train()  # the authors' 0.9
    drops = sum(not bool(share._loss_positives(pos_BN)[0, 0]) for _ in range(2000)) / 2000
    assert abs(drops - 0.9) < 0.03
    with pytest.raises(ValueError, match="own_key_drop_p"):
        CoCLR(CoCLRConfig.debug(stage="coclr", queue_size=8, own_key_drop_p=1.5))


def test_group_index_excludes_the_whole_source_group_from_mining() -> None:
    """Clips of one source video (a UCF101 gNN) share group_index: none of them is ever mined."""
    torch.manual_seed(0)
    model = CoCLR(CoCLRConfig.debug(stage="coclr", queue_size=8, topk=3, same_video_positive=False,
                                    own_key_drop_p=0.0)).train()
    with torch.no_grad():
        for s in range(3):
            batch = make_batch(s, vid_offset=B * s)
            batch["group_index"] = batch["vid_index"] // 2  # two clips per group
            model(batch)
        batch = make_batch(5, vid_offset=8)  # groups 4 and 5, both in the queue
        batch["group_index"] = batch["vid_index"] // 2
        o = model._other_features(batch["flow_1"][:, :2])
        pos, mining = model._queue_positives(batch["group_index"], None, o)
    same_group = batch["group_index"][:, None] == model.queue.vid[None, :]
    assert mining and same_group.any() and not (pos & same_group).any()
    assert int(model.queue.vid.max()) <= 5  # the queue holds group ids (vid // 2 of videos 0-11)


def test_mining_runs_in_float32_under_bf16_autocast() -> None:
    torch.manual_seed(0)
    model = CoCLR(CoCLRConfig.debug(stage="coclr", queue_size=8)).eval()
    x = torch.randn(2, 2, 8, 32, 32)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert model._other_features(x).dtype == torch.float32
        low = CoCLR(CoCLRConfig.debug(stage="coclr", queue_size=8, mining_fp32=False)).eval()
        low.load_state_dict(model.state_dict())
        assert low._other_features(x).dtype == torch.bfloat16
