"""The ``coarse_fine`` recipe: one decode for both streams, the Coarse clip inside the Fine window at the
offset, one crop for both, labels of the Coarse window, short videos padded and masked, bad segments
quarantined, and its batches (a scalar ``offset`` column) through Ray Data on the tiny multi-action set."""

from __future__ import annotations

import json

import numpy as np
import pytest

from pipelines.data import recipes
from pipelines.data.recipes.activity import window_labels
from pipelines.data.recipes.base import COMMON
from pipelines.data.recipes.coarse_fine import PAD_RGB, grid_windows
from pipelines.io.probe import MediaError

SEGMENTS = [{"label_index": 1, "start_s": 0.2, "end_s": 0.9}, {"label_index": 0, "start_s": 1.5, "end_s": 3.0}]


class Reader:
    """Frames whose pixels encode their index (a gradient across the width makes crops and flips visible)."""

    def __init__(self, height: int = 72, width: int = 96) -> None:
        self.calls, self.height, self.width = [], height, width

    def __call__(self, video_id, uri, idx):
        self.calls.append(np.asarray(idx))
        ramp = np.linspace(0, 99, self.width).astype(np.uint8)[None, None, :, None]
        base = (np.asarray(idx, np.int64) % 150).astype(np.uint8)[:, None, None, None]
        return np.broadcast_to(base + ramp, (len(idx), self.height, self.width, 3)).copy()


def _row(num_frames: int, segments=SEGMENTS) -> dict:
    return {"video_id": "v", "uri": "file:///v.mp4", "num_frames": num_frames, "fps": 10.0,
            "segments": json.dumps(segments)}


def test_one_read_per_sample_and_the_columns_shapes():
    cfg = recipes.recipe("coarse_fine", debug_size=True)
    assert (cfg.clip_len, cfg.fine_len, cfg.stride, cfg.crop_size) == (8, 16, 2, 64)
    schema = recipes.batch_schema(cfg, 3)
    for n in (5, 20, 40, 300):
        read = Reader()
        out = cfg.sample(_row(n), np.random.default_rng(n), read, 3)
        assert len(read.calls) == 1  # one decode feeds both streams
        assert set(out) == set(schema) - set(COMMON)
        for col, (dtype, shape) in cfg.columns(3).items():
            got = np.asarray(out[col])
            assert got.shape == shape, col
            if dtype != "string":
                assert got.dtype == np.dtype(dtype), col
        real = out["fine_idx"][out["fine_valid"] > 0]
        np.testing.assert_array_equal(read.calls[0], real)  # exactly the Fine window's frames are decoded


@pytest.mark.parametrize("n", [3, 17, 33, 34, 35, 64, 250])
def test_coarse_frame_j_is_fine_frame_offset_plus_j(n):
    clip_len, fine_len, stride = 8, 16, 2
    for seed in range(20):
        coarse, fine, offset = grid_windows(n, clip_len, fine_len, stride, np.random.default_rng(seed))
        assert len(coarse) == clip_len and 1 <= len(fine) <= fine_len and 0 <= offset <= fine_len - clip_len
        assert np.all(np.diff(fine) == stride) and fine[-1] < n
        inside = coarse[:len(fine) - offset]  # Coarse frames on real Fine frames
        np.testing.assert_array_equal(fine[offset + np.arange(len(inside))], inside)
        assert np.all(coarse[len(inside):] == fine[-1])  # past the end: the last grid frame repeated
        if n >= stride * fine_len:  # a long video: the Fine window is T' real frames around the clip
            assert len(fine) == fine_len


def test_both_streams_get_one_crop_and_offset_aligns_their_pixels():
    cfg = recipes.recipe("coarse_fine", debug_size=True, overrides=["augment.flip_p=1"])
    for seed in range(5):
        out = cfg.sample(_row(120), np.random.default_rng(seed), Reader(), 2)
        off, T = int(out["offset"]), cfg.clip_len
        np.testing.assert_array_equal(out["rgb"], out["fine"][off:off + T])  # same frames, same crop and flip
        assert out["rgb"][0, 0, 0, 0] > out["rgb"][0, 0, -1, 0]  # flipped: the ramp now falls
        np.testing.assert_array_equal(out["fine_idx"][off:off + T], out["frame_idx"])


