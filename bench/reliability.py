"""Reliability at cluster scale: what survives a dead node, storage faults, a tracking outage, bad data.

    python bench/reliability.py [--quick] [--only node_failure,s3_faults,...] [--outage-s 60] [--keep]

Prints ONE JSON object on stdout (progress on stderr); the figures and their context go to
``bench/RESULTS.md`` ("Reliability at cluster scale"). Everything runs on this machine, on
loopback, and is stopped by process group afterwards (never ``ray stop``):

* a Ray cluster of a 0-CPU head (:class:`~pipelines.cluster.LocalHead`, token auth, its own
  token file) and two worker nodes of 2 CPUs each (``ray start --address``, own temp dirs,
  :mod:`bench.reliability_cluster`);
* moto's S3 server behind :class:`~bench.s3_faults.FaultProxy` (every S3 client of every node
  talks to the proxy: ``AWS_ENDPOINT_URL``), an ``mlflow server`` behind a
  :class:`~bench.reliability_services.TcpSwitch` (``MLFLOW_TRACKING_URI``). The credentials
  are random strings that the security scan looks for.

Scenarios (each a function returning its figures; ``tests/reliability`` calls the same
functions at smaller sizes and asserts on what they return; ``security`` lives in
:mod:`bench.reliability_security` and is re-exported here):

``security``        the job API / dashboard without, with a wrong and with the token; the
                    addresses the head's sockets listen on; a job (ingest + train from S3)
                    submitted with ``ray job submit``, then the MLflow store, its artifacts,
                    the job's output and every node's Ray logs scanned for the credentials.
``s3_faults``       ingest and one training epoch reading S3, without faults, then with
                    ``--fault-rate`` (500, 503 SlowDown, connection reset, 2 s stall, in turn
                    at random): requests, faults, retries, seconds, and whether every video is
                    accounted for with identical manifests.
``bad_data``        ``--bad-videos`` tiny videos with 5 % broken (corrupt, truncated, empty,
                    non-video, missing), ingested from S3 and trained one epoch over S3.
``tracking_outage`` the MLflow server is unreachable for ``--outage-s`` seconds during a
                    2-node training run: training goes on; every metric arrives afterwards.
``node_failure``    a 2-worker run spread over both worker nodes; the raylet of the node of
                    rank ``--kill-rank`` is SIGKILLed mid-epoch, after a mid-epoch checkpoint:
                    the run finishes on the remaining node from that checkpoint, with the
                    planned number of optimizer steps. The quarantine ledger lives on the
                    driver's node, the head (``pipelines.cluster.on_this_node``); the epoch
                    clock is a key in the head's GCS (``pipelines.data.clock``).

``--quick`` is the test size (fewer videos, 20 s outage, 200 bad-data videos).
"""

from __future__ import annotations

import argparse
import json
import math
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import pipelines  # noqa: E402,F401 - sets Ray's auth mode before anything imports ray
from bench import common  # noqa: E402
from bench.common import load1, log  # noqa: E402
from bench.reliability_cluster import alive_actors, auth_token  # noqa: E402
from bench.reliability_security import scan_for_secrets, security  # noqa: E402,F401 - re-exported (measure: globals())
from bench.reliability_stack import (  # noqa: E402
    BUCKET,
    RETRY_CONFIG,
    Stack,
    check_ingest,
    check_training,
    finish_training,
    ingest,
    local_dataset,
    mlflow_history,
    per_step,
    phase_run,
    reports,
    s3_source,
    stack,
    start_training,
    train,
    train_sets,
    wait_for,
)
from bench.reliability_train import read_events  # noqa: E402
from bench.s3_faults import KINDS  # noqa: E402


# ----------------------------------------------------------------------------- scenarios


