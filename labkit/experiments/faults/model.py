"""What a fault is: a kind, a target, a time, a duration and the kind's parameters."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from labkit.stack.hops import HOP_NAMES

# Every hop of the pipeline runs through a Toxiproxy proxy of this name (see labkit.stack.hops).
HOPS: tuple[str, ...] = HOP_NAMES
# The target of a fault on the whole stack (the stack restart).
STACK = "stack"


@dataclass(frozen=True)
class Fault:
    """One fault: what (``kind``), where (``target``: a service, a hop, or ``stack``), when (``at_s``
    after the schedule starts) and for how long (``duration_s``).

    ``params`` holds the kind's parameters, e.g. ``{"latency_ms": 2000, "jitter_ms": 200}``,
    ``{"timeout_ms": 0}`` (blackhole), ``{"rate_kbps": 64}``; each kind lists its own
    (:data:`labkit.experiments.faults.KINDS`).
    """

    kind: str
    target: str
    at_s: float = 0.0
    duration_s: float = 5.0
    params: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Param:
    """One parameter of a fault kind.

    Attributes:
        name: Its key in a fault's ``params``, with its unit (``latency_ms``).
        default: Its value when a fault does not give one.
        least: The smallest valid value.
        most: The end of the control panel's slider; None: the panel offers no slider for it.
        step: The slider's step.
    """

    name: str
    default: float
    least: float = 0
    most: float | None = None
    step: float = 1


def label(fault: Fault) -> str:
    """A short name for tables and plots, e.g. ``latency@nodered-faas``."""
    return f"{fault.kind}@{fault.target}"


def as_spec(fault: Fault) -> dict[str, Any]:
    """The fault as one entry of an experiment's ``faults`` list (``params`` only when it has any)."""
    spec = asdict(fault)
    if not spec["params"]:
        del spec["params"]
    return spec


def from_entry(entry: dict) -> Fault:
    """The fault of one ``faults.json`` entry (:class:`labkit.stack.faultstate.FaultFile`)."""
    return Fault(entry["kind"], entry["target"], entry.get("at_s", 0.0), entry.get("duration_s", 5.0),
                 entry.get("params") or {})
