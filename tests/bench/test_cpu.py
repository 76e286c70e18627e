"""The benchmarks' CPU meter: a spawned child's CPU is counted, the meter's own is not."""

from __future__ import annotations

import multiprocessing
import time

from bench.cpu import CpuMeter, _name_of


def _burn(seconds: float) -> None:
    end = time.process_time() + seconds
    while time.process_time() < end:
        pass
    time.sleep(0.5)  # stay alive for a few samples: an ended process counts up to its last sample


def test_a_spawned_child_is_counted_and_the_sampling_is_left_out():
    child = multiprocessing.get_context("spawn").Process(target=_burn, args=(0.6,))
    with CpuMeter(interval_s=0.05) as meter:
        child.start()
        child.join()
    assert meter.own_s > 0  # every sample walked the process tree
    raw = sum(cpu - meter.first.get(key, 0.0) for key, (g, cpu) in meter.last.items() if g in ("driver", "spawn"))
    assert abs(meter.seconds("spawn") - (raw - meter.own_s)) < 1e-9
    assert meter.seconds("spawn") >= 0.6 and meter.seconds("ray") < meter.seconds("spawn")
    assert max(meter.by_process("spawn").values()) >= 0.6  # the child, by name


def test_processes_are_named_by_title_script_or_executable():
    ray_bin = "/x/site-packages/ray/core/src/ray"
    assert _name_of([f"{ray_bin}/gcs/gcs_server", "--log_dir=/tmp/ray/session_1/logs", "--gcs_server_port=0"]) \
        == "gcs_server"
    assert _name_of([f"{ray_bin}/raylet/raylet", "--raylet_socket_name=/tmp/ray/s/sockets/raylet"]) == "raylet"
    assert _name_of(["/venv/bin/python", "-u", "/x/ray/_private/log_monitor.py", "--logs-dir=/tmp"]) \
        == "log_monitor.py"
    assert _name_of(["ray::QuarantineLedger", ""]) == "ray::QuarantineLedger"
    assert _name_of(["/venv/bin/python3.11", "-m", "mlflow", "server"]) == "python3.11"
    assert _name_of([]) == ""
