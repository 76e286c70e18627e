"""RunLogger against a real MLflow server: params, metrics, tags, artifacts, resume, outages."""

from __future__ import annotations

import dataclasses
import logging
import socket
import sys
import threading
import time
from pathlib import Path

import pytest
import torch
from mlflow import MlflowClient

from pipelines import tracking
from pipelines.config import ScalingConfig
from pipelines.tracking import REDACTED, RunLogger, is_secret_key, looks_like_secret, sanitize


@dataclasses.dataclass
class SmallConfig:
    lr: float = 0.1
    key_queue_size: int = 16
    scaling: ScalingConfig = dataclasses.field(default_factory=ScalingConfig)


class TcpProxy:
    """A loopback TCP forwarder whose port can be closed and reopened: a controllable outage."""

    def __init__(self, upstream_port: int):
        self.upstream_port = upstream_port
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = s.getsockname()[1]
        self._server: socket.socket | None = None
        self._conns: list[socket.socket] = []

    @property
    def uri(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def up(self) -> None:
        self._server = socket.socket()
        self._server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._server.bind(("127.0.0.1", self.port))
        self._server.listen(16)
        threading.Thread(target=self._accept, args=(self._server,), daemon=True).start()

    def down(self) -> None:
        self._server.close()
        for conn in self._conns:
            try:
                conn.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            conn.close()
        self._conns.clear()

    def _accept(self, server: socket.socket) -> None:
        while True:
            try:
                client, _ = server.accept()
            except OSError:
                return
            upstream = socket.create_connection(("127.0.0.1", self.upstream_port))
            self._conns += [client, upstream]
            for a, b in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pump, args=(a, b), daemon=True).start()

    @staticmethod
    def _pump(src: socket.socket, dst: socket.socket) -> None:
        try:
            while data := src.recv(65536):
                dst.sendall(data)
        except OSError:
            pass
        finally:
            for s in (src, dst):
                try:
                    s.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass


@pytest.fixture
def proxy(mlflow_server):
    p = TcpProxy(int(mlflow_server.rsplit(":", 1)[1]))
    p.up()
    yield p
    p.down()


def test_credential_keys_and_values_are_filtered():
    for key in ("aws_secret_access_key", "AWS_ACCESS_KEY_ID", "HF_TOKEN", "db.password", "s3.secretKey",
                "api_key", "MLFLOW_TRACKING_TOKEN", "token"):
        assert is_secret_key(key), key
    for key in ("key_queue_size", "moco_key_dim", "cls_token", "num_tokens", "optim.lr", "primary_key"):
        assert not is_secret_key(key), key
    assert looks_like_secret("AKIAIOSFODNN7EXAMPLE")
    assert looks_like_secret("wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY")
    assert looks_like_secret("ghp_" + "a1B2" * 9)
    for value in ("/mnt/datasets/Kinetics400/videos/train", "0123456789abcdef" * 4, "s3d_debug"):
        assert not looks_like_secret(value), value
    out = sanitize({"aws_secret_access_key": "x", "note": "AKIAIOSFODNN7EXAMPLE",
                    "db": "postgresql://vid:hunter2@db:5432/runs", "lr": 0.1, "long": "x" * 7000,
                    "k" * 300: 1}, max_value=6000)
    assert "aws_secret_access_key" not in out and out["note"] == REDACTED
    assert out["db"] == "postgresql://vid:***@db:5432/runs" and out["lr"] == "0.1"
    assert len(out["long"]) == 6000 and out["long"].endswith("chars]")
    assert all(len(k) <= 250 for k in out)


