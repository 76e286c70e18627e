"""CoCLR end to end on Ray: the stage schedule, one Ray Train run per phase, MLflow and the registry.

Schedule (seed 001, chapter 4; :func:`vidmodels.methods.coclr_schedule`): stage 1 trains
the RGB and the flow encoder separately with InfoNCE; stage 2 runs ``cycles`` cycles,
each training RGB with the flow encoder frozen (positives mined in flow space), then
flow with the RGB encoder frozen. Every phase:

1. fetches the encoders it starts from out of MLflow: the phase that produced them
   logged ``encoders/<modality>.pt`` (backbone + projection head, a plain state dict,
   loaded with ``weights_only=True``) and registered the backbone as
   ``<model_name>-<modality>`` with the alias ``<phase>`` (e.g. ``coclr-rgb@infonce_rgb``);
2. trains with :func:`pipelines.train.runtime.fit` on the ``coclr`` recipe (RGB + aligned flow,
   two clips), logging to an MLflow run ``<run_name>.<phase>`` nested under the job's run;
3. logs the preview contact sheet, the loss/top-1 curves, the encoder (pytorch flavour,
   signature, input example) and registers it, then moves the alias.

A phase whose alias already points at a version made by this ``run_name`` is skipped,
so re-submitting the job resumes at the first unfinished phase; inside a phase, Ray
Train resumes from the phase's latest checkpoint (same run name and storage path).
"""

from __future__ import annotations

import dataclasses
import functools
import logging
import math
import os
import re
from typing import Any

import torch

from pipelines.io import manifest
from pipelines.io import storage
from pipelines.config import ScalingConfig, flatten
from pipelines.train.runtime import LoopConfig, OptimConfig, epoch_clock, fit, load_checkpoint_state
from vidmodels.methods import CoCLR, CoCLRConfig, coclr_schedule
from vidmodels.methods.coclr import IN_CHANS
from vidmodels.registry import create_backbone

log = logging.getLogger(__name__)


@dataclasses.dataclass
class DataConfig:
    """Which videos, and the clip recipe (``coclr``; dotted overrides, e.g. ``clip_len=16``)."""

    manifest: str = "data/demo/ucf101"
    split: str = "train"
    debug_size: bool = False                 # 8-frame clips at 64 px
    recipe_overrides: tuple[str, ...] = ()
    seed: int = 0
    limit: int | None = None                 # first N videos of the split (smoke runs)


@dataclasses.dataclass
class ScheduleConfig:
    """Epochs of stage 1 per stream, cycles of stage 2 and epochs per network (UCF101: L973-975)."""

    init_epochs: int = 300
    cycles: int = 2
    epochs_per_network: int = 100


@dataclasses.dataclass
class CoCLRJob:
    """Everything ``jobs/coclr.py`` needs; variants below, ``--set a.b=v`` overrides."""

    experiment: str = "coclr"
    run_name: str = "coclr-ucf101"
    storage_path: str = "data/runs"
    model_name: str = "coclr"
    data: DataConfig = dataclasses.field(default_factory=DataConfig)
    method: CoCLRConfig = dataclasses.field(default_factory=CoCLRConfig)
    schedule: ScheduleConfig = dataclasses.field(default_factory=ScheduleConfig)
    optim: OptimConfig = dataclasses.field(default_factory=OptimConfig)
    loop: LoopConfig = dataclasses.field(default_factory=lambda: LoopConfig(batch_size=16))
    scaling: ScalingConfig = dataclasses.field(default_factory=ScalingConfig)


def ucf101() -> CoCLRJob:
    """The seed's UCF101 setting: S3D, 32x128², 300 + 2x(100+100) epochs, Adam 1e-3, K=5."""
    return CoCLRJob(data=DataConfig(manifest="data/ucf101"))


