"""The phase runner: a method's schedule as Ray Train runs, with MLflow hand-off and the registry.

For every phase of ``spec.schedule(job)`` (:class:`~pipelines.methods.spec.Phase`):

1. a phase whose registered aliases (``<model_name>-<key>@<phase>`` for every key it
   registers) already point at versions made by this ``run_name`` is skipped, so
   re-submitting a job resumes at the first unfinished phase;
2. the encoders it starts from (``init_from``) are fetched from MLflow: the phase that
   made them logged ``encoders/<key>.pt`` (a plain state dict, loaded with
   ``weights_only=True``) on the run behind its alias;
3. it trains with :func:`pipelines.train.runtime.fit` on the spec's recipe, logging to an
   MLflow run ``<run_name>.<phase>`` nested under the job's run (preview contact sheet,
   step and epoch metrics, curves of ``spec.metrics``); inside a phase Ray Train resumes
   from the latest checkpoint (same run name and storage path);
4. it exports what the spec says (``spec.export``) and registers each encoder (pytorch
   flavour, signature, input example), then moves the alias to the new version.

A caller may add tags to the job's run (a sweep nests a trial's run under the sweep's with
``mlflow.parentRunId``) and :class:`~pipelines.train.runtime.FitOptions` to every phase's
Ray Train run (:mod:`pipelines.tune`).
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

from pipelines.config import apply_overrides, flatten
from pipelines.data.clock import epoch_clock
from pipelines.io import manifest, storage
from pipelines.methods.spec import Encoder, MethodSpec, Phase, phase_data
from pipelines.train.loop import TrainTask
from pipelines.train.runtime import FitOptions, fit

log = logging.getLogger(__name__)


def alias_for(phase: str) -> str:
    return re.sub(r"[^A-Za-z0-9_-]", "_", phase)


def _client():
    from mlflow import MlflowClient

    from pipelines.tracking import tracking_uri

    return MlflowClient(tracking_uri=tracking_uri(), registry_uri=tracking_uri())


def finished_version(job, phase: str, key: str):
    """The registered version of ``<model_name>-<key>@<phase>`` made by this job's run, or None."""
    try:
        version = _client().get_model_version_by_alias(f"{job.model_name}-{key}", alias_for(phase))
    except Exception:  # noqa: BLE001 - no such model or alias yet
        return None
    return version if version.tags.get("vidray_run_name") == job.run_name else None


def fetch_encoder(job, phase: str, key: str, dst: str) -> dict[str, torch.Tensor]:
    """Download ``encoders/<key>.pt`` of the run behind ``<model_name>-<key>@<phase>``."""
    import mlflow

    from pipelines.tracking import tracking_uri

    version = _client().get_model_version_by_alias(f"{job.model_name}-{key}", alias_for(phase))
    path = mlflow.artifacts.download_artifacts(run_id=version.run_id, artifact_path=f"encoders/{key}.pt",
                                               dst_path=dst, tracking_uri=tracking_uri())
    return torch.load(path, map_location="cpu", weights_only=True)


def _pipeline(data, recipe_cfg, *, epoch, limit=None, strings=False, epochs: int | None = None,
              workers: int = 1):
    """The phase's pipeline; with ``epochs`` (the phase's) and one worker, one execution spans
    ``data.epochs_per_execution`` of them (:mod:`pipelines.data.epochs`; several workers: one
    execution per epoch, see ``DataConfig.epochs_per_execution``)."""
    from pipelines.data.dataset import LoaderOptions, build_pipeline

    span = min(epochs, data.epochs_per_execution) if epochs and workers == 1 else None
    return build_pipeline(data.manifest, recipe_cfg, data.split, seed=data.seed, epoch=epoch,
                          limit=limit or data.limit,
                          options=LoaderOptions(strings=strings, clip_cache=data.clip_cache, span_epochs=span,
                                                total_epochs=epochs if span else None))


def _preview(data, recipe_cfg, logger) -> None:
    """Log a contact sheet of what the model sees (a few samples of epoch 0)."""
    from pipelines.data.preview import render_contact_sheet

    pipe = _pipeline(data, recipe_cfg, epoch=0, limit=4, strings=True)
    batch = pipe.dataset.take_batch(4, batch_format="numpy")
    plan = pipe.recipe.device_plan()
    if plan:  # device-side augmentation: show what the model sees, augmented here on the CPU
        import torch

        from pipelines.data.device_augment import augment_batch

        tensors = augment_batch({k: torch.from_numpy(v) if v.dtype != object else v for k, v in batch.items()},
                                plan, out_size=pipe.recipe.crop_size, device="cpu")
        batch = {k: v.numpy() if isinstance(v, torch.Tensor) else v for k, v in tensors.items()}
    logger.log_artifact(render_contact_sheet(batch, recipe_cfg), "preview", name="preview.png")


