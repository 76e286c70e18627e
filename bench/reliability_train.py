"""``jobs/train.py`` with a flight recorder: the reliability scenarios' training driver.

    python bench/reliability_train.py --events EVENTS.jsonl [--spread vr_node_1,vr_node_2] \
        --method supervised --variant debug --set data.manifest=... --set loop.epochs=2 ...

Runs exactly what ``jobs/train.py`` runs (:func:`pipelines.train.phases.run_phases` after the
same dataset checks) on the cluster of ``RAY_ADDRESS`` (or an embedded one), adding two Ray
Train callbacks through :class:`~pipelines.train.runtime.FitOptions`; neither changes training:

* :class:`EventLog` (a ``UserCallback``, in the Train controller) appends one JSON line per
  report round to ``--events``: time, step, epoch, whether a checkpoint came with it; and
  one per worker failure (the exceptions by rank);
* :class:`GroupLog` (a ``WorkerGroupCallback``) appends one line per worker-group start (the
  Ray node of each rank) and shutdown. With ``--spread R1,R2``, before the *first* group
  starts it reserves each node's CPUs but one worker's (a placement group pinned by the
  node's custom resource), so that Ray Train's default PACK placement puts one worker on
  each node; the reservations are removed as soon as the group runs. Restarted groups are
  placed by Ray alone, on whatever capacity is left. (Ray Train's ``ScalingConfig`` has a
  ``placement_strategy``; :class:`pipelines.config.ScalingConfig` does not expose it.)

The quarantine ledger is the project's own actor, created on this driver's node
(:func:`pipelines.cluster.on_this_node`), and each phase's epoch clock is a key in the head's
GCS (:mod:`pipelines.data.clock`), so losing a worker node takes neither with it.

Exit status 0 when every phase finished; the last stdout line is a JSON summary.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import pipelines  # noqa: E402,F401 - sets Ray's auth mode before ray is imported
from ray.train import UserCallback  # noqa: E402
from ray.train.v2._internal.execution.callback import WorkerGroupCallback  # noqa: E402


def _append(path: str, event: dict[str, Any]) -> None:
    with open(path, "a") as f:
        f.write(json.dumps({"t": time.time(), **event}) + "\n")


class EventLog(UserCallback):
    """Report rounds and worker failures, one JSON line each, in ``path`` (runs in the controller)."""

    def __init__(self, path: str) -> None:
        self.path = path

    def after_report(self, run_context, metrics: list[dict[str, Any]], checkpoint) -> None:
        first = metrics[0] if metrics else {}
        _append(self.path, {"event": "report", "run": run_context.get_run_config().name,
                            "step": first.get("step"), "epoch": first.get("epoch"),
                            "epoch_end": "epoch_steps" in first, "checkpoint": checkpoint is not None,
                            "loss": first.get("loss", first.get("epoch_loss"))})

    def after_exception(self, run_context, worker_exceptions: dict[int, Exception]) -> None:
        _append(self.path, {"event": "worker_exception",
                            "ranks": {str(r): f"{type(e).__name__}: {e}"[:300] for r, e in worker_exceptions.items()}})


class GroupLog(WorkerGroupCallback):
    """Worker-group starts (rank -> node) and shutdowns; optionally spreads the first group (module docstring)."""

    def __init__(self, path: str, spread: tuple[str, ...] = ()) -> None:
        self.path, self.spread = path, spread
        self.starts = 0
        self._holds: list = []

    def before_worker_group_start(self, worker_group_context) -> None:
        self.starts += 1
        _append(self.path, {"event": "group_starting", "attempt": self.starts,
                            "num_workers": worker_group_context.num_workers})
        if self.starts == 1 and self.spread:
            self._hold(float(worker_group_context.resources_per_worker.get("CPU", 1)))

    def _hold(self, cpus_per_worker: float) -> None:
        import ray
        from ray.util.placement_group import placement_group

        for resource in self.spread:
            node = next((n for n in ray.nodes() if n["Alive"] and resource in n["Resources"]), None)
            if node is None:
                continue
            hold = node["Resources"].get("CPU", 0) - cpus_per_worker
            if hold > 0:
                self._holds.append(placement_group([{"CPU": hold, resource: 0.01}]))
        ready = [pg.ready() for pg in self._holds]
        done, _ = ray.wait(ready, num_returns=len(ready), timeout=120)
        _append(self.path, {"event": "spread_hold", "nodes": len(self._holds), "ready": len(done)})

    def after_worker_group_start(self, worker_group) -> None:
        from ray.util.placement_group import remove_placement_group

        for pg in self._holds:
            remove_placement_group(pg)
        self._holds = []
        ranks = {str(w.distributed_context.world_rank): w.metadata.node_id for w in worker_group.get_workers()}
        _append(self.path, {"event": "group_started", "attempt": self.starts, "ranks": ranks})

    def before_worker_group_shutdown(self, worker_group) -> None:
        _append(self.path, {"event": "group_shutdown", "attempt": self.starts})

    def before_worker_group_abort(self, worker_group_context) -> None:
        _append(self.path, {"event": "group_abort", "attempt": self.starts})


def read_events(path: str | Path) -> list[dict[str, Any]]:
    """The events written so far (a line being written is skipped)."""
    out = []
    try:
        lines = Path(path).read_text().splitlines()
    except FileNotFoundError:
        return []
    for line in lines:
        try:
            out.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--events", required=True, help="JSON-lines flight record (appended)")
    p.add_argument("--spread", default="", help="comma-separated node resources: one worker per node at first")
    p.add_argument("--method", default="supervised")
    p.add_argument("--variant", default="debug")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    args = p.parse_args(argv)

    from pipelines.cluster import init_ray
    from pipelines.config import apply_overrides, save_config
    from pipelines.io import storage
    from pipelines.methods import get_method
    from pipelines.prep.ready import ensure_phase_data
    from pipelines.train.entry import resolve_paths
    from pipelines.train.phases import run_phases
    from pipelines.train.runtime import FitOptions

    spec = get_method(args.method)
    job = resolve_paths(apply_overrides(spec.variants[args.variant](), args.overrides))
    phases = spec.schedule(job)
    if os.environ.get("RAY_ADDRESS"):
        import ray

        # Ray Train's placement-group cleaner resolves the address itself and fails on a machine with
        # several clusters unless its workers know it (what `ray job submit` users pass in a runtime env).
        ray.init(address=os.environ["RAY_ADDRESS"], log_to_driver=True,
                 runtime_env={"env_vars": {"RAY_ADDRESS": os.environ["RAY_ADDRESS"]}})
    init_ray()  # joins the cluster above (or starts an embedded one); progress bars off
    ensure_phase_data(spec, job, phases)
    storage.makedirs(job.storage_path)
    save_config(job, storage.join(job.storage_path, f"{job.run_name}.config.yaml"))
    events = os.path.abspath(args.events)
    spread = tuple(r for r in args.spread.split(",") if r)
    _append(events, {"event": "driver_start", "pid": os.getpid()})
    started = time.time()
    done = run_phases(spec, job, options=FitOptions(callbacks=(EventLog(events), GroupLog(events, spread))))
    _append(events, {"event": "driver_done", "seconds": time.time() - started})
    print(json.dumps({"phases": [{k: str(v) for k, v in row.items()} for row in done],
                      "seconds": round(time.time() - started, 1)}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
