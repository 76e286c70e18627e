"""What the reliability scenarios run on, and the steps they share (see ``bench/reliability.py``).

:func:`stack` starts the services and the cluster (:class:`Stack`); the helpers run ingest and
training drivers on it, read their flight records and check what they produced.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import os
import secrets
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Iterator

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import pipelines  # noqa: E402,F401 - sets Ray's auth mode before anything imports ray
from bench.common import log  # noqa: E402
from bench.reliability_cluster import NODE_RESOURCE, LocalCluster  # noqa: E402
from bench.reliability_data import make_ucf_source, upload_tree  # noqa: E402
from bench.reliability_services import MlflowServer, MotoS3, TcpSwitch  # noqa: E402
from bench.reliability_train import read_events  # noqa: E402
from bench.s3_faults import FaultProxy  # noqa: E402
from pipelines.data.workers import patched_environ  # noqa: E402

BUCKET = "vidray-reliability"
EXPERIMENT = "supervised"
# Every scenario trains the supervised method at debug size (s3d_debug, 8 x 64² clips) from a manifest
# it made, with 2 workers of 0.5 CPU, no per-epoch validation, checkpoints on local disk (all nodes
# share this machine's filesystem; on a real cluster storage_path is s3://).
BASE_SETS = ("data.synthetic=none", "data.limit=none", "val_split=none", "scaling.num_workers=2",
             "scaling.cpus_per_worker=0.5", "loop.batch_size=4")
RETRY_CONFIG = {"botocore": "retries max_attempts 5 (= up to 5 retries, 6 attempts), mode adaptive (client-side "
                            "rate limiting after throttles); connect_timeout 10 s, read_timeout 60 s "
                            "(pipelines/io/storage.py s3_options)",
                "s3fs": "retries 5 on its retryable errors (s3fs default)",
                "vidray": "storage.retry: 5 attempts, exponential backoff with full jitter, 0.2 s base, "
                          "10 s cap, on transient errors"}


@dataclasses.dataclass
class Stack:
    """What every scenario runs on: services, cluster, and the secrets to look for (``bench/reliability.py``)."""

    work: Path
    cluster: LocalCluster
    s3: MotoS3
    proxy: FaultProxy
    mlflow: MlflowServer
    switch: TcpSwitch
    secrets: dict[str, str] = dataclasses.field(repr=False)  # never in a failing test's traceback

    @property
    def env(self) -> dict[str, str]:
        """A driver's environment: the cluster's (credentials included) and its address."""
        return {**self.cluster.env, "RAY_ADDRESS": self.cluster.address}

    @contextlib.contextmanager
    def reading_s3(self) -> Iterator[None]:
        """This process reads the bucket directly (not through the fault proxy) while inside."""
        with patched_environ({"AWS_ENDPOINT_URL": self.s3.url, "AWS_ACCESS_KEY_ID": "admin",
                              "AWS_SECRET_ACCESS_KEY": "admin", "AWS_REGION": "us-east-1"},
                             unset=("AWS_ENDPOINT_URL_S3",)):
            yield

    def temp_dirs(self) -> list[str]:
        nodes = [self.cluster.head.temp_dir] + [d for n in self.cluster.workers for d in n.temp_dirs]
        return [d for d in nodes if d]


@contextlib.contextmanager
def stack(work: Path, *, head_cpus: int = 0, worker_cpus: tuple[int, ...] = (2, 2),
          keep_logs: bool = False) -> Iterator[Stack]:
    """Start S3 + fault proxy, MLflow + switch, and the cluster; stop all of it on exit.

    ``head_cpus=2, worker_cpus=()`` is a one-node cluster (the CI-sized tests)."""
    work.mkdir(parents=True, exist_ok=True)
    creds = {"AWS_ACCESS_KEY_ID": "AKIA" + secrets.token_hex(8).upper(),
             "AWS_SECRET_ACCESS_KEY": secrets.token_urlsafe(30)}
    token = work / "ray_token"
    token.write_text(secrets.token_hex(32))
    token.chmod(0o600)
    with contextlib.ExitStack() as stop:
        s3 = stop.enter_context(MotoS3(work / "moto"))
        s3.create_bucket(BUCKET)
        proxy = stop.enter_context(FaultProxy(s3.url, rate=0.0, seed=0))
        mlflow = MlflowServer(work / "mlflow").launch()  # it boots while the cluster starts
        stop.callback(mlflow.stop)
        switch = TcpSwitch(mlflow.port)
        switch.on()
        stop.callback(switch.off)
        base = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "MLFLOW_", "RAY_"))}
        env = {**base, **creds, "AWS_ENDPOINT_URL": proxy.url, "AWS_REGION": "us-east-1",
               "MLFLOW_TRACKING_URI": switch.url, "VIDRAY_HOME": str(work / "home"), "VIDRAY_GIT_COMMIT": "bench",
               "RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN_PATH": str(token), "PYTHONPATH": str(ROOT),
               "RAY_DATA_DISABLE_PROGRESS_BARS": "1"}
        cluster = LocalCluster(head_cpus=head_cpus, worker_cpus=worker_cpus, env=env, keep_logs=keep_logs, echo=log)
        stop.enter_context(cluster)
        mlflow.wait_ready()
        yield Stack(work, cluster, s3, proxy, mlflow, switch,
                    {**creds, "RAY_AUTH_TOKEN": token.read_text().strip()})


# ----------------------------------------------------------------------------- helpers


def run_driver(st: Stack, args: list[str], *, timeout: float, env: dict[str, str] | None = None
               ) -> subprocess.CompletedProcess:
    """``python <args>`` from the checkout as a driver of the cluster; output captured."""
    return subprocess.run([sys.executable, *args], cwd=ROOT, env=env or st.env, capture_output=True, text=True,
                          timeout=timeout)


def ingest(st: Stack, src: str, dst: str, *, timeout: float = 1800) -> tuple[dict[str, Any], float, str]:
    """``jobs/ingest.py --format ucf101 --json`` on the cluster: ``(report, seconds, output)``."""
    started = time.perf_counter()
    out = run_driver(st, ["jobs/ingest.py", "--format", "ucf101", "--src", src, "--dst", dst, "--json"],
                     timeout=timeout)
    seconds = time.perf_counter() - started
    if out.returncode != 0:
        raise RuntimeError(f"ingest {src} -> {dst} failed ({out.returncode}):\n{out.stderr[-4000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1]), seconds, out.stdout + out.stderr


def train_sets(manifest_url: str, storage: Path, run_name: str, *, epochs: int, log_every: int = 2,
               checkpoint_every: int = 0) -> list[str]:
    return [*BASE_SETS, f"data.manifest={manifest_url}", f"storage_path={storage}", f"run_name={run_name}",
            f"model_name={run_name}", f"loop.epochs={epochs}", f"loop.log_every_n_steps={log_every}",
            f"loop.checkpoint_every_n_steps={checkpoint_every}"]


def start_training(st: Stack, sets: list[str], events: Path, *, spread: bool = True) -> subprocess.Popen:
    """The training driver (``bench/reliability_train.py``) as a background process; output in ``events``.log."""
    args = [sys.executable, "bench/reliability_train.py", "--events", str(events)]
    if spread:
        args += ["--spread", ",".join(NODE_RESOURCE.format(n.index) for n in st.cluster.workers)]
    for s in sets:
        args += ["--set", s]
    with open(events.with_suffix(".log"), "w") as out:  # the child keeps its own descriptor
        return subprocess.Popen(args, cwd=ROOT, env=st.env, stdout=out, stderr=subprocess.STDOUT)


def finish_training(proc: subprocess.Popen, events: Path, timeout: float) -> tuple[int, str]:
    """Wait for the driver; ``(exit status, output tail)``."""
    try:
        proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
    return proc.returncode, events.with_suffix(".log").read_text(errors="replace")


def train(st: Stack, sets: list[str], events: Path, *, timeout: float = 1800) -> dict[str, Any]:
    """A whole training run; its events, seconds and exit status."""
    started = time.perf_counter()
    code, tail = finish_training(start_training(st, sets, events), events, timeout)
    evs = read_events(events)
    return {"exit": code, "seconds": round(time.perf_counter() - started, 1), "events": evs, "tail": tail[-6000:],
            "retry_warnings": tail.count("; retry ")}


def wait_for(predicate, timeout: float, what: str, proc: subprocess.Popen | None = None, poll_s: float = 0.5):
    """Poll ``predicate()`` until it returns something truthy; raises after ``timeout`` or if ``proc`` exits."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        value = predicate()
        if value:
            return value
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"the driver exited ({proc.returncode}) while waiting for {what}")
        time.sleep(poll_s)
    raise TimeoutError(f"{what} did not happen within {timeout:.0f}s")


