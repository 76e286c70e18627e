"""A decode task's block: its fixed-size columns reuse the process's buffer only once nothing
refers to the previous block, so no block handed out is ever overwritten."""

from __future__ import annotations

import numpy as np
import pytest

from pipelines.data import tasks

SCHEMA = {"clip": ("uint8", (2, 3)), "label": ("int64", ()), "name": ("string", ())}


def _samples(first: int, n: int) -> list[dict]:
    return [{"clip": np.full((2, 3), i, np.uint8), "label": i, "name": f"v{i}"} for i in range(first, first + n)]


def _block(samples: list[dict]) -> dict:
    """The samples as one block, through the process's buffer (what a decode task returns)."""
    writer = tasks._BlockWriter(SCHEMA, len(samples))
    for sample in samples:
        writer.add(sample)
    return writer.batch()


def _address(block: dict) -> int:
    return block["clip"].__array_interface__["data"][0]


def test_a_block_still_referred_to_is_never_overwritten():
    held = _block(_samples(0, 4))
    other = _block(_samples(10, 4))
    assert _address(other) != _address(held)
    assert held["clip"][:, 0, 0].tolist() == [0, 1, 2, 3] and held["label"].tolist() == [0, 1, 2, 3]
    assert other["name"].tolist() == ["v10", "v11", "v12", "v13"]


def test_the_buffer_is_reused_once_free_and_not_while_an_arrow_block_holds_it():
    from ray.data.block import BlockAccessor

    address = _address(_block(_samples(0, 4)))    # dropped at once: Ray has copied it
    again = _block(_samples(20, 3))
    assert _address(again) == address and again["clip"][:, 0, 0].tolist() == [20, 21, 22]
    table = BlockAccessor.batch_to_block(again)                    # zero-copy: the table refers to it
    del again
    later = _block(_samples(30, 3))
    assert _address(later) != address
    assert table.column("label").to_pylist() == [20, 21, 22]
    assert BlockAccessor.for_block(table).to_numpy("clip")[:, 0, 0].tolist() == [20, 21, 22]


def test_an_empty_block_keeps_every_column():
    block = _block([])
    assert block["clip"].shape == (0, 2, 3) and block["label"].dtype == np.int64 and len(block["name"]) == 0


def test_samples_are_copied_into_the_block_as_they_are_added():
    writer = tasks._BlockWriter(SCHEMA, 3)
    sample = _samples(5, 1)[0]
    writer.add(sample)
    sample["clip"][:] = 99                       # the writer holds a copy, not the sample's array
    writer.add(_samples(6, 1)[0])
    block = writer.batch()
    assert block["clip"][:, 0, 0].tolist() == [5, 6] and block["label"].tolist() == [5, 6]
    assert block["name"].tolist() == ["v5", "v6"] and block["clip"].dtype == np.uint8
    with pytest.raises(ValueError, match="'clip'.*shape"):
        writer.add({"clip": np.zeros((1, 3), np.uint8), "label": 0, "name": "x"})
