"""Search spaces over a method's dotted config keys: typed domains, their text form, method defaults.

A search space maps the keys that ``--set`` accepts (``optim.lr``, ``method.topk``...) to a
domain. Methods declare a default one in their spec (``MethodSpec.sweep``, a
:class:`SweepDefaults` with the metric the scheduler ranks trials on); ``jobs/tune.py
--space KEY=DOMAIN`` adds or replaces keys with the text form parsed here::

    loguniform(1e-4, 1e-2)   uniform(0, 0.5)   randint(1, 10)   choice(1, 5, 50)   grid(3e-3, 0)

``grid`` runs every value (times ``--num-samples``), in order; the others are sampled.
A trial's values reach its config through the same typed parser as ``--set``
(:func:`apply_trial`), so a space can only name keys and values a single run accepts;
:func:`check_space` refuses a bad key or value before any trial starts.

This module imports neither Ray nor the method registry (a spec module imports it);
:meth:`Domain.to_tune` imports ``ray.tune`` when a sweep is built.
"""

from __future__ import annotations

import dataclasses
import json
import re
from collections.abc import Mapping, Sequence
from typing import Any, Protocol

from pipelines.config import ConfigError, apply_overrides, set_value

_CALL = re.compile(r"^\s*(\w+)\s*\((.*)\)\s*$", re.DOTALL)


class Domain(Protocol):
    """A typed search domain: how Tune samples it, and one value to check it with."""

    def to_tune(self) -> Any: ...

    def example(self) -> Any: ...


@dataclasses.dataclass(frozen=True)
class Uniform:
    """A float drawn uniformly from ``[low, high]``."""

    low: float
    high: float

    def to_tune(self) -> Any:
        from ray import tune

        return tune.uniform(self.low, self.high)

    def example(self) -> float:
        return self.low


@dataclasses.dataclass(frozen=True)
class LogUniform:
    """A float whose log is uniform over ``[log low, log high]`` (learning rates, weight decay)."""

    low: float
    high: float

    def __post_init__(self) -> None:
        if not 0 < self.low < self.high:
            raise ConfigError(f"loguniform needs 0 < low < high, got ({self.low}, {self.high})")

    def to_tune(self) -> Any:
        from ray import tune

        return tune.loguniform(self.low, self.high)

    def example(self) -> float:
        return self.low


@dataclasses.dataclass(frozen=True)
class RandInt:
    """An integer drawn uniformly from ``[low, high)`` (Tune's ``randint``)."""

    low: int
    high: int

    def to_tune(self) -> Any:
        from ray import tune

        return tune.randint(self.low, self.high)

    def example(self) -> int:
        return self.low


@dataclasses.dataclass(frozen=True)
class Choice:
    """One of ``values``, drawn uniformly."""

    values: tuple[Any, ...]

    def to_tune(self) -> Any:
        from ray import tune

        return tune.choice(list(self.values))

    def example(self) -> Any:
        return self.values[0]


@dataclasses.dataclass(frozen=True)
class Grid:
    """Every one of ``values``, in order (Tune's ``grid_search``)."""

    values: tuple[Any, ...]

    def to_tune(self) -> Any:
        from ray import tune

        return tune.grid_search(list(self.values))

    def example(self) -> Any:
        return self.values[0]


_KINDS: dict[str, tuple[type, int | None]] = {"uniform": (Uniform, 2), "loguniform": (LogUniform, 2),
                                              "randint": (RandInt, 2), "choice": (Choice, None),
                                              "grid": (Grid, None)}


@dataclasses.dataclass(frozen=True)
class SweepDefaults:
    """What a method sweeps by default (``MethodSpec.sweep``).

    Attributes:
        space: dotted config key -> domain.
        metric: the epoch-end metric (as the loop reports it: ``val_top1``, ``epoch_loss``)
            the scheduler ranks trials on and the best trial is chosen by.
        mode: ``max`` or ``min``.
        variant_overrides: variant -> ``--set`` overrides a sweep of that variant applies to the
            base job before the command line's (e.g. more optimiser steps per epoch on ``debug``,
            so that trials differ at ASHA's first rungs).
        spaces: named spaces a sweep picks with ``--space NAME`` instead of ``space`` (e.g. the
            seed's ablations); ``default`` is ``space`` itself.
    """

    space: Mapping[str, Domain]
    metric: str
    mode: str = "max"
    variant_overrides: Mapping[str, tuple[str, ...]] = dataclasses.field(default_factory=dict)
    spaces: Mapping[str, Mapping[str, Domain]] = dataclasses.field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.mode not in ("max", "min"):
            raise ConfigError(f"mode must be 'max' or 'min', got {self.mode!r}")


def _value(text: str) -> Any:
    """``1`` -> 1, ``1e-3`` -> 0.001, ``true`` -> True, ``"a,b"``/``a`` -> str, ``[8,16]`` -> list."""
    text = text.strip()
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return text


