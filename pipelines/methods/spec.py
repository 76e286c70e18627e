"""Method specs: everything the shared runtime needs to know about one method, in one object.

Modelled on torchtitan's ``TrainSpec`` registry. A method is three things of its own:

* its ``vidmodels`` module (pure PyTorch: model and loss);
* its recipe (:mod:`pipelines.data.recipes`: what one sample is);
* its spec here: the job config dataclass and named variants, the phases, how to build
  the model of a phase (from the encoders earlier phases handed off), what a phase
  exports and registers, the metrics it plots, the per-epoch validation hook and the
  evaluation protocols that apply.

It is registered with one line in :mod:`pipelines.methods`. The phase runner
(:mod:`pipelines.train.phases`), the generic trainer (``jobs/train.py``), the evaluator and
the tests read specs only; no shared module branches on a method's name.
"""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING, Any, Callable

import torch
from torch import nn

from pipelines.config import ScalingConfig
from pipelines.train.loop import LoopConfig, Validator
from pipelines.train.optim import OptimConfig

if TYPE_CHECKING:
    from pipelines.tune.space import SweepDefaults


@dataclasses.dataclass
class DataConfig:
    """Which videos, and edits of the method's recipe.

    Attributes:
        manifest: dataset folder or manifest URL.
        split: the manifest split trained on.
        debug_size: shrink the recipe to CPU test size (8-frame clips at 64 px).
        recipe_overrides: dotted recipe overrides, e.g. ``("clip_len=16", "augment.flip_p=0")``.
        seed: the data's randomness (clip offsets, augmentation, order).
        limit: read only the split's first N videos (smoke runs).
        synthetic: a :mod:`pipelines.prep.synthetic` preset rendered, ingested (and given
            the flow its recipes need) at ``manifest`` when no manifest is there; ``None``:
            a missing manifest is an error naming the commands that make it.
        format: which part of the synthetic set is ingested there: ``ucf101`` (single-action
            clips) or ``charades`` (multi-action videos with segments).
        clip_cache: folder of decoded videos (:mod:`pipelines.data.clip_cache`) that reads are
            served from; a sweep sets it for its trials (``jobs/tune.py --clip-cache``).
        epochs_per_execution: epochs one Ray Data execution draws when one worker trains
            (:mod:`pipelines.data.epochs`): the executor's start and ramp are paid once per this
            many epochs, and the next epoch's first blocks decode while this one's last batches
            train; 1 re-executes the dataset every epoch. With several workers every epoch is
            its own execution: Ray Train's streaming split shares a multi-epoch stream's epochs
            unevenly (up to a block per worker), and as every worker must take as many batches
            of an epoch, the surplus would be dropped (a third of an epoch in ``bench/train.py``).
    """

    manifest: str = "data/ucf101"
    split: str = "train"
    debug_size: bool = False
    recipe_overrides: tuple[str, ...] = ()
    seed: int = 0
    limit: int | None = None
    synthetic: str | None = None
    format: str = "ucf101"
    clip_cache: str | None = None
    epochs_per_execution: int = 8

    def __post_init__(self) -> None:
        if self.epochs_per_execution < 1:
            raise ValueError(f"data.epochs_per_execution must be >= 1, got {self.epochs_per_execution}")


@dataclasses.dataclass
class TrainJob:
    """Fields every method's job config has; a method subclasses it with its own sections."""

    experiment: str = "vidray"
    run_name: str = "run"
    storage_path: str = "data/runs"
    model_name: str = "model"
    data: DataConfig = dataclasses.field(default_factory=DataConfig)
    optim: OptimConfig = dataclasses.field(default_factory=OptimConfig)
    loop: LoopConfig = dataclasses.field(default_factory=LoopConfig)
    scaling: ScalingConfig = dataclasses.field(default_factory=ScalingConfig)


@dataclasses.dataclass(frozen=True)
class Phase:
    """One Ray Train run of a schedule.

    Attributes:
        name: unique in the schedule; the registry alias of what it registers.
        epochs: epochs of this phase.
        init_from: encoder key -> the earlier phase whose registered encoder it starts from.
        registers: encoder keys registered as ``<model_name>-<key>`` with the alias ``name``.
        params: method-specific settings of the phase (CoCLR: ``modality``, ``stage``).
        optim_overrides: dotted overrides of the job's ``optim`` for this phase only
            (``("schedule=step", "milestones=250,280")``), typed as ``--set`` is.
        data: the phase's own dataset (detection: pretraining on single-action clips, then
            finetuning on multi-action videos); ``None`` trains on the job's ``data``.
    """

    name: str
    epochs: int
    init_from: dict[str, str] = dataclasses.field(default_factory=dict)
    registers: tuple[str, ...] = ()
    params: dict[str, Any] = dataclasses.field(default_factory=dict)
    optim_overrides: tuple[str, ...] = ()
    data: DataConfig | None = None


