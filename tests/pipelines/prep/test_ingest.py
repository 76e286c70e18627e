"""Ingest end to end on an embedded Ray cluster: accounting, bad inputs, idempotence."""

import os
import shutil

import av
import pytest

from pipelines.prep import datasets
from pipelines.io import manifest
from pipelines.prep import ingest as ingest_mod
from pipelines.prep.ingest import IngestConfig, run_ingest
from tests.media import make_bad_files, make_video

pytestmark = pytest.mark.slow


def _probe(path):
    with av.open(path) as c:
        s = c.streams.video[0]
        frames = list(c.decode(s))
        return len(frames), float(s.average_rate), frames[0].width, frames[0].height


@pytest.fixture
def messy_folder(tmp_path):
    src = tmp_path / "src"
    make_video(src / "Jump" / "a.mp4", 40, w=176, h=144, gop=250, bframes=2)
    make_video(src / "Jump" / "b.avi", 30, w=320, h=240, codec="mpeg4", fps=29.97, seed=1)
    make_video(src / "Run" / "c.webm", 25, w=128, h=96, codec="libvpx-vp9", fps=30, seed=2)
    make_video(src / "Run" / "vanishing.mp4", 10, seed=3)
    shutil.copy(src / "Jump" / "a.mp4", src / "Run" / "copy_of_a.mp4")
    bad = make_bad_files(src / "Run")
    return src, bad


def test_ingest_accounts_for_every_input_and_is_idempotent(ray_cluster, messy_folder, tmp_path, monkeypatch):
    src, bad = messy_folder
    dst = str(tmp_path / "dst")
    real_list = datasets.list_inputs

    def list_then_vanish(*args, **kwargs):  # the file disappears between listing and reading
        listing = real_list(*args, **kwargs)
        os.unlink(src / "Run" / "vanishing.mp4")
        return listing

    monkeypatch.setattr(ingest_mod.datasets, "list_inputs", list_then_vanish)
    report = run_ingest(IngestConfig(fmt="folder", src=str(src), dst=dst, short_side=96, gop=8))
    monkeypatch.setattr(ingest_mod.datasets, "list_inputs", real_list)

    assert report.inputs == 12 and report.accepted == 3 and report.quarantined == 9
    q = {os.path.basename(r["source_uri"]): r for r in manifest.read_quarantine(dst).to_pylist()}
    expected = {"truncated.mp4": "truncated", "zero_bytes.mp4": "empty", "random_bytes.mp4": "not_a_video",
                "notes.avi": "not_a_video", "audio_only.mp4": "no_video_stream", "zero_frames.mp4": "no_frames",
                "vanishing.mp4": "not_found", "copy_of_a.mp4": "duplicate", "caf\\xe9-latin1.mp4": "bad_name"}
    assert {k: v["kind"] for k, v in q.items()} == expected
    assert all(len(v["reason"]) > 20 for v in q.values())

    rows = {r["video_id"]: r for r in manifest.read_manifest(dst).to_pylist()}
    assert set(rows) == {"Jump/a", "Jump/b", "Run/c"}
    for row in rows.values():
        n, fps, w, h = _probe(row["uri"])  # independent probe of the file training will read
        assert (row["num_frames"], row["width"], row["height"]) == (n, w, h)
        assert row["fps"] == pytest.approx(fps) and min(w, h) == 96 and row["codec"] == "h264"
        assert row["uri"].startswith(dst) and row["source_uri"].startswith(str(src))
    assert rows["Jump/b"]["num_frames"] == 30 and rows["Jump/b"]["fps"] == pytest.approx(29.97)

    again = run_ingest(IngestConfig(fmt="folder", src=str(src), dst=dst, short_side=96, gop=8))
    assert (again.accepted_new, again.accepted_existing, again.quarantined) == (0, 3, 8)  # vanished is gone
    assert manifest.read_manifest(dst).num_rows == 3 and again.fingerprint == report.fingerprint
    # The vanished file's record stays (inputs not listed again keep their history); no duplicates.
    assert sorted(os.path.basename(r["source_uri"]) for r in manifest.read_quarantine(dst).to_pylist()) == \
        sorted(q)


def test_ingest_without_transcoding_points_at_the_sources(ray_cluster, tmp_path):
    src = tmp_path / "src"
    make_video(src / "A" / "x.mp4", 12)
    report = run_ingest(IngestConfig(fmt="folder", src=str(src), dst=str(tmp_path / "d")))
    (row,) = manifest.read_manifest(str(tmp_path / "d")).to_pylist()
    assert report.accepted == 1 and row["uri"] == row["source_uri"] == str(src / "A" / "x.mp4")
    assert not os.path.exists(tmp_path / "d" / "videos")


def test_source_groups_reach_the_manifest_and_the_samples(ray_cluster, tmp_path):
    """UCF101-style clips of one gNN share a group: in the manifest, and as group_index in the items."""
    from pipelines.data import recipes
    from pipelines.data.dataset import _items

    src = tmp_path / "src"
    for frames, name in enumerate(("v_Jump_g01_c01", "v_Jump_g01_c02", "v_Jump_g02_c01", "other"), 12):
        make_video(src / "Jump" / f"{name}.mp4", frames)  # different bytes: no duplicates
    run_ingest(IngestConfig(fmt="folder", src=str(src), dst=str(tmp_path / "d")))
    table = manifest.read_manifest(str(tmp_path / "d"))
    groups = dict(zip(table.column("video_id").to_pylist(), table.column("group_id").to_pylist()))
    assert groups == {"Jump/v_Jump_g01_c01": "Jump/Jump_g01", "Jump/v_Jump_g01_c02": "Jump/Jump_g01",
                      "Jump/v_Jump_g02_c01": "Jump/Jump_g02", "Jump/other": "Jump/other"}
    items, _, _ = _items(table, recipes.recipe("classification"), "train", None)
    index = {i["video_id"]: i["group_index"] for i in items}
    assert index["Jump/v_Jump_g01_c01"] == index["Jump/v_Jump_g01_c02"]
    assert len({index["Jump/v_Jump_g01_c01"], index["Jump/v_Jump_g02_c01"], index["Jump/other"]}) == 3
