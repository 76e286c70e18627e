"""The detection spec's schedules (every policy), recipes, model hand-off, and the whole-video evaluator."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

from pipelines.eval.detection import DetectionEval, VideoResult, detection_metrics, summary_line, video_scores
from pipelines.eval.detection_report import class_names, plot_class_ap, plot_timelines
from pipelines.methods import get_method
from pipelines.methods.detection import ensemble_aliases

SPEC = get_method("detection")


@pytest.mark.parametrize("policy,names", [
    ("cls", ["pretrain_cls", "finetune_cls"]), ("joint", ["pretrain_joint", "finetune_joint"]),
    ("ensemble", ["pretrain_freeze", "pretrain_mixup", "pretrain_cutmix", "finetune_freeze", "finetune_mixup",
                  "finetune_cutmix"]),
    ("none", ["finetune_none"])])
def test_schedules_of_the_policies(policy, names):
    job = dataclasses.replace(SPEC.variants["debug"](), policy=policy)
    phases = SPEC.phases(job)
    assert [p.name for p in phases] == names
    for p in phases:
        rc = SPEC.recipe(job, p)
        if p.name.startswith("pretrain_"):
            assert p.data is job.data and rc.name == "detection" and p.registers == ("rgb",)
            assert (rc.volume is None) == (policy == "cls")
            assert "lr=0.05" in p.optim_overrides
        else:
            assert p.data is job.finetune and rc.name == "activity" and p.registers == ("detector",)
            assert p.init_from == ({} if policy == "none" else {"rgb": p.name.replace("finetune_", "pretrain_")})
    if policy == "joint":
        assert SPEC.recipe(job, phases[0]).volume.policy == "joint"
    assert len(ensemble_aliases(job)) == (3 if policy == "ensemble" else 1)
    with pytest.raises(ValueError, match="policy must be"):
        SPEC.phases(dataclasses.replace(job, policy="manifold"))


def test_build_hands_the_pretrained_x3d_to_the_finetune_and_exports_both(monkeypatch):
    job = dataclasses.replace(SPEC.variants["debug"](), method=dataclasses.replace(
        SPEC.variants["debug"]().method, num_classes=4))
    pre, fine = SPEC.phases(job)
    pretrained = SPEC.build(job, pre, {})
    enc = SPEC.export(job, pre, pretrained)["rgb"]
    assert enc.backbone_kwargs["num_classes"] == 0 and "head_proj.weight" in enc.state
    model = SPEC.build(job, fine, {"rgb": enc.state})
    torch.testing.assert_close(model.backbone.head_proj.weight, pretrained.backbone.head_proj.weight)
    detector = SPEC.export(job, fine, model)["detector"]
    assert detector.backbone_kwargs["num_classes"] == 4
    with torch.no_grad():
        assert detector.backbone.eval().forward_frames(detector.example).shape == (1, 8, 4)
    assert SPEC.validate(job, pre) is None and SPEC.validate(job, fine).cfg.limit == job.val_limit


def _result(scores, labels, vid="v", segments=()) -> VideoResult:
    return VideoResult(vid, np.asarray(scores, np.float32), np.asarray(labels, np.float32), 10.0,
                       len(scores) / 10.0, list(segments))


def test_video_scores_average_the_sigmoids_of_an_ensemble_over_every_frame():
    cfg = DetectionEval("", "", num_classes=2, stride=2, crop_size=8, max_steps=3)
    clip = np.zeros((5, 8, 8, 3), np.uint8)  # frames 0, 2, 4, 6, 8 of a 9-frame video

    def const(value):
        return lambda x, n: torch.full((1, n, 2), value)

    scores = video_scores([const(0.0), const(2.0)], clip, 9, cfg, torch.device("cpu"))
    assert scores.shape == (9, 2)  # chunks of 3 steps (6 frames) and 2 steps, cut to the 9 frames
    np.testing.assert_allclose(scores, (0.5 + torch.sigmoid(torch.tensor(2.0)).item()) / 2, rtol=1e-6)


def test_detection_metrics_count_and_refuse_nothing_silently():
    cfg = DetectionEval("", "", num_classes=2, stride=1, crop_size=8)
    good = _result([[0.9, 0.1]] * 5 + [[0.1, 0.9]] * 5, [[1, 0]] * 5 + [[0, 1]] * 5, segments=[
        {"label_index": 0, "start_s": 0.0, "end_s": 0.4}, {"label_index": 1, "start_s": 0.5, "end_s": 0.9}])
    background = _result([[0.2, 0.2]] * 4, [[0, 0]] * 4, "bg")
    m = detection_metrics([good, background], cfg, failures=[{"video_id": "x", "reason": "decode: corrupt"}])
    assert m["frame_map"] == pytest.approx(100.0) and m["videos"] == 2 and m["videos_failed"] == 1
    assert m["videos_background"] == 1 and m["map25"] == pytest.approx(100.0) and "wap25" in m
    assert "1 all background, 1 failed" in summary_line(m)
    with pytest.raises(ValueError, match="no video"):
        detection_metrics([], cfg, failures=[{"video_id": "x", "reason": "decode: corrupt"}])
    assert plot_class_ap(m["per_class_frame"], ["a", "b"], "t") is not None
    assert plot_timelines([good, background], ["a", "b"], "t") is not None


def test_class_names_come_from_labels_and_segments(ray_cluster, tmp_path_factory):
    from tests.pipelines.data.test_dataset import tiny_datasets

    names = class_names(tiny_datasets(tmp_path_factory)["cha"], 4)
    assert len(names) == 4 and all(names)
