"""The decoded-clip cache: what it stores is what the decoder returns, and a pipeline reading
it yields the same samples and the same quarantine as one that decodes."""

from __future__ import annotations

import numpy as np
import pytest

from pipelines.data import recipes
from pipelines.data.clip_cache import ClipCache, Item, items_of, materialise, within_budget
from pipelines.data.dataset import LoaderOptions, build_pipeline
from pipelines.io import manifest, storage
from pipelines.io.video import read_frames
from tests.pipelines.data.test_dataset import _batch, tiny_datasets

pytestmark = pytest.mark.slow


def test_read_is_a_slice_and_misses_are_none(tmp_path):
    cache = ClipCache(str(tmp_path / "c"))
    frames = np.random.default_rng(0).integers(0, 256, (6, 4, 5, 3), np.uint8)
    assert cache.read("a.mp4", [0]) is None  # not cached
    assert cache.write("a.mp4", frames) > frames.nbytes
    np.testing.assert_array_equal(cache.read("a.mp4", [5, 0, 0, 2]), frames[[5, 0, 0, 2]])
    assert cache.read("a.mp4", [6]) is None and cache.read("a.mp4", [-1]) is None  # past the cached frames
    (tmp_path / "c" / cache.path("b.mp4").rsplit("/", 1)[1]).write_bytes(b"not an npy file")
    assert cache.read("b.mp4", [0]) is None


def test_budget_keeps_manifest_order_and_counts_flow_at_its_videos_length():
    rows = [{"uri": f"v{i}.mp4", "flow_uri": f"f{i}.mp4", "num_frames": 10, "codec": "h264", "height": 2,
             "width": 5} for i in range(3)]
    items = items_of(rows)
    assert [i.uri for i in items] == ["v0.mp4", "f0.mp4", "v1.mp4", "f1.mp4", "v2.mp4", "f2.mp4"]
    assert items[1] == Item("f0.mp4", None, "h264", (2, 5))
    keep, rest = within_budget(items, budget_bytes=3 * 10 * 2 * 5 * 3)  # three files' worth
    assert [i.uri for i in keep] == ["v0.mp4", "f0.mp4", "v1.mp4"] and len(rest) == 3
    assert [i.uri for i in items_of(rows, flow=False)] == ["v0.mp4", "v1.mp4", "v2.mp4"]


@pytest.fixture(scope="module")
def messy_cached(ray_cluster, tmp_path_factory):
    """The tiny train rows plus a truncated and a vanished video, and a cache made of them."""
    data = tiny_datasets(tmp_path_factory)
    root = tmp_path_factory.mktemp("cached")
    good = [r for r in manifest.read_manifest(data["ucf"]).to_pylist() if r["split"] == "train"]
    src = storage.read_bytes(good[0]["uri"])
    (root / "truncated.mp4").write_bytes(src[: len(src) // 3])
    rows = good + [dict(good[0], video_id="bad/truncated", uri=str(root / "truncated.mp4")),
                   dict(good[1], video_id="bad/vanished", uri=str(root / "vanished.mp4"))]
    url = str(root / "ds")
    manifest.write_table(manifest.to_table(rows, manifest.MANIFEST_SCHEMA), url + "/manifest.parquet")
    cache = ClipCache(str(root / "cache"))
    report = materialise(cache, rows, budget_bytes=2**30, progress=lambda _: None)
    return url, rows, cache, report


def test_materialise_stores_the_decoders_frames_and_skips_broken_files(messy_cached):
    _, rows, cache, report = messy_cached
    assert (report.cached, report.over_budget) == (8, 0)  # 4 videos and their flow (the bad rows reuse two)
    assert set(report.failed) == {rows[-2]["uri"], rows[-1]["uri"]} and not cache.has(rows[-1]["uri"])
    first = rows[0]
    idx = np.arange(first["num_frames"])
    np.testing.assert_array_equal(cache.read(first["uri"], idx), read_frames(first["uri"], idx))
    again = materialise(cache, rows[:2], budget_bytes=2**30, progress=lambda _: None)
    assert (again.present, again.cached) == (4, 0)  # a resumed sweep decodes nothing twice


@pytest.mark.parametrize("recipe", ["coclr"])  # RGB and flow reads, two clips per sample
def test_pipeline_on_the_cache_equals_the_decoding_one(messy_cached, recipe):
    url, rows, cache, _ = messy_cached
    cfg = recipes.recipe(recipe, debug_size=True)
    out = {}
    for name, root in (("decode", None), ("cache", cache.root)):
        pipe = build_pipeline(url, cfg, "train", seed=3, epoch=1,
                              options=LoaderOptions(rows_per_task=2, ledger_name=f"test-cache-{recipe}-{name}",
                                                    clip_cache=root))
        batch = _batch(pipe.dataset)
        order = np.argsort(batch["video_id"])
        out[name] = ({k: v[order] for k, v in batch.items()}, pipe.accounting(len(order)),
                     sorted((r["video_id"], r["kind"]) for r in pipe.quarantined().to_pylist()))
    (dec, dec_acc, dec_q), (hit, hit_acc, hit_q) = out["decode"], out["cache"]
    assert dec_acc == hit_acc and dec_acc["balanced"] and dec_acc["quarantined"] == 2
    assert dec_q == hit_q and {v for v, _ in hit_q} == {"bad/truncated", "bad/vanished"}
    for col in cfg.video_columns():
        np.testing.assert_array_equal(dec[col], hit[col])
    np.testing.assert_array_equal(dec["video_id"], hit["video_id"])