def k400() -> CoCLRJob:
    """The seed's K400 setting: one cycle of 50 + 50 epochs after initialisation (L973-975)."""
    return CoCLRJob(run_name="coclr-k400", data=DataConfig(manifest="data/k400"),
                    method=CoCLRConfig(queue_size=16384),
                    schedule=ScheduleConfig(init_epochs=100, cycles=1, epochs_per_network=50),
                    loop=LoopConfig(batch_size=32))


def demo() -> CoCLRJob:
    """``make demo``: the synthetic motion dataset, s3d_debug, 8x64² clips, a few epochs (2 cores).

    Departures from the seed, for a schedule of ~15 steps per epoch:

    * key-encoder momentum 0.9 instead of 0.999: a slow EMA leaves the keys those of the
      random initialisation. Measured on the demo data (63 steps of InfoNCE-RGB, batch 16):
      instance-discrimination top-1 0.04 with 0.99 and 0.40 with 0.9.
    * no horizontal flip: the synthetic classes are defined by motion direction, and a
      flip turns MoveLeft into MoveRight and RotateCW into RotateCCW (as on
      Something-Something, whose recipes also drop the flip).
    """
    return CoCLRJob(run_name="coclr-demo", model_name="coclr-demo",
                    data=DataConfig(manifest="data/demo/ucf101", debug_size=True,
                                    recipe_overrides=("augment.flip_p=0",)),
                    method=CoCLRConfig.debug(queue_size=128, topk=5, momentum=0.9),
                    schedule=ScheduleConfig(init_epochs=3, cycles=1, epochs_per_network=2),
                    optim=OptimConfig(lr=1e-3, schedule="constant"),
                    loop=LoopConfig(epochs=6, batch_size=16, log_every_n_steps=10),
                    scaling=ScalingConfig(num_workers=1, cpus_per_worker=0.5))


def debug() -> CoCLRJob:
    """Smallest end-to-end run (tests, smoke checks): a few videos, one epoch per phase."""
    job = demo()
    return dataclasses.replace(
        job, run_name="coclr-debug", model_name="coclr-debug",
        data=dataclasses.replace(job.data, limit=16),
        method=CoCLRConfig.debug(queue_size=16, topk=2),
        schedule=ScheduleConfig(init_epochs=1, cycles=1, epochs_per_network=1),
        loop=LoopConfig(epochs=1, batch_size=4, log_every_n_steps=1, max_failures=1),
        scaling=ScalingConfig(num_workers=2, cpus_per_worker=0.5))


VARIANTS = {"demo": demo, "debug": debug, "ucf101": ucf101, "k400": k400}


def build_coclr(cfg: CoCLRConfig, init: dict[str, dict[str, torch.Tensor]]) -> CoCLR:
    """The phase's method, its encoders loaded from earlier phases (picklable via functools.partial)."""
    method = CoCLR(cfg)
    for modality, state in init.items():
        if modality == cfg.modality or cfg.stage == "coclr":
            method.load_encoder_state(modality, state)
    return method


def alias_for(phase: str) -> str:
    return re.sub(r"[^A-Za-z0-9_-]", "_", phase)


def _client():
    from mlflow import MlflowClient

    from pipelines.tracking import tracking_uri

    return MlflowClient(tracking_uri=tracking_uri(), registry_uri=tracking_uri())


def finished_phase(job: CoCLRJob, phase: str, modality: str):
    """The registered version this job already made for ``phase``, or None."""
    try:
        version = _client().get_model_version_by_alias(f"{job.model_name}-{modality}", alias_for(phase))
    except Exception:  # noqa: BLE001 - no such model or alias yet
        return None
    return version if version.tags.get("vidray_run_name") == job.run_name else None


