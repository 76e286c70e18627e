"""The epoch clock: which epoch a training run's dataset is drawing, kept in the GCS.

A training run builds its Ray Dataset once and re-executes it every epoch; every map task
reads the clock when it starts (:func:`pipelines.data.tasks.current_epoch`) and draws its
clips from ``sample_rng(seed, epoch, video)``. The training loop's rank 0 sets the clock at
the start of every epoch, before a barrier.

The value is one key of the GCS's internal key-value store (on the head node, like the
cluster's other state), not an actor: an actor is a Python process of its own, which costs
~1.3 s of CPU to start and ~9 ms of CPU a second while it waits (Ray's signal check), for
one integer. A read is one GCS request. Keys are scoped by the Ray job that made the clock,
as the named actor it replaces was by the job's namespace. A run deletes its key when it
ends; a driver killed mid-run leaves a few bytes behind, which :func:`close_clocks` removes
(Tune does, for the phases of trials it stopped).
"""

from __future__ import annotations

import dataclasses

_NAMESPACE = "vidray-epoch-clock"


def _kv():
    """Ray's key-value store client (imported here: this module is loaded where Ray is not)."""
    from ray.experimental import internal_kv

    return internal_kv


@dataclasses.dataclass(frozen=True)
class EpochClock:
    """A handle on one clock; picklable, so tasks and Train workers get it as an argument."""

    key: str

    def set(self, epoch: int) -> None:
        _kv()._internal_kv_put(self.key, str(int(epoch)), overwrite=True, namespace=_NAMESPACE)

    def get(self) -> int:
        """The epoch set last; an error that names the clock if it was closed (its run ended)."""
        value = _kv()._internal_kv_get(self.key, namespace=_NAMESPACE)
        if value is None:
            raise RuntimeError(f"epoch clock {self.key!r} is closed: the training run it belongs to has ended")
        return int(value)

    def close(self) -> None:
        _kv()._internal_kv_del(self.key, namespace=_NAMESPACE)


def _job_prefix() -> str:
    import ray

    return ray.get_runtime_context().get_job_id() + "/"


def epoch_clock(name: str, epoch: int = 0) -> EpochClock:
    """This job's clock ``name``, set to ``epoch`` (Ray must be initialised)."""
    clock = EpochClock(_job_prefix() + name)
    clock.set(epoch)
    return clock


def close_clocks(prefix: str) -> int:
    """Close this job's clocks whose name starts with ``prefix``; returns how many."""
    return int(_kv()._internal_kv_del(_job_prefix() + prefix, del_by_prefix=True, namespace=_NAMESPACE))
