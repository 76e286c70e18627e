import cv2
import numpy as np
import pytest

from pipelines.data import augment as A
from pipelines.data.augment_ops import blur_ksize


def _rng(seed=0):
    return np.random.default_rng(seed)


def _video(T=8, H=24, W=32, seed=0):
    return _rng(seed).integers(0, 256, (T, H, W, 3), dtype=np.uint8)


def _static(T=8, H=24, W=32):
    """Every frame identical: clip-consistent ops must keep them identical."""
    return np.repeat(_video(1, H, W, seed=5), T, axis=0)


def _all_frames_equal(x):
    return all(np.array_equal(x[0], f) for f in x[1:])


# ------------------------------------------------------------------ crop / flip


def test_crop_without_resize_is_a_slice_and_with_resize_matches_per_frame_cv2():
    x = _video()
    p = A.CropParams(3, 5, 10, 12, 10, 12)
    np.testing.assert_array_equal(A.apply_crop(x, p), x[:, 3:13, 5:17])
    q = A.CropParams(3, 5, 10, 12, 16, 20)
    y = A.apply_crop(x, q)
    assert y.shape == (8, 16, 20, 3) and y.dtype == np.uint8
    ref = np.stack([cv2.resize(np.ascontiguousarray(f[3:13, 5:17]), (20, 16), interpolation=cv2.INTER_LINEAR)
                    for f in x])
    np.testing.assert_array_equal(y, ref)


def test_crop_handles_more_than_cv2_channel_limit():
    x = _video(T=50, H=8, W=8)  # 150 stacked channels > CV_CN_MAX (128 in OpenCV 5)
    y = A.apply_crop(x, A.CropParams(0, 0, 8, 8, 4, 4))
    ref = np.stack([cv2.resize(f, (4, 4), interpolation=cv2.INTER_LINEAR) for f in x])
    # cv2's 3-channel and many-channel kernels may round differently by one level.
    assert np.abs(y.astype(int) - ref).max() <= 1


@pytest.mark.parametrize("sampler", ["resized", "scale"])
def test_crop_samplers_stay_in_frame_and_are_deterministic(sampler):
    for seed in range(30):
        if sampler == "resized":
            p = A.sample_resized_crop(_rng(seed), 48, 64, out_size=32)
        else:
            p = A.sample_scale_crop(_rng(seed), 48, 64, short_side=(56, 70), crop=32)
        assert 0 <= p.y0 and p.y0 + p.h <= 48 and 0 <= p.x0 and p.x0 + p.w <= 64
        assert (p.out_h, p.out_w) == (32, 32)
    assert A.sample_resized_crop(_rng(1), 48, 64, out_size=32) == A.sample_resized_crop(_rng(1), 48, 64, out_size=32)
    c = A.center_crop_params(48, 64, out_size=32)
    assert (c.y0, c.x0, c.h, c.w) == (0, 8, 48, 48)


def test_crop_is_clip_consistent():
    p = A.sample_resized_crop(_rng(0), 24, 32, out_size=16)
    assert _all_frames_equal(A.apply_crop(_static(), p))


def test_flip_rgb_and_flow():
    x = _video()
    np.testing.assert_array_equal(A.apply_hflip(x, True), x[:, :, ::-1])
    assert A.apply_hflip(x, False) is x
    flow = x.copy()
    flow[..., 2] = 0
    f = A.apply_hflip(flow, True, is_flow=True)
    np.testing.assert_array_equal(f[..., 0], 255 - flow[:, :, ::-1, 0])  # x-flow negated
    np.testing.assert_array_equal(f[..., 1], flow[:, :, ::-1, 1])  # y-flow only mirrored
    np.testing.assert_array_equal(A.apply_hflip(f, True, is_flow=True), flow)  # involution
    # In the +-20 px -> [0, 255] encoding, 255 - v is exactly the code of -x.
    enc = lambda px: (px + 20) * 255 / 40
    assert enc(-7.5) == pytest.approx(255 - enc(7.5))


# ------------------------------------------------------------------ colour


def test_color_jitter_scopes():
    clip = A.sample_color_jitter(_rng(0), 10, scope="clip", p=1.0)
    frame = A.sample_color_jitter(_rng(0), 10, scope="frame", p=1.0)
    block = A.sample_color_jitter(_rng(0), 10, scope="block", block_len=5, p=1.0)
    for f in ("brightness_T", "contrast_T", "saturation_T", "hue_T"):
        assert len(set(getattr(clip, f).tolist())) == 1
        assert len(set(getattr(frame, f).tolist())) == 10
        v = getattr(block, f)
        assert len(set(v[:5].tolist())) == 1 and len(set(v[5:].tolist())) == 1 and v[0] != v[5]
    assert _all_frames_equal(A.apply_color_jitter(_static(10), clip))
    out = A.apply_color_jitter(_static(10), frame)
    assert out.dtype == np.uint8 and not any(np.array_equal(out[0], f) for f in out[1:])


