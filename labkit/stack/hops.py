"""The pipeline's hops, each routed through a Toxiproxy proxy so any of them can be degraded.

A hop is named after its two ends. Its proxy listens on the hop's own port and
forwards to the real service; the upstream side of every hop is configured to
use the proxy's address, never the service's.
"""

from __future__ import annotations

from dataclasses import dataclass

from labkit.stack.config import LabConfig


@dataclass(frozen=True)
class Hop:
    """One hop: the proxy named ``name`` listens on port ``listen`` and forwards to port ``upstream``."""

    name: str
    listen: str
    upstream: str
    description: str


HOPS: tuple[Hop, ...] = (
    Hop("client-store", "hop-client-store", "storage", "uploads from Node-RED to the store"),
    # Kafka clients reconnect to the broker's advertised address, so the broker
    # advertises this proxy on a listener of its own (kafka-proxied).
    Hop("store-kafka", "hop-store-kafka", "kafka-proxied", "the store's events to Kafka"),
    Hop("nodered-faas", "hop-nodered-faas", "faas", "Node-RED's invocations of the action"),
    Hop("action-store", "hop-action-store", "storage-out", "the action's reads and writes"),
    Hop("store-webhook", "hop-store-webhook", "nodered", "the store's webhook to Node-RED"),
)
HOP_NAMES = tuple(h.name for h in HOPS)


def hop(name: str) -> Hop:
    return next(h for h in HOPS if h.name == name)


def hop_address(config: LabConfig, name: str) -> str:
    """``host:port`` where the upstream side of hop ``name`` connects (the proxy)."""
    return f"{config.host}:{config.port(hop(name).listen)}"


def hop_url(config: LabConfig, name: str) -> str:
    return f"http://{hop_address(config, name)}"
