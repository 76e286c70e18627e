"""CoCLR's spec: the seed's schedule as phases, its variants, and what each phase hands off.

Schedule (seed 001, chapter 4; :func:`vidmodels.methods.coclr_schedule`): stage 1 trains
the RGB and the flow encoder separately with InfoNCE; stage 2 runs ``cycles`` cycles,
each training RGB with the flow encoder frozen (positives mined in flow space), then
flow with the RGB encoder frozen. Every phase trains on the ``coclr`` recipe (two clips,
RGB + aligned flow) and registers the encoder it trained as ``<model_name>-<modality>``
with the phase as alias (e.g. ``coclr-rgb@infonce_rgb``); the next phases start from
``encoders/<modality>.pt`` of those runs. The runtime is :mod:`pipelines.train.phases`.
"""

from __future__ import annotations

import dataclasses

import torch

from pipelines.config import ScalingConfig
from pipelines.data import recipes
from pipelines.eval.proxy import ProxyConfig, knn_proxy
from pipelines.methods.spec import DataConfig, Encoder, MethodSpec, Phase, TrainJob
from pipelines.train.loop import LoopConfig
from pipelines.train.optim import OptimConfig
from pipelines.tune.space import Choice, LogUniform, SweepDefaults
from vidmodels.methods import CoCLR, CoCLRConfig, coclr_schedule
from vidmodels.methods.coclr import IN_CHANS
from vidmodels.registry import create_backbone


@dataclasses.dataclass
class ScheduleConfig:
    """Epochs of stage 1 per stream, cycles of stage 2 and epochs per network (UCF101: L973-975),
    and the learning-rate steps of each phase.

    ``step_lr`` (the authors'): each phase decays the LR x0.1 at its milestones, the thesis's
    "decay twice on plateau" as the authors' README fixes it (InfoNCE 300 epochs with steps at
    250 and 280; CoCLR 100 epochs per network with a step at 80; K400 50 with a step at 40).
    Off: the job's ``optim`` as it is (the demo's constant LR).
    """

    init_epochs: int = 300
    cycles: int = 2
    epochs_per_network: int = 100
    step_lr: bool = True
    init_milestones: tuple[int, ...] = (250, 280)
    cycle_milestones: tuple[int, ...] = (80,)


@dataclasses.dataclass
class CoCLRJob(TrainJob):
    """Everything ``jobs/coclr.py`` needs; variants below, ``--set a.b=v`` overrides."""

    experiment: str = "coclr"
    run_name: str = "coclr-ucf101"
    model_name: str = "coclr"
    method: CoCLRConfig = dataclasses.field(default_factory=CoCLRConfig)
    schedule: ScheduleConfig = dataclasses.field(default_factory=ScheduleConfig)
    loop: LoopConfig = dataclasses.field(default_factory=lambda: LoopConfig(batch_size=16))
    proxy: ProxyConfig = dataclasses.field(default_factory=ProxyConfig)  # kNN/R@1 hook; every=0: off


def ucf101() -> CoCLRJob:
    """The seed's UCF101 setting: S3D, 32x128², 300 + 2x(100+100) epochs, Adam 1e-3 with the
    authors' LR steps, K=5, queue 2048, 4 GPU workers x batch 32 (the thesis's 4 GPUs)."""
    return CoCLRJob(data=DataConfig(manifest="data/ucf101"), loop=LoopConfig(batch_size=32),
                    scaling=ScalingConfig(num_workers=4, use_gpu=True))


def k400() -> CoCLRJob:
    """The seed's K400 setting: 300 InfoNCE epochs per stream, then one cycle of 50 + 50 (L973-975;
    steps at 250/280 and 40, the authors' README), queue 16384, 4 GPU workers x batch 32."""
    return CoCLRJob(run_name="coclr-k400", data=DataConfig(manifest="data/k400"),
                    method=CoCLRConfig(queue_size=16384),
                    schedule=ScheduleConfig(init_epochs=300, cycles=1, epochs_per_network=50,
                                            cycle_milestones=(40,)),
                    loop=LoopConfig(batch_size=32), scaling=ScalingConfig(num_workers=4, use_gpu=True))


