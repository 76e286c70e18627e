"""The batches of one epoch at a time from an epoch-spanning dataset (``LoaderOptions.span_epochs``).

Re-executing a Ray Data dataset every epoch costs a fixed start and ramp: the executor
submits and polls on a 0.1 s cadence, so an execution's first block reaches the consumer
0.2–0.3 s after it starts and its last blocks arrive in a burst, while the decode CPUs idle
(``bench/RESULTS.md``). An epoch-spanning dataset draws ``span_epochs`` consecutive epochs in
one execution, each sample carrying its ``epoch`` (:func:`pipelines.data.tasks.span_stage`).
:class:`EpochStream` turns that stream back into epochs:

* ``stream.batches(e)`` yields full batches of ``batch_size`` rows of epoch ``e`` only: rows
  of earlier epochs are dropped (what an epoch's ``drop_last`` leaves), rows of later epochs
  wait for their epoch, and a batch never mixes epochs;
* when an execution is used up and epochs remain, the next ``batches(e)`` starts a new one:
  ``start(e)`` (the caller's hook: set the epoch clock to ``e``, then a barrier) runs first,
  so the new execution begins at epoch ``e``. A resumed run therefore starts at its epoch,
  whatever the epoch the dataset was built at. Workers start a new execution together, once
  all of theirs have ended (an agreement, as below): the streaming split serves a new
  execution to all of them or none;
* with several workers, each sees its own part of the stream (Ray Train's streaming split),
  and the parts of one epoch differ by up to a block. ``agree(has_batch) -> bool`` is called
  once before each batch is yielded and once when a worker has no more: an all-reduce (MIN)
  over the workers, so every worker ends the epoch after the same number of batches and
  DDP's collectives stay matched. One worker: ``agree`` is the identity. Should a worker's
  part of an execution hold no block of an epoch at all (an epoch of fewer blocks than
  workers), that epoch ends with no batch for anyone; ``auto_rows_per_task`` gives every CPU
  a block, so this takes more workers than the cluster has CPUs.

The ``epoch`` column is taken out of every batch before it is yielded.
Blocks are taken whole (``iter_torch_batches(batch_size=None)``) and cut here, so a batch
that lies inside one block is a view, and only a batch across blocks is concatenated: its own
rows, not the rest of the next block (that copied every block once in the consumer: 0.2-0.3
ms of CPU per 602 kB clip in ``bench/pipeline.py``).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import torch

Batch = dict[str, Any]


def _rows(batch: Batch) -> int:
    return next((int(v.shape[0]) for v in batch.values() if isinstance(v, torch.Tensor)), 0)


def _slice(batch: Batch, start: int, stop: int) -> Batch:
    return {k: v[start:stop] for k, v in batch.items()}


def _concat(parts: list[Batch]) -> Batch:
    if len(parts) == 1:
        return parts[0]
    return {k: torch.cat([p[k] for p in parts]) if isinstance(parts[0][k], torch.Tensor)
            else [x for p in parts for x in p[k]] for k in parts[0]}


def split_by_epoch(block: Batch) -> list[tuple[int, Batch]]:
    """``[(epoch, rows)]`` of a block in stream order (its ``epoch`` column removed); usually one run."""
    epochs = block.pop("epoch")
    n = int(epochs.shape[0])
    if n == 0:
        return []
    cuts = [0] + [i for i in range(1, n) if int(epochs[i]) != int(epochs[i - 1])] + [n]
    return [(int(epochs[a]), _slice(block, a, b)) for a, b in zip(cuts, cuts[1:])]


def epoch_batches(source, epoch: int, batch_size: int) -> Iterator[Batch]:
    """The batches of ``epoch``: from an :class:`EpochStream`, or one execution of a per-epoch
    dataset or shard (``drop_last``)."""
    if isinstance(source, EpochStream):
        return source.batches(epoch)
    return iter(source.iter_torch_batches(batch_size=batch_size, drop_last=True))


class EpochStream:
    """Epochs of batches from an epoch-spanning dataset or shard (module docstring).

    Args:
        source: a ``ray.data.Dataset`` or a Ray Train shard (``DataIterator``).
        batch_size: rows per batch.
        start: ``start(epoch)`` before each execution (set the epoch clock; a barrier).
        agree: ``agree(has_batch) -> bool`` across workers; ``None``: one worker.
        drop_last: drop an epoch's last, partial batch (the default); ``False`` only with one
            consumer (``agree=None``), e.g. a benchmark that counts every sample.
        iter_options: more ``iter_torch_batches`` arguments (e.g. ``prefetch_batches``).
    """

    def __init__(self, source, batch_size: int, start: Callable[[int], None],
                 agree: Callable[[bool], bool] | None = None, drop_last: bool = True, **iter_options: Any) -> None:
        if agree is not None and not drop_last:
            raise ValueError("drop_last=False takes one consumer: workers must take as many batches (agree)")
        self.source, self.batch_size, self.start, self.drop_last = source, batch_size, start, drop_last
        self.agree = agree or (lambda has: has)
        self.iter_options = iter_options
        self.blocks: Iterator[Batch] | None = None
        self.pending: list[tuple[int, Batch]] = []   # (epoch, rows) read but not yet used
        self.executions = 0

    def _next_run(self) -> tuple[int, Batch] | None:
        """The next ``(epoch, rows)`` of the current execution; ``None`` when it is used up."""
        while not self.pending:
            if self.blocks is None:
                return None
            try:
                block = next(self.blocks)
            except StopIteration:
                self.blocks = None
                return None
            self.pending = split_by_epoch(block)
        return self.pending.pop(0)

    def _fill(self, epoch: int, buffer: list[Batch]) -> bool:
        """Add rows of ``epoch`` to ``buffer`` until it holds a batch (``True``), or until the epoch
        has no more rows (``False``; a later epoch's rows are kept for it). Only the rows the batch
        needs are taken from a block: the rest waits in ``pending``, so a batch across two blocks
        copies its own rows and no more."""
        have = 0
        while have < self.batch_size:
            run = self._next_run()
            if run is None:
                return False
            e, rows = run
            if e < epoch:
                continue                        # the rest of an epoch that ended elsewhere first
            if e > epoch:
                self.pending.insert(0, run)     # the next epoch begins here
                return False
            need, n = self.batch_size - have, _rows(rows)
            if n > need:
                self.pending.insert(0, (e, _slice(rows, need, n)))
                rows, n = _slice(rows, 0, need), need
            buffer.append(rows)
            have += n
        return True

    def _skip_before(self, epoch: int) -> None:
        """Drop the rows of epochs before ``epoch``; stops at a later row or the execution's end."""
        while (run := self._next_run()) is not None:
            if run[0] >= epoch:
                self.pending.insert(0, run)
                return

    def batches(self, epoch: int) -> Iterator[Batch]:
        """The full batches of ``epoch``, every worker yielding as many (module docstring).

        A new execution starts (at ``epoch``) only when every worker's has ended; a worker
        whose part of the old one still holds rows goes on with them.
        """
        self._skip_before(epoch)
        ended = self.blocks is None and not self.pending
        if self.agree(ended):
            self.start(epoch)
            self.blocks = iter(self.source.iter_torch_batches(batch_size=None, **self.iter_options))
            self.executions += 1
        while True:
            buffer: list[Batch] = []
            full = self._fill(epoch, buffer)
            if not self.agree(full):
                if buffer and not self.drop_last:
                    yield _concat(buffer)
                return
            yield _concat(buffer)
