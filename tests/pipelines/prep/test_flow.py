"""Flow fields, the seeds' uint8 encoding and the stored flow videos (tiny frames: TV-L1 is slow)."""

import av
import cv2
import numpy as np
import pyarrow as pa
import pytest

from pipelines.prep import flow
from pipelines.io import manifest
from pipelines.io import storage
from pipelines.io.encode import write_video

STEP = 2 * flow.BOUND / 255  # px per uint8 level


def _texture(h: int, w: int, seed: int = 0) -> np.ndarray:
    """Smooth random texture (uint8), so every pixel has gradient for the flow to follow."""
    noise = np.random.default_rng(seed).random((h, w)).astype(np.float32)
    smooth = cv2.GaussianBlur(noise, (0, 0), 1.5)
    return (255 * (smooth - smooth.min()) / np.ptp(smooth)).astype(np.uint8)


def _translating(T: int, h: int, w: int, dx: int, dy: int) -> np.ndarray:
    """gray_THW: a texture moving ``dx`` px right and ``dy`` px down per frame (wrapping)."""
    base = _texture(h, w)
    return np.stack([np.roll(base, (t * dy, t * dx), axis=(0, 1)) for t in range(T)])


def test_encode_maps_bound_linearly_and_truncates():
    flow_THW2 = np.array([[[[-20.0, 20.0], [0.0, 50.0], [-1e9, np.nan]]]], np.float32)
    enc = flow.encode_flow(flow_THW2)
    assert enc.dtype == np.uint8 and enc.shape == (1, 1, 3, 3)
    assert enc[0, 0, :, :2].tolist() == [[0, 255], [128, 255], [0, 128]]
    assert (enc[..., 2] == 0).all()
    dec = flow.decode_flow(enc)
    assert dec.dtype == np.float32 and dec.shape == (1, 1, 3, 2)
    assert dec[0, 0, 1, 1] == pytest.approx(20.0)  # 50 px is truncated to the bound


def test_round_trip_error_is_half_a_step_within_the_bound():
    flow_THW2 = np.random.default_rng(0).uniform(-20, 20, (4, 8, 8, 2)).astype(np.float32)
    err = np.abs(flow.decode_flow(flow.encode_flow(flow_THW2)) - flow_THW2)
    assert err.max() <= STEP / 2 + 1e-5
    assert err.mean() == pytest.approx(STEP / 4, rel=0.1)  # uniform rounding error
    assert np.array_equal(flow.encode_flow(flow.decode_flow(flow.encode_flow(flow_THW2))),
                          flow.encode_flow(flow_THW2))


@pytest.mark.parametrize("method,size", [("tvl1", 32), ("farneback", 64)])
def test_translation_gives_sign_and_magnitude(method, size):
    gray_THW = _translating(3, size, size, dx=2, dy=-1)
    flow_T1HW2 = flow.compute_flow(gray_THW, method)
    assert flow_T1HW2.shape == (2, size, size, 2) and flow_T1HW2.dtype == np.float32
    inner = flow_T1HW2[:, 6:-6, 6:-6]  # away from the wrap-around seam
    assert np.median(inner[..., 0]) == pytest.approx(2.0, abs=0.4)
    assert np.median(inner[..., 1]) == pytest.approx(-1.0, abs=0.4)


def test_align_repeats_the_last_field_and_streaming_matches():
    gray_THW = _translating(4, 24, 24, dx=1, dy=0)
    flow_T1HW2 = flow.compute_flow(gray_THW, "farneback")
    aligned_THW2 = flow.align_to_frames(flow_T1HW2, 4)
    assert aligned_THW2.shape[0] == 4 and np.array_equal(aligned_THW2[3], aligned_THW2[2])
    streamed_THW2 = np.stack(list(flow.iter_aligned_flow(iter(gray_THW), "farneback")))
    assert np.array_equal(streamed_THW2, aligned_THW2)
    one_THW2 = np.stack(list(flow.iter_aligned_flow(iter(gray_THW[:1]), "farneback")))
    assert one_THW2.shape == (1, 24, 24, 2) and not one_THW2.any()
    with pytest.raises(ValueError):
        flow.align_to_frames(flow_T1HW2, 5)