def test_tracking_uri_default_and_helpers(monkeypatch, tmp_path):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.delenv("VIDRAY_HOME", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path / "user"))
    assert tracking.tracking_uri() == f"sqlite:///{tmp_path / 'user' / '.vidray' / 'mlflow.db'}"
    monkeypatch.setenv("VIDRAY_HOME", str(tmp_path))  # a submitted job's copy points back at the project
    assert tracking.tracking_uri() == f"sqlite:///{tmp_path / 'mlflow.db'}"
    monkeypatch.delenv("VIDRAY_HOME")
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://example:5000")
    assert tracking.tracking_uri() == "http://example:5000"
    assert len(tracking.git_commit()) >= 7
    monkeypatch.delitem(sys.modules, "ray", raising=False)  # as if Ray were not initialised
    monkeypatch.delenv("RAY_JOB_ID", raising=False)
    monkeypatch.setenv("RAY_JOB_SUBMISSION_ID", "raysubmit_abc")
    assert tracking.ray_job_id() == "raysubmit_abc"
    assert tracking.default_tags()["ray_submission_id"] == "raysubmit_abc"
    monkeypatch.delenv("VIDRAY_GIT_COMMIT", raising=False)
    monkeypatch.setattr("pipelines.tracking.store.PROJECT_ROOT", Path("/"))  # no git repository there
    assert tracking.git_commit() == "unknown"
    monkeypatch.setenv("VIDRAY_GIT_COMMIT", "abc123")
    assert tracking.git_commit() == "abc123"


def test_other_ranks_do_nothing(tmp_path):
    logger = RunLogger("never", rank=1, uri="http://127.0.0.1:9", spill_dir=tmp_path)
    assert logger.start("r", SmallConfig()) is None
    logger.log_metrics({"loss": 1.0}, step=0)
    assert logger.buffered == 0 and logger.end() and logger.log_model(None, "m", None) is None


def test_run_logger_logs_everything(mlflow_server, tmp_path):
    from PIL import Image

    logger = RunLogger("tracking-test", uri=mlflow_server, spill_dir=tmp_path)
    run_id = logger.start("run-a", SmallConfig(), tags={
        "dataset_fingerprint": "f" * 64, "aws_secret_access_key": "nope", "note": "AKIAIOSFODNN7EXAMPLE"})
    assert run_id
    history = []
    for step in range(5):
        logger.log_metrics({"train/loss": 2.0 - 0.1 * step, "train/top1": 0.1 * step, "train/lr": 0.1,
                            "train/clips_per_s": 100.0, "train/data_wait_frac": 0.2}, step=step)
        history.append({"loss": 2.0 - 0.1 * step, "top1": 0.1 * step, "lr": 0.1})
    logger.log_artifact(Image.new("RGB", (64, 32), "red"), "preview", name="contact_sheet.png")
    curves = logger.log_curves(history)
    assert curves.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert logger.end()

    client = MlflowClient(mlflow_server)
    run = client.get_run(run_id)
    assert run.info.status == "FINISHED"
    assert run.data.params["lr"] == "0.1" and run.data.params["scaling.num_workers"] == "2"
    assert run.data.params["key_queue_size"] == "16"  # "key" alone is not a credential
    tags = run.data.tags
    assert tags["dataset_fingerprint"] == "f" * 64 and tags["git_commit"] != ""
    assert "aws_secret_access_key" not in tags and tags["note"] == REDACTED
    assert [m.value for m in client.get_metric_history(run_id, "train/top1")] == pytest.approx(
        [0.0, 0.1, 0.2, 0.3, 0.4])
    files = {f.path for f in client.list_artifacts(run_id)} | {
        f.path for d in ("preview", "plots") for f in client.list_artifacts(run_id, d)}
    assert {"config.yaml", "preview/contact_sheet.png", "plots/curves.png"} <= files


def test_resume_rule(mlflow_server, tmp_path):
    first = RunLogger("resume-test", uri=mlflow_server, spill_dir=tmp_path)
    run_id = first.start("job-1", {"lr": 0.1})
    first.log_metrics({"loss": 1.0}, step=0)
    first.end("FAILED")

    second = RunLogger("resume-test", uri=mlflow_server, spill_dir=tmp_path)
    assert second.start("job-1", {"lr": 0.2, "epochs": 3}) == run_id  # FAILED: resumed
    second.log_metrics({"loss": 0.5}, step=1)
    second.end()
    run = MlflowClient(mlflow_server).get_run(run_id)
    assert run.data.params == {"lr": "0.1", "epochs": "3"}  # params are immutable in MLflow
    assert run.data.tags["resume_changed_params"] == "lr" and run.data.tags["resume_count"] == "1"
    assert len(MlflowClient(mlflow_server).get_metric_history(run_id, "loss")) == 2

    third = RunLogger("resume-test", uri=mlflow_server, spill_dir=tmp_path)
    assert third.start("job-1") != run_id  # FINISHED: a new run
    third.end()


