"""The ledger protocol of a decode task, in this process (no Ray): one call in and one out per
block, failures and skips in those calls, per-read calls in a retried block that pinpoint
the read that killed a worker, and reads that name the manifest's codec."""

from __future__ import annotations

import json
import math
import time

import numpy as np
import pytest

from pipelines.data import recipes, tasks, telemetry
from pipelines.data.dataset import LoaderOptions, auto_rows_per_task, sample_bytes
from pipelines.data.ledger import QuarantineLedger
from pipelines.data.watchdog import EXIT_CODE, Watchdog
from pipelines.io import video
from pipelines.io.encode import write_video
from pipelines.io.probe import MediaError

CFG = recipes.recipe("classification", debug_size=True)
TRUNCATED = ("corrupt", "index_out_of_range")  # a third of the file: PyAV / decord's word for it


class SpyLedger(QuarantineLedger):
    """A local ledger that records every call a task makes (a method name and its arguments)."""

    def __init__(self) -> None:
        super().__init__()
        self.calls: list[tuple[str, tuple]] = []

    def __getattribute__(self, name: str):
        attr = super().__getattribute__(name)
        if name in ("begin_block", "end_block", "attempt", "done", "fail"):
            def spy(*args):
                self.calls.append((name, args))
                return attr(*args)
            return spy
        return attr


class Died(BaseException):
    """Stands for the worker process dying inside a read."""


