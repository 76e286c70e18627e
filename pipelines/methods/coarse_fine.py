"""Coarse-Fine Networks for temporal activity detection (seed 000 ch. 3), as phases.

Schedule (each phase a Ray Train run; thesis L436-L440):

* ``pretrain_cls`` (only when ``pretrain_epochs > 0``) — the streams' Kinetics-style start:
  classification pretraining of the X3D on ``data`` (single-action clips; the ``detection``
  recipe without volume augmentation, as detection's ``cls`` baseline), registered as
  ``<model_name>-rgb@pretrain_cls``. Otherwise stage 1 starts from ``init_encoder`` (a registered
  X3D, e.g. ``models:/detection-rgb@pretrain_cls``) or from random initialisation;
* ``coarse`` — stage 1, the Coarse stream alone: ``mode="coarse_only"`` with ``method.pool`` (Grid
  Pool) on ``T``-frame clips of ``videos`` (the ``activity`` recipe at the ``coarse_fine`` recipe's
  T and stride), registered as ``-coarse@coarse``;
* ``fine`` — stage 1, the Fine stream alone: ``mode="x3d"`` on ``fine_clip_len``-frame clips at the
  same stride (thesis: T/4, "the same size after Grid Pool"; [EXT] the code: 64 frames, lr 0.01 —
  ``fine_clip_len=64 fine_lr=0.01``), registered as ``-fine@fine``;
* ``joint`` — stage 2: ``mode="coarse_fine"`` (or ``fine_fine``, the baseline; it skips ``coarse``)
  on the ``coarse_fine`` recipe (Coarse clip + whole-video Fine stream + offset, one decode),
  initialised from both stage-1 models; the new fusion layers train at ``fusion_lr_mult`` (10x) the
  LR through ``param_groups``; ``method.freeze_fine`` freezes the Fine stream (the authors cache its
  features). Registered as ``-detector@joint``.

Every stage-1/2 phase validates whole-video MAP each epoch (:class:`~pipelines.eval.detection.DetectionValidator`
on the two-stream ``frame_logits``: at test the Coarse stream runs over the whole video, fully
convolutionally, in chunks of ``eval_max_steps`` steps; the Fine stream is the chunk, or its centred
``T'`` steps when longer, with the matching negative offset, as the authors' test loader). ``finish``
scores the registered X3D (Fine stream), Coarse-only and Coarse-Fine models on the whole test videos
(:mod:`pipelines.eval.detection`), logs ``test/<metric>`` and plots on each phase's run, and prints
the table.

Registered models load without unpickling through ``pipelines.tracking.load_registered_model``: the
stage-1/2 modules are :class:`CoarseFineBackbone`, registered here in the backbone registry as
``coarse_fine_x3d`` (not ``*_debug``: the registry's debug set is pinned by the backbone tests);
``forward`` gives ``(B, K)`` clip scores (max over time of the per-frame logits), ``forward_frames``
the per-frame logits the detection evaluator scores.

Optimisation (thesis L438-L440): SGD (momentum 0.9, wd 5e-5 [EXT]), lr 0.02 divided by 10 at epochs
60 and 80 of 100, batch 16, in every stage. [EXT] The code's stage 2 uses batch 6 and milestones
15/25/35.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import torch
from torch import nn

from pipelines.config import ScalingConfig
from pipelines.data import recipes
from pipelines.data.recipes.activity import ActivityRecipe
from pipelines.methods.spec import DataConfig, Encoder, MethodSpec, Phase, TrainJob, phase_data
from pipelines.train.loop import LoopConfig
from pipelines.train.optim import OptimConfig
from vidmodels.losses.detection import localization_loss
from vidmodels.methods import DetectionConfig, FrameDetector
from vidmodels.methods.coarse_fine import ALPHA_INV, CoarseFine, CoarseFineConfig
from vidmodels.backbones.coarse_fine import BACKBONE, CoarseFineBackbone
from vidmodels.registry import create_backbone

STREAMS = {"coarse": "Coarse-only", "fine": "X3D (Fine stream)", "joint": "Coarse-Fine"}


class CoarseFineDetector(nn.Module):
    """The trained module: localisation loss on the recipe's batch, fusion layers at their own LR.

    Batch: ``rgb`` (B, 3, T, H, W); ``frame_labels`` (B, L, K); ``frame_valid`` (B, L); fused modes
    also ``fine`` (B, 3, T', H, W), ``fine_valid`` (B, T') and ``offset`` (B,) (``coarse_fine`` recipe).
    """

    def __init__(self, backbone: CoarseFineBackbone, *, cls_weight: float = 0.5, fusion_lr_mult: float = 10.0) -> None:
        super().__init__()
        self.backbone, self.cls_weight, self.fusion_lr_mult = backbone, cls_weight, fusion_lr_mult

    def forward(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        net, labels_BLK = self.backbone.net, batch["frame_labels"].float()
        fine = batch["fine"] if net.fusion is not None else None
        logits_BLK = net(batch["rgb"], fine, batch.get("fine_valid"), batch.get("offset"),
                         num_frames=labels_BLK.shape[1]).float()
        loss, parts = localization_loss(logits_BLK, labels_BLK, batch.get("frame_valid"), cls_weight=self.cls_weight)
        return {"loss": loss, **parts}

    def frame_logits(self, x_BCTHW: torch.Tensor, num_frames: int | None = None) -> torch.Tensor:
        return self.backbone.forward_frames(x_BCTHW, num_frames)

    def param_groups(self) -> list[dict[str, Any]]:
        """``CoarseFine.param_groups`` in :func:`pipelines.train.optim.param_groups`' form (``lr_mult``, ``name``)."""
        groups = self.backbone.net.param_groups(1.0, fusion_lr_mult=self.fusion_lr_mult)
        names = ("streams", "fusion")
        return [{"params": g["params"], "lr_mult": g["lr"], "name": name} for g, name in zip(groups, names)]


