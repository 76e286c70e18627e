"""Datasets of every recipe on a tiny synthetic dataset: schema, reproducibility, RGB/flow
alignment, corrupt and vanished videos, a hung and a crashing decoder, and one Ray Train epoch."""

from __future__ import annotations

import json
import os
import signal
import sys
import time

import cloudpickle
import numpy as np
import pytest

from pipelines.data import augment
from pipelines.io import manifest
from pipelines.data import recipes
from pipelines.data import sampling
from pipelines.data import telemetry
from pipelines.io import storage
from pipelines.data.dataset import LoaderOptions, build_dataset, build_pipeline
from pipelines.io.video import read_frames

pytestmark = pytest.mark.slow
_CACHE: dict[str, str] = {}
cloudpickle.register_pickle_by_value(sys.modules[__name__])  # FaultyReader runs in Ray workers


def tiny_datasets(tmp_path_factory) -> dict[str, str]:
    """Synthetic ``tiny`` (4 classes, 1 clip per group) ingested once per session: ``ucf``
    (8 videos, 4 train, with Farneback flow) and ``cha`` (2 multi-action videos)."""
    if not _CACHE:
        from pipelines.prep.flow import FlowConfig, run_flow
        from pipelines.prep.ingest import IngestConfig, run_ingest
        from pipelines.prep.synthetic import generate, preset

        root = tmp_path_factory.mktemp("tiny")
        generate(str(root / "src"), preset("tiny", groups=2, clips_per_group=1, multi_videos=2), workers=1,
                 progress=False)
        for name, fmt in (("ucf", "ucf101"), ("cha", "charades")):
            report = run_ingest(IngestConfig(fmt=fmt, src=str(root / "src" / (fmt if fmt == "ucf101" else
                                                                                 "charades")),
                                             dst=str(root / name)))
            assert report.quarantined == 0
            _CACHE[name] = str(root / name)
        assert run_flow(FlowConfig(manifest=_CACHE["ucf"], method="farneback")).with_flow == 8
    return _CACHE


@pytest.fixture(scope="module")
def data(ray_cluster, tmp_path_factory):
    return tiny_datasets(tmp_path_factory)


def _batch(ds) -> dict[str, np.ndarray]:
    """The whole dataset as one numpy batch."""
    batches = list(ds.iter_batches(batch_size=None, batch_format="numpy"))
    return {k: np.concatenate([b[k] for b in batches]) for k in batches[0]}


CASES = [("coclr", "ucf", "train"), ("dpc", "ucf", "train"), ("detection", "ucf", "train"),
         ("detection", "cha", "train"), ("classification", "ucf", "train"), ("eval", "cha", "test")]


@pytest.mark.parametrize("name,which,split", CASES)
def test_schema_of_every_recipe(data, name, which, split):
    cfg = recipes.recipe(name, debug_size=True)
    pipe = build_pipeline(data[which], cfg, split)
    batch = _batch(pipe.dataset)
    schema = {**recipes.batch_schema(cfg, pipe.num_classes), **telemetry.COLUMNS}
    assert set(batch) == set(schema)
    n = len(pipe.inputs)
    for col, (dtype, shape) in schema.items():
        got = batch[col]
        assert got.shape == (n, *shape), col
        assert got.dtype == (object if dtype == "string" else np.dtype(dtype)), col
    arrow = pipe.dataset.schema()
    for col, (_, shape) in schema.items():
        if shape:  # Ray's int64-offset tensor extension type, not a list column
            assert "ArrowTensorTypeV2" in str(arrow.types[arrow.names.index(col)]), col
    assert pipe.accounting(n)["balanced"] and pipe.accounting(n)["quarantined"] == 0
    if name == "detection" and which == "ucf":  # pseudo labels: the video label on every frame...
        mass_BT = batch["frame_labels"].sum(-1)
        assert np.all(mass_BT < 1 + 1e-5) and set(batch["aug_kind"]) <= {"freeze", "mixup", "cutmix", "none"}
        unfrozen = np.array(["freeze" not in k for k in batch["aug_kind"]])
        assert np.allclose(mass_BT[unfrozen], 1.0, atol=1e-5)  # ...kept by mixing; frozen frames are background
    if name == "eval":
        assert batch["views"].shape[1] == cfg.num_clips * cfg.spatial_crops
        assert batch["video_labels"].sum() >= 1


