"""Training methods: compositions of backbone, head, (momentum encoder, queue) and loss.

Each method is an ``nn.Module`` built from its config whose ``forward(batch)`` returns
``dict(loss=..., **metrics)``; the generic train loop in ``pipelines/`` knows nothing else.
"""

from __future__ import annotations

from typing import Any

from torch import nn

from vidmodels.methods.classifier import Classifier, ClassifierConfig
from vidmodels.methods.coclr import CoCLR, CoCLRConfig, CoCLRPhase, coclr_schedule
from vidmodels.methods.detection import DetectionConfig, FrameDetector
from vidmodels.methods.moco import KeyQueue, ProjectedEncoder

__all__ = [
    "METHODS",
    "Classifier",
    "ClassifierConfig",
    "CoCLR",
    "CoCLRConfig",
    "CoCLRPhase",
    "DetectionConfig",
    "FrameDetector",
    "KeyQueue",
    "ProjectedEncoder",
    "build_method",
    "coclr_schedule",
]

METHODS: dict[str, type[nn.Module]] = {"coclr": CoCLR, "classifier": Classifier, "detection": FrameDetector}


def build_method(name: str, cfg: Any) -> nn.Module:
    """Builds ``METHODS[name](cfg)``.

    Raises:
        KeyError: If ``name`` is not a known method.
    """
    if name not in METHODS:
        raise KeyError(f"unknown method {name!r}; known: {', '.join(sorted(METHODS))}")
    return METHODS[name](cfg)
