import math

import numpy as np
import pytest

from pipelines.data import volume_aug as V


def _rng(seed=0):
    return np.random.default_rng(seed)


def _clip(n, seed, H=3, W=7, K=4):
    rng = _rng(seed)
    video = rng.random((n, H, W, 2)).astype(np.float32)
    labels = (rng.random((n, K)) < 0.4).astype(np.float32)
    return video, labels


# ------------------------------------------------------------------ literal references (plain loops)


def ref_t01(x):
    return 1.0 if x >= 1 else (0.0 if x < 0 else x)


def ref_alpha(n1, n2, r, t, smooth=True):
    if n2 + r >= n1:
        a = ref_t01((n1 - t) / (n1 - r))
    else:
        a = ref_t01(abs(n2 + 2 * r - 2 * t) / n2)
    if not smooth:
        a = 1.0 if a >= 0.5 else 0.0
    return a


def ref_frame(x, k):
    return x[k] if 0 <= k < len(x) else np.zeros_like(x[0])


def ref_freeze(video, labels, r, m):
    n = len(video)
    frames = [video[k] for k in range(r)] + [video[r]] * m + [video[k] for k in range(r + 1, n - m + 1)]
    rows = [labels[k] for k in range(r)] + [np.zeros_like(labels[0])] * m + \
        [labels[k] for k in range(r + 1, n - m + 1)]
    return np.stack(frames), np.stack(rows)


def ref_mixup(v1, l1, v2, l2, r, smooth):
    n1, n2 = len(v1), len(v2)
    out_v, out_l = [], []
    for t in range(max(n1, r + n2)):
        a = ref_alpha(n1, n2, r, t, smooth)
        out_v.append(a * ref_frame(v1, t) + (1 - a) * ref_frame(v2, t - r))
        out_l.append(a * ref_frame(l1, t) + (1 - a) * ref_frame(l2, t - r))
    return np.stack(out_v), np.stack(out_l)


def ref_mask_value(j, w, delta):
    if j < w - delta:
        return 1.0
    if j >= w + delta:
        return 0.0
    return (w + delta - j) / (2 * delta)


def ref_cutmix(v1, l1, v2, l2, r, mode, delta):
    n1, n2, W = len(v1), len(v2), v1.shape[2]
    N = max(n1, r + n2)
    out_v, out_l = [], []
    for t in range(N):
        a = ref_alpha(n1, n2, r, t)
        w = math.floor(W * a) if mode == "window" else math.floor(W / 2)
        f1, f2 = ref_frame(v1, t), ref_frame(v2, t - r)
        frame = np.zeros_like(f1)
        total = 0.0
        for j in range(W):
            m = ref_mask_value(j, w, delta)
            total += m
            c1, c2 = j, j
            if mode == "view":  # the documented linear sweep
                s = (N - 1 - t) / (N - 1) if N > 1 else 0.0
                c1 = min(max(j + math.floor((W - w) * s + 0.5), 0), W - 1)
                c2 = min(max(j - w + math.floor(w * s + 0.5), 0), W - 1)
            frame[:, j] = m * f1[:, c1] + (1 - m) * f2[:, c2]
        area = total / W
        out_v.append(frame)
        out_l.append(area * ref_frame(l1, t) + (1 - area) * ref_frame(l2, t - r))
    return np.stack(out_v), np.stack(out_l)


# (n1, n2, r): scenario 1 (n2 + r >= n1) and scenario 2 (<), shifts at the ends.
SPANS = [(8, 8, 0), (8, 5, 3), (8, 3, 6), (6, 9, 2), (8, 4, 1), (10, 3, 2), (9, 2, 0), (5, 1, 4), (8, 5, 2)]


@pytest.mark.parametrize("n1,n2,r", SPANS)
@pytest.mark.parametrize("smooth", [True, False])
def test_mixup_matches_reference(n1, n2, r, smooth):
    v1, l1 = _clip(n1, 1)
    v2, l2 = _clip(n2, 2)
    video, labels = V.volume_mixup(v1, l1, v2, l2, r, smooth=smooth)
    ref_v, ref_l = ref_mixup(v1, l1, v2, l2, r, smooth)
    assert video.shape == ref_v.shape == (max(n1, r + n2), 3, 7, 2)
    np.testing.assert_allclose(video, ref_v, atol=1e-6)
    np.testing.assert_allclose(labels, ref_l, atol=1e-6)


