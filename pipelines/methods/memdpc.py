"""MemDPC's spec: DPC's phases and functions (:mod:`pipelines.methods.dpc`) with a memory bank.

One phase per stream (``memdpc_rgb_5pred3``, ``memdpc_flow_5pred3``; seed 001 L701-L703,
Table 3.1 D1/D2), each registering the context network as ``<model_name>-<stream>``.
The recipe is DPC's with frame-wise greyscale p=0.25 ([EXT] MemDPC ``main.py``; DPC 0.5).
``--set method.bidirectional=true`` trains the bidirectional model (Table 3.1 E1-E3, the
released code's only model); its registered backbone concatenates both contexts.
"""

from __future__ import annotations

import dataclasses
from typing import ClassVar

from pipelines.config import ScalingConfig
from pipelines.methods import dpc
from pipelines.methods.dpc import DPCJob, DPCSchedule
from pipelines.methods.spec import DataConfig, MethodSpec
from pipelines.train.loop import LoopConfig
from pipelines.train.optim import OptimConfig
from pipelines.tune.space import Choice
from vidmodels.methods.dpc import MemDPCConfig


@dataclasses.dataclass
class MemDPCJob(DPCJob):
    """Everything ``jobs/memdpc.py`` needs."""

    PREFIX: ClassVar[str] = "memdpc"
    RECIPE: ClassVar[tuple[str, ...]] = ("augment.grey_p=0.25",)

    experiment: str = "memdpc"
    run_name: str = "memdpc-ucf101"
    model_name: str = "memdpc"
    method: MemDPCConfig = dataclasses.field(default_factory=MemDPCConfig)
    schedule: DPCSchedule = dataclasses.field(default_factory=lambda: DPCSchedule(pred_steps=(3,), epochs=500))
    loop: LoopConfig = dataclasses.field(default_factory=lambda: LoopConfig(batch_size=16))


def ucf101() -> MemDPCJob:
    """Table 3.1's setting (L701-L703): R-2D3D-18, K=1024, 8 x 5 frames at stride 3, 128 px, Adam 1e-3
    (wd 1e-5, [EXT]), batch 16 per GPU; 500 epochs with LR steps at 300 and 400 ([EXT] the code; the
    thesis decays once on a plateau)."""
    return MemDPCJob(data=DataConfig(manifest="data/ucf101"),
                     optim=OptimConfig(lr=1e-3, weight_decay=1e-5, schedule="step", milestones=(300, 400)),
                     scaling=ScalingConfig(num_workers=2, use_gpu=True, cpus_per_worker=8))


def k400() -> MemDPCJob:
    """Table 3.2's pretraining ([EXT] README): R-2D3D-34 at 224 px, 200 epochs, LR steps at 120 and 160."""
    return dataclasses.replace(
        ucf101(), run_name="memdpc-k400",
        data=DataConfig(manifest="data/k400", recipe_overrides=("augment.out_size=224",)),
        method=MemDPCConfig(backbone="dpc_context_34"),
        schedule=DPCSchedule(pred_steps=(3,), epochs=200),
        optim=OptimConfig(lr=1e-3, weight_decay=1e-5, schedule="step", milestones=(120, 160)))


def demo() -> MemDPCJob:
    """As DPC's demo (``dpc_context_tiny``, 8 x 3 frames at 96 px, no flip), K=1024, 5pred3."""
    job = dpc.demo()
    return MemDPCJob(run_name="memdpc-demo", model_name="memdpc-demo", data=job.data,
                     method=MemDPCConfig(backbone="dpc_context_tiny"),
                     schedule=DPCSchedule(pred_steps=(3,), epochs=3),
                     optim=job.optim, loop=job.loop, scaling=job.scaling, proxy=job.proxy)


def debug() -> MemDPCJob:
    """DPC's debug run with a 128-slot memory: one 2pred2 phase per stream on 4 blocks, one epoch."""
    return dpc.debug_of(demo(), pred_steps=(2,), memory_size=128)


VARIANTS = {"debug": debug, "demo": demo, "ucf101": ucf101, "k400": k400}
# ``--space ablation`` adds the memory size to DPC's: the seed's {512, 1024, 2048} slots.
SWEEP = dataclasses.replace(dpc.SWEEP, spaces={"ablation": {**dpc.ABLATION,
                                                           "method.memory_size": Choice((512, 1024, 2048))}})

SPEC = MethodSpec(name="memdpc", config=MemDPCJob, variants=VARIANTS, phases=dpc.phases, recipe=dpc.recipe,
                  build=dpc.build, export=dpc.export, metrics=(*dpc.METRICS, "top1_backward"), validate=dpc.validate,
                  eval_protocols=dpc.PROTOCOLS, table_metrics={"SSL top-1": "epoch/epoch_top1"}, sweep=SWEEP)