@dataclasses.dataclass
class CoarseFineJob(TrainJob):
    """Everything ``jobs/coarse_fine.py`` needs. ``data``: single-action clips (``pretrain_cls``; its
    manifest also fingerprints the job's run); ``videos``: the multi-action videos of stages 1 and 2.
    ``method``: the stage-2 model (``mode`` coarse_fine or fine_fine; ``num_classes`` 0: from ``videos``)."""

    experiment: str = "coarse_fine"
    run_name: str = "coarse-fine-charades"
    model_name: str = "coarse-fine"
    method: CoarseFineConfig = dataclasses.field(default_factory=lambda: CoarseFineConfig(num_classes=0))
    videos: DataConfig = dataclasses.field(default_factory=lambda: DataConfig(manifest="data/charades",
                                                                              format="charades"))
    pretrain_epochs: int = 0
    pretrain_lr: float = 0.05
    init_encoder: str | None = None
    coarse_epochs: int = 100
    fine_epochs: int = 100
    joint_epochs: int = 100
    fine_clip_len: int = 0  # 0: T / 4 (at least 4)
    fine_lr: float | None = None
    fusion_lr_mult: float = 10.0
    cls_weight: float = 0.5
    val_split: str | None = "test"
    val_limit: int | None = None
    eval_max_steps: int = 0  # steps per whole-video chunk at test; 0: the recipe's fine_len (T' = 128)
    optim: OptimConfig = dataclasses.field(default_factory=lambda: OptimConfig(
        optimizer="sgd", lr=0.02, weight_decay=5e-5, momentum=0.9, schedule="step", milestones=(60, 80)))


def charades() -> CoarseFineJob:
    """The seed: X3D-M streams from detection's classification-pretrained X3D, Charades, 4 GPUs."""
    return CoarseFineJob(data=DataConfig(manifest="data/k400"), init_encoder="models:/detection-rgb@pretrain_cls",
                         method=CoarseFineConfig(arch="x3d_m", num_classes=0),
                         loop=LoopConfig(epochs=100, batch_size=16),
                         scaling=ScalingConfig(num_workers=4, use_gpu=True, cpus_per_worker=8))


