"""``jobs/cache.py``: a dataset decoded once for single runs, and what it tells the user."""

from __future__ import annotations

import pytest

from pipelines.io import manifest
from tests.pipelines.data.test_dataset import tiny_datasets
from tests.scripts import load_script

pytestmark = pytest.mark.slow


def test_cache_job_decodes_the_split_and_names_the_setting(ray_cluster, tmp_path_factory, tmp_path, capsys):
    url = tiny_datasets(tmp_path_factory)["ucf"]
    job = load_script("jobs/cache.py")
    assert job.main(["--manifest", url, "--out", str(tmp_path / "cache"), "--no-flow"]) == 0
    out = capsys.readouterr().out
    root = tmp_path / "cache" / manifest.fingerprint(manifest.read_manifest(url))
    assert "4 file(s) ready (4 decoded now" in out and f"--set data.clip_cache={root}" in out
    assert len(list(root.glob("*.npy"))) == 4  # the 4 train videos of the tiny set
    assert job.main(["--manifest", str(tmp_path / "nothing"), "--out", str(tmp_path / "c2")]) == 2
    assert "make one with jobs/ingest.py" in capsys.readouterr().err
    assert job.main(["--manifest", url, "--out", str(tmp_path / "c2"), "--split", "val"]) == 2
    assert "split 'val'" in capsys.readouterr().err