def fetch_encoder(job: CoCLRJob, phase: str, modality: str, dst: str) -> dict[str, torch.Tensor]:
    """Download ``encoders/<modality>.pt`` of the run behind ``<model>-<modality>@<phase>``."""
    import mlflow

    from pipelines.tracking import tracking_uri

    version = _client().get_model_version_by_alias(f"{job.model_name}-{modality}", alias_for(phase))
    path = mlflow.artifacts.download_artifacts(run_id=version.run_id, artifact_path=f"encoders/{modality}.pt",
                                               dst_path=dst, tracking_uri=tracking_uri())
    return torch.load(path, map_location="cpu", weights_only=True)


def _dataset(job: CoCLRJob, clock):
    from pipelines.data import recipes
    from pipelines.data.dataset import LoaderOptions, build_pipeline

    cfg = recipes.recipe("coclr", debug_size=job.data.debug_size, overrides=job.data.recipe_overrides)
    pipe = build_pipeline(job.data.manifest, cfg, job.data.split, seed=job.data.seed, epoch=clock,
                          limit=job.data.limit, options=LoaderOptions(strings=False))
    return pipe, cfg


def _preview(job: CoCLRJob, cfg, logger) -> None:
    """Log a contact sheet of what the model sees (a few samples of epoch 0)."""
    from pipelines.data.dataset import LoaderOptions, build_pipeline
    from pipelines.data.preview import render_contact_sheet

    pipe = build_pipeline(job.data.manifest, cfg, job.data.split, seed=job.data.seed, epoch=0, limit=4,
                          options=LoaderOptions())
    batch = pipe.dataset.take_batch(4, batch_format="numpy")
    logger.log_artifact(render_contact_sheet(batch, cfg), "preview", name="preview.png")


def run_phase(job: CoCLRJob, phase, parent_run_id: str | None, fingerprint: str, work: str):
    """Train one phase; returns the registered model version (or None if tracking was down)."""
    import ray

    from pipelines.tracking import RunLogger

    cfg = dataclasses.replace(job.method, modality=phase.modality, stage=phase.stage)
    init = {m: fetch_encoder(job, src, m, os.path.join(work, phase.name)) for m, src in phase.init_from.items()}
    run_name = f"{job.run_name}.{phase.name}"
    clock_name = f"vidray-epoch-{run_name}"
    clock = epoch_clock(clock_name)
    pipe, recipe_cfg = _dataset(job, clock)
    videos = len(pipe.inputs) - pipe.quarantined().num_rows  # known-bad rows are excluded up front
    steps = max(1, math.floor(videos / (job.loop.batch_size * job.scaling.num_workers)))
    tags = {"dataset_fingerprint": fingerprint, "phase": phase.name, "stage": phase.stage,
            "modality": phase.modality, "vidray_run_name": job.run_name}
    if parent_run_id:
        tags["mlflow.parentRunId"] = parent_run_id
    logger = RunLogger(job.experiment)
    run_id = logger.start(run_name, config={**flatten(job), "phase.epochs": phase.epochs,
                                            "phase.init_from": str(phase.init_from)}, tags=tags)
    try:
        _preview(job, recipe_cfg, logger)
        loop = dataclasses.replace(job.loop, epochs=phase.epochs)
        result = fit(build_method=functools.partial(build_coclr, cfg, init), datasets={"train": pipe.dataset},
                     optim=job.optim, loop=loop, num_workers=job.scaling.num_workers,
                     use_gpu=job.scaling.use_gpu, cpus_per_worker=job.scaling.cpus_per_worker,
                     run_name=run_name, storage_path=job.storage_path, steps_per_epoch=steps,
                     tracking={"experiment": job.experiment, "run_name": run_name, "uri": logger.uri},
                     clock_name=clock_name)
        if result.error:
            raise result.error
        method = build_coclr(cfg, {})
        method.load_state_dict(load_checkpoint_state(result.checkpoint)["model"])
        version = _log_encoder(job, cfg, method, logger, run_id, work, phase.name)
        logger.log_curves(_history(run_id, logger))
        pipe.write_quarantine()
        logger.end("FINISHED")
        return version
    except BaseException:
        logger.end("FAILED")
        raise
    finally:
        ray.kill(clock)


