"""The epoch clock: a GCS key per run that the driver or rank 0 sets and every map task reads."""

from __future__ import annotations

import pickle

import pytest

from pipelines.data.clock import close_clocks, epoch_clock
from pipelines.data.tasks import current_epoch


def test_tasks_read_what_was_set_and_a_closed_clock_names_itself(ray_cluster):
    clock = epoch_clock("vidray-test-clock-read", 3)
    read = ray_cluster.remote(num_cpus=0)(current_epoch)  # what a map task calls, in another process
    assert ray_cluster.get(read.remote(clock)) == 3 and current_epoch(7) == 7
    clock.set(5)
    assert ray_cluster.get(read.remote(pickle.loads(pickle.dumps(clock)))) == 5
    clock.close()
    with pytest.raises(RuntimeError, match="vidray-test-clock-read.*is closed"):
        clock.get()


def test_close_clocks_ends_this_jobs_clocks_with_the_prefix_only(ray_cluster):
    stopped = [epoch_clock(f"vidray-test-sweep.t{i}.phase") for i in range(2)]
    other = epoch_clock("vidray-test-sweep2.t0.phase", 1)
    assert close_clocks("vidray-test-sweep.") == 2
    for clock in stopped:
        with pytest.raises(RuntimeError):
            clock.get()
    assert other.get() == 1 and other.key.startswith(ray_cluster.get_runtime_context().get_job_id() + "/")
    other.close()
