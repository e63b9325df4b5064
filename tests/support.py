"""Helpers shared by the test modules (fixtures live in conftest.py)."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import pytest

# versitygw's log line when its Kafka writer gives up on an event (the event is lost)
DROPPED = "failed to send kafka event"


def poll(what: str, fetch: Callable[[], Any], timeout_s: float = 20.0, interval_s: float = 0.2) -> Any:
    """Call ``fetch`` until it returns something truthy, and return that; fail the test after ``timeout_s``."""
    deadline = time.monotonic() + timeout_s
    while not (value := fetch()):
        if time.monotonic() >= deadline:
            pytest.fail(f"timed out after {timeout_s:.0f} s waiting for {what}")
        time.sleep(interval_s)
    return value