def test_color_jitter_probability_and_identity():
    off = A.sample_color_jitter(_rng(0), 6, scope="frame", p=0.0)
    assert np.all(off.brightness_T == 1) and np.all(off.hue_T == 0)
    x = _video()
    ident = A.ColorJitterParams(*(np.ones(8, np.float32),) * 3, np.zeros(8, np.float32))
    np.testing.assert_array_equal(A.apply_color_jitter(x, ident), x)


def test_color_jitter_draws_are_those_of_one_uniform_call_per_factor():
    """Seeds keep giving the same clips: the factors are ``rng.uniform`` per factor, then the decisions."""
    for G, scope in ((1, "clip"), (4, "block"), (13, "frame")):
        got, rng = A.sample_color_jitter(_rng(G), 13, scope=scope, block_len=4, p=0.6, hue=0.3), _rng(G)
        draws = np.stack([rng.uniform(0.6, 1.4, G), rng.uniform(0.6, 1.4, G), rng.uniform(0.6, 1.4, G),
                          rng.uniform(-0.3, 0.3, G)])
        draws = np.where(rng.random(G) < 0.6, draws, np.array([[1.0], [1.0], [1.0], [0.0]])).astype(np.float32)
        groups = A._group_ids(13, scope, 4)
        for row, f in zip(draws, ("brightness_T", "contrast_T", "saturation_T", "hue_T")):
            np.testing.assert_array_equal(getattr(got, f), row[groups])


def test_color_jitter_matches_torchvision_definitions():
    x = _video(T=2)
    one, zero = np.ones(2, np.float32), np.zeros(2, np.float32)
    b = np.array([0.5, 1.7], np.float32)
    np.testing.assert_array_equal(A.apply_color_jitter(x, A.ColorJitterParams(b, one, one, zero)),
                                  np.clip(np.rint(x * b.reshape(-1, 1, 1, 1).astype(np.float32)), 0, 255))
    grey = x.astype(np.float32) @ np.array([0.299, 0.587, 0.114], np.float32)
    sat0 = A.apply_color_jitter(x, A.ColorJitterParams(one, one, zero, zero))  # saturation 0 -> grey
    np.testing.assert_array_equal(sat0, np.repeat(np.rint(grey)[..., None], 3, -1))
    c0 = A.apply_color_jitter(x, A.ColorJitterParams(one, zero, one, zero))  # contrast 0 -> mean grey
    for t in range(2):
        assert np.all(c0[t] == np.rint(grey[t].mean()))
    full_turn = A.apply_color_jitter(x, A.ColorJitterParams(one, one, one, zero + 1.0))
    assert np.abs(full_turn.astype(int) - x).max() <= 1  # a full hue turn is the identity
    half = A.apply_color_jitter(x, A.ColorJitterParams(one, one, one, zero + 0.5))
    red = np.zeros((2, 1, 1, 3), np.uint8)
    red[..., 0] = 200
    assert A.apply_color_jitter(red, A.ColorJitterParams(one, one, one, zero + 0.5))[0, 0, 0].tolist() == [0, 200, 200]
    assert half.dtype == np.uint8


def test_greyscale_modes_and_scope():
    x = _video(T=6)
    all_on = A.GreyscaleParams(np.ones(6, bool), np.full(6, -1, np.int8))
    g = A.apply_greyscale(x, all_on)
    assert np.array_equal(g[..., 0], g[..., 1]) and np.array_equal(g[..., 1], g[..., 2])
    ch = A.GreyscaleParams(np.ones(6, bool), np.array([0, 1, 2, 0, 1, 2], np.int8))
    g = A.apply_greyscale(x, ch)
    for t in range(6):
        assert np.array_equal(g[t, ..., 1], x[t, ..., t % 3])
    p = A.sample_greyscale(_rng(0), 40, scope="frame", p=0.5)
    assert 0 < p.grey_T.sum() < 40
    g = A.apply_greyscale(x.repeat(7, 0)[:40], p)
    assert np.array_equal(g[~p.grey_T], x.repeat(7, 0)[:40][~p.grey_T])
    assert len(set(A.sample_greyscale(_rng(0), 40, scope="clip", p=0.5).grey_T.tolist())) == 1


# ------------------------------------------------------------------ blur


