"""Recipes: what one training sample is, one module per recipe, registered here by name.

Each recipe module defines a frozen dataclass implementing the protocol of
:mod:`pipelines.data.recipes.base` (columns, sample, video columns with their
normalisation, required manifest columns, preview rows, debug size) and a ``preset()``
following the seeds. Adding a recipe is a module plus one line in :data:`RECIPES`::

    recipe("coclr")                              # 2 x 32 frames, 128 px, RGB + flow
    recipe("dpc", debug_size=True)               # 4 blocks x 3 frames, 96 px
    recipe("eval", overrides=["num_clips=5", "augment.out_size=112"])

Shapes are fixed per recipe, so Ray Data stores the tensor columns with its fixed-shape
tensor extension type (V2, int64 offsets). :func:`make_sample` builds one sample from a
manifest item row and a ``read`` function (pure apart from ``read``, so it runs without
Ray); :mod:`pipelines.data.dataset` runs it in Ray Data.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable, Iterable

from pipelines.config import apply_overrides
from pipelines.data import sampling
from pipelines.data.recipes import activity, classification, coarse_fine, coclr, detection, dpc
from pipelines.data.recipes import eval as eval_recipe
from pipelines.data.recipes.base import (COMMON, BatchStage, Columns, PreviewRow, Read, RecipeConfig, Required,
                                         media_error)

__all__ = ["RECIPES", "BatchStage", "PreviewRow", "Read", "RecipeConfig", "Required", "batch_schema",
           "make_sample", "media_error", "recipe", "register_recipe", "string_columns", "to_dict"]

RECIPES: dict[str, Callable[[], RecipeConfig]] = {}


def register_recipe(preset: Callable[[], RecipeConfig]) -> None:
    """Register a recipe's preset under its class's ``name``."""
    RECIPES[type(preset()).name] = preset


for _module in (coclr, dpc, detection, activity, coarse_fine, classification, eval_recipe):  # one entry per recipe
    register_recipe(_module.preset)


def recipe(name: str | RecipeConfig, *, debug_size: bool = False, overrides: Iterable[str] = ()) -> RecipeConfig:
    """A named preset (or a given config), optionally at debug size, with dotted overrides.

    Overrides are typed by the fields (``clip_len=8``, ``augment.out_size=64``); see
    :func:`pipelines.config.apply_overrides`.

    Raises:
        ValueError: unknown recipe name or override (``ConfigError`` is a ``ValueError``).
    """
    if isinstance(name, RecipeConfig):
        cfg = name
    elif name in RECIPES:
        cfg = RECIPES[name]()
    else:
        raise ValueError(f"unknown recipe {name!r}; choose one of {', '.join(RECIPES)}")
    if debug_size:
        cfg = cfg.debug_size()
    return apply_overrides(cfg, overrides)


def to_dict(cfg: RecipeConfig) -> dict[str, Any]:
    """The resolved config as plain data (with its ``recipe`` name), for logging with a run."""
    return {"recipe": cfg.name, **dataclasses.asdict(cfg)}


def batch_schema(cfg: RecipeConfig, num_classes: int | None = None, *, with_stage: bool = True) -> Columns:
    """Every column of the recipe's batches: ``name -> (dtype, per-row shape)``.

    Args:
        with_stage: include the columns its batch stage adds (volume augmentation parameters).

    Raises:
        ValueError: ``num_classes`` missing for a recipe with ``K``-wide labels.
    """
    if cfg.needs_classes and not num_classes:
        raise ValueError(f"recipe {cfg.name!r} needs num_classes")
    cols = {**COMMON, **cfg.columns(num_classes)}
    stage = cfg.batch_stage(num_classes) if with_stage else None
    return {**cols, **stage.columns} if stage else cols


def string_columns(cfg: RecipeConfig, num_classes: int | None = None) -> list[str]:
    """Columns ``iter_torch_batches`` cannot turn into tensors (drop them for training)."""
    return [k for k, (dtype, _) in batch_schema(cfg, num_classes or 1).items() if dtype == "string"]


def make_sample(row: dict, cfg: RecipeConfig, *, seed: int, epoch: int, num_classes: int | None,
                read: Read) -> dict[str, Any]:
    """One sample (per-row values of :func:`batch_schema`) from one item row, drawn from
    ``sample_rng(seed, epoch, video_id)``.

    Raises:
        MediaError: a read failed (or flow does not match its video).
    """
    rng = sampling.sample_rng(seed, epoch, row["video_id"])
    base = {"video_id": row["video_id"], "label": row["label"], "label_index": row["label_index"],
            "vid_index": row["row"], "group_index": row.get("group_index", row["row"])}
    return {**base, **cfg.sample(row, rng, read, num_classes)}