def run_phase(spec: MethodSpec, job, phase: Phase, parent_run_id: str | None, fingerprint: str,
              work: str, options: FitOptions | None = None) -> dict[str, Any]:
    """Train one phase; returns ``{key: registered version or None}`` (None if tracking was down)."""
    from pipelines.tracking import RunLogger

    init = {k: fetch_encoder(job, src, k, os.path.join(work, phase.name)) for k, src in phase.init_from.items()}
    run_name = f"{job.run_name}.{phase.name}"
    clock = epoch_clock(f"vidray-epoch-{run_name}")
    recipe_cfg = spec.recipe(job, phase)
    data = phase_data(job, phase)
    if data is not job.data:
        fingerprint = manifest.fingerprint(manifest.read_manifest(data.manifest))
    pipe = _pipeline(data, recipe_cfg, epoch=clock, epochs=phase.epochs, workers=job.scaling.num_workers)
    videos = len(pipe.inputs) - pipe.quarantined().num_rows  # known-bad rows are excluded up front
    per_step = job.loop.batch_size * job.scaling.num_workers * max(1, job.loop.accumulate_steps)
    tags = {"dataset_fingerprint": fingerprint, "phase": phase.name, "vidray_method": spec.name,
            "vidray_run_name": job.run_name, **{k: str(v) for k, v in phase.params.items()}}
    if parent_run_id:
        tags["mlflow.parentRunId"] = parent_run_id
    logger = RunLogger(job.experiment)
    run_id = logger.start(run_name, config={**flatten(job), "phase.epochs": phase.epochs,
                                            "phase.init_from": str(phase.init_from)}, tags=tags)
    try:
        _preview(data, recipe_cfg, logger)
        task = TrainTask(build_method=functools.partial(spec.build, job, phase, init),
                         video_columns=recipe_cfg.video_columns(),
                         optim=apply_overrides(job.optim, phase.optim_overrides),
                         loop=dataclasses.replace(job.loop, epochs=phase.epochs),
                         steps_per_epoch=max(1, math.floor(videos / per_step)), name=phase.name,
                         validate=spec.validate(job, phase) if spec.validate else None,
                         tracking={"experiment": job.experiment, "run_name": run_name, "uri": logger.uri},
                         epoch_clock=clock, epochs_span=bool(pipe.span_epochs),
                         device_plan=pipe.recipe.device_plan() or None,
                         crop_size=pipe.recipe.crop_size)
        result = fit(task, datasets={"train": pipe.dataset}, scaling=job.scaling, run_name=run_name,
                     storage_path=job.storage_path, options=options)
        if result.error:
            raise result.error
        from pipelines.train.checkpoint import load_checkpoint_state

        model = spec.build(job, phase, {})
        model.load_state_dict(load_checkpoint_state(result.checkpoint)["model"])
        versions = {key: _register(job, phase, key, enc, logger, work)
                    for key, enc in spec.export(job, phase, model).items()}
        logger.log_curves(_history(run_id, spec.metrics))
        pipe.write_quarantine()
        logger.end("FINISHED")
        return versions
    except BaseException:
        logger.end("FAILED")
        raise
    finally:
        clock.close()


def _register(job, phase: Phase, key: str, enc: Encoder, logger, work: str):
    """Log ``encoders/<key>.pt`` and the backbone, register it and move the phase's alias."""
    full = os.path.join(work, phase.name, f"{key}.pt")
    os.makedirs(os.path.dirname(full), exist_ok=True)
    torch.save(enc.state, full)
    logger.log_artifact(full, "encoders")
    version = logger.log_model(enc.backbone, f"encoder-{key}", enc.example, registered_name=f"{job.model_name}-{key}",
                               backbone=enc.backbone_name, backbone_kwargs=enc.backbone_kwargs)
    logger.flush()
    if version is not None:
        client = _client()
        client.set_model_version_tag(version.name, version.version, "vidray_run_name", job.run_name)
        client.set_model_version_tag(version.name, version.version, "phase", phase.name)
        client.set_registered_model_alias(version.name, alias_for(phase.name), version.version)
    return version


def _history(run_id: str | None, metrics: tuple[str, ...]) -> dict[str, list[float]]:
    """Per-epoch values of ``metrics`` and the LR, read back from MLflow, for the curves plot."""
    if not run_id:
        return {}
    client, out = _client(), {}
    for name in (*metrics, "lr"):
        for key in (f"epoch/epoch_{name}", f"epoch/{name}"):
            try:
                points = sorted(client.get_metric_history(run_id, key), key=lambda m: m.step)
            except Exception:  # noqa: BLE001 - tracking down: no plot
                return {}
            if points:
                out[name] = [p.value for p in points]
                break
    return out


def _work_dir(job) -> str:
    local = storage.protocol(job.storage_path) == "file"
    return storage.join(os.path.abspath(job.storage_path) if local else "/tmp/vidray", job.run_name, "work")


def run_phases(spec: MethodSpec, job, *, stage: str | None = None, tags: dict[str, str] | None = None,
               options: FitOptions | None = None) -> list[dict[str, Any]]:
    """Run every phase (or the one named ``stage``) of the job; returns what each registered.

    ``tags`` go on the job's run, ``options`` to every phase's Ray Train run (module docstring).
    """
    from pipelines.tracking import RunLogger

    phases = spec.schedule(job, stage)
    fingerprint = manifest.fingerprint(manifest.read_manifest(phase_data(job, phases[0]).manifest))
    parent = RunLogger(job.experiment)
    parent_id = parent.start(job.run_name, config=job, tags={"dataset_fingerprint": fingerprint,
                                                             "vidray_method": spec.name, **(tags or {})})
    done = []
    try:
        for phase in phases:
            versions = {key: finished_version(job, phase.name, key) for key in phase.registers}
            if phase.registers and all(versions.values()):
                print(f"phase {phase.name}: already registered ("
                      f"{', '.join(f'{v.name} v{v.version}' for v in versions.values())}); skipped", flush=True)
            else:
                print(f"phase {phase.name}: training for {phase.epochs} epochs", flush=True)
                versions = run_phase(spec, job, phase, parent_id, fingerprint, _work_dir(job), options)
            done += [{"phase": phase.name, "model": getattr(v, "name", None), "version": getattr(v, "version", None),
                      "alias": alias_for(phase.name), "run_id": getattr(v, "run_id", None)}
                     for v in versions.values()]
        parent.end("FINISHED")
    except BaseException:
        parent.end("FAILED")
        raise
    return done
