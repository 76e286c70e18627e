"""A wrong setup is refused before training, with the command that fixes it; debug data is made."""

import dataclasses

import pytest

from pipelines.data import recipes
from pipelines.io import manifest
from pipelines.methods.spec import DataConfig
from pipelines.prep.ready import DatasetNotReady, ensure_dataset
from tests.pipelines.io.test_manifest import _row


def _write(tmp_path, rows):
    manifest.write_table(manifest.to_table(rows, manifest.MANIFEST_SCHEMA), str(tmp_path / "manifest.parquet"))
    return str(tmp_path)


def test_missing_manifest_names_the_commands(tmp_path):
    url = str(tmp_path / "nowhere")
    with pytest.raises(DatasetNotReady, match="no manifest at") as err:
        ensure_dataset(DataConfig(manifest=url), [recipes.recipe("classification")])
    assert "jobs/ingest.py --format ucf101 --src" in str(err.value) and url in str(err.value)
    assert "jobs/make_synthetic.py" in str(err.value)


def test_empty_split_lists_the_splits(tmp_path):
    url = _write(tmp_path, [_row(i, split="test") for i in range(3)])
    with pytest.raises(DatasetNotReady, match=r"no rows in split 'train' \(it has \['test'\]\)"):
        ensure_dataset(DataConfig(manifest=url), [recipes.recipe("classification")])
    ensure_dataset(DataConfig(manifest=url, split="test"), [recipes.recipe("classification")])


def test_missing_flow_names_jobs_flow(tmp_path):
    url = _write(tmp_path, [_row(i) for i in range(3)])
    with pytest.raises(DatasetNotReady, match="recipe 'coclr' reads 'flow_uri'") as err:
        ensure_dataset(DataConfig(manifest=url), [recipes.recipe("coclr")])
    assert f"jobs/flow.py --manifest {url}" in str(err.value)
    ensure_dataset(DataConfig(manifest=url), [recipes.recipe("coclr", overrides=["with_flow=false"])])
    # some rows with flow: accepted here; the rows without it are excluded and counted at build time
    rows = [{**_row(i), "flow_uri": f"/d/v{i}.flow.mkv" if i else None} for i in range(3)]
    ensure_dataset(DataConfig(manifest=_write(tmp_path / "partial", rows)), [recipes.recipe("coclr")])


def test_synthetic_debug_data_is_made_with_what_the_recipe_needs(tmp_path, monkeypatch):
    made = []
    monkeypatch.setattr("pipelines.prep.ready.make_synthetic",
                        lambda url, preset, fmt="ucf101": made.append(("synthetic", preset)) or _write_at(url))
    monkeypatch.setattr("pipelines.prep.ready.add_flow", lambda url: made.append(("flow", url)))
    url = str(tmp_path / "debug" / "ucf101")
    ensure_dataset(DataConfig(manifest=url, synthetic="tiny"), [recipes.recipe("coclr")])
    assert made == [("synthetic", "tiny"), ("flow", url)]


def _write_at(url):
    import pathlib

    pathlib.Path(url).mkdir(parents=True)
    manifest.write_table(manifest.to_table([_row(0)], manifest.MANIFEST_SCHEMA), url + "/manifest.parquet")


def test_every_debug_variant_makes_its_data():
    from pipelines.methods import METHODS

    for spec in METHODS.values():
        job = spec.variants["debug"]()
        assert job.data.synthetic, f"{spec.name}: the debug variant must run from a fresh clone"
        assert dataclasses.is_dataclass(job) and job.scaling.cpus_per_worker <= 1