def s3_faults(st: Stack, *, videos: int = 24, broken_frac: float = 0.125, rate: float = 0.1,
              kinds: tuple[str, ...] = KINDS, baseline: bool = True) -> dict[str, Any]:
    """Ingest + one training epoch over S3, without (unless not ``baseline``) and with injected faults."""
    src, expected = s3_source(st, f"faults-raw-{videos}", videos, broken_frac)
    out: dict[str, Any] = {"videos": videos, "broken": len(expected["broken"]), "fault_rate": rate,
                           "kinds": list(kinds), "retry_config": RETRY_CONFIG}
    manifests = {}
    for mode, r in (("baseline", 0.0), ("faults", rate))[0 if baseline else 1:]:
        dst = f"s3://{BUCKET}/faults-ds-{videos}-{mode}"
        st.proxy.rate, st.proxy.kinds = 0.0, tuple(kinds)
        st.proxy.reset_counts()
        st.proxy.rate = r
        report, seconds, text = ingest(st, src, dst)
        ingest_proxy = st.proxy.stats()
        st.proxy.rate = 0.0
        with st.reading_s3():
            checked = check_ingest(report, dst, expected)
        sets = train_sets(dst, st.work / f"faults-runs-{mode}", f"reliability-faults-{videos}-{mode}", epochs=1)
        st.proxy.reset_counts()
        st.proxy.rate = r
        run = train(st, sets, st.work / f"faults-{videos}-{mode}.jsonl")
        train_proxy = st.proxy.stats()
        st.proxy.rate = 0.0
        from pipelines.io import manifest

        with st.reading_s3():
            table = manifest.read_manifest(dst)
            trained = check_training(run, dst, sum(1 for s in table.column("split").to_pylist() if s == "train"),
                                     per_step(sets))
        manifests[mode] = sorted(zip(table.column("video_id").to_pylist(), table.column("content_hash").to_pylist(),
                                     table.column("num_frames").to_pylist()))
        out[mode] = {"ingest": {**checked, "seconds": round(seconds, 1), "proxy": ingest_proxy,
                                "vidray_retry_warnings": text.count("; retry ")},
                     "train": {**trained, "proxy": train_proxy,
                               "vidray_retry_warnings": run["retry_warnings"],
                               "tail": run["tail"][-1500:] if run["exit"] else ""}}
    if not baseline:
        return out
    out["manifests_identical"] = manifests["baseline"] == manifests["faults"]
    for phase in ("ingest", "train"):
        base, faulty = out["baseline"][phase]["seconds"], out["faults"][phase]["seconds"]
        out[f"{phase}_slowdown"] = round(faulty / base, 2) if base else None
    return out


def bad_data(st: Stack, *, videos: int = 1000, broken_frac: float = 0.05, workers: int = 2) -> dict[str, Any]:
    """``videos`` tiny videos, ``broken_frac`` broken, ingested from S3 and trained one epoch over S3."""
    src, expected = s3_source(st, f"bad-raw-{videos}", videos, broken_frac, workers=workers)
    dst = f"s3://{BUCKET}/bad-ds-{videos}"
    st.proxy.reset_counts()
    report, seconds, _ = ingest(st, src, dst)
    ingest_proxy = st.proxy.stats()
    from pipelines.io import manifest

    with st.reading_s3():
        checked = check_ingest(report, dst, expected)
        table = manifest.read_manifest(dst)
    train_rows = sum(1 for s in table.column("split").to_pylist() if s == "train")
    sets = train_sets(dst, st.work / "bad-runs", f"reliability-bad-{videos}", epochs=1, log_every=10)
    st.proxy.reset_counts()
    run = train(st, sets, st.work / f"bad-{videos}.jsonl", timeout=3600)
    with st.reading_s3():
        trained = check_training(run, dst, train_rows, per_step(sets))
    return {"videos": videos, "broken_frac": broken_frac, "render_s": expected["render_s"],
            "broken_as": _count(expected["broken_as"].values()), "ingest": {**checked, "seconds": round(seconds, 1),
                                                                             "s3_requests": ingest_proxy["requests"]},
            "train": {**trained, "s3_requests": st.proxy.stats()["requests"],
                      "tail": run["tail"][-1500:] if run["exit"] else ""}}