def demo() -> CoarseFineJob:
    """The synthetic demo sets at 64 px, ``x3d_debug``: Coarse 32 frames, Fine <= 64, stride 3 (spec D)."""
    flip = ("augment.flip_p=0",)
    return CoarseFineJob(run_name="coarse-fine-demo", model_name="coarse-fine-demo",
                         data=DataConfig(manifest="data/demo/ucf101", debug_size=True, recipe_overrides=flip),
                         videos=DataConfig(manifest="data/demo/charades", format="charades", debug_size=True,
                                           recipe_overrides=flip + ("clip_len=32", "fine_len=64", "stride=3")),
                         method=CoarseFineConfig(arch="x3d_debug", num_classes=0, drop_rate=0.2),
                         pretrain_epochs=6, coarse_epochs=6, fine_epochs=6, joint_epochs=6, val_limit=4,
                         optim=OptimConfig(optimizer="sgd", lr=0.02, weight_decay=5e-5, schedule="step",
                                           milestones=(5,)),
                         loop=LoopConfig(epochs=6, batch_size=8, log_every_n_steps=10),
                         scaling=ScalingConfig(num_workers=1, cpus_per_worker=0.5))


def debug() -> CoarseFineJob:
    """Smallest end-to-end run on the tiny synthetic sets (made when missing), one epoch per phase."""
    job, small = demo(), {"limit": 16, "synthetic": "tiny"}
    return dataclasses.replace(
        job, run_name="coarse-fine-debug", model_name="coarse-fine-debug", val_limit=1, pretrain_epochs=1,
        coarse_epochs=1, fine_epochs=1, joint_epochs=1,
        data=dataclasses.replace(job.data, manifest="data/debug/ucf101", **small),
        videos=dataclasses.replace(job.videos, manifest="data/debug/charades",
                                   recipe_overrides=job.data.recipe_overrides, **small),
        loop=LoopConfig(epochs=1, batch_size=1, log_every_n_steps=1, max_failures=1),  # tiny: 2 train videos
        scaling=ScalingConfig(num_workers=2, cpus_per_worker=0.5))


VARIANTS = {"debug": debug, "demo": demo, "charades": charades}


def phases(job: CoarseFineJob) -> list[Phase]:
    """``pretrain_cls`` (optional), ``coarse`` (coarse_fine only), ``fine``, ``joint`` (module docstring).

    Raises:
        ValueError: a stage-2 mode other than coarse_fine / fine_fine, or both ways to start stage 1.
    """
    mode = job.method.mode
    if mode not in ("coarse_fine", "fine_fine"):
        raise ValueError(f"method.mode is the stage-2 model: coarse_fine or fine_fine, got {mode!r} "
                         "(coarse_only and x3d are its stage-1 phases)")
    if job.pretrain_epochs and job.init_encoder:
        raise ValueError("set pretrain_epochs (pretrain here) or init_encoder (start from a registered X3D), not both")
    init = {"rgb": "pretrain_cls"} if job.pretrain_epochs else {}
    out = []
    if job.pretrain_epochs:
        milestone = max(1, round(0.8 * job.pretrain_epochs))
        out.append(Phase("pretrain_cls", job.pretrain_epochs, registers=("rgb",), params={"stage": "pretrain"},
                         optim_overrides=(f"lr={job.pretrain_lr}", "schedule=step", f"milestones={milestone}")))
    if mode == "coarse_fine":
        out.append(Phase("coarse", job.coarse_epochs, init_from=init, registers=("coarse",), data=job.videos,
                         params={"stage": "coarse", "mode": "coarse_only"}))
    out.append(Phase("fine", job.fine_epochs, init_from=init, registers=("fine",), data=job.videos,
                     params={"stage": "fine", "mode": "x3d"},
                     optim_overrides=(f"lr={job.fine_lr}",) if job.fine_lr else ()))
    joint_init = {"coarse": "coarse", "fine": "fine"} if mode == "coarse_fine" else {"fine": "fine"}
    out.append(Phase("joint", job.joint_epochs, init_from=joint_init, registers=("detector",), data=job.videos,
                     params={"stage": "joint", "mode": mode}))
    return out


def videos_recipe(job: CoarseFineJob) -> recipes.RecipeConfig:
    """The ``coarse_fine`` recipe of ``videos`` (T, T', stride and crop of every stage)."""
    return recipes.recipe("coarse_fine", debug_size=job.videos.debug_size, overrides=job.videos.recipe_overrides)