def _log_encoder(job, cfg, method, logger, run_id, work, phase_name):
    modality = cfg.modality
    full = os.path.join(work, phase_name, f"{modality}.pt")
    os.makedirs(os.path.dirname(full), exist_ok=True)
    torch.save(method.encoder_state(modality), full)
    logger.log_artifact(full, "encoders")
    kwargs = {"num_classes": 0, "in_chans": IN_CHANS[modality]}
    encoder = create_backbone(cfg.backbone, **kwargs)
    encoder.load_state_dict(method.encoder_state(modality, with_head=False))
    frames, size = _input_size(job)
    example = torch.zeros(1, kwargs["in_chans"], frames, size, size)
    version = logger.log_model(encoder, "encoder", example, registered_name=f"{job.model_name}-{modality}",
                               backbone=cfg.backbone, backbone_kwargs=kwargs)
    logger.flush()
    if version is not None:
        client = _client()
        client.set_model_version_tag(version.name, version.version, "vidray_run_name", job.run_name)
        client.set_model_version_tag(version.name, version.version, "phase", phase_name)
        client.set_registered_model_alias(version.name, alias_for(phase_name), version.version)
    return version


def _input_size(job: CoCLRJob) -> tuple[int, int]:
    from pipelines.data import recipes

    cfg = recipes.recipe("coclr", debug_size=job.data.debug_size, overrides=job.data.recipe_overrides)
    return cfg.clip_len, cfg.crop_size


def _history(run_id: str | None, logger) -> dict[str, list[float]]:
    """Per-epoch loss and top-1 of a run, read back from MLflow, for the curves plot."""
    if not run_id:
        return {}
    client = _client()
    out = {}
    for key in ("epoch/epoch_loss", "epoch/epoch_top1", "epoch/epoch_mined_precision", "epoch/lr"):
        try:
            points = sorted(client.get_metric_history(run_id, key), key=lambda m: m.step)
        except Exception:  # noqa: BLE001 - tracking down: no plot
            return {}
        if points:
            out[key.split("/", 1)[1]] = [p.value for p in points]
    return out


def run_schedule(job: CoCLRJob, *, stage: str | None = None) -> list[dict[str, Any]]:
    """Run every phase (or the one named ``stage``) of the schedule; returns what was registered."""
    from pipelines.tracking import RunLogger

    phases = coclr_schedule(cycles=job.schedule.cycles, init_epochs=job.schedule.init_epochs,
                            epochs_per_network=job.schedule.epochs_per_network)
    if stage is not None:
        if stage not in {p.name for p in phases}:
            raise ValueError(f"unknown stage {stage!r}; the schedule has {[p.name for p in phases]}")
        phases = [p for p in phases if p.name == stage]
    fingerprint = manifest.fingerprint(manifest.read_manifest(job.data.manifest))
    work = storage.join(os.path.abspath(job.storage_path) if storage.protocol(job.storage_path) == "file"
                        else "/tmp/vidray", job.run_name, "work")
    parent = RunLogger(job.experiment)
    parent_id = parent.start(job.run_name, config=job, tags={"dataset_fingerprint": fingerprint})
    done = []
    try:
        for phase in phases:
            version = finished_phase(job, phase.name, phase.modality)
            if version is None:
                log.warning("phase %s: training %s (%s) for %d epochs", phase.name, phase.modality,
                            phase.stage, phase.epochs)
                version = run_phase(job, phase, parent_id, fingerprint, work)
            else:
                log.warning("phase %s: already registered as %s v%s; skipped", phase.name, version.name,
                            version.version)
            done.append({"phase": phase.name, "model": getattr(version, "name", None),
                         "version": getattr(version, "version", None), "alias": alias_for(phase.name),
                         "run_id": getattr(version, "run_id", None)})
        parent.end("FINISHED")
    except BaseException:
        parent.end("FAILED")
        raise
    return done
