"""Fixtures for the Node-RED tests: a cached ``npm ci`` install and a running Node-RED.

See nodered_harness.py for how the install is cached and the process is run.
"""

from __future__ import annotations

import os
import socket
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from labkit.nodered import NodeRedAdmin

sys.path.insert(0, str(Path(__file__).resolve().parent))  # nodered_harness, nodered_flows

from nodered_harness import (  # noqa: E402
    DEFAULT_KAFKA,
    NodeRedProcess,
    install_nodered,
    start_nodered,
    stop_nodered,
)


@pytest.fixture(scope="session")
def nodered_install() -> Path:
    cache = Path(os.environ.get("LABKIT_NODERED_TEST_CACHE", "/tmp/labkit-nodered-test-cache"))
    install_dir, elapsed = install_nodered(cache)
    if elapsed is not None:
        print(f"\n[nodered] npm ci took {elapsed:.1f} s into {install_dir}")
    return install_dir


@pytest.fixture(scope="session")
def kafka_bootstrap() -> str:
    """Broker for the Kafka node tests (``LABKIT_TEST_KAFKA``, default 127.0.0.1:29092)."""
    explicit = os.environ.get("LABKIT_TEST_KAFKA")
    address = explicit or DEFAULT_KAFKA
    host, _, port = address.split(",")[0].rpartition(":")
    try:
        socket.create_connection((host, int(port)), timeout=3).close()
    except OSError as exc:
        if explicit:
            pytest.fail(f"LABKIT_TEST_KAFKA={address} is not reachable: {exc}")
        pytest.skip(f"no Kafka broker at {address} (set LABKIT_TEST_KAFKA): {exc}")
    return address


@pytest.fixture(scope="module")
def nodered(nodered_install: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[NodeRedProcess]:
    user_dir = tmp_path_factory.mktemp("nodered-userdir")
    extra = {"LABKIT_TEST_KAFKA": os.environ.get("LABKIT_TEST_KAFKA", DEFAULT_KAFKA)}
    nr = start_nodered(nodered_install, user_dir, extra)
    try:
        yield nr
    finally:
        stop_nodered(nr)
        assert nr.proc.poll() is not None, "Node-RED is still running"


@pytest.fixture()
def admin(nodered: NodeRedProcess) -> Iterator[NodeRedAdmin]:
    with nodered.admin() as client:
        yield client


@pytest.fixture()
def unique() -> str:
    return uuid.uuid4().hex[:10]