@pytest.fixture
def fast_http_retries(monkeypatch):
    """MLflow's own per-request retries kept short so the test measures ours."""
    for name, value in {"MLFLOW_HTTP_REQUEST_MAX_RETRIES": "1", "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "0",
                        "MLFLOW_HTTP_REQUEST_BACKOFF_JITTER": "0"}.items():
        monkeypatch.setenv(name, value)


def test_outage_buffers_spills_and_recovers(proxy, mlflow_server, tmp_path, caplog, fast_http_retries):
    logger = RunLogger("outage-test", uri=proxy.uri, flush_every_s=0.05, max_buffered=100,
                       spill_dir=tmp_path, backoff_s=(0.05, 0.2))
    run_id = logger.start("run-outage", {"lr": 0.1})
    assert run_id
    proxy.down()
    with caplog.at_level(logging.WARNING, logger="pipelines.tracking"):
        for step in range(300):  # training goes on; nothing raises or blocks
            logger.log_metrics({"loss": 1.0 / (step + 1)}, step=step)
        logger.log_artifact(tmp_path / "note.txt" if (tmp_path / "note.txt").write_text("hi") else None)
        assert not logger.flush()
        assert logger.buffered == 300 and logger._spilled > 0  # bounded memory: the rest is on disk
        proxy.up()
        assert logger.flush()
    unreachable = [r for r in caplog.records if "unreachable since" in r.getMessage()]
    assert len(unreachable) == 1 and "metrics buffered" in unreachable[0].getMessage()
    assert any("reachable again" in r.getMessage() for r in caplog.records)
    assert logger.buffered == 0 and len(logger.outages) == 1
    assert logger.end()
    client = MlflowClient(mlflow_server)
    history = client.get_metric_history(run_id, "loss")
    assert sorted(m.step for m in history) == list(range(300))
    assert client.get_run(run_id).data.tags["tracking_outages"] == "1"
    assert "note.txt" in {f.path for f in client.list_artifacts(run_id)}


def test_start_while_server_is_down(proxy, mlflow_server, tmp_path, fast_http_retries):
    proxy.down()
    logger = RunLogger("outage-test", uri=proxy.uri, spill_dir=tmp_path, backoff_s=(0.05, 0.1))
    assert logger.start("run-late", {"lr": 0.3}) is None  # no exception: the run is created later
    logger.log_metrics({"loss": 1.0}, step=0)
    proxy.up()
    assert logger.end()
    run = MlflowClient(mlflow_server).get_run(logger.run_id)
    assert run.data.params["lr"] == "0.3" and run.data.metrics["loss"] == 1.0


def test_undelivered_metrics_are_kept_on_disk(tmp_path, caplog):
    with socket.socket() as s:  # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        closed = s.getsockname()[1]
    logger = RunLogger("nowhere", uri=f"http://127.0.0.1:{closed}", spill_dir=tmp_path, backoff_s=(0.05, 0.1))
    with caplog.at_level(logging.WARNING, logger="pipelines.tracking"):
        assert logger.start("run-x", {"lr": 0.1}) is None
        for step in range(20):
            logger.log_metrics({"loss": float(step)}, step=step)
        assert not logger.end()
    assert len(logger.spill_path.read_text().splitlines()) == 20
    assert any("not delivered" in r.getMessage() and str(logger.spill_path) in r.getMessage()
               for r in caplog.records)


def test_flush_before_a_checkpoint_does_not_wait_on_a_dead_server(tmp_path):
    """``flush_if_reachable`` (the loop's flush before a checkpoint; delivery: tests/pipelines/train/test_loop.py)."""
    with socket.socket() as s:  # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        closed = s.getsockname()[1]
    logger = RunLogger("nowhere", uri=f"http://127.0.0.1:{closed}", spill_dir=tmp_path, backoff_s=(60.0, 60.0))
    assert logger.start("run-x") is None  # the first flush failed: an outage
    logger.log_metrics({"loss": 1.0}, step=1)
    started = time.perf_counter()
    assert not logger.flush_if_reachable()
    assert time.perf_counter() - started < 0.5 and logger.buffered == 1  # no attempt: the backoff decides
    assert RunLogger("never", rank=1, spill_dir=tmp_path).flush_if_reachable()  # other ranks: nothing to do
    assert not logger.end()