def phase_data(job: Any, phase: Phase) -> DataConfig:
    """The dataset ``phase`` trains on: its own, else the job's."""
    return phase.data if phase.data is not None else job.data


@dataclasses.dataclass
class Encoder:
    """What a phase exports for one key: the hand-off state and the registered backbone.

    Attributes:
        state: plain state dict loaded by later phases (``encoders/<key>.pt`` in MLflow).
        backbone: the module registered (pytorch flavour, with signature and input example).
        backbone_name, backbone_kwargs: how :func:`vidmodels.registry.create_backbone` rebuilds it.
        example: one input example ``(1, C, T, H, W)``.
    """

    state: dict[str, torch.Tensor]
    backbone: nn.Module
    backbone_name: str
    backbone_kwargs: dict[str, Any]
    example: torch.Tensor


@dataclasses.dataclass(frozen=True)
class MethodSpec:
    """A method, as the shared runtime sees it.

    Attributes:
        name: ``--method`` name.
        config: the job config dataclass (a :class:`TrainJob` subclass).
        variants: variant name -> function returning a config (``debug`` is required: it
            must run from a fresh clone, so its ``data.synthetic`` is set).
        phases: ``job -> [Phase]``, the schedule.
        recipe: ``(job, phase) -> RecipeConfig`` the phase trains on.
        build: ``(job, phase, init) -> nn.Module``; ``init`` maps encoder keys to the
            states handed off by ``phase.init_from``. Must be a module-level function
            (it is pickled to the workers with ``functools.partial``).
        export: ``(job, phase, model) -> {key: Encoder}`` for the keys the phase registers.
        metrics: epoch metrics (without the ``epoch_`` prefix) drawn on the phase's curves.
        validate: ``(job, phase) -> Validator | None``, the per-epoch validation hook.
        eval_protocols: protocols of ``jobs/evaluate.py`` that apply to its encoders.
        table_metrics: column title -> MLflow metric key shown when its encoders are compared.
        sweep: its default search space and the metric a sweep ranks trials on
            (``jobs/tune.py``; :mod:`pipelines.tune`); ``None``: a sweep needs ``--space``
            and ``--metric``.
        finish: ``(job, done) -> None`` run after the whole schedule (not after one ``--stage``),
            with what each phase registered: e.g. detection scores its detectors on whole test videos.
    """

    name: str
    config: type
    variants: dict[str, Callable[[], TrainJob]]
    phases: Callable[[Any], list[Phase]]
    recipe: Callable[[Any, Phase], Any]
    build: Callable[[Any, Phase, dict[str, dict[str, torch.Tensor]]], nn.Module]
    export: Callable[[Any, Phase, nn.Module], dict[str, Encoder]]
    metrics: tuple[str, ...] = ("loss",)
    validate: Callable[[Any, Phase], Validator | None] | None = None
    eval_protocols: tuple[str, ...] = ("retrieval", "linear", "finetune")
    table_metrics: dict[str, str] = dataclasses.field(default_factory=dict)
    sweep: SweepDefaults | None = None
    finish: Callable[[Any, list[dict[str, Any]]], Any] | None = None

    def schedule(self, job: Any, stage: str | None = None) -> list[Phase]:
        """The job's phases, or only ``stage``.

        Raises:
            ValueError: an unknown stage (the message lists the phases).
        """
        phases = self.phases(job)
        if stage is None:
            return phases
        chosen = [p for p in phases if p.name == stage]
        if not chosen:
            raise ValueError(f"unknown stage {stage!r}; the schedule of {self.name!r} has "
                             f"{', '.join(p.name for p in phases)}")
        return chosen


METHODS: dict[str, MethodSpec] = {}


def register(spec: MethodSpec) -> MethodSpec:
    """Register a method spec by name (one line per method in :mod:`pipelines.methods`)."""
    if "debug" not in spec.variants:
        raise ValueError(f"method {spec.name!r} needs a 'debug' variant (tests and smoke runs use it)")
    METHODS[spec.name] = spec
    return spec


def get_method(name: str) -> MethodSpec:
    """The registered spec of ``name``.

    Raises:
        KeyError: an unknown method (the message lists the registered ones).
    """
    if name not in METHODS:
        raise KeyError(f"unknown method {name!r}; registered: {', '.join(sorted(METHODS))}")
    return METHODS[name]
