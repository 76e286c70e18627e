import numpy as np
import pytest

from pipelines.data import sampling


def _rng(seed=0):
    return np.random.default_rng(seed)


def test_sample_rng_is_reproducible_and_keyed_on_every_field():
    draw = lambda *a: sampling.sample_rng(*a).integers(0, 2**62, 4).tolist()
    assert draw(1, 0, "vid_a") == draw(1, 0, "vid_a")
    others = [draw(2, 0, "vid_a"), draw(1, 1, "vid_a"), draw(1, 0, "vid_b"), draw(1, 0, "vid_a", 1)]
    assert all(o != draw(1, 0, "vid_a") for o in others)
    with pytest.raises(ValueError):
        sampling.sample_rng(-1, 0, "v")


def test_two_clips_shapes_offsets_and_independence():
    starts = set()
    for seed in range(20):
        a, b = sampling.two_clips(300, _rng(seed), length=32, stride=2)
        assert a.dtype == b.dtype == np.int64 and a.shape == b.shape == (32,)
        assert np.all(np.diff(a) == 2) and np.all(np.diff(b) == 2)
        assert a.min() >= 0 and max(a.max(), b.max()) < 300
        starts.add((a[0], b[0]))
    assert len({s for s, _ in starts}) > 5 and any(s0 != s1 for s0, s1 in starts)  # independent offsets


def test_two_clips_deterministic_given_rng():
    a = sampling.two_clips(100, _rng(3), length=16)
    b = sampling.two_clips(100, _rng(3), length=16)
    assert all(np.array_equal(x, y) for x, y in zip(a, b))


def test_short_video_rules():
    # 10 frames, 8 at stride 2 needs span 15: pad (CoCLR), loop and clamp.
    pad = sampling.clip_indices(10, 1, length=8, stride=2, short="pad")
    assert pad.tolist() == [0, 0, 0, 1, 3, 5, 7, 9]
    loop = sampling.clip_indices(10, 1, length=8, stride=2, short="loop")
    assert loop.tolist() == [1, 3, 5, 7, 9, 1, 3, 5]
    clamp = sampling.clip_indices(10, 1, length=8, stride=2, short="clamp")
    assert clamp.tolist() == [1, 3, 5, 7, 9, 9, 9, 9]
    with pytest.raises(ValueError):
        sampling.clip_indices(10, 0, length=8, short="wrap")
    with pytest.raises(ValueError):
        sampling.clip_indices(0, 0, length=8)


@pytest.mark.parametrize("n", [1, 3, 31])
def test_samplers_never_index_out_of_range_on_short_videos(n):
    for seed in range(5):
        for idx in sampling.two_clips(n, _rng(seed), length=32):
            assert idx.shape == (32,) and 0 <= idx.min() and idx.max() < n
        blocks = sampling.block_sequence(n, _rng(seed))
        assert blocks.shape == (8, 5) and blocks.max() < n
        idx, lab = sampling.dense_window(n, 10.0, [], _rng(seed), length=16, stride=5, num_classes=3)
        assert idx.max() < n and lab.shape == (16, 3)
        views = sampling.eval_windows(n, num_clips=4, length=16, stride=2)
        assert views.shape == (4, 16) and views.max() < n


def test_block_sequence_is_contiguous_non_overlapping_at_fixed_stride():
    idx = sampling.block_sequence(500, _rng(1), num_blocks=8, block_len=5, stride=3)
    assert idx.shape == (8, 5) and idx.dtype == np.int64
    flat = idx.ravel()
    assert np.all(np.diff(flat) == 3)  # blocks follow each other, no gap, no overlap
    assert len(set(flat.tolist())) == 40


def test_dense_window_labels_against_hand_computed_example():
    # 10 fps; frames at stride 3 from the chosen start; class 1 on [0.5, 1.0] s,
    # class 0 on [0.9, 2.0] s, class 1 again on [1.8, 1.8] (a single instant).
    segs = [{"label": "b", "label_index": 1, "start_s": 0.5, "end_s": 1.0},
            {"label": "a", "label_index": 0, "start_s": 0.9, "end_s": 2.0},
            {"label": "b", "label_index": 1, "start_s": 1.8, "end_s": 1.8}]
    idx = np.array([0, 3, 6, 9, 12, 15, 18, 21])
    lab = sampling.segment_labels(idx, 10.0, segs, num_classes=3)
    expected = np.array([[0, 0, 0], [0, 0, 0], [0, 1, 0], [1, 1, 0],
                         [1, 0, 0], [1, 0, 0], [1, 1, 0], [0, 0, 0]], np.float32)
    np.testing.assert_array_equal(lab, expected)
    assert lab.dtype == np.float32
    idx2, lab2 = sampling.dense_window(22, 10.0, segs, _rng(0), length=8, stride=3, num_classes=3)
    assert idx2.tolist() == idx.tolist()  # 22 frames leave exactly one start
    np.testing.assert_array_equal(lab2, expected)


def test_segment_labels_rejects_bad_class_and_fps():
    with pytest.raises(ValueError):
        sampling.segment_labels(np.arange(3), 10.0, [{"label_index": 5, "start_s": 0, "end_s": 1}], num_classes=3)
    with pytest.raises(ValueError):
        sampling.segment_labels(np.arange(3), 0.0, [], num_classes=3)


def test_replicate_label():
    lab = sampling.replicate_label(2, 4, num_classes=3)
    assert lab.shape == (4, 3) and lab[:, 2].tolist() == [1, 1, 1, 1] and lab.sum() == 4


def test_eval_windows_evenly_spaced_and_half_overlap():
    idx = sampling.eval_windows(100, num_clips=3, length=10, stride=2)  # span 19
    assert idx[:, 0].tolist() == [0, 40, 81] and idx[-1, -1] == 99
    half = sampling.eval_windows(40, num_clips=None, length=10)  # span 10, step 5
    assert half[:, 0].tolist() == [0, 5, 10, 15, 20, 25, 30]
    short = sampling.eval_windows(5, num_clips=2, length=8)
    assert short.tolist() == [[0, 0, 0, 0, 1, 2, 3, 4]] * 2


def test_spatial_crops_three_and_ten():
    boxes, flips = sampling.spatial_crops(64, 100, 64, 3)
    assert boxes.tolist() == [[0, 0, 64, 64], [0, 18, 64, 64], [0, 36, 64, 64]] and not flips.any()
    boxes, flips = sampling.spatial_crops(100, 64, 64, 3)
    assert boxes[:, 0].tolist() == [0, 18, 36]
    boxes, flips = sampling.spatial_crops(80, 100, 64, 10)
    assert boxes.shape == (10, 4) and flips.tolist() == [False] * 5 + [True] * 5
    assert boxes[:5].tolist() == boxes[5:].tolist()
    assert boxes[:5, :2].tolist() == [[8, 18], [0, 0], [0, 36], [16, 0], [16, 36]]
    with pytest.raises(ValueError):
        sampling.spatial_crops(32, 32, 64, 3)


def test_test_views_combines_windows_and_crops():
    v = sampling.test_views(200, num_clips=4, length=16, stride=2, height=72, width=96, crop_size=64, spatial=3)
    assert v.frame_idx_VL.shape == (4, 16) and v.boxes_S4.shape == (3, 4) and v.flip_S.shape == (3,)
