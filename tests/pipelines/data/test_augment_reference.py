"""The OpenCV ``apply_*`` of pipelines.data.augment against the numpy reference (bench/augment_reference.py).

The reference is the implementation the OpenCV one replaced, i.e. the documented semantics.
Crop, flip and blur must give the same bytes; colour jitter and luma grey may differ by one
grey level (float32 summation order, OpenCV's fixed-point luma weights) on a small fraction
of values. Random clips and random parameters, for every consistency scope, RGB and flow.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from bench import augment_reference as R
from pipelines.data import augment as A

MAX_DIFF_FRACTION = 0.02  # of values off by one level; measured <= 0.5 % (composed), 0.3 % (luma grey)


def _clip(rng: np.random.Generator, T: int, H: int, W: int, kind: int) -> np.ndarray:
    """Noise, a ramp with clipped (0 and 255) regions plus noise, or a flat colour."""
    if kind == 0:
        return rng.integers(0, 256, (T, H, W, 3), dtype=np.uint8)
    if kind == 1:
        ramp_W = np.linspace(-60, 320, W)[None, None, :, None] * rng.uniform(0.5, 1.0, (1, 1, 1, 3))
        return np.clip(ramp_W + rng.normal(0, 20, (T, H, W, 3)), 0, 255).astype(np.uint8)
    return np.broadcast_to(rng.integers(0, 256, (T, 1, 1, 3)), (T, H, W, 3)).astype(np.uint8)


def _case(seed: int, scope: str, grey_mode: str) -> tuple[np.ndarray, A.ClipAugParams]:
    rng = np.random.default_rng(seed)
    T, H, W = int(rng.integers(1, 11)), int(rng.integers(12, 72)), int(rng.integers(12, 72))
    cfg = A.AugmentConfig(out_size=int(rng.integers(8, 96)), crop=("resized", "scale")[seed % 2],
                          short_side=(16, 96), jitter_p=float(rng.uniform(0.3, 1.0)), brightness=0.6,
                          contrast=0.6, saturation=0.6, hue=0.5, grey_p=0.5, grey_mode=grey_mode,
                          color_scope=scope, block_len=3, blur_p=0.7)
    return _clip(rng, T, H, W, seed % 3), A.sample_params(cfg, rng, T, H, W)


def _close(new: np.ndarray, ref: np.ndarray, what: str, fraction: float = MAX_DIFF_FRACTION) -> None:
    assert new.shape == ref.shape and new.dtype == ref.dtype == np.uint8, what
    diff = np.abs(new.astype(np.int16) - ref)
    assert diff.max(initial=0) <= 1, f"{what}: max diff {diff.max()}"
    assert (diff > 0).mean() <= fraction, f"{what}: {(diff > 0).mean():.3%} of values differ"


@pytest.mark.parametrize("scope", ["clip", "block", "frame"])
@pytest.mark.parametrize("grey_mode", ["luma", "channel"])
def test_each_op_matches_the_reference(scope, grey_mode):
    for seed in range(24):
        x, p = _case(seed, scope, grey_mode)
        crop = A.apply_crop(x, p.crop)
        np.testing.assert_array_equal(crop, R.apply_crop(x, p.crop))
        for is_flow in (False, True):
            np.testing.assert_array_equal(A.apply_hflip(crop, True, is_flow=is_flow),
                                          R.apply_hflip(crop, True, is_flow=is_flow))
        np.testing.assert_array_equal(A.apply_blur(crop, p.blur), R.apply_blur(crop, p.blur))
        _close(A.apply_color_jitter(crop, p.color), R.apply_color_jitter(crop, p.color), f"jitter {seed}")
        grey, ref = A.apply_greyscale(crop, p.grey), R.apply_greyscale(crop, p.grey)
        if grey_mode == "channel":
            np.testing.assert_array_equal(grey, ref)
        else:
            _close(grey, ref, f"grey {seed}")


@pytest.mark.parametrize("scope", ["clip", "block", "frame"])
def test_composition_matches_the_reference_for_rgb_and_flow(scope):
    for seed in range(24):
        x, p = _case(seed, scope, ("luma", "channel")[seed % 2])
        flow = x.copy()
        flow[..., 2] = 0
        before = x.copy(), flow.copy()
        _close(A.augment_clip(x, p), R.augment_clip(x, p), f"rgb {seed}")
        np.testing.assert_array_equal(A.augment_clip(flow, p, is_flow=True), R.augment_clip(flow, p, is_flow=True))
        for photometric in (False, True):
            new, ref = A.augment_pair(x, flow, p, flow_photometric=photometric), R.augment_pair(
                x, flow, p, flow_photometric=photometric)
            _close(new[0], ref[0], f"pair rgb {seed}")
            _close(new[1], ref[1], f"pair flow {seed} photometric={photometric}")
        np.testing.assert_array_equal(x, before[0])  # pure: the inputs are not written
        np.testing.assert_array_equal(flow, before[1])


@pytest.mark.parametrize("preset", [A.coclr, A.dpc, A.x3d_detection])
def test_presets_match_the_reference(preset):
    cfg = preset()
    for seed in range(4):
        rng = np.random.default_rng(seed)
        x = _clip(rng, 12, 160, 200, seed % 2)
        p = A.sample_params(cfg, rng, 12, 160, 200)
        _close(A.augment_clip(x, p), R.augment_clip(x, p), f"{preset.__name__} {seed}")


def test_jitter_edge_cases():
    rng = np.random.default_rng(0)
    x = _clip(rng, 6, 20, 24, 1)
    x[0] = 255  # a white frame: brightness > 1 clips everything
    one, zero = np.ones(6, np.float32), np.zeros(6, np.float32)
    cases = {
        "black": (zero, one, one, zero),
        "bright": (one * 1.9, one * 0.2, one, zero),
        "contrast0": (one * 1.3, zero, one, zero),
        "saturation0_and_2": (one, one, np.array([0, 2, 0, 2, 0, 2], np.float32), zero),
        "hue_signs": (one, one, one, np.array([-0.5, -0.3, -0.01, 0.01, 0.3, 0.5], np.float32)),
        "hue_turns": (one, one, one, np.array([-1.0, 1.0, 2.25, -2.25, 0.999, 0], np.float32)),
        "some_frames_off": (np.array([1, 1.4, 1, 0.6, 1, 1], np.float32), one,
                            np.array([1, 1, 1, 1.5, 1, 1], np.float32), np.array([0, 0.1, 0, 0, 0, 0], np.float32)),
    }
    for name, (b, c, s, h) in cases.items():
        p = A.ColorJitterParams(b, c, s, h)
        # Exact quarter turns (0.25, 2.25) put many values on .5 ties, which float32 rounding
        # breaks either way: only the one-level bound holds there.
        _close(A.apply_color_jitter(x, p), R.apply_color_jitter(x, p), name, 0.1 if "hue" in name else 0.02)
    p = A.ColorJitterParams(*cases["some_frames_off"])
    out = A.apply_color_jitter(x, p)
    np.testing.assert_array_equal(out[[0, 2, 4, 5]], x[[0, 2, 4, 5]])  # frames left alone stay exact


def test_jitter_in_chunks_of_one_or_a_few_frames(monkeypatch):
    """Runs of jittered frames cut into chunks of at most ``K`` frames, each run and chunk boundary
    crossed (frame scope, some frames left alone)."""
    rng = np.random.default_rng(3)
    x = _clip(rng, 11, 16, 16, 1)
    p = A.sample_color_jitter(rng, 11, scope="frame", p=0.7, brightness=0.6, contrast=0.6, saturation=0.6, hue=0.5)
    assert 0 < (p.brightness_T == 1).sum() < 11
    ref = R.apply_color_jitter(x, p)
    for K in (1, 2, 3, 11):
        monkeypatch.setattr("pipelines.data.augment_ops._CHUNK_PIXELS", K * 16 * 16)
        out = A.apply_color_jitter(x, p)
        _close(out, ref, f"K={K}")
        np.testing.assert_array_equal(out[p.brightness_T == 1], x[p.brightness_T == 1])


def test_one_frame_and_tiny_frames():
    cfg = dataclasses.replace(A.coclr(), out_size=3, jitter_p=1.0, grey_p=1.0, blur_p=1.0)
    for T, H, W in ((1, 2, 2), (3, 1, 5), (2, 4, 1)):
        rng = np.random.default_rng(T)
        x = _clip(rng, T, H, W, 0)
        p = A.sample_params(cfg, rng, T, H, W)
        _close(A.augment_clip(x, p), R.augment_clip(x, p), f"{T}x{H}x{W}")


def test_strided_and_fortran_inputs_give_the_same_contiguous_output():
    rng = np.random.default_rng(5)
    base = _clip(rng, 6, 40, 50, 0)
    cfg = A.AugmentConfig(out_size=24, jitter_p=1.0, grey_p=0.5, blur_p=1.0, color_scope="frame")
    for x in (base[:, :, ::-1], base[::2, ::2, ::2], np.asfortranarray(base), base[..., ::-1]):
        p = A.sample_params(cfg, rng, *x.shape[:3])
        for op, arg in (("apply_crop", p.crop), ("apply_hflip", True), ("apply_color_jitter", p.color),
                        ("apply_greyscale", p.grey), ("apply_blur", p.blur), ("augment_clip", p)):
            new = getattr(A, op)(x, arg)
            _close(new, getattr(R, op)(x, arg), op)
            assert new is x or new.flags.c_contiguous, op  # an op left out returns its input