def demo() -> CoCLRJob:
    """``make demo``: the synthetic motion dataset, s3d_debug, 8x64² clips, a few epochs (2 cores).

    Departures from the seed, for a schedule of ~15 steps per epoch:

    * key-encoder momentum 0.9 instead of 0.999: a slow EMA leaves the keys those of the
      random initialisation. Measured on the demo data (63 steps of InfoNCE-RGB, batch 16):
      instance-discrimination top-1 0.04 with 0.99 and 0.40 with 0.9.
    * no horizontal flip: the synthetic classes are defined by motion direction, and a
      flip turns MoveLeft into MoveRight and RotateCW into RotateCCW (as on
      Something-Something, whose recipes also drop the flip).
    * 8 frames at stride 4: the seed's clip is 32 consecutive frames at 25 fps (1.28 s, L971);
      8 frames at stride 1 would see a quarter of that motion (a 2-4 px shift at 64 px),
      8 at stride 4 cover the same 1.28 s. Evaluation windows use the same stride.
    * no photometric ops on flow (``flow_photometric=False``; the authors' code applies the
      RGB view's jitter, greyscale and blur to the stored flow image too): greyscale and hue
      mix the x and y channels and brightness shifts the zero point, which erases the flow's
      direction, the very thing that defines a synthetic class. Measured (300 steps of
      InfoNCE-flow, one seed): linear probe 21.3 % with them, 35.2 % without.
    * 10 epochs (150 steps) per phase instead of 300 + 2 x (100 + 100): about 10 minutes for the
      whole demo on 2 cores. Over 3 seeds (``bench/coclr_scale.py``), CoCLR-RGB beats InfoNCE-RGB
      at equal steps by more than one std at 300 steps per phase, not at 150, where even a
      supervised RGB encoder is still at chance (bench/RESULTS.md, "CoCLR at demo scale").
    """
    return CoCLRJob(run_name="coclr-demo", model_name="coclr-demo",
                    data=DataConfig(manifest="data/demo/ucf101", debug_size=True,
                                    recipe_overrides=("augment.flip_p=0", "stride=4", "flow_photometric=False")),
                    method=CoCLRConfig.debug(queue_size=128, topk=5, momentum=0.9),
                    schedule=ScheduleConfig(init_epochs=10, cycles=1, epochs_per_network=10, step_lr=False),
                    optim=OptimConfig(lr=1e-3, schedule="constant"),
                    loop=LoopConfig(epochs=6, batch_size=16, log_every_n_steps=10),
                    scaling=ScalingConfig(num_workers=1, cpus_per_worker=0.5),
                    proxy=ProxyConfig(every=1, limit=48))


def debug() -> CoCLRJob:
    """Smallest end-to-end run (tests, smoke checks): 16 videos of the tiny synthetic set (made
    when missing), one epoch per phase, 2 workers."""
    job = demo()
    return dataclasses.replace(
        job, run_name="coclr-debug", model_name="coclr-debug",
        data=dataclasses.replace(job.data, manifest="data/debug/ucf101", limit=16, synthetic="tiny"),
        method=CoCLRConfig.debug(queue_size=16, topk=2),
        schedule=ScheduleConfig(init_epochs=1, cycles=1, epochs_per_network=1, step_lr=False),
        loop=LoopConfig(epochs=1, batch_size=4, log_every_n_steps=1, max_failures=1),
        scaling=ScalingConfig(num_workers=2, cpus_per_worker=0.5))


VARIANTS = {"demo": demo, "debug": debug, "ucf101": ucf101, "k400": k400}


def phases(job: CoCLRJob) -> list[Phase]:
    """:func:`coclr_schedule` as phases: each registers the modality it trains, with its LR steps."""
    s = job.schedule

    def steps(stage: str) -> tuple[str, ...]:
        milestones = s.init_milestones if stage == "infonce" else s.cycle_milestones
        return ("schedule=step", f"milestones={','.join(map(str, milestones))}") if s.step_lr else ()

    return [Phase(p.name, p.epochs, init_from=dict(p.init_from), registers=(p.modality,),
                  params={"modality": p.modality, "stage": p.stage}, optim_overrides=steps(p.stage))
            for p in coclr_schedule(cycles=s.cycles, init_epochs=s.init_epochs, epochs_per_network=s.epochs_per_network)]