def _split_args(body: str) -> list[str]:
    """Split ``a, [1, 2], "x,y"`` on top-level commas."""
    parts, depth, quote, cur = [], 0, None, ""
    for ch in body:
        if quote:
            quote = None if ch == quote else quote
        elif ch in "\"'":
            quote = ch
        elif ch in "[{(":
            depth += 1
        elif ch in "]})":
            depth -= 1
        elif ch == "," and depth == 0:
            parts.append(cur)
            cur = ""
            continue
        cur += ch
    return [p for p in (*parts, cur) if p.strip()]


def parse_domain(text: str) -> Domain:
    """Parse the text form (module docstring) into a domain.

    Raises:
        ConfigError: unknown kind, wrong number of bounds, or not of the form ``kind(args)``.
    """
    match = _CALL.match(text)
    if not match or match.group(1).lower() not in _KINDS:
        raise ConfigError(f"bad search domain {text!r}; expected one of "
                          f"{', '.join(k + '(...)' for k in _KINDS)}")
    cls, arity = _KINDS[match.group(1).lower()]
    args = [_value(a) for a in _split_args(match.group(2))]
    if arity is None:
        if not args:
            raise ConfigError(f"{text!r}: needs at least one value")
        return cls(tuple(args))
    if len(args) != arity or not all(isinstance(a, (int, float)) and not isinstance(a, bool) for a in args):
        raise ConfigError(f"{text!r}: needs {arity} numbers")
    return cls(*(int(a) for a in args)) if cls is RandInt else cls(*(float(a) for a in args))


def parse_space(items: Sequence[str]) -> dict[str, Domain]:
    """``["optim.lr=loguniform(1e-4,1e-2)", ...]`` -> ``{"optim.lr": LogUniform(...)}``.

    Raises:
        ConfigError: an item without ``=`` or a bad domain.
    """
    out: dict[str, Domain] = {}
    for item in items:
        key, sep, text = item.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"--space {item!r} is not of the form key=domain")
        out[key.strip()] = parse_domain(text)
    return out


def select_space(method: str, defaults: SweepDefaults | None, items: Sequence[str], *,
                 use_default: bool = True) -> tuple[dict[str, Domain], list[str]]:
    """The base space of a sweep and the ``KEY=DOMAIN`` items that edit it.

    An item without ``=`` names one of the method's spaces (``default`` or a key of
    ``SweepDefaults.spaces``), which replaces the default; otherwise the base is the default space
    (empty with ``use_default=False``).

    Raises:
        ConfigError: more than one name, or a name the method does not have (the known ones listed).
    """
    names = [i.strip() for i in items if "=" not in i]
    rest = [i for i in items if "=" in i]
    known = {"default": defaults.space, **defaults.spaces} if defaults else {}
    if len(names) > 1:
        raise ConfigError(f"--space names one space at a time, got {', '.join(names)}")
    if names and names[0] not in known:
        raise ConfigError(f"{method} has no space {names[0]!r}; its spaces: {', '.join(known) or 'none'} "
                          f"(or give --space KEY=DOMAIN)")
    if names:
        return dict(known[names[0]]), rest
    return (dict(defaults.space) if defaults and use_default else {}), rest


def load_space_file(path: str) -> dict[str, Domain]:
    """A user's space from YAML: ``{dotted.key: "loguniform(1e-4, 1e-2)", ...}``."""
    import yaml

    from pipelines.io import storage

    data = yaml.safe_load(storage.read_text(path)) or {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping of config keys to domains")
    return parse_space([f"{k}={v}" for k, v in data.items()])


def describe(space: Mapping[str, Domain]) -> dict[str, str]:
    """``{key: "LogUniform(low=0.0001, high=0.01)"}``, for the sweep's MLflow params and the log."""
    return {k: repr(v) for k, v in space.items()}


def format_value(value: Any) -> str:
    """A sampled value as the text ``--set`` parses (JSON for sequences, ``true``/``false``)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (list, tuple, dict)):
        return json.dumps(list(value) if isinstance(value, tuple) else value)
    return str(value)


def apply_trial(job: Any, values: Mapping[str, Any]) -> Any:
    """``job`` with each sampled ``values[key]`` set through the typed config parser."""
    for key in sorted(values):
        job = set_value(job, key, format_value(values[key]))
    return job


def check_space(space: Mapping[str, Domain], job: Any) -> None:
    """Refuse, before any trial starts, a key the config lacks or a value it cannot take.

    Raises:
        ConfigError: with the config's did-you-mean for unknown keys.
    """
    if not space:
        raise ConfigError("empty search space: give --space KEY=DOMAIN (the method declares no default)")
    for key, domain in space.items():
        values = domain.values if isinstance(domain, (Choice, Grid)) else (domain.example(),)
        for value in values:
            apply_overrides(job, [f"{key}={format_value(value)}"])
