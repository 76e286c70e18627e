"""Weakly-guided detection pretraining, then activity-detection finetuning (seed 000 ch. 4), as phases.

Schedule, by ``policy``:

* ``cls`` — classification pretraining (the baseline): the clip's label, softmax CE on the
  clip-pooled head, the ``detection`` recipe without volume augmentation (same data and steps);
* ``single`` / ``joint`` / ``freeze`` / ``mixup`` / ``cutmix`` — detection pretraining: pseudo
  labels on every frame, Volume Freeze / MixUp / CutMix as a Ray Data batch stage under that
  :class:`~pipelines.data.volume_aug.VolumeAugConfig` policy. ``joint`` (each op with p = 0.5 per
  clip, freeze -> mixup -> cutmix) is what the SSDet code runs [EXT: the code decides once per
  batch; vidray per clip, which gives every batch a mix];
* ``ensemble`` — one pretraining and one finetuning per augmentation (freeze, mixup, cutmix),
  registered side by side (aliases ``finetune_freeze`` / ``_mixup`` / ``_cutmix``); the test
  score is the mean of their sigmoids (:func:`ensemble_aliases`, ``jobs/detection.py``);
* ``none`` — finetuning from random initialisation only.

Every pretraining phase ``pretrain_<p>`` trains on ``data`` (single-action clips) and registers
the headless X3D as ``<model_name>-rgb@pretrain_<p>`` (scored by ``jobs/evaluate.py`` like any
encoder); its finetuning ``finetune_<p>`` starts from it, trains on ``finetune`` (multi-action
videos with ``segments``, the ``activity`` recipe), validates whole-video MAP each epoch
(:class:`pipelines.eval.detection.DetectionValidator`) and registers the whole detector (X3D with
its K-class head, per-frame logits by ``forward_frames``) as ``<model_name>-detector@finetune_<p>``.

Optimisation follows the seed where it is stated: pretraining SGD (momentum 0.9, wd 5e-5
[EXT]) at lr 0.05 divided by 10 at 80 % of the steps (L727-729); finetuning lr 0.02 divided
by 10 at 80 % of the epochs (L733-735, 100 epochs, batch 16). The SSDet code's backbone at lr/10
during pretraining and its 8k-step warm-up are ``pretrain_lr_mults`` / ``optim.warmup_epochs``.
"""

from __future__ import annotations

import dataclasses
from typing import Literal

import torch

from pipelines.config import ScalingConfig
from pipelines.data import recipes
from pipelines.data.volume_aug import VolumeAugConfig
from pipelines.methods.spec import DataConfig, Encoder, MethodSpec, Phase, TrainJob, phase_data
from pipelines.train.loop import LoopConfig
from pipelines.train.optim import OptimConfig
from pipelines.tune.space import Choice, SweepDefaults, Uniform
from vidmodels.methods import DetectionConfig, FrameDetector
from vidmodels.registry import create_backbone

Policy = Literal["cls", "single", "joint", "ensemble", "freeze", "mixup", "cutmix", "none"]
ENSEMBLE = ("freeze", "mixup", "cutmix")


@dataclasses.dataclass
class DetectionJob(TrainJob):
    """Everything ``jobs/detection.py`` needs (``data`` is the pretraining set)."""

    experiment: str = "detection"
    run_name: str = "detection-charades"
    model_name: str = "detection"
    policy: Policy = "joint"
    volume: VolumeAugConfig = dataclasses.field(default_factory=VolumeAugConfig)
    method: DetectionConfig = dataclasses.field(default_factory=DetectionConfig)
    finetune: DataConfig = dataclasses.field(default_factory=lambda: DataConfig(manifest="data/charades",
                                                                                format="charades"))
    pretrain_epochs: int = 30
    finetune_epochs: int = 100
    pretrain_lr: float = 0.05
    pretrain_lr_mults: tuple[str, ...] = ()  # the SSDet code: ("backbone.stages=0.1", ...)
    val_split: str | None = "test"
    val_limit: int | None = None
    eval_stride: int | None = None  # frames between network steps at test; None: the finetune recipe's stride
    eval_max_steps: int = 256
    optim: OptimConfig = dataclasses.field(default_factory=lambda: OptimConfig(
        optimizer="sgd", lr=0.02, weight_decay=5e-5, momentum=0.9, schedule="step", milestones=(80,)))


