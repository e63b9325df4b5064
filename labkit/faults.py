"""Failure injection: process faults on any service, network faults on any hop.

(Skeleton: the API below is the contract; the implementation is in progress.)
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

# Every hop of the pipeline runs through a Toxiproxy proxy of this name (see labkit.hops).
HOPS = ("client-store", "store-kafka", "nodered-faas", "action-store", "store-webhook")
PROCESS_FAULTS = ("stop", "kill", "pause")
NETWORK_FAULTS = ("latency", "timeout", "reset_peer", "bandwidth")


@dataclass(frozen=True)
class Fault:
    """One fault: what (``kind``), where (``target``: a service for process faults, a hop for
    network faults), when (``at_s`` after the schedule starts) and for how long (``duration_s``).

    ``params`` holds a network fault's attributes, e.g. ``{"latency_ms": 2000, "jitter_ms": 200}``,
    ``{"timeout_ms": 0}`` (blackhole), ``{"rate_kbps": 64}``.
    """

    kind: str
    target: str
    at_s: float = 0.0
    duration_s: float = 5.0
    params: dict[str, Any] = field(default_factory=dict)
