"""The lab's services, one module each, listed in start order."""

from __future__ import annotations

from labkit.stack.services.base import Service
from labkit.stack.services.faas import Faas
from labkit.stack.services.kafka import Kafka
from labkit.stack.services.mail import Mail
from labkit.stack.services.nodered import NodeRed
from labkit.stack.services.storage import Storage, StorageOut
from labkit.stack.services.toxiproxy import Toxiproxy

# Start order: each service's event targets come before it (versitygw sends a
# test event at start: Kafka before `storage`, Node-RED before `storage-out`).
SERVICE_TYPES: tuple[type[Service], ...] = (Mail, Toxiproxy, Kafka, Faas, NodeRed, Storage, StorageOut)
SERVICE_NAMES: tuple[str, ...] = tuple(t.name for t in SERVICE_TYPES)

__all__ = ["SERVICE_NAMES", "SERVICE_TYPES", "Service"]