@pytest.mark.parametrize("name", ["coclr", "detection"])
def test_same_seed_and_epoch_reproduce_and_epochs_differ(data, name):
    cfg = recipes.recipe(name, debug_size=True)
    a, b = (_batch(build_dataset(data["ucf"], cfg, "train", seed=3, epoch=1)) for _ in range(2))
    other = _batch(build_dataset(data["ucf"], cfg, "train", seed=3, epoch=2))
    for col in set(a) - set(telemetry.COLUMNS):  # timings differ from run to run
        np.testing.assert_array_equal(a[col], b[col], err_msg=col)
    video = "rgb_0" if name == "coclr" else "rgb"
    by_id = {v: i for i, v in enumerate(other["video_id"])}
    order = [by_id[v] for v in a["video_id"]]
    assert not np.array_equal(a[video], other[video][order])  # new clips and augmentations
    assert [str(c) for c in a["aug_caption" if name != "coclr" else "aug_caption_0"]] != \
        [str(c) for c in other["aug_caption" if name != "coclr" else "aug_caption_0"][order]]


def test_rgb_and_flow_clips_share_indices_and_crop(data):
    """Replaying the sample's generator (view plan, indices, parameters) gives both RGB and flow views."""
    import dataclasses

    cfg = recipes.recipe("coclr", debug_size=True)
    weak = dataclasses.replace(cfg.augment, jitter_p=0.0, grey_p=0.0, blur_p=0.0)
    batch = _batch(build_dataset(data["ucf"], cfg, "train", seed=5, limit=4))
    rows = manifest.read_manifest(data["ucf"]).to_pylist()
    for i, vid in enumerate(batch["video_id"]):
        row = rows[int(batch["vid_index"][i])]
        assert row["video_id"] == vid
        rng = sampling.sample_rng(5, 0, vid)
        clip_of, strong = cfg.view_plan(rng)
        idx = [sampling.clip_indices(row["num_frames"], sampling.random_start(row["num_frames"], 8, 1, rng),
                                     length=8, stride=1, short="pad") for _ in range(max(clip_of) + 1)]
        for v, (c, is_strong) in enumerate(zip(clip_of, strong)):
            p = augment.sample_params(cfg.augment if is_strong else weak, rng, 8, row["height"], row["width"])
            np.testing.assert_array_equal(batch[f"frame_idx_{v}"][i], idx[c])
            assert batch[f"aug_caption_{v}"][i].endswith(p.caption())
            rgb, flow = augment.augment_pair(read_frames(row["uri"], idx[c]), read_frames(row["flow_uri"], idx[c]),
                                             p, flow_photometric=True)
            np.testing.assert_array_equal(batch[f"rgb_{v}"][i], rgb)
            np.testing.assert_array_equal(batch[f"flow_{v}"][i], flow)
    # The flow video decodes to its stored bytes through read_frames (decord path included).
    from pipelines.prep.flow import encode_flow, read_flow
    idx = np.array([3, 0, 7, 7, 20])
    expected = encode_flow(read_flow(rows[0]["flow_uri"]))[idx]
    np.testing.assert_array_equal(read_frames(rows[0]["flow_uri"], idx), expected)
    np.testing.assert_array_equal(read_frames(rows[0]["flow_uri"], idx, backend="pyav"), expected)


def test_coclr_view_regime_follows_the_authors_controller():
    """1/2 one clip seen twice (one strong, one crop+flip view); 1/2 two clips, each strong with p 0.3."""
    cfg = recipes.recipe("coclr")
    rng = np.random.default_rng(0)
    plans = [cfg.view_plan(rng) for _ in range(20000)]
    one = [s for c, s in plans if c == [0, 0]]
    two = [s for c, s in plans if c == [0, 1]]
    assert abs(len(one) / len(plans) - 0.5) < 0.02 and len(one) + len(two) == len(plans)
    assert all(sorted(s) == [False, True] for s in one)
    assert abs(np.mean([x for s in two for x in s]) - 0.3) < 0.02
    both = recipes.recipe("coclr", overrides=["view_regime=two_clips"])
    assert both.view_plan(rng) == ([0, 1], [True, True])