def test_bad_method_or_parameter():
    with pytest.raises(ValueError):
        flow.pair_flow_fn("lucas-kanade")
    with pytest.raises(ValueError):
        flow.pair_flow_fn("tvl1", no_such_parameter=1)
    with pytest.raises(ValueError):
        flow.pair_flow_fn("farneback", no_such_parameter=1)
    assert flow.pair_flow_fn("tvl1", scales_number=2, lambda_=0.1) is not None


def _gray_frames(path: str) -> np.ndarray:
    with av.open(path) as c:
        return np.stack([f.to_ndarray(format="gray") for f in c.decode(video=0)])


@pytest.mark.parametrize("method", ["farneback", "tvl1"])
def test_stored_flow_is_exactly_the_uint8_encoding(tmp_path, method):
    gray_THW = _translating(5, 32, 48, dx=3, dy=1)
    rgb = str(tmp_path / "v.mp4")
    write_video(rgb, np.repeat(gray_THW[..., None], 3, axis=-1), fps=30, crf=10)
    out = "memory://flowtest/flow/v.mkv"  # object storage through fsspec
    info = flow.flow_video(rgb, out, method=method, expected_frames=5)
    assert (info.num_frames, info.width, info.height) == (5, 48, 32)

    float_THW2 = flow.align_to_frames(flow.compute_flow(_gray_frames(rgb), method), 5)
    stored_THW2 = flow.read_flow(out)
    assert stored_THW2.shape == (5, 32, 48, 2)  # one flow frame per RGB frame
    assert np.array_equal(flow.encode_flow(stored_THW2), flow.encode_flow(float_THW2))  # lossless store
    inside = np.abs(float_THW2) <= flow.BOUND
    assert np.abs(stored_THW2 - float_THW2)[inside].max() <= STEP / 2 + 1e-5
    with storage.open_url(out) as f, av.open(f) as c:
        assert float(c.streams.video[0].average_rate) == pytest.approx(30)
    assert flow.is_done(out, 5, method, flow.BOUND)
    assert not flow.is_done(out, 6, method, flow.BOUND)
    assert not flow.is_done(out, 5, "other", flow.BOUND)


def test_flow_video_rejects_a_changed_video(tmp_path):
    rgb = str(tmp_path / "v.mp4")
    write_video(rgb, np.zeros((4, 16, 16, 3), np.uint8))
    with pytest.raises(flow.MediaError) as err:
        flow.flow_video(rgb, str(tmp_path / "f.mkv"), method="farneback", expected_frames=7)
    assert err.value.kind == "frame_count"
    assert not (tmp_path / "f.mkv").exists()  # nothing half-written is left


def test_manifest_flow_column(tmp_path):
    rows = [{"video_id": "a", "uri": "x.mp4", "num_frames": 3, "segments": []}]
    url = str(tmp_path / "manifest.parquet")
    manifest.write_table(manifest.to_table(rows, manifest.MANIFEST_SCHEMA), url)
    table = flow.read_manifest_with_flow(str(tmp_path))
    assert table.column(flow.FLOW_COLUMN).to_pylist() == [None]
    manifest.write_table(flow.with_flow_column(table, ["f.mkv"]), url)
    assert flow.read_manifest_with_flow(url).column(flow.FLOW_COLUMN).to_pylist() == ["f.mkv"]
    assert manifest.read_manifest(url).schema == manifest.MANIFEST_SCHEMA  # the plain reader still works
    manifest.write_table(pa.table({"video_id": ["a"]}), url)
    with pytest.raises(ValueError):
        flow.read_manifest_with_flow(url)
    with pytest.raises(FileNotFoundError):
        flow.read_manifest_with_flow(str(tmp_path / "nothing"))