def charades() -> DetectionJob:
    """The seed's setting: X3D-M pretrained on K400-style clips, finetuned on Charades (K = 157)."""
    return DetectionJob(data=DataConfig(manifest="data/k400"),
                        loop=LoopConfig(epochs=100, batch_size=16),
                        scaling=ScalingConfig(num_workers=4, use_gpu=True, cpus_per_worker=8))


def demo() -> DetectionJob:
    """The synthetic demo sets at 64 px: ``x3d_debug``, 8-frame windows at stride 2 (the demo's
    multi-action videos are 6-10 s at 25 fps: stride 10 would leave 15-25 steps, spec D). No flip and
    CutMix in ``window`` mode: the synthetic classes are directions of motion, which a flip or the
    ``view`` mode's pan would change."""
    return DetectionJob(run_name="detection-demo", model_name="detection-demo",
                        volume=VolumeAugConfig(cutmix_mode="window"),
                        data=DataConfig(manifest="data/demo/ucf101", debug_size=True,
                                        recipe_overrides=("augment.flip_p=0",)),
                        finetune=DataConfig(manifest="data/demo/charades", format="charades", debug_size=True,
                                            recipe_overrides=("augment.flip_p=0",)),
                        method=DetectionConfig(backbone="x3d_debug", dropout=0.2), pretrain_epochs=6,
                        finetune_epochs=6, pretrain_lr=0.05, val_limit=4,
                        optim=OptimConfig(optimizer="sgd", lr=0.02, weight_decay=5e-5, schedule="step",
                                          milestones=(5,)),
                        loop=LoopConfig(epochs=6, batch_size=8, log_every_n_steps=10),
                        scaling=ScalingConfig(num_workers=1, cpus_per_worker=0.5))


def debug() -> DetectionJob:
    """Smallest end-to-end run on the tiny synthetic sets (made when missing), one epoch per phase."""
    job = demo()
    small = {"limit": 16, "synthetic": "tiny"}
    return dataclasses.replace(
        job, run_name="detection-debug", model_name="detection-debug", val_limit=2, pretrain_epochs=1,
        finetune_epochs=1, data=dataclasses.replace(job.data, manifest="data/debug/ucf101", **small),
        finetune=dataclasses.replace(job.finetune, manifest="data/debug/charades", **small),
        loop=LoopConfig(epochs=1, batch_size=1, log_every_n_steps=1, max_failures=1),  # tiny: 2 train videos
        scaling=ScalingConfig(num_workers=2, cpus_per_worker=0.5))


VARIANTS = {"debug": debug, "demo": demo, "charades": charades}


def _pretrain_phase(job: DetectionJob, kind: str) -> Phase:
    milestone = max(1, round(0.8 * job.pretrain_epochs))
    overrides = (f"lr={job.pretrain_lr}", "schedule=step", f"milestones={milestone}")
    if job.pretrain_lr_mults:
        overrides += (f"lr_mults={','.join(job.pretrain_lr_mults)}",)
    return Phase(f"pretrain_{kind}", job.pretrain_epochs, registers=("rgb",), optim_overrides=overrides,
                 params={"objective": "clip" if kind == "cls" else "frames", "volume": kind}, data=job.data)


def phases(job: DetectionJob) -> list[Phase]:
    """Pretraining phase(s) of the policy, each followed by its finetuning (module docstring)."""
    if job.policy not in ("cls", "single", "joint", "ensemble", "freeze", "mixup", "cutmix", "none"):
        raise ValueError(f"policy must be cls, single, joint, ensemble, freeze, mixup, cutmix or none, "
                         f"got {job.policy!r}")
    kinds = ENSEMBLE if job.policy == "ensemble" else (job.policy,)
    pre = [] if job.policy == "none" else [_pretrain_phase(job, k) for k in kinds]
    fine = [Phase(f"finetune_{k}", job.finetune_epochs, registers=("detector",), data=job.finetune,
                  init_from={} if job.policy == "none" else {"rgb": f"pretrain_{k}"},
                  params={"objective": "localize", "volume": "none"}) for k in kinds]
    return pre + fine


def ensemble_aliases(job: DetectionJob) -> list[str]:
    """The registered detectors whose mean of sigmoids is the job's test score."""
    return [f"models:/{job.model_name}-detector@{p.name}" for p in phases(job) if p.name.startswith("finetune_")]


