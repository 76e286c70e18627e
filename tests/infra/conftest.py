"""Fixtures for the infra/ checks."""

from __future__ import annotations

from types import ModuleType

import pytest

from tests.infra.common import load_infra_module


@pytest.fixture(scope="session")
def validate() -> ModuleType:
    """infra/validate.py: the offline validators."""
    return load_infra_module("validate.py")
