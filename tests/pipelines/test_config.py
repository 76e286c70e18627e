"""Typed configs: overrides parsed by type, did-you-mean errors, variants, flatten and round trips."""

from __future__ import annotations

import argparse
import dataclasses
from typing import Optional

import pytest

from pipelines.config import (
    ConfigError,
    ScalingConfig,
    add_config_args,
    apply_overrides,
    flatten,
    from_dict,
    load_config,
    resolve_config,
    save_config,
    to_dict,
)


@dataclasses.dataclass
class OptimConfig:
    lr: float = 0.1
    momentum: float = 0.9
    warmup_epochs: int = 1
    nesterov: bool = False


@dataclasses.dataclass
class DataConfig:
    manifest: str = "data/demo/ucf101"
    clip_size: tuple[int, int, int] = (8, 32, 32)
    splits: list[str] = dataclasses.field(default_factory=lambda: ["train"])
    max_videos: Optional[int] = None  # noqa: UP045 - the typing.Optional spelling is parsed too
    min_frames: int | None = None
    key_queue_size: int = 4096


@dataclasses.dataclass
class ExampleConfig:
    """A method-like config built from the generic pieces."""

    backbone: str = "s3d_debug"
    epochs: int = 2
    optim: OptimConfig = dataclasses.field(default_factory=OptimConfig)
    data: DataConfig = dataclasses.field(default_factory=DataConfig)
    scaling: ScalingConfig = dataclasses.field(default_factory=ScalingConfig)
    extra: dict = dataclasses.field(default_factory=dict)

    def __post_init__(self):
        if self.epochs < 1:
            raise ValueError("epochs must be >= 1")


def debug() -> ExampleConfig:
    return ExampleConfig(epochs=1, scaling=ScalingConfig(num_workers=1))


def k400() -> ExampleConfig:
    cfg = ExampleConfig(backbone="s3d", epochs=100)
    cfg.data.clip_size = (32, 128, 128)
    return cfg


VARIANTS = {"debug": debug, "k400": k400}


def test_overrides_are_parsed_by_type():
    cfg = apply_overrides(ExampleConfig(), [
        "optim.lr=0.03", "epochs=5", "optim.nesterov=true", "data.clip_size=16,64,64",
        "data.splits=[\"train\", \"val\"]", "data.max_videos=10", "data.min_frames=8", "scaling.use_gpu=yes",
        "backbone=r3d_debug", 'extra={"a": 1}'])
    assert cfg.optim.lr == 0.03 and isinstance(cfg.optim.lr, float)
    assert cfg.epochs == 5 and cfg.optim.nesterov is True and cfg.scaling.use_gpu is True
    assert cfg.data.clip_size == (16, 64, 64) and cfg.data.splits == ["train", "val"]
    assert cfg.data.max_videos == 10 and cfg.data.min_frames == 8 and cfg.backbone == "r3d_debug" and cfg.extra == {"a": 1}
    assert apply_overrides(cfg, ["data.max_videos=none"]).data.max_videos is None
    assert ExampleConfig().optim.lr == 0.1  # the input is not changed


@pytest.mark.parametrize("override, message", [
    ("optim.lrr=0.1", "did you mean 'lr'"),
    ("optm.lr=0.1", "did you mean 'optim'"),
    ("epochs=five", "cannot parse 'five' as int"),
    ("optim.nesterov=maybe", "boolean"),
    ("data.clip_size=8,32", "expected 3 items"),
    ("epochs", "key=value"),
    ("epochs.x=1", "not a config section"),
])
def test_bad_overrides_raise_with_a_hint(override, message):
    with pytest.raises(ConfigError, match=message):
        apply_overrides(ExampleConfig(), [override])


def test_post_init_validation_runs_on_override():
    with pytest.raises(ValueError, match="epochs must be"):
        apply_overrides(ExampleConfig(), ["epochs=0"])


def test_flatten_round_trip_and_save(tmp_path):
    cfg = apply_overrides(k400(), ["optim.lr=0.5"])
    flat = flatten(cfg)
    assert flat["optim.lr"] == 0.5 and flat["data.clip_size"] == [32, 128, 128]
    assert flat["scaling.num_workers"] == 2 and all(len(k) <= 250 for k in flat)
    assert from_dict(ExampleConfig, to_dict(cfg)) == cfg
    for name in ("config.yaml", "config.json"):
        assert load_config(ExampleConfig, save_config(cfg, str(tmp_path / name))) == cfg
    with pytest.raises(ConfigError, match="did you mean 'epochs'"):
        from_dict(ExampleConfig, {"epoch": 3})


def test_cli_variant_then_overrides_in_order():
    parser = add_config_args(argparse.ArgumentParser(), VARIANTS, default="debug")
    cfg = resolve_config(parser.parse_args(["--variant", "k400", "--set", "epochs=3", "--set", "epochs=4"]))
    assert cfg.backbone == "s3d" and cfg.epochs == 4 and cfg.data.clip_size == (32, 128, 128)
    assert resolve_config(parser.parse_args([])) == debug()
    with pytest.raises(SystemExit):
        parser.parse_args(["--variant", "k401"])