@pytest.mark.parametrize("n1,n2,r", SPANS)
@pytest.mark.parametrize("delta", [0, 1, 2.5])
def test_cutmix_window_matches_reference(n1, n2, r, delta):
    v1, l1 = _clip(n1, 3)
    v2, l2 = _clip(n2, 4)
    video, labels = V.volume_cutmix(v1, l1, v2, l2, r, "window", delta)
    ref_v, ref_l = ref_cutmix(v1, l1, v2, l2, r, "window", delta)
    np.testing.assert_allclose(video, ref_v, atol=1e-6)
    np.testing.assert_allclose(labels, ref_l, atol=1e-6)


@pytest.mark.parametrize("n,W,delta", [(6, 8, 1), (5, 7, 2), (1, 6, 1), (9, 10, 0)])
def test_cutmix_view_matches_reference(n, W, delta):
    v1, l1 = _clip(n, 5, W=W)
    v2, l2 = _clip(n, 6, W=W)
    video, labels = V.volume_cutmix(v1, l1, v2, l2, 0, "view", delta)
    ref_v, ref_l = ref_cutmix(v1, l1, v2, l2, 0, "view", delta)
    np.testing.assert_allclose(video, ref_v, atol=1e-6)
    np.testing.assert_allclose(labels, ref_l, atol=1e-6)
    with pytest.raises(ValueError):
        V.volume_cutmix(v1, l1, v2, l2, 1, "view", delta)


def test_view_translation_sweeps_each_half_window():
    c1, c2 = V.view_translation(5, 8)  # w = 4
    assert c1[0, :4].tolist() == [4, 5, 6, 7] and c1[-1, :4].tolist() == [0, 1, 2, 3]
    assert c2[0, 4:].tolist() == [4, 5, 6, 7] and c2[-1, 4:].tolist() == [0, 1, 2, 3]
    assert np.all(np.diff(c1[:, 0]) <= 0)  # content moves one way, monotonically


@pytest.mark.parametrize("n", [2, 3, 8])
def test_freeze_matches_reference_and_keeps_length(n):
    video, labels = _clip(n, 7)
    for r in range(0, n - 1):
        for m in range(2, n - r + 1):
            out_v, out_l = V.volume_freeze(video, labels, r, m)
            ref_v, ref_l = ref_freeze(video, labels, r, m)
            assert len(out_v) == len(out_l) == n
            np.testing.assert_array_equal(out_v, ref_v)
            np.testing.assert_array_equal(out_l, ref_l)
            assert np.all(out_v[r:r + m] == video[r]) and np.all(out_l[r:r + m] == 0)


def test_invalid_parameters_raise():
    v, l = _clip(6, 0)
    for r, m in [(-1, 2), (5, 2), (2, 1), (2, 5)]:
        with pytest.raises(ValueError):
            V.volume_freeze(v, l, r, m)
    with pytest.raises(ValueError):
        V.temporal_alpha(6, 4, 6)  # no overlap
    with pytest.raises(ValueError):
        V.cutmix_mask(np.ones(3), 8, mode="diagonal", delta=1)


def test_alpha_shapes_of_both_scenarios():
    a1 = V.temporal_alpha(10, 8, 4)  # scenario 1: 1 until r, linear to 0 at n1
    assert a1[:5].tolist() == [1.0] * 5 and np.all(np.diff(a1) <= 0) and a1[10:].tolist() == [0.0, 0.0]
    a2 = V.temporal_alpha(10, 4, 2)  # scenario 2: V-shaped dip to 0 at r + n2/2
    assert a2.argmin() == 4 and a2[4] == 0 and a2[0] == a2[-1] == 1.0
    assert set(V.temporal_alpha(10, 4, 2, smooth=False).tolist()) <= {0.0, 1.0}


