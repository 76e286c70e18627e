"""The ``dpc`` recipe without Ray: blocks, the clip-wise crop/flip and frame-wise colour, the flow stream."""

from __future__ import annotations

import numpy as np

from pipelines.data import augment, recipes, sampling

H, W = 100, 120


def _row(num_frames=40):
    return {"video_id": "v", "uri": "rgb.mp4", "flow_uri": "flow.mp4", "num_frames": num_frames}


def _reader(calls):
    def read(video_id, uri, idx):
        calls.append(uri)
        frames = np.zeros((len(idx), H, W, 3), np.uint8)
        frames[..., 0] = np.linspace(0, 255, W, dtype=np.uint8)  # a horizontal ramp: a flip shows
        frames[..., 1] = 128
        return frames
    return read


def test_debug_size_is_4_blocks_of_3_frames_at_96px():
    cfg = recipes.recipe("dpc", debug_size=True)
    assert (cfg.num_blocks, cfg.clip_len, cfg.stride, cfg.crop_size) == (4, 3, 2, 96)
    assert sampling.clip_span(cfg.num_blocks * cfg.clip_len, cfg.stride) <= 24  # the tiny synthetic clips


def test_rgb_sample_replays_from_its_generator():
    cfg = recipes.recipe("dpc", debug_size=True)
    calls = []
    out = cfg.sample(_row(), np.random.default_rng(0), _reader(calls), None)
    assert calls == ["rgb.mp4"] and out["blocks"].shape == (4, 3, 96, 96, 3)
    rng = np.random.default_rng(0)
    idx = sampling.block_sequence(40, rng, num_blocks=4, block_len=3, stride=2, short="loop")
    p = augment.sample_params(cfg.augment, rng, 12, H, W)
    np.testing.assert_array_equal(out["frame_idx"], idx)
    assert p.color.brightness_T.shape == (12,) and len(set(p.color.brightness_T.tolist())) > 1  # frame-wise


def test_flow_stream_reads_flow_uri_and_keeps_the_encoding():
    cfg = recipes.recipe("dpc", debug_size=True, overrides=["modality=flow", "augment.flip_p=1"])
    calls = []
    out = cfg.sample(_row(), np.random.default_rng(0), _reader(calls), None)
    assert calls == ["flow.mp4"] and cfg.video_columns() == {"blocks": "flow"}
    assert [r.column for r in cfg.required()] == ["flow_uri"]
    assert np.all(out["blocks"][..., 1] == 128)  # no colour op touched the y-flow channel
    x = out["blocks"][0, 0, 0, :, 0].astype(int)  # flipped ramp with x negated (255 - x): increasing again
    assert x[-1] > x[0]
    coloured = recipes.recipe("dpc", debug_size=True, overrides=["modality=flow", "flow_color=true"])
    out = coloured.sample(_row(), np.random.default_rng(0), _reader([]), None)
    assert not np.all(out["blocks"][..., 1] == 128)


def test_a_row_without_flow_is_excluded_from_the_flow_stream():
    cfg = recipes.recipe("dpc", overrides=["modality=flow"])
    assert cfg.exclude({"flow_uri": ""})[0] == "no_flow"
    assert recipes.recipe("dpc").exclude({"flow_uri": ""}) is None