def test_eval_views_of_the_flow_video_for_flow_encoders(data):
    """``modality=flow``: the same windows and crops, read from ``flow_uri``; a flipped crop is
    the mirrored unflipped one with x negated (255 - x), channel 2 stays 0."""
    over = ["spatial_crops=10", "num_clips=2"]
    rgb = _batch(build_dataset(data["ucf"], recipes.recipe("eval", debug_size=True, overrides=over), "train"))
    cfg = recipes.recipe("eval", debug_size=True, overrides=over + ["modality=flow"])
    assert cfg.needs_flow
    flow = _batch(build_dataset(data["ucf"], cfg, "train"))
    assert list(flow["video_id"]) == list(rgb["video_id"])
    np.testing.assert_array_equal(flow["frame_idx"], rgb["frame_idx"])
    views = flow["views"]  # (B, 2 windows x 10 crops, T, S, S, 3)
    assert views.shape == rgb["views"].shape and not np.array_equal(views, rgb["views"])
    assert np.all(views[..., 2] == 0)
    rows = manifest.read_manifest(data["ucf"]).to_pylist()
    row = rows[int(flow["vid_index"][0])]
    stored = read_frames(row["flow_uri"], flow["frame_idx"][0, 0])  # window 0, the stored encoding
    H, W = stored.shape[1:3]
    S = cfg.crop_size
    rh, rw = max(S, round(H * S / min(H, W))), max(S, round(W * S / min(H, W)))
    stored = augment.apply_crop(stored, augment.CropParams(0, 0, H, W, rh, rw))  # short side -> S
    boxes, flips = sampling.spatial_crops(rh, rw, S, 10)
    for c in range(10):
        y, x, h, w = boxes[c]
        expected = augment.apply_hflip(stored[:, y:y + h, x:x + w], bool(flips[c]), is_flow=True)
        np.testing.assert_array_equal(views[0, c], expected)
    assert flips.any() and not np.array_equal(views[0, int(np.argmax(flips))][..., 0],
                                              views[0, 0][..., 0][:, :, ::-1])