def _count(values) -> dict[str, int]:
    out: dict[str, int] = {}
    for v in values:
        out[v] = out.get(v, 0) + 1
    return out


def tracking_outage(st: Stack, *, videos: int = 96, epochs: int = 3, outage_s: float = 20.0) -> dict[str, Any]:
    """MLflow unreachable for ``outage_s`` during a 2-node run: training goes on, metrics arrive afterwards."""
    manifest_url = local_dataset(st, videos)
    run_name = f"reliability-outage-{int(outage_s)}"
    sets = train_sets(manifest_url, st.work / "outage-runs", run_name, epochs=epochs, log_every=1)
    events = st.work / f"outage-{int(outage_s)}.jsonl"
    started = time.time()
    proc = start_training(st, sets, events)
    try:
        wait_for(lambda: reports(read_events(events)), 900, "the first report", proc)
        off_at = time.time()
        st.switch.off()
        time.sleep(outage_s)
        st.switch.on()
        on_at = time.time()
        backlog_s = _backlog_delivered(st, run_name, events, on_at)
        code, tail = finish_training(proc, events, 1800)
    finally:
        st.switch.on()
        if proc.poll() is None:
            proc.kill()
    evs = read_events(events)
    reps = reports(evs)
    during = [e for e in reps if off_at <= e["t"] <= on_at]
    logged_steps = sorted({int(e["step"]) for e in reps if not e["epoch_end"]})
    history = mlflow_history(st, run_name, "train/loss")
    arrived = sorted({int(m.step) for m in history})
    run = phase_run(st, run_name)
    return {"outage_s": outage_s, "videos": videos, "epochs": epochs, "exit": code,
            "train_s": round(time.time() - started, 1),
            "training_continued": bool(during), "reports_during_outage": len(during),
            "steps_during_outage": [int(during[0]["step"]), int(during[-1]["step"])] if during else [],
            "ended_after_outage": bool(reps) and reps[-1]["t"] > on_at,
            "backlog_in_mlflow_s": backlog_s,
            "step_metrics_logged": len(logged_steps), "step_metrics_in_mlflow": len(arrived),
            "missing_steps": sorted(set(logged_steps) - set(arrived)),
            "outage_steps_in_mlflow": sum(1 for e in during if int(e["step"]) in set(arrived)),
            "run_status": run.info.status if run else None,
            "tracking_outages_tag": run.data.tags.get("tracking_outages") if run else None,
            "tail": tail[-1500:] if code else ""}


DATA_ACTORS = ("QuarantineLedger",)  # the epoch clock is a GCS key, on the head by construction


