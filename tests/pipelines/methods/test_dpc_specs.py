"""DPC / MemDPC specs without Ray: schedules, refusals before training, hand-off and the registered encoder."""

from __future__ import annotations

import pytest
import torch

from pipelines.config import apply_overrides
from pipelines.methods import get_method
from pipelines.train import entry

torch.set_num_threads(1)


@pytest.mark.parametrize("method,variant,names", [
    ("dpc", "ucf101", ["dpc_rgb_5pred3", "dpc_rgb_4pred4", "dpc_flow_5pred3", "dpc_flow_4pred4"]),
    ("dpc", "demo", ["dpc_rgb_5pred3", "dpc_rgb_4pred4", "dpc_flow_5pred3", "dpc_flow_4pred4"]),
    ("dpc", "debug", ["dpc_rgb_3pred1", "dpc_rgb_2pred2", "dpc_flow_3pred1", "dpc_flow_2pred2"]),
    ("memdpc", "ucf101", ["memdpc_rgb_5pred3", "memdpc_flow_5pred3"]),
    ("memdpc", "debug", ["memdpc_rgb_2pred2", "memdpc_flow_2pred2"]),
])
def test_schedules(method, variant, names):
    spec = get_method(method)
    phases = spec.phases(spec.variants[variant]())
    assert [p.name for p in phases] == names
    by_name = {p.name: p for p in phases}
    if method == "dpc":  # the curriculum: the second phase of each stream starts from the first
        assert by_name[names[1]].init_from == {"rgb": names[0]} and by_name[names[3]].init_from == {"flow": names[2]}
    assert [p.registers for p in phases] == [(p.params["modality"],) for p in phases]


def test_thesis_settings():
    dpc_job, mem_job = get_method("dpc").variants["ucf101"](), get_method("memdpc").variants["ucf101"]()
    assert (dpc_job.optim.optimizer, dpc_job.optim.lr, dpc_job.optim.weight_decay) == ("adam", 1e-3, 1e-5)
    assert dpc_job.loop.batch_size * dpc_job.scaling.num_workers == 64 * 4
    rc = get_method("dpc").recipe(dpc_job, get_method("dpc").phases(dpc_job)[0])
    assert (rc.num_blocks, rc.clip_len, rc.stride, rc.crop_size, rc.augment.grey_p) == (8, 5, 3, 128, 0.5)
    mem_rc = get_method("memdpc").recipe(mem_job, get_method("memdpc").phases(mem_job)[0])
    assert mem_rc.augment.grey_p == 0.25 and mem_job.method.memory_size == 1024
    k400 = get_method("dpc").variants["k400"]()
    assert get_method("dpc").recipe(k400, get_method("dpc").phases(k400)[0]).stride == 5  # [EXT] code


@pytest.mark.parametrize("method", ["dpc", "memdpc"])
def test_debug_recipe_gives_a_3x3_map_and_flow_phases_read_flow(method):
    spec = get_method(method)
    job = spec.variants["debug"]()
    rgb, flow = (p for p in spec.phases(job) if p.params["pred_step"] == spec.phases(job)[0].params["pred_step"])
    assert spec.recipe(job, rgb).crop_size == 96 and spec.recipe(job, rgb).video_columns() == {"blocks": "rgb"}
    flow_recipe = spec.recipe(job, flow)
    assert flow_recipe.video_columns() == {"blocks": "flow"} and flow_recipe.needs_flow


@pytest.mark.parametrize("override,match", [
    ("schedule.pred_steps=4", r"pred_step 4 needs 1 <= q < num_blocks = 4"),
    ("schedule.pred_steps=0", r"pred_step 0"),
    ("data.recipe_overrides=augment.out_size=32", r"1x1 map .* at least 2x2"),
    ("schedule.streams=rgb,depth", r"unknown stream 'depth'"),
])
def test_impossible_tasks_are_refused_before_training(override, match, tmp_path, monkeypatch):
    monkeypatch.setattr("pipelines.prep.ready.ensure_dataset", lambda *a, **k: pytest.fail("reached the data"))
    argv = ["--variant", "debug", "--set", override, "--set", f"data.manifest={tmp_path / 'none'}"]
    with pytest.raises(ValueError, match=match):
        entry.main(argv, method="dpc")
    assert not (tmp_path / "none").exists()


def test_vector_variant_accepts_a_small_map():
    spec = get_method("dpc")
    job = apply_overrides(spec.variants["debug"](), ["method.dense=false", "data.recipe_overrides=augment.out_size=32"])
    assert len(spec.phases(job)) == 4


@pytest.mark.parametrize("method,overrides", [("dpc", []), ("memdpc", ["method.bidirectional=true"])])
def test_hand_off_and_registered_encoder(method, overrides):
    spec = get_method(method)
    job = apply_overrides(spec.variants["debug"](), overrides)
    first, second = spec.phases(job)[:2]
    model = spec.build(job, first, {})
    enc = spec.export(job, first, model)[first.registers[0]]
    assert enc.example.shape == (1, 3, 4 * 3, 96, 96)
    with torch.no_grad():
        z = enc.backbone.eval()(enc.example)
    assert z.shape == (1, enc.backbone.feature_dim) and torch.isfinite(z).all()
    from vidmodels.registry import create_backbone

    rebuilt = create_backbone(enc.backbone_name, **enc.backbone_kwargs)  # what the registry loader does
    rebuilt.load_state_dict(enc.backbone.state_dict())
    if second.init_from:  # the next curriculum phase starts from the whole model
        nxt = spec.build(job, second, {first.registers[0]: enc.state})
        assert all(torch.equal(v, nxt.state_dict()[k]) for k, v in model.state_dict().items())
        assert nxt.cfg.pred_step == second.params["pred_step"]


def test_print_config(capsys):
    assert entry.main(["--variant", "debug", "--print-config"], method="memdpc") == 0
    out = capsys.readouterr().out
    assert '"memory_size": 128' in out and '"loss_reduction": "sum"' in out