def test_embedded_default_store(tmp_path, monkeypatch):
    """No MLFLOW_TRACKING_URI: sqlite in ~/.vidray, artifacts in ~/.vidray/mlruns/<experiment>."""
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.delenv("VIDRAY_HOME", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path / "user"))
    tmp_path = tmp_path / "user" / ".vidray"
    logger = RunLogger("embedded test", spill_dir=tmp_path / "spill")
    run_id = logger.start("local", SmallConfig())
    logger.log_metrics({"loss": 0.5}, step=0)
    assert logger.end()
    client = MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    assert client.get_run(run_id).data.metrics == {"loss": 0.5}
    assert (tmp_path / "mlruns" / "embedded_test").is_dir()
    assert list((tmp_path / "mlruns").rglob("config.yaml"))


def test_a_model_goes_with_its_run_not_to_the_working_directory(tmp_path, monkeypatch):
    """A registered model's files land in its run's experiment (under ~/.vidray/mlruns), wherever the
    process runs: not in the Default experiment's ./mlruns of the process that made the database
    (a job's uploaded working dir under ``ray job submit``, which Ray deletes)."""
    import torch

    import vidmodels

    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.setenv("VIDRAY_HOME", str(tmp_path / "home"))
    (tmp_path / "job-copy").mkdir()
    monkeypatch.chdir(tmp_path / "job-copy")  # as a submitted job runs in its uploaded copy
    logger = RunLogger("model home", spill_dir=tmp_path / "spill")
    run_id = logger.start("with-model")
    encoder = vidmodels.create_backbone("r3d_debug", num_classes=0)
    t, h, w = vidmodels.get_model_info("r3d_debug").input_size
    version = logger.log_model(encoder, "encoder", torch.zeros(1, 3, t, h, w), "model-home",
                               backbone="r3d_debug", backbone_kwargs={"num_classes": 0})
    assert logger.end() and version is not None
    client = MlflowClient(f"sqlite:///{tmp_path / 'home' / 'mlflow.db'}")
    model = client.get_logged_model(version.source.removeprefix("models:/"))
    assert model.experiment_id == client.get_run(run_id).info.experiment_id
    assert Path(model.artifact_location.removeprefix("file://")).is_relative_to(tmp_path / "home" / "mlruns")
    assert not (tmp_path / "job-copy" / "mlruns").exists()


class Branchy(torch.nn.Module):
    """A module ``torch.export`` refuses: its branch depends on the input's values."""

    def __init__(self) -> None:
        super().__init__()
        self.lin = torch.nn.Linear(4, 2)

    def forward(self, x_BD):
        return self.lin(x_BD) if x_BD.mean() > 0 else -self.lin(x_BD)


def test_a_module_that_does_not_export_is_registered_pickled(tmp_path, monkeypatch, caplog):
    """``pt2`` needs ``torch.export``; a module it refuses (data-dependent control flow) is logged
    in MLflow's pickle format instead, with a warning, and its registered version loads and
    computes what the module computes, at any batch size."""
    import mlflow

    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.setenv("VIDRAY_HOME", str(tmp_path / "home"))
    module = Branchy()
    logger = RunLogger("no export", spill_dir=tmp_path / "spill")
    logger.start("branchy")
    with caplog.at_level(logging.WARNING, logger="pipelines.tracking"):
        version = logger.log_model(module, "encoder", torch.ones(1, 4), "branchy")
    assert logger.end() and version is not None and str(version.version) == "1"
    assert "does not torch.export (GuardOnDataDependentSymNode" in caplog.text
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'home' / 'mlflow.db'}")
    loaded = mlflow.pytorch.load_model("models:/branchy/1")
    for x in (torch.randn(3, 4) + 1, torch.randn(1, 4) - 1):
        torch.testing.assert_close(loaded(x), module(x))
