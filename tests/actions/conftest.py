"""Load the resize action from ``stack/actions/`` the way a runner does: by file path."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

import pytest

ACTION_PATH = Path(__file__).resolve().parents[2] / "stack" / "actions" / "resize.py"


def load_action() -> ModuleType:
    """Import ``resize.py`` under its own module name (once per test session)."""
    name = "dit247_resize_action"
    if name not in sys.modules:
        spec = importlib.util.spec_from_file_location(name, ACTION_PATH)
        assert spec is not None and spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        spec.loader.exec_module(module)
    return sys.modules[name]


@pytest.fixture(scope="session")
def action() -> ModuleType:
    """The resize action module."""
    return load_action()