# ------------------------------------------------------------------ properties


def _one_hot_pair(n1, n2, H=2, W=8):
    """Clip 1 all ones with class 0, clip 2 all zeros with class 1: pixel mean = clip-1 weight."""
    v1, v2 = np.ones((n1, H, W, 1), np.float32), np.zeros((n2, H, W, 1), np.float32)
    l1 = np.tile([[1.0, 0.0]], (n1, 1)).astype(np.float32)
    l2 = np.tile([[0.0, 1.0]], (n2, 1)).astype(np.float32)
    return v1, l1, v2, l2


@pytest.mark.parametrize("op", ["mixup", "window", "view"])
def test_label_mass_matches_pixel_mixing(op):
    for n1, n2, r in SPANS if op != "view" else [(8, 8, 0), (5, 5, 0)]:
        v1, l1, v2, l2 = _one_hot_pair(n1, n2)
        if op == "mixup":
            video, labels = V.volume_mixup(v1, l1, v2, l2, r)
        else:
            video, labels = V.volume_cutmix(v1, l1, v2, l2, r, op, 2)
        overlap = slice(r, min(n1, r + n2))  # both clips present (no zero padding)
        np.testing.assert_allclose(labels[overlap, 0], video[overlap].mean(axis=(1, 2, 3)), atol=1e-6)
        np.testing.assert_allclose(labels[overlap].sum(1), 1.0, atol=1e-6)


def test_view_labels_are_half_half_up_to_half_a_column():
    v1, l1, v2, l2 = _one_hot_pair(6, 6, W=16)
    _, labels = V.volume_cutmix(v1, l1, v2, l2, 0, "view", 3)
    np.testing.assert_allclose(labels[:, 0], 0.5 + 0.5 / 16, atol=1e-6)


def test_overlap_only_leaves_outside_frames_pure():
    v1, l1, v2, l2 = _one_hot_pair(10, 7, W=8)
    video, labels = V.volume_cutmix(v1, l1, v2, l2, 6, "window", 2, overlap_only=True)
    assert np.all(video[:6] == 1) and np.all(labels[:6] == [1, 0])
    assert np.all(video[10:] == 0) and np.all(labels[10:] == [0, 1])
    literal, _ = V.volume_cutmix(v1, l1, v2, l2, 6, "window", 2)
    assert literal[0, 0, -1, 0] < 1  # the formula's edge ramp on a pure clip-1 frame


@pytest.mark.parametrize("seed", range(5))
def test_label_rows_stay_in_unit_interval(seed):
    rng = _rng(seed)
    for _ in range(10):
        T = int(rng.integers(2, 12))
        span = V.sample_mix_span(rng, T)
        v1, l1 = _clip(span.n1, seed)
        v2, l2 = _clip(span.n2, seed + 100)
        outs = [V.volume_mixup(v1, l1, v2, l2, span.r, bool(rng.integers(2)))[1],
                V.volume_cutmix(v1, l1, v2, l2, span.r, "window", float(rng.integers(0, 3)))[1]]
        f = V.sample_freeze(rng, T)
        outs.append(V.volume_freeze(*_clip(T, seed), f.r, f.m)[1])
        for lab in outs:
            assert lab.min() >= 0 and lab.max() <= 1 + 1e-6


def test_samplers_respect_ranges_and_keep_length():
    rng = _rng(0)
    scenarios = set()
    for _ in range(300):
        T = int(rng.integers(2, 20))
        s = V.sample_mix_span(rng, T)
        assert max(s.n1, s.r + s.n2) == T and 0 <= s.r < s.n1 <= T and 1 <= s.n2
        scenarios.add(s.n2 + s.r >= s.n1)
        f = V.sample_freeze(rng, T)
        assert 0 <= f.r <= T - 2 and 2 <= f.m <= T - f.r
    assert scenarios == {True, False}


