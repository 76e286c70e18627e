"""Checkpoints: one ``state.pt`` per checkpoint, written atomically, loaded with ``weights_only=True``.

A state holds the model (with its MoCo queues and momentum encoder: they are buffers or
submodules of the method), optimiser, scheduler, epoch/step and the RNG states.
"""

from __future__ import annotations

import os
import random
from typing import Any

import numpy as np
import torch

CHECKPOINT_FILE = "state.pt"


def rng_state() -> dict[str, Any]:
    """Python, numpy and torch RNG states as tensors and plain types (loadable with weights_only)."""
    np_state = np.random.get_state()
    return {"python": random.getstate(), "torch": torch.get_rng_state(),
            "numpy": (np_state[0], torch.from_numpy(np_state[1].astype(np.int64)), *np_state[2:])}


def set_rng_state(state: dict[str, Any]) -> None:
    random.setstate(tuple(tuple(s) if isinstance(s, list) else s for s in state["python"]))
    torch.set_rng_state(state["torch"])
    kind, keys, *rest = state["numpy"]
    np.random.set_state((kind, keys.numpy().astype(np.uint32), *rest))


def save_state(directory: str, state: dict[str, Any]) -> str:
    """Write ``state`` to ``directory/state.pt`` via a temporary file and a rename (atomic)."""
    path = os.path.join(directory, CHECKPOINT_FILE)
    tmp = path + ".tmp"
    torch.save(state, tmp)
    os.replace(tmp, path)
    return path


def load_state(directory: str, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Load a checkpoint written by :func:`save_state`; never unpickles arbitrary objects."""
    return torch.load(os.path.join(directory, CHECKPOINT_FILE), map_location=map_location, weights_only=True)


def load_checkpoint_state(checkpoint) -> dict[str, Any]:
    """The state dict inside a ``ray.train.Checkpoint``."""
    with checkpoint.as_directory() as directory:
        return load_state(directory)