@pytest.fixture(scope="module")
def rows(tmp_path_factory) -> list[dict]:
    """Item rows: three good 24-frame videos, a truncated one and a missing one."""
    root = tmp_path_factory.mktemp("ledger")
    frames = np.random.default_rng(0).integers(0, 255, (24, 64, 64, 3), dtype=np.uint8)
    out = []
    for i in range(3):
        write_video(str(root / f"good{i}.mp4"), frames, codec="libx264", gop=8)
    data = (root / "good0.mp4").read_bytes()
    (root / "truncated.mp4").write_bytes(data[: len(data) // 3])
    for i, name in enumerate(["good0", "truncated", "good1", "missing", "good2"]):
        out.append({"video_id": name, "uri": str(root / f"{name}.mp4"), "flow_uri": "", "num_frames": 24,
                    "fps": 25.0, "label": "a", "label_index": 0, "row": i, "group_index": i,
                    "segments": json.dumps([]), "codec": "h264", "height": 64, "width": 64})
    return out


def _batch(rows: list[dict]) -> dict[str, np.ndarray]:
    """Rows as Ray Data hands them to the stage: one numpy column per key."""
    return {k: np.array([r[k] for r in rows], dtype=object if isinstance(rows[0][k], str) else None)
            for k in rows[0]}


def _run(rows, ledger, run="run", **options) -> dict:
    out = tasks.sample_stage(_batch(rows), cfg=CFG, seed=0, epoch=0, num_classes=None, run=run, ledger=ledger,
                             options=LoaderOptions(**{"decode_timeout_s": None, **options}))
    return out.to_pydict() if hasattr(out, "to_pydict") else out


def test_a_block_talks_to_the_ledger_once_each_way(rows):
    ledger = SpyLedger()
    out = _run(rows, ledger)
    assert [name for name, _ in ledger.calls] == ["begin_block", "end_block"]
    failed = ledger.calls[1][1][2]  # end_block(run, block, failed, skipped)
    kinds = {r["video_id"]: r["kind"] for r in failed}
    assert kinds.keys() == {"truncated", "missing"} and kinds["truncated"] in TRUNCATED
    assert kinds["missing"] == "not_found"
    assert all(r["stage"] == "decode" and len(r["reason"]) > 20 for r in failed)
    assert list(out["video_id"]) == ["good0", "good1", "good2"]
    assert {r["video_id"] for r in ledger.rows("run")} == {"truncated", "missing"}
    assert len(out["video_id"]) + len(ledger.rows("run")) == len(rows)  # inputs = samples + quarantined
    assert set(telemetry.COLUMNS) <= set(out)
    assert min(out["t_decode_ms"]) > 0 and min(out["t_augment_ms"]) > 0 and min(out["t_arrow_ms"]) > 0
    assert min(out["bytes_read"]) > 0
    # the next run skips the known-bad files without reading them, and counts them
    reads = []
    _run(rows, ledger, run="again", reader=lambda uri, idx: reads.append(uri) or video.read_frames(uri, idx))
    assert sorted(reads) == sorted(r["uri"] for r in rows if r["video_id"].startswith("good"))
    assert {r["video_id"] for r in ledger.rows("again")} == {"truncated", "missing"}
    assert ledger.calls[-1][0] == "end_block" and sorted(ledger.calls[-1][1][3]) == sorted(  # the skips
        r["uri"] for r in rows if not r["video_id"].startswith("good"))


def test_a_retried_block_pinpoints_the_read_that_killed_the_worker(rows, monkeypatch):
    monkeypatch.setattr(tasks, "_guarded", lambda fn, uri, timeout_s, on_timeout: fn())  # let Died escape
    crash = rows[2]["uri"]

    def reader(uri, idx):
        if uri == crash:
            raise Died
        return video.read_frames(uri, idx)

    ledger = SpyLedger()
    for attempt in range(2):  # batched: dies, records lost; per read: dies again, the read left open
        with pytest.raises(Died):
            _run(rows, ledger, reader=reader)
    assert "attempt" in [name for name, _ in ledger.calls]
    out = _run(rows, ledger, reader=reader)  # per read: the open read is quarantined, not retried
    assert list(out["video_id"]) == ["good0", "good2"]
    q = {r["video_id"]: r for r in ledger.rows("run")}
    assert q["good1"]["kind"] == "decoder_crash" and q["good1"]["source_uri"] == crash
    assert q["truncated"]["kind"] in TRUNCATED and q["missing"]["kind"] == "not_found"
    assert len(out["video_id"]) + len(q) == len(rows)
    assert ledger.begin_block("run", tasks.block_key(rows), []) == (False, [])  # the block was closed


def test_reads_use_the_manifest_codec_without_probing(rows, monkeypatch):
    def no_probe(uri):
        raise AssertionError(f"probed {uri}")

    monkeypatch.setattr(video, "_check_decord_codec", no_probe)
    before = dict(video.BACKEND_COUNTS)
    out = _run([r for r in rows if r["video_id"].startswith("good")], QuarantineLedger(), telemetry=False)
    assert len(out["video_id"]) == 3 and "t_decode_ms" not in out
    assert video.BACKEND_COUNTS["pyav"] - before.get("pyav", 0) == 3  # h264 at 64 x 64: PyAV


def test_rows_per_task_follows_the_dataset_size():
    clip = 16 * 112 * 112 * 3  # a 16 x 112² uint8 clip: 167 of them make 96 MiB
    assert auto_rows_per_task(720, 2, clip) == 120  # three equal blocks per CPU
    assert auto_rows_per_task(10_000, 2, clip) == 167  # the byte cap, then 60 blocks, 30 per CPU
    assert auto_rows_per_task(10_000, 16) == 63 and auto_rows_per_task(2_000, 16) == 42
    assert auto_rows_per_task(120, 2) == 20 and auto_rows_per_task(24, 2) == 12  # every CPU gets a block
    assert auto_rows_per_task(1, 8) == 1
    assert auto_rows_per_task(10_000, 2, 32 * 224 * 224 * 3) == 20 and auto_rows_per_task(10_000, 2, 1000) == 250
    for n, cpus in ((720, 2), (2_880, 2), (10_000, 16), (5_000, 8), (120, 2)):  # as many blocks on every CPU
        assert math.ceil(n / auto_rows_per_task(n, cpus, clip)) % cpus == 0, (n, cpus)
    assert sample_bytes(CFG, None) >= 8 * 64 * 64 * 3  # the debug clip and its small columns


def test_a_read_runs_in_its_own_thread_and_a_hung_one_is_recorded_before_the_exit():
    """No thread per read: the read runs in the caller's thread, and a read past its deadline
    gets ``on_timeout`` and then the exit (here recorded, not done)."""
    import threading

    exits, timed_out = [], []
    dog = Watchdog(exit_fn=exits.append)
    with dog.guard(5.0, timed_out.append):
        assert threading.get_ident() == threading.main_thread().ident
    with dog.guard(0.2, timed_out.append):
        time.sleep(0.6)  # a hung decoder: the monitor wakes every 0.05 s here
    assert timed_out == [0.2] and exits == [EXIT_CODE] and dog.reads == {}
    with dog.guard(5.0, timed_out.append):  # a read that returns in time is not reported
        time.sleep(0.2)
    assert timed_out == [0.2] and exits == [EXIT_CODE]
    with pytest.raises(MediaError, match="c.mp4: the decoder raised ZeroDivisionError"):
        tasks._guarded(lambda: 1 / 0, "c.mp4", 5.0, timed_out.append)


def test_a_hung_read_is_quarantined_and_its_block_left_open_for_the_retry(rows, monkeypatch):
    """The watchdog's callback: the block's records so far plus ``decode_timeout`` go to the
    ledger and the block stays open, so the retry reads per file and skips the hung one."""
    ledger = SpyLedger()
    hung = rows[2]["uri"]

    def guarded(fn, uri, timeout_s, on_timeout):
        if uri == hung:  # what the watchdog does past the deadline; then the process exits
            on_timeout(timeout_s)
            raise Died
        return fn()

    monkeypatch.setattr(tasks, "_guarded", guarded)
    with pytest.raises(Died):
        _run(rows, ledger, decode_timeout_s=7.0)
    assert [name for name, _ in ledger.calls] == ["begin_block", "end_block"]
    assert ledger.calls[1][1][1] is None  # end_block(run, None, ...): kept open
    q = {r["video_id"]: r for r in ledger.rows("run")}
    assert q["good1"]["kind"] == "decode_timeout" and "7 s" in q["good1"]["reason"]
    monkeypatch.undo()
    out = _run(rows, ledger)  # the retry: per read, the hung file skipped and counted once
    assert "attempt" in [name for name, _ in ledger.calls] and list(out["video_id"]) == ["good0", "good2"]
    assert len(out["video_id"]) + len(ledger.rows("run")) == len(rows)
