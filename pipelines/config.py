"""Typed configs: nested dataclasses with defaults, named variants and dotted overrides.

A job's config is a tree of dataclasses with defaults in code. A *variant* is a plain
function returning an edited copy of the base (``def debug() -> TrainConfig``), and the
command line applies ``--variant NAME`` first, then each ``--set a.b=value`` in order::

    parser = argparse.ArgumentParser()
    add_config_args(parser, {"debug": debug, "ucf101": ucf101}, default="debug")
    cfg = resolve_config(parser.parse_args())          # typed, validated
    save_config(cfg, "s3://runs/r1/config.yaml")        # the resolved config goes with the run
    mlflow_params = flatten(cfg)                         # {"optim.lr": 0.1, ...}

Override values are parsed by the field's annotation: ``int``, ``float``, ``bool``
(``true/false/1/0/yes/no/on/off``), ``str``, ``Optional[...]`` (``none``/``null`` gives
``None``), ``tuple``/``list`` (comma-separated ``8,16`` or JSON ``[8, 16]``), ``dict``
(JSON) and nested dataclasses (JSON object). Unknown keys raise with a did-you-mean.
"""

from __future__ import annotations

import argparse
import dataclasses
import difflib
import json
import types
import typing
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

from pipelines.io import storage

__all__ = [
    "ConfigError", "ScalingConfig", "add_config_args", "apply_overrides", "flatten",
    "from_dict", "load_config", "resolve_config", "save_config", "set_value", "to_dict",
]

C = TypeVar("C")
_TRUE = {"true", "1", "yes", "y", "on"}
_FALSE = {"false", "0", "no", "n", "off"}
_NONE = {"none", "null", "~"}


class ConfigError(ValueError):
    """A bad override, variant or config file."""


@dataclasses.dataclass
class ScalingConfig:
    """How many Ray Train workers, and what each one gets."""

    num_workers: int = 2
    use_gpu: bool = False
    cpus_per_worker: float = 1.0


def _field_types(cls: type) -> dict[str, Any]:
    # get_type_hints resolves the string annotations of `from __future__ import annotations`.
    hints = typing.get_type_hints(cls)
    return {f.name: hints.get(f.name, Any) for f in dataclasses.fields(cls)}


def _unwrap_optional(tp: Any) -> tuple[Any, bool]:
    """``Optional[X]`` / ``X | None`` -> ``(X, True)``; anything else -> ``(tp, False)``."""
    if typing.get_origin(tp) in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        if len(args) < len(typing.get_args(tp)):
            return (args[0] if len(args) == 1 else typing.Union[tuple(args)]), True
    return tp, False


def parse_value(text: str, tp: Any) -> Any:
    """Parse the command-line string ``text`` as type ``tp``.

    Raises:
        ConfigError: ``text`` is not a valid ``tp``.
    """
    inner, optional = _unwrap_optional(tp)
    if optional and text.strip().lower() in _NONE:
        return None
    origin = typing.get_origin(inner)
    try:
        if inner is Any:
            return text
        if inner is bool:
            low = text.strip().lower()
            if low in _TRUE | _FALSE:
                return low in _TRUE
            raise ValueError(f"expected a boolean (true/false), got {text!r}")
        if inner in (int, float, str):
            return inner(text.strip()) if inner is not str else text
        if inner in (tuple, list) or origin in (tuple, list):
            return _parse_sequence(text, inner, origin)
        if inner is dict or origin is dict:
            value = json.loads(text)
            if not isinstance(value, dict):
                raise ValueError("expected a JSON object")
            return value
        if dataclasses.is_dataclass(inner):
            return from_dict(inner, json.loads(text))
        if origin in (typing.Union, types.UnionType):  # e.g. int | str: first that parses
            for arg in typing.get_args(inner):
                try:
                    return parse_value(text, arg)
                except ConfigError:
                    continue
            raise ValueError(f"matches none of {typing.get_args(inner)}")
        if origin is typing.Literal:
            for choice in typing.get_args(inner):
                if str(choice) == text:
                    return choice
            raise ValueError(f"expected one of {typing.get_args(inner)}")
    except (ValueError, TypeError, json.JSONDecodeError) as exc:
        raise ConfigError(f"cannot parse {text!r} as {_type_name(tp)}: {exc}") from exc
    raise ConfigError(f"unsupported field type {_type_name(tp)}")


def _parse_sequence(text: str, inner: Any, origin: Any) -> tuple | list:
    stripped = text.strip()
    if stripped.startswith("["):
        items = json.loads(stripped)
        raw = [json.dumps(i) if not isinstance(i, str) else i for i in items]
    else:
        raw = [s.strip() for s in stripped.split(",")] if stripped else []
    args = typing.get_args(inner)
    if args and len(args) == 2 and args[1] is Ellipsis:
        parsed = [parse_value(r, args[0]) for r in raw]
    elif args and (origin is tuple):
        if len(args) != len(raw):
            raise ValueError(f"expected {len(args)} items, got {len(raw)}")
        parsed = [parse_value(r, a) for r, a in zip(raw, args)]
    elif args:
        parsed = [parse_value(r, args[0]) for r in raw]
    else:
        parsed = [json.loads(r) if r and r[0] in "-0123456789[{" else r for r in raw]
    return tuple(parsed) if (origin or inner) is tuple else list(parsed)


def _type_name(tp: Any) -> str:
    return getattr(tp, "__name__", None) or str(tp).replace("typing.", "")


def set_value(cfg: Any, key: str, text: str) -> Any:
    """Return a copy of ``cfg`` with the dotted ``key`` set from the string ``text``.

    Raises:
        ConfigError: unknown key (with a did-you-mean) or a value of the wrong type.
    """
    return _set(cfg, key.split("."), text, key)


