"""``jobs/ingest.py`` as users run it: a subprocess, from and to S3 on a loopback endpoint.

The job is configured only through the standard AWS variables (``AWS_ENDPOINT_URL``);
it starts its own embedded Ray cluster.
"""

import io
import json
import os
import subprocess
import sys
from pathlib import Path

import av
import pytest

from pipelines.io import manifest
from pipelines.io import storage
from tests.media import make_bad_files, make_video

pytestmark = pytest.mark.slow
ROOT = Path(__file__).resolve().parents[2]


def _ucf_tree(local: Path) -> None:
    lists = local / "ucfTrainTestlist"
    lists.mkdir(parents=True)
    (lists / "classInd.txt").write_text("1 Jump\n2 Run\n")
    (lists / "trainlist01.txt").write_text("Jump/v_Jump_g02_c01.avi 1\nRun/v_Run_g02_c01.avi 2\n"
                                           "Run/truncated.mp4 2\nRun/v_Run_g03_c01.avi 9\n")
    (lists / "testlist01.txt").write_text("Jump/v_Jump_g01_c01.avi\nRun/notes.avi\n")
    make_video(local / "UCF-101" / "Jump" / "v_Jump_g02_c01.avi", 30, w=320, h=240, codec="mpeg4")
    make_video(local / "UCF-101" / "Run" / "v_Run_g02_c01.avi", 20, w=160, h=120, codec="mpeg4", seed=5)
    make_video(local / "UCF-101" / "Jump" / "v_Jump_g01_c01.avi", 25, w=320, h=240, codec="mpeg4", seed=6)
    make_bad_files(local / "UCF-101" / "Run")


def _run(args, env):
    out = subprocess.run([sys.executable, "jobs/ingest.py", *args], cwd=ROOT, env=env, capture_output=True,
                         text=True, timeout=300)
    assert "testing-secret" not in out.stdout + out.stderr  # credentials never reach the logs
    return out


def test_ingest_job_from_and_to_s3(s3_env, tmp_path):
    _ucf_tree(tmp_path / "ucf")
    for path in sorted((tmp_path / "ucf").rglob("*")):
        if path.is_file() and "\udce9" not in str(path):
            storage.put_file(str(path), f"{s3_env}/raw/{path.relative_to(tmp_path / 'ucf')}")
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    env.update(AWS_ENDPOINT_URL=os.environ["AWS_ENDPOINT_URL"], AWS_ACCESS_KEY_ID="testing",
               AWS_SECRET_ACCESS_KEY="testing-secret", AWS_REGION="us-east-1")
    os.environ["AWS_SECRET_ACCESS_KEY"] = "testing-secret"  # this process reads the results too
    args = ["--format", "ucf101", "--src", f"{s3_env}/raw", "--dst", f"{s3_env}/ds", "--short-side", "64",
            "--gop", "8", "--num-cpus", "2", "--json"]
    first = _run(args, env)
    assert first.returncode == 0, first.stderr[-3000:]
    report = json.loads(first.stdout.strip().splitlines()[-1])
    # 6 list rows: 3 good videos, a truncated file, an unknown class number, a text file named .avi
    assert (report["inputs"], report["accepted"], report["quarantined"]) == (6, 3, 3)
    assert report["reasons"] == {"truncated": 1, "unknown_class": 1, "not_a_video": 1}

    rows = manifest.read_manifest(f"{s3_env}/ds").to_pylist()
    assert {(r["video_id"], r["split"], r["label_index"]) for r in rows} == {
        ("v_Jump_g02_c01", "train", 0), ("v_Run_g02_c01", "train", 1), ("v_Jump_g01_c01", "test", 0)}
    for row in rows:
        assert row["uri"].startswith(f"{s3_env}/ds/videos/")
        with av.open(io.BytesIO(storage.read_bytes(row["uri"]))) as c:
            s = c.streams.video[0]
            frames = list(c.decode(s))
        assert (row["num_frames"], row["width"], row["height"]) == (len(frames), frames[0].width, frames[0].height)
        assert row["fps"] == pytest.approx(float(s.average_rate))

    second = _run([*args, "--strict"], env)
    assert second.returncode == 3, second.stderr[-3000:]  # --strict: quarantined rows fail the job
    again = json.loads(second.stdout.strip().splitlines()[-1])
    assert (again["accepted_new"], again["accepted_existing"]) == (0, 3)
    assert manifest.read_manifest(f"{s3_env}/ds").num_rows == 3
    assert manifest.read_quarantine(f"{s3_env}/ds").num_rows == 3