def test_labels_are_the_coarse_windows_raw_frames():
    cfg = recipes.recipe("coarse_fine", debug_size=True)
    out = cfg.sample(_row(60), np.random.default_rng(1), Reader(), 2)
    expected, valid = window_labels(60, 10.0, SEGMENTS, out["frame_idx"], cfg.stride, 2)
    assert out["frame_labels"].shape == (cfg.span(), 2) == (16, 2)
    np.testing.assert_array_equal(out["frame_labels"], expected)
    np.testing.assert_array_equal(out["frame_valid"], valid)


def test_a_short_video_is_padded_and_masked():
    cfg = recipes.recipe("coarse_fine", debug_size=True)
    rng = np.random.default_rng(0)
    out = cfg.sample(_row(9), rng, Reader(), 2)  # 9 frames at stride 2: 4 or 5 grid frames
    n_real = int(out["fine_valid"].sum())
    assert n_real in (4, 5) and out["fine_valid"].tolist() == [1.0] * n_real + [0.0] * (16 - n_real)
    assert out["offset"] == 0 and np.all(out["fine_idx"][n_real:] == -1)
    assert np.all(out["fine"][n_real:] == PAD_RGB)  # the ImageNet mean: 0 once normalised
    assert np.all(out["frame_idx"][n_real:] == out["fine_idx"][n_real - 1])  # Coarse clip: clamped
    raw_L = out["frame_idx"][0] + np.arange(cfg.span())
    np.testing.assert_array_equal(out["frame_valid"], (raw_L < 9).astype(np.float32))
    assert out["frame_labels"][raw_L >= 9].sum() == 0


@pytest.mark.parametrize("segments,reason", [
    ("not json", "unreadable"), (json.dumps([{"label_index": 5, "start_s": 0, "end_s": 1}]), "outside"),
    (json.dumps([{"label_index": 0, "start_s": 2, "end_s": 1}]), "not a span")])
def test_malformed_segments_are_quarantined_before_any_decode(segments, reason):
    cfg, read = recipes.recipe("coarse_fine", debug_size=True), Reader()
    row = {**_row(40), "segments": segments}
    with pytest.raises(MediaError, match=reason) as info:
        cfg.sample(row, np.random.default_rng(0), read, 3)
    assert info.value.kind == "bad_annotation" and info.value.uri == "file:///v.mp4" and not read.calls


def test_refuses_a_coarse_clip_longer_than_the_fine_stream():
    with pytest.raises(ValueError, match="clip_len"):
        grid_windows(100, 16, 8, 2, np.random.default_rng(0))


def test_preset_is_the_seeds_charades_setting():
    cfg = recipes.recipe("coarse_fine")
    assert (cfg.clip_len, cfg.fine_len, cfg.stride, cfg.crop_size) == (64, 128, 10, 224)
    assert cfg.video_columns() == {"rgb": "rgb", "fine": "rgb"} and cfg.augment.flip_p == 0.5


@pytest.mark.slow
def test_coarse_fine_batches_through_ray_data(ray_cluster, tmp_path_factory):
    from pipelines.data.dataset import build_pipeline
    from pipelines.data.preview import render_contact_sheet
    from tests.pipelines.data.test_dataset import tiny_datasets

    manifest = tiny_datasets(tmp_path_factory)["cha"]
    cfg = recipes.recipe("coarse_fine", debug_size=True)
    pipe = build_pipeline(manifest, cfg, "train")
    batch = pipe.dataset.take_batch(8, batch_format="numpy")
    n = len(batch["video_id"])
    assert n == len(pipe.inputs) - pipe.quarantined().num_rows >= 1
    assert batch["offset"].shape == (n,) and batch["fine"].shape == (n, 16, 64, 64, 3)
    for i in range(n):
        off = int(batch["offset"][i])
        np.testing.assert_array_equal(batch["fine_idx"][i][off:off + 8], batch["frame_idx"][i])
    assert render_contact_sheet(batch, cfg) is not None