def _set(cfg: Any, parts: list[str], text: str, key: str) -> Any:
    head, rest = parts[0], parts[1:]
    where = key[: len(key) - len(".".join(parts))].rstrip(".") or type(cfg).__name__
    types_ = _field_types(type(cfg))
    if head not in types_:
        raise ConfigError(_unknown_key_message(head, list(types_), where))
    if rest:
        child = getattr(cfg, head)
        if not dataclasses.is_dataclass(child):
            raise ConfigError(f"cannot set {key!r}: {head!r} is a {_type_name(types_[head])}, "
                              "not a config section")
        return dataclasses.replace(cfg, **{head: _set(child, rest, text, key)})
    try:
        value = parse_value(text, types_[head])
    except ConfigError as exc:
        raise ConfigError(f"{key}: {exc}") from None
    return dataclasses.replace(cfg, **{head: value})


def _unknown_key_message(key: str, known: list[str], where: str) -> str:
    close = difflib.get_close_matches(key, known, n=3, cutoff=0.6)
    hint = f"; did you mean {' or '.join(repr(c) for c in close)}?" if close else ""
    return f"unknown key '{key}' in {where}{hint} (known: {', '.join(known)})"


def apply_overrides(cfg: C, overrides: Sequence[str]) -> C:
    """Apply ``["a.b=1", "c=x,y"]`` in order and return the new config (``cfg`` is not changed).

    Raises:
        ConfigError: an override without ``=``, an unknown key or a badly typed value.
    """
    for item in overrides:
        key, sep, text = item.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"override {item!r} is not of the form key=value")
        cfg = set_value(cfg, key.strip(), text)
    return cfg


def to_dict(cfg: Any) -> Any:
    """The config as plain JSON-able data (tuples become lists)."""
    if dataclasses.is_dataclass(cfg) and not isinstance(cfg, type):
        return {f.name: to_dict(getattr(cfg, f.name)) for f in dataclasses.fields(cfg)}
    if isinstance(cfg, (list, tuple)):
        return [to_dict(v) for v in cfg]
    if isinstance(cfg, dict):
        return {str(k): to_dict(v) for k, v in cfg.items()}
    return cfg


def flatten(cfg: Any, prefix: str = "") -> dict[str, Any]:
    """``{"a.b": value}`` for every leaf; lists stay values (MLflow params are flat strings)."""
    data = to_dict(cfg) if dataclasses.is_dataclass(cfg) else cfg
    out: dict[str, Any] = {}
    for key, value in data.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict) and value:
            out.update(flatten(value, f"{name}."))
        else:
            out[name] = value
    return out


def from_dict(cls: type[C], data: dict[str, Any]) -> C:
    """Build ``cls`` from :func:`to_dict` output; missing keys keep their defaults.

    Raises:
        ConfigError: unknown keys (with a did-you-mean) or values of the wrong type.
    """
    types_ = _field_types(cls)
    kwargs: dict[str, Any] = {}
    for key, value in data.items():
        if key not in types_:
            raise ConfigError(_unknown_key_message(key, list(types_), cls.__name__))
        kwargs[key] = _coerce(value, types_[key], key)
    return cls(**kwargs)


def _coerce(value: Any, tp: Any, key: str) -> Any:
    inner, optional = _unwrap_optional(tp)
    if value is None and optional:
        return None
    if dataclasses.is_dataclass(inner) and isinstance(value, dict):
        return from_dict(inner, value)
    origin = typing.get_origin(inner)
    if (inner is tuple or origin is tuple) and isinstance(value, list):
        return tuple(value)
    if inner is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if inner in (int, float, str, bool) and not isinstance(value, inner):
        raise ConfigError(f"{key}: expected {inner.__name__}, got {value!r}")
    return value


def save_config(cfg: Any, url: str) -> str:
    """Write the resolved config as YAML (``.yaml``/``.yml``) or JSON (anything else) to ``url``."""
    data = to_dict(cfg)
    if url.endswith((".yaml", ".yml")):
        import yaml

        text = yaml.safe_dump(data, sort_keys=False)
    else:
        text = json.dumps(data, indent=2) + "\n"
    with storage.open_url(url, "w") as f:
        f.write(text)
    return url


def load_config(cls: type[C], url: str) -> C:
    """Read a config written by :func:`save_config`."""
    text = storage.read_text(url)
    if url.endswith((".yaml", ".yml")):
        import yaml

        return from_dict(cls, yaml.safe_load(text) or {})
    return from_dict(cls, json.loads(text))


def add_config_args(parser: argparse.ArgumentParser, variants: dict[str, Callable[[], Any]],
                    default: str | None = None) -> argparse.ArgumentParser:
    """Add ``--variant NAME`` (one of ``variants``) and repeatable ``--set key=value``."""
    names = list(variants)
    parser.add_argument("--variant", choices=names, default=default or names[0],
                        help=f"named config variant (default: {default or names[0]})")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="dotted override applied after the variant, e.g. --set optim.lr=0.1")
    parser.set_defaults(_config_variants=variants)
    return parser


def resolve_config(args: argparse.Namespace) -> Any:
    """The variant named by ``args.variant`` with ``args.overrides`` applied.

    Raises:
        ConfigError: unknown variant or a bad override.
    """
    variants = args._config_variants
    if args.variant not in variants:
        raise ConfigError(_unknown_key_message(args.variant, list(variants), "variants"))
    return apply_overrides(variants[args.variant](), args.overrides)
