"""``jobs/flow.py`` on a tiny ingested dataset, in-process on the session's embedded Ray cluster."""

import json
from pathlib import Path

import pytest

from pipelines.prep import flow
from pipelines.io import manifest
from pipelines.io import storage
from pipelines.prep.ingest import IngestConfig, run_ingest
from tests.media import make_video
from tests.scripts import load_script

pytestmark = pytest.mark.slow


def _job():
    return load_script("jobs/flow.py")


def _run(job, capsys, *args) -> tuple[int, dict]:
    code = job.main([*args, "--json"])
    out = capsys.readouterr().out.strip().splitlines()
    return code, (json.loads(out[-1]) if out and out[-1].startswith("{") else {})


@pytest.fixture
def dataset(tmp_path, ray_cluster):
    """Three ingested (transcoded) videos; then ``c``'s transcoded file is cut in half."""
    src, dst = tmp_path / "src", str(tmp_path / "ds")
    make_video(src / "Jump" / "a.mp4", 8, h=32, w=40)
    make_video(src / "Run" / "b.mp4", 6, h=32, w=40, seed=3)
    make_video(src / "Run" / "c.mp4", 8, h=32, w=40, seed=4)
    report = run_ingest(IngestConfig(fmt="folder", src=str(src), dst=dst, short_side=32, gop=4))
    assert report.accepted == 3
    broken = {r["video_id"]: r["uri"] for r in manifest.read_manifest(dst).to_pylist()}["Run/c"]
    storage.write_bytes(broken, storage.read_bytes(broken)[:300])
    return dst


def _mtimes(folder: Path) -> dict[str, float]:
    return {str(p): p.stat().st_mtime_ns for p in folder.rglob("*.mkv")}


def test_flow_job(dataset, capsys):
    job = _job()
    code, report = _run(job, capsys, "--manifest", dataset, "--method", "farneback", "--strict")
    assert code == 3  # --strict and a quarantined row
    assert (report["rows"], report["with_flow"], report["quarantined"]) == (3, 2, 1)

    table = flow.read_manifest_with_flow(dataset)
    assert table.column_names == manifest.MANIFEST_SCHEMA.names
    assert manifest.read_manifest(dataset).num_rows == 3  # the plain reader still works
    rows = {r["video_id"]: r for r in table.to_pylist()}
    assert rows["Run/c"]["flow_uri"] is None
    for vid in ("Jump/a", "Run/b"):
        assert rows[vid]["flow_uri"] == storage.join(dataset, "flow", f"{vid}.mkv")
        flow_THW2 = flow.read_flow(rows[vid]["flow_uri"])
        assert flow_THW2.shape == (rows[vid]["num_frames"], rows[vid]["height"], rows[vid]["width"], 2)
    quarantine = manifest.read_quarantine(dataset).to_pylist()
    assert [(q["stage"], q["video_id"]) for q in quarantine] == [("flow", "Run/c")]

    before = (storage.read_bytes(storage.join(dataset, "manifest.parquet")),
              storage.read_bytes(storage.join(dataset, "quarantine.parquet")),
              _mtimes(Path(dataset) / "flow"))
    assert len(before[2]) == 2
    code, again = _run(job, capsys, "--manifest", dataset, "--method", "farneback")
    assert code == 0
    assert (again["computed"], again["existing"], again["quarantined"]) == (0, 2, 1)
    after = (storage.read_bytes(storage.join(dataset, "manifest.parquet")),
             storage.read_bytes(storage.join(dataset, "quarantine.parquet")),
             _mtimes(Path(dataset) / "flow"))
    assert after == before  # a second run is a no-op: no file is rewritten

    # Another method recomputes; TV-L1 runs end to end on the tiny frames.
    code, tvl1 = _run(job, capsys, "--manifest", f"{dataset}/manifest.parquet", "--method", "tvl1",
                      "--param", "scales_number=3")
    assert code == 0 and (tvl1["computed"], tvl1["quarantined"]) == (2, 1)
    assert len(manifest.read_quarantine(dataset)) == 1  # the retried failure replaced, not duplicated
    assert flow.stored_flow(rows["Jump/a"]["flow_uri"])[1][flow.TAG_METHOD] == "tvl1"


def test_flow_job_without_manifest(tmp_path, ray_cluster, capsys):
    job = _job()
    assert job.main(["--manifest", str(tmp_path / "none"), "--method", "farneback"]) == 2
    assert "no manifest" in capsys.readouterr().err