def reports(events: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [e for e in events if e["event"] == "report"]


def epoch_steps(events: list[dict[str, Any]]) -> list[int]:
    """Optimizer steps per finished epoch (its end-of-epoch reports), in order."""
    ends = [e for e in reports(events) if e["epoch_end"]]
    return [int(e["step"]) - (int(ends[i - 1]["step"]) if i else 0) for i, e in enumerate(ends)]


def phase_run(st: Stack, run_name: str):
    """The MLflow phase run ``<run_name>.supervised``, read from the server directly (not via the switch)."""
    from mlflow import MlflowClient

    client = MlflowClient(st.mlflow.url)
    exp = client.get_experiment_by_name(EXPERIMENT)
    runs = client.search_runs([exp.experiment_id], filter_string=f"attributes.run_name = '{run_name}.supervised'")
    return runs[0] if runs else None


def mlflow_history(st: Stack, run_name: str, key: str) -> list[Any]:
    """The metric history of ``key`` in the phase run of ``run_name``."""
    from mlflow import MlflowClient

    run = phase_run(st, run_name)
    return MlflowClient(st.mlflow.url).get_metric_history(run.info.run_id, key) if run else []


def sha256_file(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def per_step(sets: list[str]) -> int:
    values = dict(s.split("=", 1) for s in sets)
    return int(values["loop.batch_size"]) * int(values["scaling.num_workers"])


_DATASETS: dict[tuple[str, int], str] = {}


def local_dataset(st: Stack, videos: int) -> str:
    """A clean ingested dataset of ``videos`` tiny videos on local disk (made once per stack)."""
    key = (str(st.work), videos)
    if key not in _DATASETS:
        src, dst = st.work / f"clean-{videos}-src", st.work / f"clean-{videos}"
        make_ucf_source(src, videos)
        report, seconds, _ = ingest(st, str(src), str(dst))
        log(f"ingested {report['accepted']} clean videos in {seconds:.0f}s")
        _DATASETS[key] = str(dst)
    return _DATASETS[key]


def s3_source(st: Stack, name: str, videos: int, broken_frac: float, *, workers: int = 1) -> tuple[str, dict]:
    """Render a source, upload it to ``s3://BUCKET/<name>`` directly (not through the proxy)."""
    local = st.work / name
    started = time.perf_counter()
    expected = make_ucf_source(local, videos, broken_frac=broken_frac, workers=workers)
    rendered = time.perf_counter() - started
    files = upload_tree(local, f"s3://{BUCKET}/{name}", endpoint=st.s3.url)
    expected.update(render_s=round(rendered, 1), uploaded_files=files,
                    hashes={p.stem: sha256_file(p) for p in (local / "UCF-101").rglob("*.mp4")})
    return f"s3://{BUCKET}/{name}", expected


def check_ingest(report: dict[str, Any], dst: str, expected: dict[str, Any]) -> dict[str, Any]:
    """Accounting, quarantine kinds and reasons, and the accepted bytes against the source's."""
    from pipelines.io import manifest

    rows = manifest.read_manifest(dst).to_pylist()
    quarantine = {r["video_id"]: r for r in manifest.read_quarantine(dst).to_pylist()}
    wrong_kind = {v: (quarantine.get(v, {}).get("kind"), k) for v, k in expected["broken"].items()
                  if quarantine.get(v, {}).get("kind") != k}
    substituted = [r["video_id"] for r in rows if r["content_hash"] != expected["hashes"].get(r["video_id"])]
    bad_frames = [r["video_id"] for r in rows if r["num_frames"] != expected["frames"]]
    return {"inputs": report["inputs"], "accepted": report["accepted"], "quarantined": report["quarantined"],
            "reconciles": report["inputs"] == report["accepted"] + report["quarantined"] == expected["inputs"],
            "reasons": report["reasons"], "expected_broken": len(expected["broken"]),
            "broken_quarantined_with_expected_kind": len(expected["broken"]) - len(wrong_kind),
            "wrong_or_missing_kind": wrong_kind,
            "good_videos_quarantined": sorted(set(quarantine) - set(expected["broken"])),
            "accepted_equals_good": sorted(r["video_id"] for r in rows) == sorted(expected["good"]),
            "accepted_with_other_bytes": substituted, "accepted_with_wrong_frame_count": bad_frames,
            "reasons_all_explained": all(len(q["reason"] or "") > 20 for q in quarantine.values())}


def check_training(run: dict[str, Any], dst: str, videos_train: int, step_clips: int) -> dict[str, Any]:
    """Did an epoch see every video: steps = floor(videos / clips per step), nothing quarantined at decode."""
    from pipelines.io import manifest

    decode = [r for r in manifest.read_quarantine(dst).to_pylist() if r["stage"] == "decode"]
    steps = epoch_steps(run["events"])
    return {"exit": run["exit"], "seconds": run["seconds"], "epoch_steps": steps,
            "expected_steps_per_epoch": videos_train // step_clips,
            "clips_trained_per_epoch": [s * step_clips for s in steps], "train_videos": videos_train,
            "decode_quarantined": len(decode),
            "decode_quarantine_kinds": sorted({r["kind"] for r in decode})}