def recipe(job: DetectionJob, phase: Phase) -> recipes.RecipeConfig:
    data = phase_data(job, phase)
    if phase.params["objective"] == "localize":
        return recipes.recipe("activity", debug_size=data.debug_size, overrides=data.recipe_overrides)
    volume = phase.params["volume"]
    rc = recipes.recipe("detection", debug_size=data.debug_size, overrides=data.recipe_overrides)
    return dataclasses.replace(rc, volume=None if volume == "cls" else dataclasses.replace(job.volume, policy=volume))


def _num_classes(job: DetectionJob, phase: Phase) -> int:
    """``method.num_classes``, or K of the phase's manifest (labels and segments), read when the model is built."""
    if job.method.num_classes:
        return job.method.num_classes
    from pipelines.data.dataset import infer_num_classes
    from pipelines.io import manifest

    return infer_num_classes(manifest.read_manifest(phase_data(job, phase).manifest))


def _config(job: DetectionJob, phase: Phase) -> DetectionConfig:
    return dataclasses.replace(job.method, num_classes=_num_classes(job, phase), objective=phase.params["objective"])


def build(job: DetectionJob, phase: Phase, init: dict[str, dict[str, torch.Tensor]]) -> FrameDetector:
    model = FrameDetector(_config(job, phase))
    if "rgb" in init:  # a pretrained X3D: everything but the new K-class fc (seed 000 L733)
        model.load_backbone_state(init["rgb"])
    return model


def export(job: DetectionJob, phase: Phase, model: FrameDetector) -> dict[str, Encoder]:
    cfg, rc = model.cfg, recipe(job, phase)
    example = torch.zeros(1, cfg.in_chans, rc.clip_len, rc.crop_size, rc.crop_size)
    if phase.params["objective"] == "localize":
        kwargs = {"num_classes": cfg.outputs, "in_chans": cfg.in_chans, "drop_rate": cfg.dropout}
        return {"detector": Encoder(model.backbone.state_dict(), model.backbone, cfg.backbone, kwargs, example)}
    kwargs = {"num_classes": 0, "in_chans": cfg.in_chans}
    backbone = create_backbone(cfg.backbone, **kwargs)
    state = {k: v for k, v in model.backbone.state_dict().items() if k in backbone.state_dict()}
    backbone.load_state_dict(state)
    return {"rgb": Encoder(state, backbone, cfg.backbone, kwargs, example)}


def eval_config(job: DetectionJob, phase: Phase, *, split: str | None = None, limit: int | None = None):
    """Whole-video evaluation of a finetuning phase (:class:`pipelines.eval.detection.DetectionEval`)."""
    from pipelines.eval.detection import DetectionEval

    rc = recipe(job, phase)
    return DetectionEval(job.finetune.manifest, split or job.val_split or "test", _num_classes(job, phase),
                         stride=job.eval_stride or rc.stride, crop_size=rc.crop_size, max_steps=job.eval_max_steps,
                         limit=limit)


def validate(job: DetectionJob, phase: Phase):
    if phase.params["objective"] != "localize" or job.val_split is None:
        return None
    from pipelines.eval.detection import DetectionValidator

    return DetectionValidator(eval_config(job, phase, limit=job.val_limit))


def finish(job: DetectionJob, done: list[dict]) -> dict:
    """Score the registered detectors (and their ensemble) on the test videos (:mod:`pipelines.eval.detection_report`)."""
    from pipelines.eval.detection_report import report

    return report(job, done)


SWEEP = SweepDefaults(space={"policy": Choice(("cls", "single", "joint", "freeze", "mixup", "cutmix")),
                             "volume.p_freeze": Uniform(0.2, 0.8), "volume.p_mixup": Uniform(0.2, 0.8),
                             "volume.p_cutmix": Uniform(0.2, 0.8)}, metric="val_map25", mode="max")

SPEC = MethodSpec(name="detection", config=DetectionJob, variants=VARIANTS, phases=phases, recipe=recipe,
                  build=build, export=export, metrics=("loss", "cls", "loc", "frame_top1", "val_map25", "val_frame_map"),
                  validate=validate, eval_protocols=("retrieval", "linear"), sweep=SWEEP, finish=finish)