def recipe(job: CoarseFineJob, phase: Phase) -> recipes.RecipeConfig:
    stage = phase.params["stage"]
    if stage == "pretrain":
        rc = recipes.recipe("detection", debug_size=job.data.debug_size, overrides=job.data.recipe_overrides)
        return dataclasses.replace(rc, volume=None)
    cf = videos_recipe(job)
    if stage == "joint":
        return cf
    T = cf.clip_len if stage == "coarse" else (job.fine_clip_len or max(4, cf.clip_len // ALPHA_INV))
    return ActivityRecipe(clip_len=T, stride=cf.stride, short="clamp", augment=cf.augment, shuffle=cf.shuffle)


def _num_classes(job: CoarseFineJob, phase: Phase) -> int:
    """K of the phase's manifest (``method.num_classes`` when set, except for pretraining's own K)."""
    if job.method.num_classes and phase.params["stage"] != "pretrain":
        return job.method.num_classes
    from pipelines.data.dataset import infer_num_classes
    from pipelines.io import manifest

    return infer_num_classes(manifest.read_manifest(phase_data(job, phase).manifest))


def backbone_kwargs(job: CoarseFineJob, phase: Phase) -> dict[str, Any]:
    """What ``create_backbone("coarse_fine_x3d", **kwargs)`` rebuilds the phase's model from."""
    m = job.method
    return {"num_classes": _num_classes(job, phase), "arch": m.arch, "mode": phase.params["mode"], "pool": m.pool,
            "fusion_dims": m.fusion_dims, "fusion_gate": m.fusion_gate, "drop_rate": m.drop_rate,
            "fine_per_coarse": m.fine_per_coarse, "fine_frames": videos_recipe(job).fine_len}


def x3d_to_stream(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """A registry X3D's state under :class:`~vidmodels.methods.coarse_fine.X3DStream` names
    (``head_proj`` is the per-frame head's fc1, a classifier ``head.fc`` its fc2)."""
    out = {k: v for k, v in state.items() if k.startswith(("stem.", "stages.", "conv5."))}
    out.update({f"head.fc1.{k[10:]}": v for k, v in state.items() if k.startswith("head_proj.")})
    out.update({f"head.fc2.{k[8:]}": v for k, v in state.items() if k.startswith("head.fc.")})
    return out


def load_fitting(module: nn.Module, state: dict[str, torch.Tensor]) -> set[str]:
    """Load every tensor of ``state`` whose name and shape fit; returns the names loaded."""
    own = module.state_dict()
    fits = {k: v for k, v in state.items() if k in own and own[k].shape == v.shape}
    module.load_state_dict(fits, strict=False)
    return set(fits)


def _initialise(job: CoarseFineJob, phase: Phase, net: CoarseFine, init: dict[str, dict[str, torch.Tensor]]) -> None:
    """Stage 1 from a pretrained X3D (this schedule's ``rgb`` or ``init_encoder``); stage 2 from both
    stage-1 models. Refuses a start that leaves anything but the new classifier / fusion layers new."""
    if phase.params["stage"] == "joint":
        given, new = bool(init), ("fusion.",)
        states = {key: {k.removeprefix("net."): v for k, v in s.items()} for key, s in init.items()}
        loaded = init_from_stage1(net, states)
    else:
        x3d = init.get("rgb")
        if x3d is None and job.init_encoder:  # fetched where the model is built (MLflow reachable there)
            from pipelines.tracking import load_registered_model

            x3d = load_registered_model(job.init_encoder)[0].state_dict()
        given, new = x3d is not None, ("coarse.head.fc2.", "confidence.")
        loaded = {f"coarse.{k}" for k in load_fitting(net.coarse, x3d_to_stream(x3d))} if given else set()
    missing = [k for k in net.state_dict() if k not in loaded and not k.startswith(new)]
    if given and missing:
        raise ValueError(f"phase {phase.name}: the initial weights do not fit {job.method.arch}: "
                         f"{len(missing)} tensors left new, e.g. {missing[:3]}")


def init_from_stage1(net: CoarseFine, init: dict[str, dict[str, torch.Tensor]]) -> set[str]:
    """Coarse stream and Grid Pool from the ``coarse`` model, Fine stream from the ``fine`` one (whose
    single stream is its ``coarse``); Fine-Fine's main stream from the ``fine`` one too."""
    loaded = set()
    if "coarse" in init:
        loaded |= load_fitting(net, {k: v for k, v in init["coarse"].items() if not k.startswith("fine.")})
    if "fine" in init:
        stream = {k.removeprefix("coarse."): v for k, v in init["fine"].items() if k.startswith("coarse.")}
        loaded |= {f"fine.{k}" for k in load_fitting(net.fine, stream)}
        if "coarse" not in init:
            loaded |= {f"coarse.{k}" for k in load_fitting(net.coarse, stream)}
    return loaded


def build(job: CoarseFineJob, phase: Phase, init: dict[str, dict[str, torch.Tensor]]) -> nn.Module:
    if phase.params["stage"] == "pretrain":
        return FrameDetector(DetectionConfig(backbone=job.method.arch, num_classes=_num_classes(job, phase),
                                             objective="clip", dropout=job.method.drop_rate))
    kwargs = backbone_kwargs(job, phase)
    backbone = CoarseFineBackbone(**kwargs, freeze_fine=job.method.freeze_fine and phase.params["stage"] == "joint")
    _initialise(job, phase, backbone.net, init)
    return CoarseFineDetector(backbone, cls_weight=job.cls_weight, fusion_lr_mult=job.fusion_lr_mult)


def export(job: CoarseFineJob, phase: Phase, model: nn.Module) -> dict[str, Encoder]:
    rc = recipe(job, phase)
    example = torch.zeros(1, 3, rc.clip_len, rc.crop_size, rc.crop_size)
    if phase.params["stage"] == "pretrain":  # the headless X3D, as detection's pretraining registers it
        backbone = create_backbone(job.method.arch, num_classes=0)
        state = {k: v for k, v in model.backbone.state_dict().items() if k in backbone.state_dict()}
        backbone.load_state_dict(state)
        return {"rgb": Encoder(state, backbone, job.method.arch, {"num_classes": 0}, example)}
    return {phase.registers[0]: Encoder(model.backbone.state_dict(), model.backbone, BACKBONE,
                                        backbone_kwargs(job, phase), example)}


def eval_config(job: CoarseFineJob, phase: Phase, *, split: str | None = None, limit: int | None = None):
    """Whole-video evaluation on ``videos`` (:class:`pipelines.eval.detection.DetectionEval`)."""
    from pipelines.eval.detection import DetectionEval

    cf = videos_recipe(job)
    return DetectionEval(job.videos.manifest, split or job.val_split or "test", _num_classes(job, phase),
                         stride=cf.stride, crop_size=cf.crop_size, max_steps=job.eval_max_steps or cf.fine_len,
                         limit=limit)


def validate(job: CoarseFineJob, phase: Phase):
    if phase.params["stage"] == "pretrain" or job.val_split is None:
        return None
    from pipelines.eval.detection import DetectionValidator

    return DetectionValidator(eval_config(job, phase, limit=job.val_limit))


def finish(job: CoarseFineJob, done: list[dict]) -> dict[str, dict]:
    """Score the registered X3D, Coarse-only and Coarse-Fine models on the whole test videos; log and print."""
    from pipelines.eval.detection import detection_metrics, score_videos, summary_line
    from pipelines.eval.detection_report import class_names, log_detection
    from pipelines.tracking import load_registered_model

    by_name = {p.name: p for p in phases(job)}
    rows = [r for r in done if r["phase"] in STREAMS and r["model"]]
    if not rows:
        print("no detector registered (tracking off?): nothing to evaluate", flush=True)
        return {}
    cfg = eval_config(job, by_name[rows[0]["phase"]], split="test")
    names, out = class_names(cfg.manifest, cfg.num_classes), {}
    for row in rows:
        module, _ = load_registered_model(f"models:/{row['model']}@{row['alias']}")
        results, failures = score_videos([module.forward_frames], cfg)
        out[row["phase"]] = metrics = detection_metrics(results, cfg, failures)
        log_detection(row["run_id"], "test", metrics, results, names)
    print(f"\ntest split of {cfg.manifest} (whole videos, stride {cfg.stride}, chunks of {cfg.max_steps} steps, "
          f"centre {cfg.crop_size} px):")
    for phase, m in out.items():
        print(f"  {STREAMS[phase]:<18} {summary_line(m)}")
    torch.set_grad_enabled(True)
    return out


SPEC = MethodSpec(name="coarse_fine", config=CoarseFineJob, variants=VARIANTS, phases=phases, recipe=recipe,
                  build=build, export=export, metrics=("loss", "cls", "loc", "val_map25", "val_frame_map"),
                  validate=validate, eval_protocols=("retrieval", "linear"), finish=finish)
