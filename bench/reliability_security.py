"""The ``security`` reliability scenario: the Ray token, bound addresses and a credential scan.

:func:`security` checks the job API and dashboard without, with a wrong and with the token,
lists the addresses the head's sockets listen on, submits a job (ingest + train from S3) with
``ray job submit``, and :func:`scan_for_secrets` then looks for the credentials in the MLflow
store, its artifacts, the job's output and every node's Ray logs. ``bench/reliability.py``
runs it with the other scenarios and re-exports both functions.
"""

from __future__ import annotations

import json
import shlex
import subprocess
import time
from pathlib import Path
from typing import Any

from bench.reliability_cluster import auth_token, grep_files, http_get, listening_sockets, process_tree
from bench.reliability_stack import BUCKET, ROOT, Stack, s3_source, train_sets


def security(st: Stack, *, videos: int = 6) -> dict[str, Any]:
    """Token on the job API and dashboard, bound addresses, and a credential scan after a submitted job."""
    from pipelines.cluster import ray_job_submit

    head, token = st.cluster.head, auth_token(st.cluster.env)
    api = f"{head.dashboard_url}/api/jobs/"
    statuses = {"no_token": http_get(api)[0], "wrong_token": http_get(api, "0" * 64)[0],
                "token": http_get(api, token)[0],
                "dashboard_nodes_no_token": http_get(f"{head.dashboard_url}/nodes?view=summary")[0],
                "submit_no_token": _post_status(api, {"entrypoint": "echo pwned"})}
    names = {port: name for name, port in head.ports.items()}
    sockets = [{"address": a, "port": p, "what": names.get(p, "other")}
               for a, p in listening_sockets(process_tree(head.pid))]
    dashboard_binds = sorted({s["address"] for s in sockets if s["port"] == head.ports["dashboard"]})
    for sock in sockets:  # what answers plain HTTP without a token on an address other than loopback
        if sock["address"] not in ("127.0.0.1", "[::ffff:127.0.0.1]", "[::1]"):
            sock["http_no_token"] = _http_probe(sock["port"])

    src, expected = s3_source(st, "sec-raw", videos, 0.0)
    dst, runs = f"s3://{BUCKET}/sec-ds", st.work / "sec-runs"
    sets = train_sets(dst, runs, "reliability-sec", epochs=1, log_every=1)
    steps = [["python", "jobs/ingest.py", "--format", "ucf101", "--src", src, "--dst", dst],
             ["python", "jobs/train.py", "--method", "supervised", "--variant", "debug",
              *[x for s in sets for x in ("--set", s)], "--set", "scaling.num_workers=1"]]
    entry = ["bash", "-c", " && ".join(shlex.join(cmd) for cmd in steps)]  # the CLI quotes each token
    runtime_env = {"env_vars": {"RAY_ADDRESS": st.cluster.address}}  # nothing secret: nodes hold the credentials
    started = time.perf_counter()
    out = ray_job_submit(head.dashboard_url, str(ROOT), entry, runtime_env=runtime_env, env=st.cluster.env,
                         capture=True)
    job_s = time.perf_counter() - started
    job_output = out.stdout + out.stderr
    listed = subprocess.run([head.ray_bin, "job", "list", "--address", head.dashboard_url], env=st.cluster.env,
                            capture_output=True, text=True, timeout=120).stdout
    scan = scan_for_secrets(st, {"job_output": job_output, "ray_job_list": listed})
    return {"http_status": statuses, "dashboard_bound_to": dashboard_binds, "head_listening": sockets,
            "job_exit": out.returncode, "job_s": round(job_s, 1), "job_trained": "epoch 1/1" in job_output,
            "secret_scan": scan, "job_output_tail": job_output[-1500:] if out.returncode else ""}


def _http_probe(port: int) -> str:
    """``GET /`` and ``GET /metrics`` on this machine's own address: the status, or why there is none."""
    import socket as _socket

    with _socket.socket(_socket.AF_INET, _socket.SOCK_DGRAM) as udp:  # the address Ray picks; nothing is sent
        udp.connect(("192.0.2.1", 9))
        host = udp.getsockname()[0]
    answers = []
    for path in ("/", "/metrics"):
        try:
            answers.append(f"{path} {http_get(f'http://{host}:{port}{path}', timeout=3)[0]}")
        except Exception as exc:  # noqa: BLE001 - a gRPC or raw TCP port answers no HTTP: that is the answer
            answers.append(f"{path} {type(exc).__name__}")
    return ", ".join(answers)


def _post_status(url: str, body: dict) -> int:
    import urllib.error
    import urllib.request

    req = urllib.request.Request(url, data=json.dumps(body).encode(), method="POST",
                                 headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=10) as r:
            return r.status
    except urllib.error.HTTPError as err:
        return err.code


def scan_for_secrets(st: Stack, texts: dict[str, str]) -> dict[str, Any]:
    """Where the credentials (and the Ray token) appear: MLflow params/tags, its DB file and artifacts,
    the given texts, and every file in the nodes' Ray temp dirs."""
    from mlflow import MlflowClient

    needles = dict(st.secrets)
    client = MlflowClient(st.mlflow.url)
    runs = [r for e in client.search_experiments() for r in client.search_runs([e.experiment_id])]
    fields = "\n".join(json.dumps({"params": r.data.params, "tags": r.data.tags, "name": r.info.run_name})
                       for r in runs)
    found: dict[str, list[str]] = {name: [] for name in needles}
    for where, text in {"mlflow_params_and_tags": fields, **texts}.items():
        for name, value in needles.items():
            if value in text:
                found[name].append(where)
    hits = grep_files(st.mlflow.workdir, list(needles.values()))  # mlflow.db, artifacts/, server.log
    for name, value in needles.items():
        found[name] += [f"mlflow:{Path(f).relative_to(st.mlflow.workdir)}" for f in hits[value]]
    for root in st.temp_dirs():
        hits = grep_files(root, list(needles.values()))
        for name, value in needles.items():
            found[name] += [f"ray_temp:{f}" for f in hits[value]]
    artifact_files = sum(1 for p in Path(st.mlflow.artifact_root).rglob("*") if p.is_file()) \
        if Path(st.mlflow.artifact_root).exists() else 0
    return {"runs_scanned": len(runs), "params_scanned": sum(len(r.data.params) for r in runs),
            "tags_scanned": sum(len(r.data.tags) for r in runs), "artifact_files_scanned": artifact_files,
            "ray_files_scanned": sum(1 for d in st.temp_dirs() for p in Path(d).rglob("*") if p.is_file()),
            "found": found}
