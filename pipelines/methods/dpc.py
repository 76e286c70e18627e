"""DPC's spec: the curriculum and the two streams as phases, its variants, what each phase hands off.

Schedule (seed 001 chapter 2, Table 2.3, L480-L486): per stream (``rgb``, then ``flow`` from
the manifest's ``flow_uri``), one phase per entry of ``schedule.pred_steps``; with the
``dpc`` recipe's 8 blocks the default ``(3, 4)`` is ``dpc_rgb_5pred3`` then ``dpc_rgb_4pred4``,
the second initialised from the first's whole model (the authors' ``--pretrain``: encoder,
aggregator and predictor). Each phase registers the context network f + g as
``<model_name>-<stream>`` (backbone ``dpc_context_*``, so ``jobs/evaluate.py`` scores the
pooled context c_t of ordinary clips with retrieval, linear and MLP probes and finetuning; the
seed's two-stream late fusion is ``jobs/evaluate.py --model <rgb> --fuse <flow>``, which averages the
two streams' similarities and probe probabilities, :mod:`pipelines.eval.fusion`).

A config that asks for ``q >= num_blocks`` or whose encoder map is smaller than 2x2 is
refused by :func:`phases`, i.e. before any data is read or any worker starts.

:mod:`pipelines.methods.memdpc` reuses these functions with its own job class.
"""

from __future__ import annotations

import dataclasses
from typing import ClassVar

import torch

from pipelines.config import ScalingConfig
from pipelines.data import recipes
from pipelines.eval.proxy import ProxyConfig, knn_proxy
from pipelines.methods.spec import DataConfig, Encoder, MethodSpec, Phase, TrainJob
from pipelines.train.loop import LoopConfig
from pipelines.train.optim import OptimConfig
from pipelines.tune.space import Choice, LogUniform, SweepDefaults
from vidmodels.methods.dpc import DPC, DPCConfig, build_dpc
from vidmodels.registry import create_backbone

IN_CHANS = {"rgb": 3, "flow": 2}  # flow encoders read (x, y), not the stored zero channel
DEMO_RECIPE = ("augment.flip_p=0", "num_blocks=8")  # motion direction is the synthetic class


@dataclasses.dataclass
class DPCSchedule:
    """Streams and curriculum: one phase per ``(stream, pred_step)``, each ``epochs`` long.

    Attributes:
        streams: ``rgb`` and/or ``flow``, trained one after the other.
        pred_steps: the curriculum q of each phase; every phase after the first starts from
            the previous one of its stream (Table 2.3: 5pred3 then 4pred4).
        epochs: epochs per phase.
    """

    streams: tuple[str, ...] = ("rgb", "flow")
    pred_steps: tuple[int, ...] = (3, 4)
    epochs: int = 300


@dataclasses.dataclass
class DPCJob(TrainJob):
    """Everything ``jobs/dpc.py`` needs; variants below, ``--set a.b=v`` overrides."""

    PREFIX: ClassVar[str] = "dpc"
    RECIPE: ClassVar[tuple[str, ...]] = ()  # the method's own edits of the ``dpc`` recipe

    experiment: str = "dpc"
    run_name: str = "dpc-ucf101"
    model_name: str = "dpc"
    method: DPCConfig = dataclasses.field(default_factory=DPCConfig)
    schedule: DPCSchedule = dataclasses.field(default_factory=DPCSchedule)
    optim: OptimConfig = dataclasses.field(default_factory=lambda: OptimConfig(lr=1e-3, weight_decay=1e-5))
    loop: LoopConfig = dataclasses.field(default_factory=lambda: LoopConfig(batch_size=64))
    proxy: ProxyConfig = dataclasses.field(default_factory=ProxyConfig)  # kNN/R@1 hook; every=0: off


def ucf101() -> DPCJob:
    """The thesis's UCF101 setting (L412-L416): R-2D3D-18, 8 blocks x 5 frames at stride 3, 128 px,
    Adam 1e-3, wd 1e-5, batch 64 per GPU x 4 GPUs.

    The thesis decays the LR to 1e-4 on a validation plateau and gives no UCF101 epoch count;
    here each phase has 300 epochs (the DPC README's K400 run) and one step at epoch 200.
    """
    return DPCJob(data=DataConfig(manifest="data/ucf101"),
                  optim=OptimConfig(lr=1e-3, weight_decay=1e-5, schedule="step", milestones=(200,)),
                  scaling=ScalingConfig(num_workers=4, use_gpu=True, cpus_per_worker=8))


