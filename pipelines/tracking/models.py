"""Model files next to MLflow's pytorch flavour, their verification, and safe loading from the registry.

Models (:meth:`pipelines.tracking.RunLogger.log_model`) are logged in MLflow's pytorch
flavour (``pt2``, a ``torch.export`` graph, falling back to pickle for modules that do not
export) and, next to it in ``extra_files/``, a plain ``state_dict.pt``, a
``model_info.json`` (backbone name and kwargs) and a ``checksums.json`` (sha256 of both).
:func:`load_registered_model` verifies those and loads the weights with
``torch.load(weights_only=True)`` into a freshly built backbone: loading a registered
model never unpickles code and never depends on how MLflow serialised the flavour
(``mlflow.pytorch.load_model`` may unpickle a whole module, so it is not used).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from pipelines.tracking.store import tracking_uri

MODEL_FILES = ("state_dict.pt", "model_info.json")


def sha256_file(path: str | Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def write_model_files(module, folder: str | Path, backbone: str | None,
                      backbone_kwargs: Mapping[str, Any] | None = None, **extra: Any) -> list[Path]:
    """Write ``state_dict.pt``, ``model_info.json`` and ``checksums.json`` for ``module``."""
    import torch

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().cpu().contiguous() for k, v in module.state_dict().items()}
    torch.save(state, folder / "state_dict.pt")
    info = {"backbone": backbone, "kwargs": dict(backbone_kwargs or {}),
            "class": f"{type(module).__module__}.{type(module).__qualname__}",
            "num_params": sum(p.numel() for p in module.parameters()),
            "feature_dim": getattr(module, "feature_dim", None),
            "torch_version": torch.__version__, **extra}
    (folder / "model_info.json").write_text(json.dumps(info, indent=2, default=str))
    checksums = {"algorithm": "sha256", "files": {f: sha256_file(folder / f) for f in MODEL_FILES}}
    (folder / "checksums.json").write_text(json.dumps(checksums, indent=2))
    return [folder / f for f in (*MODEL_FILES, "checksums.json")]


class ModelVerificationError(RuntimeError):
    """A downloaded model is incomplete or does not match its checksums."""


def verify_model_dir(folder: str | Path) -> Path:
    """Check the MLflow model files and the sha256 checksums; returns the ``extra_files`` folder.

    Raises:
        ModelVerificationError: a file is missing, the flavour is not pytorch, or a checksum differs.
    """
    import yaml

    folder = Path(folder)
    mlmodel = folder / "MLmodel"
    if not mlmodel.is_file():
        raise ModelVerificationError(f"{folder}: no MLmodel file; not an MLflow model")
    flavors = (yaml.safe_load(mlmodel.read_text()) or {}).get("flavors", {})
    if "pytorch" not in flavors:
        raise ModelVerificationError(f"{folder}: not a pytorch-flavour model ({', '.join(flavors)})")
    extra = folder / "extra_files"
    sums_path = extra / "checksums.json"
    if not sums_path.is_file():
        raise ModelVerificationError(f"{folder}: no extra_files/checksums.json; not logged by vidray")
    sums = json.loads(sums_path.read_text())["files"]
    for name in MODEL_FILES:
        if name not in sums or not (extra / name).is_file():
            raise ModelVerificationError(f"{folder}: {name} missing")
        actual = sha256_file(extra / name)
        if actual != sums[name]:
            raise ModelVerificationError(f"{folder}: sha256 of {name} is {actual[:12]}, "
                                         f"expected {sums[name][:12]}")
    return extra


def _download_uri(uri: str) -> str:
    """The artifact URI behind ``models:/NAME@alias`` or ``models:/NAME/version``, resolved in *our*
    registry (MLflow's ``download_artifacts`` resolves ``models:/`` in its global default registry,
    which is not the embedded store unless ``MLFLOW_TRACKING_URI`` names it)."""
    from mlflow import MlflowClient

    if not uri.startswith("models:/"):
        return uri
    client = MlflowClient(tracking_uri=tracking_uri(), registry_uri=tracking_uri())
    name, _, alias = uri[len("models:/"):].partition("@")
    if alias:
        version = client.get_model_version_by_alias(name, alias).version
    else:
        name, _, version = name.partition("/")
    return client.get_model_version_download_uri(name, version)


def load_registered_model(uri: str, dst: str | Path | None = None):
    """Download ``models:/NAME@alias`` or ``models:/NAME/version``, verify it, load it safely.

    The weights are read with ``torch.load(weights_only=True)`` into a module built by
    ``vidmodels.create_backbone(backbone, **kwargs)`` from ``model_info.json``;
    nothing is unpickled.

    Returns:
        ``(module, info)``: the module in eval mode and ``model_info.json`` plus ``path``.

    Raises:
        ModelVerificationError: see :func:`verify_model_dir`, or no backbone name recorded.
        mlflow.exceptions.MlflowException: no such model, version or alias.
    """
    import mlflow
    import torch

    import vidmodels

    if dst is not None:
        Path(dst).mkdir(parents=True, exist_ok=True)
    local = Path(mlflow.artifacts.download_artifacts(artifact_uri=_download_uri(uri), dst_path=str(dst) if dst else None,
                                                     tracking_uri=tracking_uri()))
    extra = verify_model_dir(local)
    info = json.loads((extra / "model_info.json").read_text())
    if not info.get("backbone"):
        raise ModelVerificationError(f"{uri}: model_info.json names no backbone to rebuild")
    module = vidmodels.create_backbone(info["backbone"], **info.get("kwargs", {}))
    state = torch.load(extra / "state_dict.pt", map_location="cpu", weights_only=True)
    module.load_state_dict(state, strict=True)
    module.eval()
    return module, {**info, "path": str(local)}
