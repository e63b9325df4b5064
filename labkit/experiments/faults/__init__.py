"""Failure injection: process faults on any service, network faults on any hop, a stack restart.

A *process fault* acts on a service's processes through the backend: ``stop`` (a clean
shutdown), ``kill`` (``kill -9``, like a crash) or ``pause`` (``SIGSTOP``: the process
is there, holds its ports and connections, and answers nothing). A *network fault*
degrades one hop of the pipeline with a Toxiproxy toxic on the hop's proxy (named
after the hop, see :mod:`labkit.stack.hops`); the services at both ends keep running.
The *stack restart* takes the whole stack down and up again, data kept.

Each kind is one class in a registry (:data:`KINDS`, :mod:`.kinds`), with ``validate``,
``inject``, ``clear`` and ``describe``; ``docs/extending.md`` shows how to add one.

Every fault in force is written to ``<data_dir>/faults.json`` until it is cleared, so
a kernel that dies mid-experiment leaves a record; :func:`repair` (run by every
``labkit up``) undoes whatever such a kernel left behind.

Example:
    >>> with FaultInjector(lab) as faults:                                  # doctest: +SKIP
    ...     faults.inject(Fault("latency", "nodered-faas", params={"latency_ms": 2000}))
    ...     push(lab, images)
    >>> schedule = FaultInjector(lab).run_schedule(                          # doctest: +SKIP
    ...     [Fault("pause", "kafka", at_s=5, duration_s=10)])
    >>> schedule.wait().pipe(print)                                          # doctest: +SKIP
"""

from __future__ import annotations

# The kinds that ship, registered on import; a new kind's module is imported here too.
from labkit.experiments.faults import network, process, restart  # noqa: F401
from labkit.experiments.faults.injector import FaultInjector, repair
from labkit.experiments.faults.kinds import (
    KINDS,
    FaultKind,
    describe,
    families,
    kind_of,
    register,
    validate,
)
from labkit.experiments.faults.model import HOPS, STACK, Fault, Param, as_spec, label
from labkit.experiments.faults.network import ToxicKind, toxic_name
from labkit.experiments.faults.plot import shade
from labkit.experiments.faults.process import ProcessKind
from labkit.experiments.faults.schedule import Schedule
from labkit.stack.faultstate import FAULTS_FILE, TOXIC_PREFIX, FaultFile, repair_state

# The kinds of each family that ship, for messages and older imports; the registry is KINDS.
PROCESS_FAULTS: tuple[str, ...] = families()["process"]
NETWORK_FAULTS: tuple[str, ...] = families()["network"]

__all__ = [
    "FAULTS_FILE", "HOPS", "KINDS", "NETWORK_FAULTS", "PROCESS_FAULTS", "STACK", "TOXIC_PREFIX", "Fault", "FaultFile",
    "FaultInjector", "FaultKind", "Param", "ProcessKind", "Schedule", "ToxicKind", "as_spec", "describe", "families",
    "kind_of", "label", "register", "repair", "repair_state", "shade", "toxic_name", "validate",
]