def k400() -> DPCJob:
    """K400 (Table 2.3): as UCF101, temporal stride 5 ([EXT] the code's K400 loader; the thesis's 3 is
    ``--set data.recipe_overrides=stride=3``)."""
    job = ucf101()
    return dataclasses.replace(job, run_name="dpc-k400", data=DataConfig(manifest="data/k400",
                                                                         recipe_overrides=("stride=5",)))


def demo() -> DPCJob:
    """The synthetic motion dataset: ``dpc_context_tiny``, 8 blocks x 3 frames at stride 2, 96 px
    (3x3 maps), no flip, 5pred3 then 4pred4, a few epochs (2 cores)."""
    return DPCJob(run_name="dpc-demo", model_name="dpc-demo",
                  data=DataConfig(manifest="data/demo/ucf101", debug_size=True, recipe_overrides=DEMO_RECIPE),
                  method=DPCConfig(backbone="dpc_context_tiny"),
                  schedule=DPCSchedule(epochs=3),
                  optim=OptimConfig(lr=1e-3, weight_decay=1e-5, schedule="constant"),
                  loop=LoopConfig(epochs=3, batch_size=16, log_every_n_steps=10),
                  scaling=ScalingConfig(num_workers=1, cpus_per_worker=0.5),
                  proxy=ProxyConfig(every=1, limit=48))


def debug_of(job: DPCJob, pred_steps: tuple[int, ...] = (1, 2), **method_overrides) -> DPCJob:
    """The smallest end-to-end run of a variant: 16 videos of the tiny synthetic set (made when
    missing), 4 blocks (DPC: 3pred1 then 2pred2), one epoch per phase, 2 workers."""
    return dataclasses.replace(
        job, run_name=f"{job.PREFIX}-debug", model_name=f"{job.PREFIX}-debug",
        data=DataConfig(manifest="data/debug/ucf101", debug_size=True, limit=16, synthetic="tiny",
                        recipe_overrides=("augment.flip_p=0",)),
        method=dataclasses.replace(job.method, **method_overrides),
        schedule=DPCSchedule(pred_steps=pred_steps, epochs=1),
        loop=LoopConfig(epochs=1, batch_size=4, log_every_n_steps=1, max_failures=1),
        scaling=ScalingConfig(num_workers=2, cpus_per_worker=0.5))


def debug() -> DPCJob:
    return debug_of(demo())


VARIANTS = {"debug": debug, "demo": demo, "ucf101": ucf101, "k400": k400}


# ----------------------------------------------------------------------------- the spec's functions


def recipe_for(job: DPCJob, modality: str) -> recipes.RecipeConfig:
    """The ``dpc`` recipe of one stream: the method's edits, then the job's ``data.recipe_overrides``."""
    overrides = (*job.RECIPE, f"modality={modality}", *job.data.recipe_overrides)
    return recipes.recipe("dpc", debug_size=job.data.debug_size, overrides=overrides)


def recipe(job: DPCJob, phase: Phase) -> recipes.RecipeConfig:
    return recipe_for(job, phase.params["modality"])


def method_config(job: DPCJob, phase: Phase) -> DPCConfig:
    return dataclasses.replace(job.method, pred_step=phase.params["pred_step"],
                               in_chans=IN_CHANS[phase.params["modality"]])


def check(job: DPCJob, modality: str, pred_step: int) -> recipes.RecipeConfig:
    """The stream's recipe, after refusing a task the blocks and crop cannot pose.

    Raises:
        ValueError: ``pred_step`` leaves no observed block, an unknown stream, or the
            encoder's map of the recipe's crop is smaller than 2x2 (dense).
    """
    if modality not in IN_CHANS:
        raise ValueError(f"{job.PREFIX}: unknown stream {modality!r} in schedule.streams; choose rgb or flow")
    rc = recipe_for(job, modality)
    if not 1 <= pred_step < rc.num_blocks:
        raise ValueError(f"{job.PREFIX}: pred_step {pred_step} needs 1 <= q < num_blocks = {rc.num_blocks} "
                         f"(at least one observed block; the thesis's 5pred3 is q=3 of 8 blocks)")
    H, W = _map_size(job, modality, rc)
    if job.method.dense and min(H, W) < 2:
        raise ValueError(f"{job.PREFIX}: {rc.crop_size} px crops give a {H}x{W} map with "
                         f"{job.method.backbone}; the dense task needs at least 2x2 (crop >= 33 px; "
                         f"96 px gives 3x3, the thesis's 128 px 4x4)")
    return rc


