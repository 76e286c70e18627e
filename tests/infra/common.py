"""Paths and a loader shared by the infra/ tests (infra/ is deployment material, not a package)."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from types import ModuleType

ROOT = Path(__file__).resolve().parents[2]
INFRA = ROOT / "infra"


def load_infra_module(relative: str) -> ModuleType:
    """``load_infra_module("validate.py")``: a file under infra/ executed as a fresh module."""
    path = INFRA / relative
    spec = importlib.util.spec_from_file_location(f"vidray_infra_{path.stem}", path)
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module
