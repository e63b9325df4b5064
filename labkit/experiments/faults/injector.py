"""The injector: starts and ends faults on one lab, and records them in ``faults.json``."""

from __future__ import annotations

import atexit
import contextlib
import os
import sys
import time
from collections.abc import Iterable
from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING

from labkit.errors import LabConfigError, LabError, ServiceError
from labkit.experiments.faults.kinds import FaultKind, kind_of
from labkit.experiments.faults.model import Fault, from_entry, label
from labkit.experiments.faults.schedule import Schedule
from labkit.stack.faultstate import FaultFile, repair_state

if TYPE_CHECKING:
    from labkit.stack.lab import Lab


class FaultInjector:
    """Starts and ends faults on one lab; the faults in force are shared through ``faults.json``.

    Example:
        >>> with FaultInjector(lab) as faults:      # doctest: +SKIP
        ...     faults.inject(Fault("pause", "kafka"))
    """

    def __init__(self, lab: Lab):
        self.lab = lab
        self.file = FaultFile(lab.ctx.config.data_dir)
        _AT_EXIT[self.file.path] = self

    # -- the verbs -----------------------------------------------------------
    def inject(self, fault: Fault) -> Fault:
        """Start ``fault`` now (``at_s`` and ``duration_s`` are for schedules); it lasts until cleared.

        Injecting a fault that is already in force is a no-op. A kind that does not last (the
        stack restart) is over, and forgotten, when this returns.

        Raises:
            LabConfigError: an invalid fault, or another fault in its slot already in force (one
                process fault per service, one fault of a kind per hop).
            ServiceError: the backend or Toxiproxy refused; nothing stays injected.
        """
        kind = kind_of(fault.kind)
        kind.validate(fault)
        if self._already_active(fault, kind):
            return fault
        # Recorded first: a crash from here on leaves a trace for `labkit up` to repair.
        self.file.add({**asdict(fault), "repair": kind.repair_note})
        try:
            kind.inject(self.lab, fault)
        except LabConfigError:
            # refused before anything was done (a remote lab's process fault, a fault tool it lacks)
            self.file.remove(fault.kind, fault.target)
            raise
        except BaseException:
            self._undo_quietly(fault)
            raise
        if not kind.lasts:
            self.file.remove(fault.kind, fault.target)
        return fault

    def clear(self, fault: Fault) -> None:
        """End ``fault`` (matched by kind and target); clearing one that is not in force is harmless.

        Each kind says how: ``stop``/``kill`` start the service again and wait until it is
        healthy, ``pause`` resumes it, network faults remove the hop's toxics.

        Raises:
            LabConfigError: an invalid fault.
            ServiceError: the service did not come back, or Toxiproxy refused.
        """
        kind = kind_of(fault.kind)
        kind.validate(fault)
        kind.clear(self.lab, fault)
        self.file.remove(fault.kind, fault.target)

    def clear_all(self) -> None:
        """End every fault in force on this lab, whoever injected it, newest first.

        Raises:
            ServiceError: some faults could not be cleared (each is tried; the message names them).
        """
        failed = []
        for fault in reversed(self.active()):
            try:
                self.clear(fault)
            except LabError as e:
                failed.append(f"{label(fault)}: {e}")
        if failed:
            raise ServiceError(f"Could not clear {len(failed)} fault(s): {'; '.join(failed)}. "
                               "Hint: `labkit up` repairs what is left.")

    def active(self) -> list[Fault]:
        """The faults in force on this lab, oldest first (from ``faults.json``)."""
        return [from_entry(e) for e in self.file.entries()]

    def run_schedule(self, faults: Iterable[Fault], t0: float | None = None) -> Schedule:
        """Run a fault schedule in a background thread: inject each fault ``at_s`` after ``t0``,
        clear it ``duration_s`` later. See :class:`~labkit.experiments.faults.schedule.Schedule`.

        Args:
            faults: The schedule; two faults in one slot must not overlap.
            t0: Epoch seconds the ``at_s`` count from; default now.

        Raises:
            LabConfigError: an invalid fault, or overlapping faults on one target.
        """
        return Schedule(self, list(faults), time.time() if t0 is None else t0)

    def __enter__(self) -> FaultInjector:  # noqa: PYI034
        return self

    def __exit__(self, *exc: object) -> None:
        self.clear_all()

    # -- internals -----------------------------------------------------------
    def _already_active(self, fault: Fault, kind: FaultKind) -> bool:
        for other in self.active():
            if kind_of(other.kind).slot(other) != kind.slot(fault):
                continue
            if other.kind == fault.kind and other.params == fault.params:
                return True
            raise LabConfigError(f"{label(other)} {other.params or ''} is already in force on {fault.target}; "
                                 f"clear it before injecting {label(fault)}.")
        return False

    def _undo_quietly(self, fault: Fault) -> None:
        """Best effort, after a failed inject: the inject's own error is the one to report."""
        with contextlib.suppress(Exception):
            self.clear(fault)

    def _clear_mine_at_exit(self) -> None:
        """Undo the faults this process injected. A stopped service is started again only
        while the rest of the lab runs (after ``lab.down()`` it stays down)."""
        mine = [from_entry(e) for e in self.file.entries() if e.get("pid") == os.getpid()]
        if not mine:
            return
        try:
            lab_runs = any(s.state != "down" for s in self.lab.backend.status())
        except Exception:  # noqa: BLE001 - never fail the interpreter's exit
            lab_runs = False
        for fault in reversed(mine):
            try:
                kind_of(fault.kind).clear(self.lab, fault, revive=lab_runs)
                self.file.remove(fault.kind, fault.target)
            except Exception as e:  # noqa: BLE001 - never fail the interpreter's exit
                print(f"labkit: could not clear {label(fault)} at exit ({e}); `labkit up` repairs it",
                      file=sys.stderr)


# One injector per lab (data dir) in this process, to clean up after when the kernel exits.
_AT_EXIT: dict[Path, FaultInjector] = {}


@atexit.register
def _clear_at_exit() -> None:
    for injector in list(_AT_EXIT.values()):
        injector._clear_mine_at_exit()


def repair(lab: Lab) -> list[str]:
    """Undo the faults a dead kernel left behind; see :func:`labkit.stack.faultstate.repair_state`."""
    return repair_state(lab.ctx.config.data_dir, lab.endpoints.get("toxiproxy"))