def _map_size(job: DPCJob, modality: str, rc: recipes.RecipeConfig) -> tuple[int, int]:
    """The encoder's map of one block of the recipe, computed on the meta device (no arithmetic)."""
    kwargs = {**job.method.context_kwargs(), "in_chans": IN_CHANS[modality]}
    try:
        with torch.device("meta"):
            context = create_backbone(job.method.backbone, **kwargs).eval()
            x = torch.empty(1, 2, IN_CHANS[modality], rc.clip_len, rc.crop_size, rc.crop_size)
            return tuple(context.encode_blocks(x).shape[-2:])
    except (RuntimeError, ValueError):  # a crop too small for the convolutions themselves
        return (0, 0)


def phases(job: DPCJob) -> list[Phase]:
    """Per stream, one phase per curriculum step, each from the previous one; checked first (:func:`check`)."""
    out = []
    for modality in job.schedule.streams:
        previous = None
        for q in job.schedule.pred_steps:
            n = check(job, modality, q).num_blocks
            name = f"{job.PREFIX}_{modality}_{n - q}pred{q}"
            out.append(Phase(name, job.schedule.epochs, init_from={modality: previous} if previous else {},
                             registers=(modality,), params={"modality": modality, "pred_step": q}))
            previous = name
    return out


def build(job: DPCJob, phase: Phase, init: dict[str, dict[str, torch.Tensor]]) -> DPC:
    """The phase's model, with the previous curriculum phase's whole model loaded (if any)."""
    model = build_dpc(method_config(job, phase))
    state = init.get(phase.params["modality"])
    if state is not None:
        model.load_state_dict(state)
    return model


def export(job: DPCJob, phase: Phase, model: DPC) -> dict[str, Encoder]:
    """Hand-off: the whole model; registered: the context network f + g as a ``dpc_context_*`` backbone."""
    cfg, modality = method_config(job, phase), phase.params["modality"]
    kwargs = {"num_classes": 0, **cfg.context_kwargs()}
    backbone = create_backbone(cfg.backbone, **kwargs)
    backbone.load_state_dict(model.context_state())
    rc = recipe(job, phase)
    example = torch.zeros(1, cfg.in_chans, rc.num_blocks * rc.clip_len, rc.crop_size, rc.crop_size)
    state = {k: v.detach().clone() for k, v in model.state_dict().items()}
    return {modality: Encoder(state, backbone, cfg.backbone, kwargs, example)}


def proxy_encoder(method: DPC) -> torch.nn.Module:
    """What the proxy embeds a clip with: the context network f + g (what ``export`` registers)."""
    return method.context


def validate(job: DPCJob, phase: Phase):
    """kNN top-1 / R@1 of the context network every ``proxy.every`` epochs (None when 0)."""
    return knn_proxy(job.proxy, job.data.manifest, recipe(job, phase), phase.params["modality"], proxy_encoder)


METRICS = ("loss", "top1", "top1_temporal", "top1_spatial", "top1_easy", "val_knn_top1")
PROTOCOLS = ("retrieval", "linear", "mlp", "finetune")
# Ranked on the proxy (kNN top-1 of the pooled context on held-out clips); a debug trial takes 4 steps
# per epoch instead of 1, so that trials differ at ASHA's first rungs (docs/tuning.md).
# ``--space ablation``: the prediction-step curriculum (the seed's ablation of q; every value fits the
# debug variant's 4 blocks and the full 8), with the learning rate and weight decay.
LR_WD = {"optim.lr": LogUniform(1e-4, 3e-3), "optim.weight_decay": LogUniform(1e-6, 1e-3)}
ABLATION = {"schedule.pred_steps": Choice(((2,), (3,), (2, 3))), **LR_WD}
SWEEP = SweepDefaults(space=LR_WD, metric="val_knn_top1", mode="max",
                      variant_overrides={"debug": ("scaling.num_workers=1", "loop.batch_size=2")},
                      spaces={"ablation": ABLATION})

SPEC = MethodSpec(name="dpc", config=DPCJob, variants=VARIANTS, phases=phases, recipe=recipe, build=build,
                  export=export, metrics=METRICS, validate=validate, eval_protocols=PROTOCOLS,
                  table_metrics={"SSL top-1": "epoch/epoch_top1"}, sweep=SWEEP)