@pytest.fixture(scope="module")
def messy(data, tmp_path_factory):
    """The ucf train rows plus a truncated copy, a vanished file, random bytes and a row without flow."""
    root = tmp_path_factory.mktemp("messy")
    table = manifest.read_manifest(data["ucf"])
    good = [r for r in table.to_pylist() if r["split"] == "train"]
    src = storage.read_bytes(good[0]["uri"])
    (root / "truncated.mp4").write_bytes(src[: len(src) // 3])
    (root / "noise.mp4").write_bytes(np.random.default_rng(0).integers(0, 256, 4096, np.uint8).tobytes())
    bad = [dict(good[0], video_id="bad/truncated", uri=str(root / "truncated.mp4")),
           dict(good[1], video_id="bad/vanished", uri=str(root / "vanished.mp4")),
           dict(good[2], video_id="bad/noise", uri=str(root / "noise.mp4")),
           dict(good[3], video_id="bad/no_flow", flow_uri=None)]
    rows = good[:2] + bad + good[2:]
    manifest.write_table(manifest.to_table(rows, manifest.MANIFEST_SCHEMA), str(root / "manifest.parquet"))
    return str(root), {r["video_id"] for r in good}


def test_corrupt_and_vanished_videos_are_quarantined_not_replaced(messy):
    url, good = messy
    cfg = recipes.recipe("coclr", debug_size=True)
    pipe = build_pipeline(url, cfg, "train", options=LoaderOptions(rows_per_task=1, ledger_name="test-messy"))
    batch = _batch(pipe.dataset)
    assert set(batch["video_id"]) == good and len(batch["video_id"]) == len(good)  # no substitutes
    acc = pipe.accounting(len(batch["video_id"]))
    assert acc["balanced"] and (acc["inputs"], acc["quarantined"]) == (8, 4)
    q = {r["video_id"]: r for r in pipe.quarantined().to_pylist()}
    assert set(q) == {"bad/truncated", "bad/vanished", "bad/noise", "bad/no_flow"}
    assert q["bad/vanished"]["kind"] == "not_found" and q["bad/no_flow"]["kind"] == "no_flow"
    assert q["bad/no_flow"]["stage"] == "dataset"
    assert all(q[v]["stage"] == "decode" and len(q[v]["reason"]) > 20
               for v in ("bad/truncated", "bad/vanished", "bad/noise"))
    pipe.write_quarantine()  # into the dataset folder, next to manifest.parquet
    written = manifest.read_quarantine(url)
    assert sorted(written.column("video_id").to_pylist()) == ["bad/noise", "bad/truncated", "bad/vanished"]
    pipe.write_quarantine()  # merging again replaces, never duplicates
    assert manifest.read_quarantine(url).num_rows == 3


class FaultyReader:
    """``read_frames``, except that a uri containing a key hangs or kills the process."""

    def __init__(self, faults: dict[str, str]) -> None:
        self.faults = faults

    def __call__(self, uri: str, idx: np.ndarray) -> np.ndarray:
        for key, fault in self.faults.items():
            if key in uri and fault == "hang":
                time.sleep(20)
            if key in uri and fault == "crash":
                os.kill(os.getpid(), signal.SIGSEGV)  # what a decoder bug does to the worker
        return read_frames(uri, idx, threads=1)


def test_hung_and_crashing_decoders_do_not_take_the_job_down(data):
    rows = [r for r in manifest.read_manifest(data["ucf"]).to_pylist() if r["split"] == "train"]
    hang, crash = rows[0]["video_id"], rows[1]["video_id"]
    options = LoaderOptions(rows_per_task=2, decode_timeout_s=1.0, ledger_name="test-faults",
                            reader=FaultyReader({f"{hang}.": "hang", f"flow/{crash}.": "crash"}))
    pipe = build_pipeline(data["ucf"], recipes.recipe("coclr", debug_size=True), "train", options=options)
    batch = _batch(pipe.dataset)
    assert sorted(batch["video_id"]) == sorted(r["video_id"] for r in rows[2:])
    q = {r["video_id"]: r for r in pipe.quarantined().to_pylist()}
    assert q[hang]["kind"] == "decode_timeout" and q[hang]["source_uri"] == rows[0]["uri"]
    assert q[crash]["kind"] == "decoder_crash" and q[crash]["source_uri"] == rows[1]["flow_uri"]
    assert pipe.accounting(len(batch["video_id"]))["balanced"]


def _train_loop(config: dict) -> None:
    """One epoch of a linear model on the mean pixel; each worker writes the rows it saw."""
    import pathlib

    import ray.train
    import torch
    from ray.train.torch import prepare_model

    model = prepare_model(torch.nn.Linear(1, config["classes"]))
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    rows = 0
    for batch in ray.train.get_dataset_shard("train").iter_torch_batches(batch_size=2):
        x = batch["rgb_0"].float().mean(dim=(1, 2, 3, 4), keepdim=False)[:, None] / 255.0
        loss = torch.nn.functional.cross_entropy(model(x), batch["label_index"])
        opt.zero_grad()
        loss.backward()
        opt.step()
        rows += len(x)
    rank = ray.train.get_context().get_world_rank()
    pathlib.Path(config["out"], f"rows_{rank}.json").write_text(json.dumps(rows))


def test_one_epoch_of_ray_train_with_every_bad_video_accounted_for(messy, tmp_path):
    from ray.train import RunConfig, ScalingConfig
    from ray.train.torch import TorchTrainer

    url, good = messy
    pipe = build_pipeline(url, recipes.recipe("coclr", debug_size=True), "train",
                          options=LoaderOptions(strings=False, ledger_name="test-train"))
    trainer = TorchTrainer(_train_loop, train_loop_config={"classes": 4, "out": str(tmp_path)},
                           datasets={"train": pipe.dataset},
                           scaling_config=ScalingConfig(num_workers=2, resources_per_worker={"CPU": 0.5}),
                           run_config=RunConfig(storage_path=str(tmp_path), name="epoch"))
    trainer.fit()
    per_worker = [json.loads((tmp_path / f"rows_{rank}.json").read_text()) for rank in range(2)]
    rows = sum(per_worker)
    assert rows == len(good) and min(per_worker) > 0
    acc = pipe.accounting(rows)
    assert acc["balanced"] and acc["quarantined"] == 4, acc


class EnvReader:
    """Fails every read with the decode worker's allocator and thread settings as the reason."""

    def __call__(self, uri: str, idx: np.ndarray) -> np.ndarray:
        from pipelines.data.workers import DECODE_WORKER_ENV

        raise recipes.media_error("env", uri, json.dumps({k: os.environ.get(k) for k in DECODE_WORKER_ENV}))


def test_decode_tasks_run_with_the_decode_worker_env(data):
    from pipelines.data.workers import DECODE_WORKER_ENV

    pipe = build_pipeline(data["ucf"], recipes.recipe("classification", debug_size=True), "train", limit=1,
                          options=LoaderOptions(ledger_name="test-env", reader=EnvReader()))
    assert _count(pipe.dataset) == 0
    (row,) = pipe.quarantined().to_pylist()
    assert json.loads(row["reason"].split(": ", 1)[1]) == DECODE_WORKER_ENV


def _count(ds) -> int:
    return sum(len(b["video_id"]) for b in ds.iter_batches(batch_size=None, batch_format="numpy"))


@pytest.mark.parametrize("name", ["classification", "detection"])
def test_without_strings_the_last_stage_drops_them(data, name):
    """``strings=False`` (training): no string column, no separate drop_columns task per block."""
    cfg = recipes.recipe(name, debug_size=True)
    pipe = build_pipeline(data["ucf"], cfg, "train", options=LoaderOptions(strings=False))
    batch = _batch(pipe.dataset)
    schema = {**recipes.batch_schema(cfg, pipe.num_classes), **telemetry.COLUMNS}
    assert set(batch) == set(schema) - set(recipes.string_columns(cfg, pipe.num_classes))
    assert "drop_columns" not in str(pipe.dataset._logical_plan.dag)
