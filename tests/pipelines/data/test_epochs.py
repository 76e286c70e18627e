"""Epoch-spanning datasets and :class:`~pipelines.data.epochs.EpochStream`.

The stream is checked on hand-made blocks (epoch boundaries inside and between blocks,
leftovers of an epoch another worker ended, a new execution at the resumed epoch, the
workers' agreement); the dataset on the tiny set with broken videos: every epoch of one
execution holds exactly the samples the per-epoch dataset gives for that epoch, no
substitutes, and the bad videos are accounted for.
"""

import numpy as np
import pytest
import torch

from pipelines.data import recipes
from pipelines.data.dataset import LoaderOptions, build_pipeline
from pipelines.data.epochs import EpochStream, epoch_batches, split_by_epoch
from tests.pipelines.data.test_dataset import data, messy, tiny_datasets  # noqa: F401 - fixtures


def _block(epochs: list[int], first: int) -> dict:
    n = len(epochs)
    return {"x": torch.arange(first, first + n), "epoch": torch.tensor(epochs)}


class _Source:
    """A dataset stand-in: each ``iter_torch_batches(batch_size=None)`` is one execution of these blocks."""

    def __init__(self, *executions: list[dict]) -> None:
        self.executions = list(executions)

    def iter_torch_batches(self, batch_size=None):
        assert batch_size is None
        return iter([dict(b) for b in self.executions.pop(0)])


def test_split_by_epoch_cuts_a_block_at_each_change():
    runs = split_by_epoch(_block([0, 0, 1, 1, 1], 0))
    assert [(e, r["x"].tolist()) for e, r in runs] == [(0, [0, 1]), (1, [2, 3, 4])]
    assert all("epoch" not in r for _, r in runs)


def test_batches_stay_inside_their_epoch_and_drop_the_partial_one():
    started = []
    # epoch 0: 5 rows over two blocks (the second block also opens epoch 1); epoch 1: 4 rows
    source = _Source([_block([0, 0, 0], 0), _block([0, 0, 1], 3), _block([1, 1, 1], 6)])
    stream = EpochStream(source, 2, start=started.append)
    got0 = [b["x"].tolist() for b in stream.batches(0)]
    got1 = [b["x"].tolist() for b in stream.batches(1)]
    assert got0 == [[0, 1], [2, 3]]          # row 4 is epoch 0's partial batch: dropped
    assert got1 == [[5, 6], [7, 8]]          # epoch 1 began inside the second block
    assert started == [0] and stream.executions == 1
    assert all("epoch" not in b for b in epoch_batches(EpochStream(_Source([_block([0, 0], 0)]), 2,
                                                                     started.append), 0, 2))


def test_a_new_execution_starts_at_the_epoch_asked_for():
    started = []
    source = _Source([_block([0, 0], 0), _block([1, 1], 2)], [_block([2, 2], 4)])
    stream = EpochStream(source, 2, start=started.append)
    assert [[b["x"].tolist() for b in stream.batches(e)] for e in range(3)] == [[[0, 1]], [[2, 3]], [[4, 5]]]
    assert started == [0, 2] and stream.executions == 2


def test_rows_of_an_epoch_that_ended_elsewhere_are_skipped():
    # another worker ran out of epoch 0 after one batch: the agreement ended epoch 0 here too.
    # Votes where this worker says yes: start the execution, batch 1, batch 2 (no), epoch 1's batches
    votes = iter([True, True, False, True, True])
    stream = EpochStream(_Source([_block([0, 0, 0, 0], 0), _block([1, 1, 1, 1], 4)]), 2, start=lambda e: None,
                         agree=lambda has: has and next(votes))
    assert [b["x"].tolist() for b in stream.batches(0)] == [[0, 1]]   # its second batch was not taken
    assert [b["x"].tolist() for b in stream.batches(1)] == [[4, 5], [6, 7]]


def test_a_batch_across_blocks_copies_only_its_own_rows():
    # blocks of 5 rows, batches of 4: batch 2 takes row 4 of block 1 and rows 5-7 of block 2
    blocks = [_block([0] * 5, 0), _block([0] * 5, 5)]
    stream = EpochStream(_Source([dict(b) for b in blocks]), 4, start=lambda e: None)
    batches = stream.batches(0)
    got = [next(batches), next(batches)]
    assert [b["x"].tolist() for b in got] == [[0, 1, 2, 3], [4, 5, 6, 7]]
    second_block = blocks[1]["x"].untyped_storage().data_ptr()
    assert got[0]["x"].untyped_storage().data_ptr() == blocks[0]["x"].untyped_storage().data_ptr()  # a view
    assert got[1]["x"].untyped_storage().data_ptr() != second_block          # the crossing batch: a copy
    rest = stream.pending[0][1]["x"]
    assert rest.tolist() == [8, 9] and rest.untyped_storage().data_ptr() == second_block  # still a view
    assert list(batches) == []                                                 # rows 8-9: the partial batch


@pytest.mark.slow
def test_one_execution_gives_each_epoch_the_per_epoch_samples(messy, ray_cluster):  # noqa: F811
    from pipelines.data.clock import epoch_clock

    url, good = messy
    cfg = recipes.recipe("coclr", debug_size=True)
    clock = epoch_clock("vidray-test-epochs-span")
    try:
        span = build_pipeline(url, cfg, "train", epoch=clock, options=LoaderOptions(
            rows_per_task=2, ledger_name="test-epochs", strings=False, span_epochs=3, total_epochs=3))
        stream = EpochStream(span.dataset, 1, start=clock.set)
        epochs = {e: {int(b["vid_index"][0]): b["rgb_0"][0] for b in stream.batches(e)} for e in range(3)}
        assert stream.executions == 1
        per_epoch = build_pipeline(url, cfg, "train", epoch=clock, options=LoaderOptions(
            rows_per_task=2, ledger_name="test-epochs", strings=False))
        for e in (0, 2):
            clock.set(e)
            ref = {int(v): b["rgb_0"][i] for b in per_epoch.dataset.iter_torch_batches(batch_size=4)
                   for i, v in enumerate(b["vid_index"])}
            assert set(epochs[e]) == set(ref) and len(ref) == len(good)   # the good videos, no substitutes
            assert all(torch.equal(epochs[e][v], ref[v]) for v in ref)
        assert not torch.equal(*(torch.stack([epochs[e][v] for v in sorted(epochs[e])]) for e in (0, 1)))
        acc = span.accounting(len(epochs[2]))
        assert acc["balanced"] and (acc["inputs"], acc["quarantined"]) == (8, 4)
        assert np.all(span.quarantined().column("stage").to_numpy(zero_copy_only=False) != "")
    finally:
        clock.close()
