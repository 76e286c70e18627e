"""Load an entry script (``jobs/*.py``, ``bench/*.py``) as a module, to call its ``main`` in-process."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from types import ModuleType

ROOT = Path(__file__).resolve().parents[1]


def load_script(relative: str) -> ModuleType:
    """``load_script("jobs/flow.py")``: the script executed as a fresh module (its ``__main__`` block not run)."""
    path = ROOT / relative
    spec = importlib.util.spec_from_file_location(f"vidray_script_{path.parent.name}_{path.stem}", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module