def test_identical_inputs_identical_outputs():
    v1, l1 = _clip(8, 1)
    v2, l2 = _clip(6, 2)
    for fn in (lambda: V.volume_mixup(v1, l1, v2, l2, 3), lambda: V.volume_cutmix(v1, l1, v2, l2, 3, "window", 1),
               lambda: V.volume_freeze(v1, l1, 2, 3)):
        a, b = fn(), fn()
        assert all(np.array_equal(x, y) for x, y in zip(a, b))


# ------------------------------------------------------------------ batch stage


def _batch(B=6, T=8, H=8, W=12, K=5, seed=0):
    rng = _rng(seed)
    labels = np.zeros((B, T, K), np.float32)
    labels[np.arange(B), :, np.arange(B) % K] = 1.0  # Kinetics-style pseudo labels
    return {"rgb": rng.integers(0, 256, (B, T, H, W, 3), dtype=np.uint8), "frame_labels": labels,
            "video_id": np.array([f"v{i}" for i in range(B)], dtype=object), "label": np.arange(B)}


def test_pair_partners_is_a_derangement():
    for seed in range(10):
        p = V.pair_partners(_rng(seed), 7)
        assert sorted(p.tolist()) == list(range(7)) and np.all(p != np.arange(7))
    assert V.pair_partners(_rng(0), 1).tolist() == [0]


@pytest.mark.parametrize("policy", ["single", "joint", "freeze", "mixup", "cutmix"])
def test_batch_stage_shapes_columns_and_replay(policy):
    batch = _batch()
    cfg = V.VolumeAugConfig(policy=policy, cutmix_mode="random")
    out = V.volume_augment_batch(batch, cfg=cfg, seed=3)
    assert out["rgb"].shape == batch["rgb"].shape and out["rgb"].dtype == np.uint8
    assert out["frame_labels"].shape == batch["frame_labels"].shape and out["frame_labels"].dtype == np.float32
    assert out["frame_labels"].min() >= 0 and out["frame_labels"].max() <= 1 + 1e-6
    np.testing.assert_array_equal(out["label"], batch["label"])  # passed through
    kinds = out["aug_kind"].tolist()
    if policy in V.KINDS:
        assert all(k == policy for k in kinds)
    if policy == "single":
        assert all("+" not in k for k in kinds)
    for i in range(len(kinds)):  # replay from the recorded columns
        p = V.params_from_columns(out, i)
        assert p.kind == kinds[i]
        j = p.partner if p.partner >= 0 else i
        vs, ls = V.apply_volume_params([batch["rgb"][i]], batch["frame_labels"][i], [batch["rgb"][j]],
                                       batch["frame_labels"][j], p, overlap_only=cfg.overlap_only)
        np.testing.assert_array_equal(np.clip(np.rint(vs[0]), 0, 255).astype(np.uint8), out["rgb"][i])
        np.testing.assert_allclose(ls, out["frame_labels"][i], atol=1e-6)


def test_batch_stage_is_deterministic_and_seeded():
    batch = _batch()
    cfg = V.VolumeAugConfig(policy="joint")
    a = V.volume_augment_batch(batch, cfg=cfg, seed=1)
    fresh = {k: v.copy() for k, v in batch.items()}
    fresh["video_id"] = np.array(["".join(["v", str(i)]) for i in range(6)], dtype=object)  # new str objects
    b = V.volume_augment_batch(fresh, cfg=cfg, seed=1)
    for k in a:
        assert np.array_equal(a[k], b[k]), k
    c = V.volume_augment_batch(batch, cfg=cfg, seed=2)
    d = V.volume_augment_batch(batch, cfg=cfg, seed=1, epoch=1)
    assert not np.array_equal(a["rgb"], c["rgb"]) and not np.array_equal(a["rgb"], d["rgb"])


def test_joint_policy_sometimes_stacks_ops():
    cfg = V.VolumeAugConfig(policy="joint", p_freeze=0.9, p_mixup=0.9, p_cutmix=0.9)
    kinds = V.volume_augment_batch(_batch(B=8), cfg=cfg, seed=0)["aug_kind"].tolist()
    assert any(k.count("+") == 2 for k in kinds)
