"""The registry of fault kinds: one small class per kind, registered by name.

A kind says which targets it accepts and which parameters it takes, and it knows how to
validate, inject, clear and describe a fault of its own. Nothing else in labkit branches on
a kind's name: the injector, the schedule, the control panel and the fault matrix all ask
the kind. Adding a kind is one class with :func:`register` (``docs/extending.md``, "Adding a
fault"); the kinds that ship are in :mod:`.process`, :mod:`.network` and :mod:`.restart`.

Example:
    >>> kind_of("latency").describe(Fault("latency", "nodered-faas", duration_s=5))
    'nodered-faas: 1 s latency for 5 s'
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from typing import TYPE_CHECKING, ClassVar, TypeVar

from labkit.errors import LabConfigError
from labkit.experiments.faults.model import Fault, Param, label

if TYPE_CHECKING:
    from labkit.stack.lab import Lab


class FaultKind(ABC):
    """One kind of fault. Subclass it, set the class attributes, implement the four verbs,
    and decorate the class with :func:`register`.

    Attributes:
        name: The kind's name in a :class:`Fault` (``Fault("latency", ...)``).
        family: What it acts on, in a word: ``process`` (a service), ``network`` (a hop) or
            ``restart`` (the stack). The fault matrix's ``kind`` column.
        target_noun: One target, for messages (``a service``).
        targets_noun: Its plural (``services``).
        params: The parameters it takes, with their defaults and ranges.
        lasts: False when the fault is over as soon as :meth:`inject` returns (a restart): a
            schedule then clears it at once and its window ends there.
        slack_s: How much longer than planned injecting and clearing it may take (a schedule
            waits this long past its end before it gives up).
        repair_note: What ``labkit up`` does about it when a dead kernel left it in force, for
            the repair report; None: nothing to say (a toxic's removal is reported anyway).
    """

    name: ClassVar[str]
    family: ClassVar[str]
    target_noun: ClassVar[str]
    targets_noun: ClassVar[str]
    params: ClassVar[tuple[Param, ...]] = ()
    lasts: ClassVar[bool] = True
    slack_s: ClassVar[float] = 60.0
    repair_note: ClassVar[str | None] = None

    @abstractmethod
    def targets(self) -> tuple[str, ...]:
        """The targets a fault of this kind may name."""

    @abstractmethod
    def inject(self, lab: Lab, fault: Fault) -> None:
        """Start ``fault`` on ``lab`` (already validated).

        Raises:
            ServiceError: the backend or a service refused.
        """

    @abstractmethod
    def clear(self, lab: Lab, fault: Fault, *, revive: bool = True) -> None:
        """End ``fault``; harmless when it is not in force.

        Args:
            lab: The lab.
            fault: The fault to end.
            revive: False when the lab is going down: leave stopped services down.

        Raises:
            ServiceError: the service did not come back, or Toxiproxy refused.
        """

    @abstractmethod
    def describe(self, fault: Fault) -> str:
        """What the fault does, in a phrase for tables (``kill -9 kafka, started again after 3 s``).
        A phrase about one hop starts with ``<hop>: ``, so several on one hop can share it."""

    def accepted(self) -> dict[str, Param]:
        """Every parameter a fault of this kind may give (:attr:`params`, and any its family adds)."""
        return {p.name: p for p in self.params}

    def values(self, fault: Fault) -> dict[str, float]:
        """``fault``'s parameters, the defaults filled in."""
        return {name: p.default for name, p in self.accepted().items()} | dict(fault.params)

    def slot(self, fault: Fault) -> tuple[str, str]:
        """Faults in one slot exclude each other: at most one is in force at a time."""
        return self.name, fault.target

    def check(self, fault: Fault, values: dict[str, float]) -> None:
        """Rules beyond each parameter's range; raise :class:`LabConfigError` to refuse ``fault``."""

    def validate(self, fault: Fault) -> Fault:
        """Check ``fault`` before anything is done with it; return it unchanged.

        Raises:
            LabConfigError: a target this kind does not take, a negative time, or a bad parameter.
        """
        self._check_target(fault)
        if fault.at_s < 0 or fault.duration_s < 0:
            raise LabConfigError(f"{label(fault)}: at_s and duration_s must not be negative, got at_s={fault.at_s}, "
                                 f"duration_s={fault.duration_s}. Fix: use 0 or more.")
        self._check_params(fault)
        self.check(fault, self.values(fault))
        return fault

    def _check_target(self, fault: Fault) -> None:
        if fault.target in self.targets():
            return
        other = next((k for k in KINDS.values() if fault.target in k.targets()), None)
        hint = f" That is {other.target_noun}: use a {other.family} fault on it." if other else ""
        raise LabConfigError(f"{self.family.capitalize()} fault {self.name!r} needs {self.target_noun}, got "
                             f"{fault.target!r}.{hint} Valid {self.targets_noun}: {', '.join(self.targets())}.")

    def _check_params(self, fault: Fault) -> None:
        accepted = self.accepted()
        if fault.params and not accepted:
            raise LabConfigError(f"{label(fault)}: {self.family} faults take no params, got {sorted(fault.params)}. "
                                 "Fix: leave params out.")
        unknown = sorted(set(fault.params) - set(accepted))
        if unknown:
            raise LabConfigError(f"{label(fault)}: unknown params {unknown}. Valid params of {self.name}: "
                                 f"{', '.join(accepted)}.")
        values = self.values(fault)
        bad = [k for k, v in values.items() if not isinstance(v, int | float) or isinstance(v, bool) or v < 0]
        if bad:
            raise LabConfigError(f"{label(fault)}: {', '.join(bad)} must be numbers >= 0, got "
                                 f"{ {k: values[k] for k in bad} }.")
        low = [f"{k} must be at least {p.least:g}, got {values[k]:g}" for k, p in accepted.items() if values[k] < p.least]
        if low:
            raise LabConfigError(f"{label(fault)}: {'; '.join(low)}.")


# ---------------------------------------------------------------- the registry


KINDS: dict[str, FaultKind] = {}
K = TypeVar("K", bound=type[FaultKind])


def register(cls: K) -> K:
    """Class decorator: make ``cls`` the kind named ``cls.name``.

    Raises:
        LabConfigError: another class already has that name.
    """
    known = KINDS.get(cls.name)
    if known is not None and (type(known).__module__, type(known).__qualname__) != (cls.__module__, cls.__qualname__):
        raise LabConfigError(f"Fault kind {cls.name!r} is defined twice, by {type(known).__qualname__} and "
                             f"{cls.__qualname__}. Fix: give the new class another name.")
    KINDS[cls.name] = cls()  # a module reloaded in a notebook registers its class again
    return cls


def kind_of(kind: str) -> FaultKind:
    """The registered kind named ``kind``.

    Raises:
        LabConfigError: no kind has that name (the message lists them by family).
    """
    try:
        return KINDS[kind]
    except KeyError as err:
        groups = "; ".join(f"{f} faults: {', '.join(names)}" for f, names in families().items())
        raise LabConfigError(f"Unknown fault kind {kind!r}. Valid kinds: {', '.join(KINDS)} ({groups}).") from err


def validate(fault: Fault) -> Fault:
    """Check a fault before anything is done with it; return it unchanged.

    Raises:
        LabConfigError: an unknown kind or target (the message lists the valid ones), a
            fault on the wrong sort of target, a negative time, or a bad parameter.
    """
    return kind_of(fault.kind).validate(fault)


def families() -> dict[str, tuple[str, ...]]:
    """The registered kinds' names by family, in registration order."""
    found: dict[str, list[str]] = {}
    for kind in KINDS.values():
        found.setdefault(kind.family, []).append(kind.name)
    return {f: tuple(names) for f, names in found.items()}


def describe(faults: Sequence[Fault]) -> str:
    """The faults in one phrase; several on one hop share it: ``hop: 2 s latency for 2 s, then a 6 s blackhole``."""
    texts = [kind_of(f.kind).describe(f) for f in faults]
    target = faults[0].target if faults else None
    prefix = f"{target}: "
    if len(texts) > 1 and all(f.target == target for f in faults) and all(t.startswith(prefix) for t in texts):
        return prefix + ", then ".join(t.removeprefix(prefix) for t in texts)
    return "; ".join(texts)


def service_state(lab: Lab, service: str) -> str:
    """``service``'s state now: up, down, paused, unhealthy or remote."""
    return next(s.state for s in lab.backend.status() if s.name == service)