def test_blur_matches_per_frame_cv2_and_is_clip_consistent():
    x = _video()
    p = A.BlurParams(1.3)
    ref = np.stack([cv2.GaussianBlur(f, (9, 9), 1.3) for f in x])
    np.testing.assert_array_equal(A.apply_blur(x, p), ref)
    rng = _rng(5)  # every kernel width, frames smaller than the kernel, and many exact ties (GaussianBlur rounds up)
    for H, W in ((64, 80), (5, 7), (1, 9)):
        clip = rng.integers(0, 256, (3, H, W, 3), dtype=np.uint8)
        for sigma in (0.1, 0.34, 0.5, 0.9, 1.67, 2.0, 2.6):
            k = blur_ksize(sigma)
            ref = np.stack([cv2.GaussianBlur(f, (k, k), sigma) for f in clip])
            np.testing.assert_array_equal(A.apply_blur(clip, A.BlurParams(sigma)), ref, f"{H}x{W} sigma {sigma}")
    assert A.apply_blur(x, A.BlurParams(0.0)) is x
    assert _all_frames_equal(A.apply_blur(_static(), p))
    sig = [A.sample_blur(_rng(s), p=0.5).sigma for s in range(40)]
    assert any(s == 0 for s in sig) and all(s == 0 or 0.1 <= s <= 2 for s in sig)


# ------------------------------------------------------------------ composition


@pytest.mark.parametrize("preset", [A.coclr, A.dpc, A.x3d_detection])
def test_augment_clip_shapes_dtype_and_determinism(preset):
    cfg = preset()
    x = _video(T=6, H=40, W=48)
    p1 = A.sample_params(cfg, _rng(7), 6, 40, 48)
    p2 = A.sample_params(cfg, _rng(7), 6, 40, 48)
    y1, y2 = A.augment_clip(x, p1), A.augment_clip(x, p2)
    assert y1.shape == (6, cfg.out_size, cfg.out_size, 3) and y1.dtype == np.uint8
    np.testing.assert_array_equal(y1, y2)
    assert p1.caption() == p2.caption()


def test_presets_follow_the_seeds():
    c, d = A.coclr(), A.dpc()
    assert c.color_scope == "clip" and c.blur_p > 0 and (c.brightness, c.hue, c.jitter_p, c.grey_p) == (0.4, 0.1, 0.8, 0.2)
    assert d.color_scope == "frame" and d.blur_p == 0 and (d.brightness, d.hue, d.grey_p) == (0.5, 0.25, 0.5)


def test_coclr_clip_is_consistent_dpc_clip_is_framewise():
    x = _static(T=6, H=40, W=48)
    for seed in range(5):
        assert _all_frames_equal(A.augment_clip(x, A.sample_params(A.coclr(), _rng(seed), 6, 40, 48)))
    y = A.augment_clip(x, A.sample_params(A.dpc(), _rng(0), 6, 40, 48))
    assert not _all_frames_equal(y)
    # ... while DPC's crop and flip stay clip-consistent: the frames' geometry agrees.
    p = A.sample_params(A.dpc(), _rng(0), 6, 40, 48)
    geo = A.apply_hflip(A.apply_crop(x, p.crop), p.flip)
    assert _all_frames_equal(geo)


def test_view_pair_has_independent_params():
    p0, p1 = A.sample_view_pair(A.coclr(), _rng(0), 8, 64, 64)
    assert p0.crop != p1.crop
    draws = [A.sample_view_pair(A.coclr(), _rng(s), 8, 64, 64) for s in range(20)]
    assert any(a.flip != b.flip for a, b in draws)


def test_rgb_and_flow_share_crop_and_flip():
    rgb = _video(T=4, H=32, W=40)
    flow = rgb.copy()
    cfg = A.AugmentConfig(out_size=16, flip_p=1.0)
    p = A.sample_params(cfg, _rng(0), 4, 32, 40)
    r, f = A.augment_pair(rgb, flow, p)
    geo = A.apply_hflip(A.apply_crop(rgb, p.crop), True)
    np.testing.assert_array_equal(f[..., 1:], geo[..., 1:])
    np.testing.assert_array_equal(f[..., 0], 255 - geo[..., 0])
    assert r.shape == f.shape
    with pytest.raises(ValueError):
        A.augment_pair(rgb, flow[:, :16], p)


def test_normalize_on_worker():
    torch = pytest.importorskip("torch")
    x = torch.from_numpy(_video(T=3, H=4, W=5)[None])
    y = A.normalize(x)
    assert y.shape == (1, 3, 3, 4, 5) and y.dtype == torch.float32
    ref = (x[0, 1, 2, 3, 0].item() / 255 - 0.485) / 0.229
    assert y[0, 0, 1, 2, 3].item() == pytest.approx(ref, rel=1e-5)
