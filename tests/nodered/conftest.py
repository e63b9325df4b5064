"""Fixtures for the Node-RED tests: the session stack's own Node-RED and Kafka.

These tests deploy small flows of their own (full deploys), so any test that
needs the pipeline flow deploys it again itself.
"""

from __future__ import annotations

import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from labkit.stack.clients.nodered import NodeRedAdmin

sys.path.insert(0, str(Path(__file__).resolve().parent))  # nodered_flows, nodered_support

from nodered_support import NodeRedEndpoint  # noqa: E402


@pytest.fixture(scope="session")
def nodered(lab) -> NodeRedEndpoint:
    secrets = lab.ctx.secrets
    return NodeRedEndpoint(lab.endpoints["nodered"], secrets.nodered_user, secrets.nodered_password.get_secret_value())


@pytest.fixture(scope="session")
def red_js(lab) -> Path:
    """Node-RED's entry point in labkit's install cache."""
    service = lab.backend.service("nodered")
    return service.install_step().target(lab.ctx.config.cache_dir) / "node_modules" / "node-red" / "red.js"


@pytest.fixture(scope="session")
def kafka_bootstrap(lab) -> str:
    return lab.kafka_bootstrap


@pytest.fixture()
def admin(nodered: NodeRedEndpoint) -> Iterator[NodeRedAdmin]:
    with nodered.admin() as client:
        yield client


@pytest.fixture()
def unique() -> str:
    return uuid.uuid4().hex[:10]
