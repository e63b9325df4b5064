"""The resize action from ``stack/actions/``, loaded the way a runner does: by file path."""

from __future__ import annotations

from types import ModuleType

import pytest

from labkit.pipeline.deploy import action_module


@pytest.fixture(scope="session")
def action() -> ModuleType:
    """The resize action module."""
    return action_module()
