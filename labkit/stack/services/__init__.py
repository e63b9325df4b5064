"""The lab's services, one module each, found by :mod:`labkit.stack.services.catalog`.

Each service declares its ports, pins, toolchain, install step, start command, readiness
check, hops, remote endpoint and compose entry in its own module; the names below are
derived from those declarations.
"""

from __future__ import annotations

from labkit.stack.services.base import Service
from labkit.stack.services.catalog import service_types

# Start order: each service's event targets come before it (versitygw sends a
# test event at start: Kafka before `storage`, Node-RED before `storage-out`).
SERVICE_TYPES: tuple[type[Service], ...] = tuple(t for t in service_types() if issubclass(t, Service))
SERVICE_NAMES: tuple[str, ...] = tuple(t.name for t in SERVICE_TYPES)
# The services an image passes through: while one of them is down, no image comes out.
PATH_SERVICES: tuple[str, ...] = tuple(t.name for t in SERVICE_TYPES if t.on_image_path)
# The services the fault matrix kills in turn.
CRASH_TESTED: tuple[str, ...] = tuple(t.name for t in SERVICE_TYPES if t.crash_tested)

__all__ = ["CRASH_TESTED", "PATH_SERVICES", "SERVICE_NAMES", "SERVICE_TYPES", "Service"]