def recipe(job: CoCLRJob, phase: Phase) -> recipes.RecipeConfig:
    return recipes.recipe("coclr", debug_size=job.data.debug_size, overrides=job.data.recipe_overrides)


def _method_cfg(job: CoCLRJob, phase: Phase) -> CoCLRConfig:
    return dataclasses.replace(job.method, modality=phase.params["modality"], stage=phase.params["stage"])


def build(job: CoCLRJob, phase: Phase, init: dict[str, dict[str, torch.Tensor]]) -> CoCLR:
    """The phase's method with its encoders loaded: the trained modality, and in stage ``coclr``
    the frozen other modality that mines positives."""
    cfg = _method_cfg(job, phase)
    method = CoCLR(cfg)
    for modality, state in init.items():
        if modality == cfg.modality or cfg.stage == "coclr":
            method.load_encoder_state(modality, state)
    return method


def export(job: CoCLRJob, phase: Phase, model: CoCLR) -> dict[str, Encoder]:
    """The trained modality's encoder: backbone + head for hand-off, the backbone registered."""
    cfg, modality = _method_cfg(job, phase), phase.params["modality"]
    kwargs = {"num_classes": 0, "in_chans": IN_CHANS[modality]}
    backbone = create_backbone(cfg.backbone, **kwargs)
    backbone.load_state_dict(model.encoder_state(modality, with_head=False))
    rc = recipe(job, phase)
    example = torch.zeros(1, kwargs["in_chans"], rc.clip_len, rc.crop_size, rc.crop_size)
    return {modality: Encoder(model.encoder_state(modality), backbone, cfg.backbone, kwargs, example)}


def proxy_encoder(method: CoCLR) -> torch.nn.Module:
    """What the proxy embeds a clip with: the trained modality's query backbone (what ``export`` registers)."""
    return method.encoder_q.backbone


def validate(job: CoCLRJob, phase: Phase):
    """kNN top-1 / R@1 of the trained modality's backbone every ``proxy.every`` epochs (None when 0)."""
    return knn_proxy(job.proxy, job.data.manifest, recipe(job, phase), phase.params["modality"], proxy_encoder)


# A debug trial takes 4 optimiser steps per epoch (1 worker x 2 clips over the 8 train videos), not the
# debug run's 1: after one step every trial is still close to the shared initialisation, the proxy
# ties, and ASHA stops nothing (docs/tuning.md).
DEBUG_SWEEP = ("scaling.num_workers=1", "loop.batch_size=2")
# ``--space ablation``: the seed's ablations (K in {1, 5, 50}, L957/L1018) and the authors' MoCo knobs
# ([EXT] queue 2048, tau 0.07, momentum 0.999), with the learning rate.
ABLATION = {"method.topk": Choice((1, 5, 50)), "method.queue_size": Choice((1024, 2048, 4096)),
            "method.temperature": LogUniform(0.03, 0.3), "method.momentum": Choice((0.99, 0.999)),
            "optim.lr": LogUniform(1e-4, 3e-3)}
# Ranked on the proxy (kNN top-1 on held-out clips), not the training loss: comparable across keys
# that change the loss itself, such as the temperature (docs/tuning.md).
SWEEP = SweepDefaults(space={"optim.lr": LogUniform(1e-4, 3e-3), "optim.weight_decay": LogUniform(1e-6, 1e-3),
                             "method.temperature": LogUniform(0.03, 0.3)},
                      metric="val_knn_top1", mode="max", variant_overrides={"debug": DEBUG_SWEEP},
                      spaces={"ablation": ABLATION})

SPEC = MethodSpec(name="coclr", config=CoCLRJob, variants=VARIANTS, phases=phases, recipe=recipe, build=build,
                  export=export, metrics=("loss", "top1", "mined_precision", "val_knn_top1"), validate=validate,
                  eval_protocols=("retrieval", "linear", "finetune"),
                  table_metrics={"mined same-class": "epoch/epoch_mined_precision"}, sweep=SWEEP)
