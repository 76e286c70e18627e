"""Log + register a debug encoder, then ``jobs/registry.py list/get/promote`` against a real server."""

from __future__ import annotations

import uuid
from pathlib import Path

import boto3
import pytest
import torch

import vidmodels
from pipelines import tracking
from pipelines.tracking import ModelVerificationError, RunLogger, load_registered_model, verify_model_dir
from tests.scripts import load_script

BACKBONE = "r3d_debug"


def _registry_job():
    return load_script("jobs/registry.py")


def _log_encoder(uri: str, tmp_path: Path, registered_name: str, fmt: str = "pt2"):
    torch.manual_seed(0)
    encoder = vidmodels.create_backbone(BACKBONE, num_classes=0)
    t, h, w = vidmodels.get_model_info(BACKBONE).input_size
    logger = RunLogger("registry-test", uri=uri, spill_dir=tmp_path)
    logger.start(f"train-{uuid.uuid4().hex[:6]}", {"backbone": BACKBONE},
                 tags={"dataset_fingerprint": "ab" * 32, "ray_job_id": "01000000"})
    logger.log_metrics({"loss": 1.0}, step=0)
    version = logger.log_model(encoder, "encoder", torch.randn(1, 3, t, h, w), registered_name,
                               backbone=BACKBONE, backbone_kwargs={"num_classes": 0},
                               serialization_format=fmt)
    assert logger.end()
    return encoder, version, logger.run_id


def _assert_same_weights(a: torch.nn.Module, b: torch.nn.Module) -> None:
    sa, sb = a.state_dict(), b.state_dict()
    assert sa.keys() == sb.keys()
    assert all(torch.equal(sa[k], sb[k]) for k in sa)


def test_log_register_list_get_promote(mlflow_server, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", mlflow_server)
    name = f"encoder-{uuid.uuid4().hex[:6]}"
    encoder, version, run_id = _log_encoder(mlflow_server, tmp_path, name)
    assert version is not None and version.version == "1" and version.run_id == run_id
    assert version.tags["dataset_fingerprint"] == "ab" * 32
    job = _registry_job()

    assert job.main(["promote", name, "1", "champion"]) == 0
    capsys.readouterr()
    assert job.main(["list"]) == 0
    listing = capsys.readouterr().out
    assert name in listing and "aliases=champion" in listing and run_id in listing and "abababab" in listing

    for spec, out in ((f"{name}@champion", tmp_path / "by-alias"), (f"{name}/1", tmp_path / "by-version")):
        assert job.main(["get", spec, "--out", str(out)]) == 0
        printed = capsys.readouterr().out
        n_params = sum(p.numel() for p in encoder.parameters())
        assert f"parameters {n_params:,}" in printed and f"feature_dim {encoder.feature_dim}" in printed
        loaded, info = load_registered_model(f"models:/{spec}", out)
        assert info["backbone"] == BACKBONE
        _assert_same_weights(loaded, encoder)

    assert job.main(["get", f"{name}@nope", "--out", str(tmp_path / "x")]) == 2
    assert job.main(["promote", name, "7", "champion"]) == 2

    import mlflow

    program = mlflow.pytorch.load_model(f"models:/{name}/1")  # the pt2 flavour: a torch.export program
    t, h, w = vidmodels.get_model_info(BACKBONE).input_size
    encoder.eval()
    for batch in (1, 3):  # logged from a batch of one, it takes any batch size
        x = torch.randn(batch, 3, t, h, w)
        with torch.no_grad():
            assert torch.allclose(program(x), encoder(x), atol=1e-5)


def test_tampered_download_is_rejected(mlflow_server, tmp_path, monkeypatch):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", mlflow_server)
    name = f"encoder-{uuid.uuid4().hex[:6]}"
    _log_encoder(mlflow_server, tmp_path, name, fmt="pickle")  # the other MLflow format
    _, info = load_registered_model(f"models:/{name}/1", tmp_path / "dl")
    state_file = Path(info["path"]) / "extra_files" / "state_dict.pt"
    state = torch.load(state_file, weights_only=True)
    next(iter(state.values())).add_(1.0)
    torch.save(state, state_file)
    with pytest.raises(ModelVerificationError, match="sha256 of state_dict.pt"):
        verify_model_dir(info["path"])


def test_registry_with_artifacts_on_s3(mlflow_server_s3, tmp_path, monkeypatch):
    uri, artifact_root, env = mlflow_server_s3
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    name = "encoder-s3"
    encoder, version, _ = _log_encoder(uri, tmp_path, name)
    assert version is not None
    bucket, prefix = artifact_root.removeprefix("s3://").split("/", 1)
    keys = [o["Key"] for o in boto3.client("s3", endpoint_url=env["AWS_ENDPOINT_URL"], region_name="us-east-1")
            .list_objects_v2(Bucket=bucket, Prefix=prefix)["Contents"]]
    assert any(k.endswith("extra_files/state_dict.pt") for k in keys)
    assert any(k.endswith(("config.yaml", "MLmodel")) for k in keys)
    assert _registry_job().main(["get", f"{name}/1", "--out", str(tmp_path / "s3-dl")]) == 0
    loaded, _ = load_registered_model(f"models:/{name}/1", tmp_path / "s3-dl2")
    _assert_same_weights(loaded, encoder)
    assert tracking.tracking_uri() == uri
