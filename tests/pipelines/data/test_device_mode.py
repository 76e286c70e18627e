"""``augment_on="device"``: the pipeline ships decoded frames and parameters, the training step augments,
and the result is the CPU path's sample (same draws) within one grey level."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

from pipelines.data import recipes
from pipelines.data.dataset import build_pipeline
from pipelines.data.device_augment import augment_batch
from tests.pipelines.data.test_dataset import tiny_datasets


def _sorted(batch: dict) -> dict:
    order = np.argsort(batch["video_id"])
    return {k: v[order] for k, v in batch.items()}


@pytest.mark.parametrize("name,which", [("classification", "ucf"), ("activity", "cha")])
def test_device_mode_matches_the_cpu_path(ray_cluster, tmp_path_factory, name, which):
    manifest = tiny_datasets(tmp_path_factory)[which]
    cpu = recipes.recipe(name, debug_size=True)
    dev = dataclasses.replace(cpu, augment_on="device")
    a = build_pipeline(manifest, cpu, "train", seed=3)
    b = build_pipeline(manifest, dev, "train", seed=3)
    assert b.recipe.canvas == (128, 128)  # the tiny set's frames, filled in from the manifest
    batch_a = _sorted(a.dataset.take_batch(8, batch_format="numpy"))
    batch_b = _sorted(b.dataset.take_batch(8, batch_format="numpy"))
    assert batch_b["rgb"].shape[2:] == (128, 128, 3) and "rgb_aug_crop" in batch_b
    plan = b.recipe.device_plan()
    tensors = {k: torch.from_numpy(v) for k, v in batch_b.items() if v.dtype != object}
    out = augment_batch(tensors, plan, out_size=dev.crop_size, device="cpu")
    assert not any(k.startswith("rgb_aug_") for k in out)
    diff = np.abs(out["rgb"].numpy().astype(int) - batch_a["rgb"].astype(int))
    assert diff.max() <= 1, diff.max()
    np.testing.assert_array_equal(batch_a["frame_idx"], batch_b["frame_idx"])  # the same draws


def test_recipes_that_cannot_augment_on_the_device_refuse_it():
    with pytest.raises(ValueError, match="CPU only"):
        recipes.recipe("coclr", overrides=["augment_on=device"])
    with pytest.raises(ValueError, match="volume"):
        recipes.recipe("detection", overrides=["augment_on=device"]).batch_stage(4)
    assert recipes.recipe("detection", overrides=["augment_on=device", "volume=null"]).batch_stage(4) is None
