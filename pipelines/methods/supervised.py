"""Supervised classification as a method: the baseline every self-supervised method is compared with.

One phase (``supervised``) trains :class:`vidmodels.methods.Classifier` (backbone + dropout +
linear head, cross-entropy) on the ``classification`` recipe, validates clip top-1 on
``val_split`` after every epoch (:class:`pipelines.eval.validate.ClipTop1`) and registers the
backbone as ``<model_name>-rgb@supervised``. ``method.num_classes=0`` (the default) takes
``K`` from the manifest's labels.
"""

from __future__ import annotations

import dataclasses

import torch

from pipelines.config import ScalingConfig
from pipelines.data import recipes
from pipelines.methods.spec import DataConfig, Encoder, MethodSpec, Phase, TrainJob
from pipelines.train.loop import LoopConfig
from pipelines.train.optim import OptimConfig
from pipelines.tune.space import LogUniform, SweepDefaults, Uniform
from vidmodels.methods import Classifier, ClassifierConfig
from vidmodels.registry import create_backbone


@dataclasses.dataclass
class SupervisedJob(TrainJob):
    """Everything ``jobs/train.py --method supervised`` needs."""

    experiment: str = "supervised"
    run_name: str = "supervised-ucf101"
    model_name: str = "supervised"
    method: ClassifierConfig = dataclasses.field(default_factory=lambda: ClassifierConfig(num_classes=0))
    val_split: str | None = "test"      # None: no per-epoch validation
    val_limit: int | None = None
    optim: OptimConfig = dataclasses.field(default_factory=lambda: OptimConfig(lr=1e-3, weight_decay=1e-3))


def ucf101() -> SupervisedJob:
    """S3D from scratch on UCF101 split 1, 32x128² clips (the seed's supervised reference, Table 4.1)."""
    return SupervisedJob(data=DataConfig(manifest="data/ucf101"), loop=LoopConfig(epochs=100, batch_size=16))


def demo() -> SupervisedJob:
    """The synthetic motion dataset at 8x64², ``s3d_debug``, no flip (motion direction is the class)."""
    return SupervisedJob(run_name="supervised-demo", model_name="supervised-demo",
                         data=DataConfig(manifest="data/demo/ucf101", debug_size=True,
                                         recipe_overrides=("augment.flip_p=0",)),
                         method=ClassifierConfig(backbone="s3d_debug", num_classes=0, dropout=0.2),
                         loop=LoopConfig(epochs=10, batch_size=16, log_every_n_steps=10),
                         scaling=ScalingConfig(num_workers=1, cpus_per_worker=0.5))


def debug() -> SupervisedJob:
    """Smallest end-to-end run: the tiny synthetic set (made when missing), one epoch, 2 workers."""
    job = demo()
    return dataclasses.replace(
        job, run_name="supervised-debug", model_name="supervised-debug", val_limit=4,
        data=dataclasses.replace(job.data, manifest="data/debug/ucf101", limit=16, synthetic="tiny"),
        loop=LoopConfig(epochs=1, batch_size=4, log_every_n_steps=1, max_failures=1),
        scaling=ScalingConfig(num_workers=2, cpus_per_worker=0.5))


VARIANTS = {"debug": debug, "demo": demo, "ucf101": ucf101}


def _num_classes(job: SupervisedJob) -> int:
    """``method.num_classes``, or ``K`` from the manifest's labels (read when the model is built,
    not when the schedule is made: the schedule is checked before the dataset exists)."""
    if job.method.num_classes:
        return job.method.num_classes
    from pipelines.data.dataset import infer_num_classes
    from pipelines.io import manifest

    return infer_num_classes(manifest.read_manifest(job.data.manifest))


def phases(job: SupervisedJob) -> list[Phase]:
    return [Phase("supervised", job.loop.epochs, registers=("rgb",))]


def recipe(job: SupervisedJob, phase: Phase) -> recipes.RecipeConfig:
    return recipes.recipe("classification", debug_size=job.data.debug_size, overrides=job.data.recipe_overrides)


def build(job: SupervisedJob, phase: Phase, init: dict[str, dict[str, torch.Tensor]]) -> Classifier:
    return Classifier(dataclasses.replace(job.method, num_classes=_num_classes(job)))


def export(job: SupervisedJob, phase: Phase, model: Classifier) -> dict[str, Encoder]:
    kwargs = {"num_classes": 0, "in_chans": job.method.in_chans}
    backbone = create_backbone(job.method.backbone, **kwargs)
    backbone.load_state_dict(model.backbone.state_dict())
    rc = recipe(job, phase)
    example = torch.zeros(1, job.method.in_chans, rc.clip_len, rc.crop_size, rc.crop_size)
    return {"rgb": Encoder(model.backbone.state_dict(), backbone, job.method.backbone, kwargs, example)}


def validate(job: SupervisedJob, phase: Phase):
    if job.val_split is None:
        return None
    from pipelines.eval.validate import ClipTop1

    rc = recipes.recipe("eval", debug_size=job.data.debug_size, overrides=["num_clips=1", "spatial_crops=1"])
    return ClipTop1(job.data.manifest, job.val_split, rc, _num_classes(job), limit=job.val_limit,
                    batch_size=job.loop.batch_size)


# Clip top-1 on the validation split after every epoch: comparable across every key below.
SWEEP = SweepDefaults(space={"optim.lr": LogUniform(1e-4, 3e-3), "optim.weight_decay": LogUniform(1e-5, 1e-2),
                             "method.dropout": Uniform(0.0, 0.5)}, metric="val_top1", mode="max")

SPEC = MethodSpec(name="supervised", config=SupervisedJob, variants=VARIANTS, phases=phases, recipe=recipe,
                  build=build, export=export, metrics=("loss", "top1", "val_top1"), validate=validate,
                  eval_protocols=("retrieval", "linear"), sweep=SWEEP)
