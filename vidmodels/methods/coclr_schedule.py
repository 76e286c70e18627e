"""The CoCLR phase schedule and the mined-positive precision diagnostic.

Holds the ``Modality``/``Stage`` literals, :class:`CoCLRPhase` and
:func:`coclr_schedule` (seed 001, L949-L957, L973-L975), and :func:`mined_precision`,
the share of CoCLR's mined positives that are same-class. :mod:`vidmodels.methods.coclr`
re-exports all of them.

Legend: B local batch, K queue size.
"""

from __future__ import annotations

import dataclasses
from typing import Literal

import torch

Modality = Literal["rgb", "flow"]
Stage = Literal["infonce", "coclr", "ubernce"]


@torch.no_grad()
def mined_precision(pos_BK: torch.Tensor, labels_B: torch.Tensor, queue_labels_K: torch.Tensor) -> torch.Tensor | None:
    """Share of mined positives whose class equals the query's (labels are never used to mine).

    The diagnostic of the thesis's analysis of CoCLR's mining: how often the other
    modality's top-K are true same-class clips. Only pairs where both labels are
    known (``>= 0``) count; None when there is no such pair.

    Args:
        pos_BK: Mined positives over the queue (the own key is not in it).
        labels_B: Query labels, -1 unknown.
        queue_labels_K: Labels of the queue entries, -1 unknown.
    """
    known_BK = pos_BK & (labels_B[:, None] >= 0) & (queue_labels_K[None, :] >= 0)
    n = known_BK.sum()
    if n == 0:
        return None
    same_BK = labels_B[:, None] == queue_labels_K[None, :]
    return (known_BK & same_BK).sum().float() / n


@dataclasses.dataclass(frozen=True)
class CoCLRPhase:
    """One phase of the CoCLR schedule.

    Attributes:
        name: Unique phase name, e.g. ``"coclr_rgb_c1"``.
        stage: ``CoCLRConfig.stage`` of the phase.
        modality: The modality trained.
        epochs: Epochs (one clip per video per epoch, L973).
        init_from: Modality -> name of the phase whose final ``encoder_state`` to load.
    """

    name: str
    stage: Stage
    modality: Modality
    epochs: int
    init_from: dict[str, str]


def coclr_schedule(*, cycles: int = 2, init_epochs: int = 300, epochs_per_network: int = 100) -> list[CoCLRPhase]:
    """Initialisation (InfoNCE per stream), then ``cycles`` alternations RGB → flow.

    Defaults are UCF101 (L973-L975): 300 InfoNCE epochs per stream, 2 cycles of
    100 + 100 epochs. K400 uses ``cycles=1, epochs_per_network=50``. Each phase
    starts from the latest weights of both modalities; the other one is frozen.

    Raises:
        ValueError: If a count is negative.
    """
    if min(cycles, init_epochs, epochs_per_network) < 0:
        raise ValueError("cycles and epochs must be >= 0")
    phases = [CoCLRPhase(f"infonce_{m}", "infonce", m, init_epochs, {}) for m in ("rgb", "flow")]
    latest = {"rgb": "infonce_rgb", "flow": "infonce_flow"}
    for c in range(1, cycles + 1):
        for m in ("rgb", "flow"):
            name = f"coclr_{m}_c{c}"
            phases.append(CoCLRPhase(name, "coclr", m, epochs_per_network, dict(latest)))
            latest[m] = name
    return phases
