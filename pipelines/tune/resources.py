"""How many trials fit side by side, and the release of what a stopped trial leaves behind.

Concurrency: a trial is only a driver (its Tune actor asks for no CPU); what it occupies is
its Ray Train worker group (``num_workers x cpus_per_worker``) and its Ray Data pipeline
(capped at ``data_cpus`` per Train run, :class:`pipelines.train.runtime.FitOptions`). So
:func:`max_concurrent_trials` is the cluster's CPUs over that sum; more trials at once
would only queue their worker groups (and time out starting them).

Leftovers: the scheduler stops a trial by ending its actor, which kills the Ray Train
controller that actor owns without letting it shut down. The worker group's placement
group then outlives it: a placement group created by an actor is removed only when both
that actor and its *job* are dead, and the job is the sweep's driver. Ray Train 2.60 runs
a detached ``PlacementGroupCleaner`` actor per run for this, but it asks the State API
(the dashboard) whether the controller lives; on a cluster without a dashboard (an
embedded ``ray.init``) it never decides, the groups stay and later trials starve.
:func:`release_orphaned_groups` removes exactly the groups whose creator is a dead
``TrainController`` of this job, read from the GCS tables (no dashboard needed). The epoch
clocks of a stopped trial's phases are closed with :func:`pipelines.data.clock.close_clocks`.
The cleaners themselves stay (Ray offers no public way to end an unnamed detached actor by
id); they hold no resources and go with the cluster, and with a dashboard they remove the
group and exit on their own.
"""

from __future__ import annotations

import logging
import math

log = logging.getLogger(__name__)

_CONTROLLER = "TrainController"


def trial_cpus(job, data_cpus: float) -> float:
    """CPUs one trial occupies while it trains: its worker group and its Ray Data cap."""
    return job.scaling.num_workers * job.scaling.cpus_per_worker + data_cpus


def max_concurrent_trials(job, data_cpus: float, cluster_cpus: float) -> int:
    """``floor(cluster CPUs / trial CPUs)``, at least 1."""
    return max(1, math.floor(cluster_cpus / max(trial_cpus(job, data_cpus), 1e-6) + 1e-9))


def _job_actors(state: str) -> list[dict]:
    """This job's actors in ``state`` (``ALIVE``, ``DEAD``), from the GCS actor table."""
    import ray
    from ray._private import state as gcs_state  # the GCS tables; ray.util.state needs the dashboard

    job = ray.get_runtime_context().get_job_id()
    return [a for a in gcs_state.actors(actor_state_name=state).values() if a.get("JobID") == job]


def release_orphaned_groups() -> int:
    """Remove placement groups of this job whose creator is a dead Ray Train controller; returns how many."""
    import ray
    from ray._private import state as gcs_state
    from ray.core.generated import gcs_pb2
    from ray.util.placement_group import PlacementGroup, remove_placement_group

    dead = {a["ActorID"] for a in _job_actors("DEAD") if a.get("ActorClassName") == _CONTROLLER}
    if not dead:
        return 0
    removed = 0
    for raw in gcs_state.state._connect_and_get_accessor().get_placement_group_table():
        data = gcs_pb2.PlacementGroupTableData.FromString(raw)
        if data.state == gcs_pb2.PlacementGroupTableData.REMOVED or data.creator_actor_id.hex() not in dead:
            continue
        try:
            remove_placement_group(PlacementGroup(ray.PlacementGroupID(data.placement_group_id)))
            removed += 1
        except Exception as exc:  # noqa: BLE001 - removed meanwhile by Ray's own cleaner
            log.debug("placement group %s: %s", data.placement_group_id.hex(), exc)
    if removed:
        print(f"released {removed} placement group(s) that stopped trials' Ray Train runs left", flush=True)
    return removed