def node_failure(st: Stack, *, videos: int = 96, epochs: int = 1, checkpoint_every: int = 4, log_every: int = 2,
                 kill_rank: int = 0, kill_epoch: int = 0, restore: bool = True) -> dict[str, Any]:
    """SIGKILL the raylet of rank ``kill_rank``'s worker node mid-epoch ``kill_epoch``, after a checkpoint;
    the run must finish. ``data_actors`` says where the quarantine ledger was (by node label)."""
    manifest_url = local_dataset(st, videos)
    run_name = f"reliability-node-{videos}-{epochs}"
    sets = train_sets(manifest_url, st.work / "node-runs", run_name, epochs=epochs, log_every=log_every,
                      checkpoint_every=checkpoint_every)
    steps_per_epoch = math.floor(videos / per_step(sets))  # every video of the clean set is in train
    epoch_start = kill_epoch * steps_per_epoch
    kill_step = epoch_start + checkpoint_every + max(log_every, checkpoint_every // 2)
    if kill_step >= epoch_start + steps_per_epoch:
        raise ValueError(f"an epoch of {steps_per_epoch} steps has no room to kill after a checkpoint at "
                         f"{checkpoint_every} steps; give more videos")
    events = st.work / f"{run_name}.jsonl"
    started = time.time()
    proc = start_training(st, sets, events)
    try:
        first = wait_for(lambda: [e for e in read_events(events) if e["event"] == "group_started"], 900,
                         "the worker group", proc)[0]
        wait_for(lambda: [e for e in reports(read_events(events)) if int(e["step"] or 0) >= kill_step], 1800,
                 f"step {kill_step}", proc, poll_s=0.1)
        actors = {str(a["class_name"]).rsplit(".", 1)[-1]: a["node_id"]
                  for a in alive_actors(st.cluster.dashboard_url, auth_token(st.env))
                  if str(a["class_name"]).rsplit(".", 1)[-1] in DATA_ACTORS}
        node = next(n for n in st.cluster.workers if n.node_id == first["ranks"][str(kill_rank)])
        killed_at = node.kill_raylet()
        code, tail = finish_training(proc, events, 1800)
    finally:
        if proc.poll() is None:
            proc.kill()
    evs = read_events(events)
    figures = _recovery_figures(evs, killed_at, steps_per_epoch, epochs)
    history = mlflow_history(st, run_name, "train/loss")
    before = [m for m in history if m.timestamp / 1000 < killed_at]
    figures.update(
        exit=code, videos=videos, epochs=epochs, steps_per_epoch=steps_per_epoch, checkpoint_every=checkpoint_every,
        log_every=log_every, kill_rank=kill_rank,
        killed_node=f"worker{node.index}",
        data_actors={k: st.cluster.node_label(v) for k, v in actors.items()},
        killed_ranks=sorted(r for r, n in first["ranks"].items() if n == node.node_id),
        initial_placement={r: st.cluster.node_label(n) for r, n in first["ranks"].items()},
        restarted_placement={r: st.cluster.node_label(n) for r, n in (figures["restarted_placement"] or {}).items()},
        wall_s=round(time.time() - started, 1),
        mlflow_steps_before_kill=max((int(m.step) for m in before), default=None),
        tail=tail[-2000:] if code else "")
    if restore:  # later scenarios want two worker nodes again
        node.stop()
        node.start()
    return figures


def _recovery_figures(evs: list[dict[str, Any]], killed_at: float, steps_per_epoch: int, epochs: int) -> dict[str, Any]:
    reps = reports(evs)
    before = [e for e in reps if e["t"] < killed_at]
    ckpt = [e for e in before if e["checkpoint"]]
    starts = [e for e in evs if e["event"] == "group_started"]
    restart = next((e for e in starts if e["t"] >= killed_at), None)
    # The old group can still report a round or two after its node's raylet died, until the
    # health check fails it: those are not the resumed run's.
    resumed_at = restart["t"] if restart else killed_at
    after = [e for e in reps if e["t"] >= resumed_at]
    failure = next((e for e in evs if e["event"] in ("worker_exception", "group_abort") and e["t"] >= killed_at),
                   None)
    last_before = int(before[-1]["step"]) if before else 0
    restored = int(ckpt[-1]["step"]) if ckpt else 0
    first_after = after[0] if after else None
    final = int(reps[-1]["step"]) if reps else 0
    return {"finished": any(e["event"] == "driver_done" for e in evs),
            "last_reported_step_before_kill": last_before, "checkpoint_step_restored": restored,
            "steps_lost": last_before - restored,
            # measured, not assumed: a resume that re-ran its epoch from the first batch ended past the plan
            "steps_redone_from_epoch_start": max(0, final - steps_per_epoch * epochs),
            "first_step_after_restart": int(first_after["step"]) if first_after else None,
            "old_group_steps_after_kill": [int(e["step"]) for e in reps if killed_at <= e["t"] < resumed_at],
            "final_step": final, "planned_steps": steps_per_epoch * epochs,
            "extra_steps_run": final - steps_per_epoch * epochs,
            "detect_s": round(failure["t"] - killed_at, 1) if failure else None,
            "regroup_s": round(restart["t"] - killed_at, 1) if restart else None,
            "recover_s": round(first_after["t"] - killed_at, 1) if first_after else None,
            "restarted_placement": restart["ranks"] if restart else None,
            "group_starts": len(starts), "failure": failure}


def _backlog_delivered(st: Stack, run_name: str, events: Path, since: float, timeout: float = 300) -> float | None:
    """Seconds after ``since`` until MLflow holds every step metric reported before ``since``."""
    needed = {int(e["step"]) for e in reports(read_events(events)) if e["t"] <= since and not e["epoch_end"]}
    deadline = since + timeout
    while time.time() < deadline:
        if needed <= {int(m.step) for m in mlflow_history(st, run_name, "train/loss")}:
            return round(time.time() - since, 1)
        time.sleep(1)
    return None


SCENARIOS = ("security", "s3_faults", "bad_data", "tracking_outage", "node_failure")


def measure(args: argparse.Namespace, work: Path) -> dict[str, Any]:
    quick = args.quick
    sizes = {"security": {},
             "s3_faults": {"videos": 24 if quick else 48, "rate": args.fault_rate},
             "bad_data": {"videos": args.bad_videos or (200 if quick else 1000)},
             "tracking_outage": {"videos": 96, "epochs": 3 if quick else 6,
                                 "outage_s": args.outage_s or (20.0 if quick else 60.0)},
             "node_failure": {"videos": 96 if quick else 240, "epochs": 1 if quick else 2,
                              "checkpoint_every": 4 if quick else 6, "kill_rank": args.kill_rank,
                              "kill_epoch": 0 if quick else 1, "restore": False}}  # the last scenario
    chosen = [s for s in SCENARIOS if s in (args.only.split(",") if args.only else SCENARIOS)]
    out: dict[str, Any] = {"config": {**vars(args), "sizes": {s: sizes[s] for s in chosen}}}
    with stack(work, keep_logs=args.keep) as st:
        for name in chosen:
            log(f"scenario {name}")
            before, started = load1(), time.perf_counter()
            try:
                result = globals()[name](st, **sizes[name])
            except Exception as exc:  # noqa: BLE001 - one scenario's failure is a figure too
                result = {"error": f"{type(exc).__name__}: {exc}"}
            out[name] = {**result, "scenario_s": round(time.perf_counter() - started, 1), "load_before": before,
                         "load_after": load1()}
            log(f"scenario {name} done in {out[name]['scenario_s']}s")
    return out


def main(argv: list[str] | None = None) -> dict[str, Any]:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="test sizes: fewer videos, 20 s outage")
    p.add_argument("--only", help=f"comma-separated scenarios of {','.join(SCENARIOS)}")
    p.add_argument("--outage-s", type=float, help="tracking outage (default 60, --quick 20)")
    p.add_argument("--fault-rate", type=float, default=0.1, help="share of S3 requests given a fault")
    p.add_argument("--bad-videos", type=int, help="videos of the bad-data scenario (default 1000, --quick 200)")
    p.add_argument("--kill-rank", type=int, default=0, help="the node of this rank loses its raylet")
    p.add_argument("--work", help="work dir (default: a temporary one, deleted)")
    p.add_argument("--keep", action="store_true", help="keep the nodes' Ray logs and the work dir")
    args = p.parse_args(argv)
    machine, load_start, started = common.machine_info(), load1(), time.time()
    work = Path(args.work) if args.work else Path(tempfile.mkdtemp(prefix="vrel", dir="/tmp"))
    try:
        report = measure(args, work)
    finally:
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)
    command = "python bench/reliability.py " + " ".join(argv if argv is not None else sys.argv[1:])
    out = common.envelope("bench/reliability.py", command.strip(), "quick" if args.quick else "default", report,
                          machine=machine, load_start=load_start, started=started)
    print(json.dumps(out, indent=2, default=str))
    log(f"done in {out['wall_s']} s")
    return out


if __name__ == "__main__":
    main()
