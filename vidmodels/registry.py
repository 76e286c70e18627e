"""Backbone registry: one name -> one keyword-only builder, plus its reference figures.

Every builder registered here returns a :class:`vidmodels.backbones.base.VideoBackbone`
and accepts ``num_classes`` (0 = headless) as a keyword argument. The registry also
records the canonical input of each model and the published figures it must match,
which ``python -m vidmodels.summary`` and the tests read.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

from torch import nn

__all__ = ["ModelInfo", "register", "create_backbone", "list_backbones", "get_model_info"]


@dataclasses.dataclass(frozen=True)
class ModelInfo:
    """What the registry knows about one backbone name.

    Attributes:
        name: Registered name.
        builder: Keyword-only callable building the module.
        input_size: Canonical ``(T, H, W)`` input for FLOP counting.
        in_chans: Channels of the canonical input.
        ref_params: Published parameter count with 400 classes, if any.
        ref_gmacs: Published multiply-adds (G) at ``input_size``, if any.
        ref_params_precision: Unit of the last published digit of ``ref_params``
            (e.g. 10_000 for "3.79M"; 1 for an exact count).
        ref_gmacs_precision: Unit of the last published digit of ``ref_gmacs``.
        ref_source: Where the reference figures come from and how they were counted.
        debug: True for the tiny CPU test sizes.
    """

    name: str
    builder: Callable[..., nn.Module]
    input_size: tuple[int, int, int]
    in_chans: int = 3
    ref_params: int | None = None
    ref_gmacs: float | None = None
    ref_params_precision: int = 1
    ref_gmacs_precision: float = 0.01
    ref_source: str = ""
    debug: bool = False


_REGISTRY: dict[str, ModelInfo] = {}


def register(
    name: str | None = None,
    *,
    input_size: tuple[int, int, int],
    in_chans: int = 3,
    ref_params: int | None = None,
    ref_gmacs: float | None = None,
    ref_params_precision: int = 1,
    ref_gmacs_precision: float = 0.01,
    ref_source: str = "",
) -> Callable[[Callable[..., nn.Module]], Callable[..., nn.Module]]:
    """Decorator registering a backbone builder under ``name`` (default: function name).

    Raises:
        ValueError: If the name is already registered.
    """

    def wrap(fn: Callable[..., nn.Module]) -> Callable[..., nn.Module]:
        key = name or fn.__name__
        if key in _REGISTRY:
            raise ValueError(f"backbone {key!r} is already registered")
        _REGISTRY[key] = ModelInfo(
            name=key,
            builder=fn,
            input_size=input_size,
            in_chans=in_chans,
            ref_params=ref_params,
            ref_gmacs=ref_gmacs,
            ref_params_precision=ref_params_precision,
            ref_gmacs_precision=ref_gmacs_precision,
            ref_source=ref_source,
            debug=key.endswith("_debug"),
        )
        return fn

    return wrap


def create_backbone(name: str, *, num_classes: int = 0, **kwargs: Any) -> nn.Module:
    """Builds a registered backbone.

    Args:
        name: A name from :func:`list_backbones`.
        num_classes: Size of the classifier; 0 gives a headless backbone whose
            ``forward`` returns the pooled embedding ``(B, feature_dim)``.
        **kwargs: Forwarded to the family builder (e.g. ``in_chans=2`` for flow).

    Raises:
        KeyError: If ``name`` is not registered.
    """
    if name not in _REGISTRY:
        raise KeyError(f"unknown backbone {name!r}; known: {', '.join(list_backbones())}")
    return _REGISTRY[name].builder(num_classes=num_classes, **kwargs)


def list_backbones(*, debug: bool | None = None) -> list[str]:
    """Sorted registered names; ``debug=True/False`` keeps only debug/full sizes."""
    return sorted(k for k, v in _REGISTRY.items() if debug is None or v.debug == debug)


def get_model_info(name: str) -> ModelInfo:
    """Registry entry of ``name`` (canonical input and reference figures)."""
    return _REGISTRY[name]
