"""The ``activity`` recipe: labels on every raw frame of the window, validity past the end, bad segments
quarantined, and its batches through Ray Data on the tiny multi-action set."""

from __future__ import annotations

import json

import numpy as np
import pytest

from pipelines.data import recipes
from pipelines.data.recipes.activity import parse_segments, window_labels
from pipelines.io.probe import MediaError
from tests.pipelines.data.test_dataset import tiny_datasets

SEGMENTS = [{"label_index": 1, "start_s": 0.2, "end_s": 0.4}, {"label_index": 0, "start_s": 0.3, "end_s": 1.0}]


def test_window_labels_cover_every_raw_frame_and_mark_the_end():
    idx_T = np.array([6, 8, 10, 12])  # stride 2 from frame 6 in a 12-frame... 13-frame video at 10 fps
    labels_LK, valid_L = window_labels(13, 10.0, SEGMENTS, idx_T, 2, 3)
    assert labels_LK.shape == (8, 3) and valid_L.tolist() == [1, 1, 1, 1, 1, 1, 1, 0]  # frames 6..13
    # frame f is at f / 10 s: class 0 on 0.3..1.0 s (frames 3..10), class 1 on 0.2..0.4 s (frames 2..4)
    assert labels_LK[:, 0].tolist() == [1, 1, 1, 1, 1, 0, 0, 0]  # frames 6..10 inclusive, 13 invalid
    assert labels_LK[:, 1].sum() == 0 and labels_LK[-1].sum() == 0


@pytest.mark.parametrize("segments,reason", [
    ("not json", "unreadable"), (json.dumps([{"label_index": 7, "start_s": 0, "end_s": 1}]), "outside"),
    (json.dumps([{"label_index": 0, "start_s": 2, "end_s": 1}]), "not a span"),
    (json.dumps([{"start_s": 0, "end_s": 1}]), "unreadable")])
def test_malformed_segments_are_a_media_error_naming_the_problem(segments, reason):
    with pytest.raises(MediaError, match=reason) as info:
        parse_segments({"segments": segments, "uri": "file:///v.mp4"}, 3)
    assert info.value.kind == "bad_annotation" and info.value.uri == "file:///v.mp4"
    assert parse_segments({"segments": "[]", "uri": "u"}, 3) == []  # no segments: all background


def test_sample_reads_once_and_labels_match_the_sampled_window():
    cfg = recipes.recipe("activity", debug_size=True)
    calls = []

    def read(video_id, uri, idx):
        calls.append(np.asarray(idx))
        return np.zeros((len(idx), 72, 96, 3), np.uint8)

    row = {"video_id": "v", "uri": "u", "num_frames": 40, "fps": 10.0, "segments": json.dumps(SEGMENTS)}
    out = cfg.sample(row, np.random.default_rng(0), read, 3)
    assert len(calls) == 1 and out["rgb"].shape == (8, 64, 64, 3)
    assert out["frame_labels"].shape == (cfg.span(), 3) == (16, 3)
    expected, _ = window_labels(40, 10.0, SEGMENTS, out["frame_idx"], cfg.stride, 3)
    np.testing.assert_array_equal(out["frame_labels"], expected)


def test_activity_batches_through_ray_data(ray_cluster, tmp_path_factory):
    from pipelines.data.dataset import build_pipeline

    manifest = tiny_datasets(tmp_path_factory)["cha"]
    cfg = recipes.recipe("activity", debug_size=True)
    pipe = build_pipeline(manifest, cfg, "train")
    batch = pipe.dataset.take_batch(8, batch_format="numpy")
    n = len(batch["video_id"])
    assert n == len(pipe.inputs) - pipe.quarantined().num_rows >= 1
    assert batch["frame_labels"].shape[1:] == (16, batch["frame_labels"].shape[2])
    assert batch["frame_valid"].shape == (n, 16) and set(np.unique(batch["frame_valid"])) <= {0.0, 1.0}
