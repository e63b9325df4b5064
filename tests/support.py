"""Helpers shared by the test modules (fixtures live in conftest.py)."""

from __future__ import annotations

import io
import time
from collections.abc import Callable
from typing import Any

import pytest
from PIL import Image

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


def read_output(lab, key_out: str, bucket: str = "dit247c") -> Image.Image:
    """The action's output object, checked to be a valid image and decoded."""
    response = lab.s3("storage-out").get_object(bucket, key_out)
    try:
        data = response.read()
    finally:
        response.close()
        response.release_conn()
    with Image.open(io.BytesIO(data)) as img:
        img.verify()  # verify() leaves the image unusable, so decode a second copy
    img = Image.open(io.BytesIO(data))
    img.load()
    return img
