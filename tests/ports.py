"""Port offsets for the suite's labs, claimed per test session so that two checkouts (or a
student's lab and a CI job) can run ``make test`` on one machine at the same time.

The suite runs a few labs of its own (the session stack, and short-lived ones in the
lifecycle, crash-safety and bench tests), each at its own port offset. The offsets of one
session form a *slot*. A session claims a free slot with a lock file shared by every user of
the machine, and only when none of the slot's ports is taken. ``LABKIT_TEST_PORT_OFFSET``
pins the slot to the one starting at that offset.

Every offset keeps every port below the kernel's ephemeral range (:func:`safe_offsets`), and
no two offsets of any slots share a port: their difference is never the distance between
two of the lab's default ports.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from filelock import FileLock, Timeout

from labkit.errors import LabConfigError
from labkit.stack.config import DEFAULT_PORTS, safe_offsets
from labkit.stack.process import port_owner

# The labs of one test session, by the name the tests ask for.
LABS = ("session", "cold-up", "errors", "port-in-use", "toolchain", "cache", "ready-timeout", "crash",
        "bench")
FIRST_OFFSET, STEP = 10000, 100
LOCK_DIR = Path(tempfile.gettempdir()) / "labkit-test-ports"


def port_distances() -> set[int]:
    """Offsets that differ by one of these would give two labs a common port."""
    ports = DEFAULT_PORTS.values()
    return {abs(a - b) for a in ports for b in ports}


def offsets() -> list[int]:
    """Every usable offset from ``FIRST_OFFSET`` on: safe, and no two sharing a port."""
    distances, chosen = port_distances(), []
    safe = safe_offsets()
    for offset in range(FIRST_OFFSET, safe.stop, STEP):
        if all(abs(offset - other) not in distances for other in chosen):
            chosen.append(offset)
    return chosen


def slots() -> list[tuple[int, ...]]:
    """Consecutive groups of ``len(LABS)`` offsets: one group per test session."""
    usable, n = offsets(), len(LABS)
    return [tuple(usable[i:i + n]) for i in range(0, len(usable) - n + 1, n)]


@dataclass(frozen=True)
class PortPlan:
    """The offsets this session's labs use, by lab name."""

    slot: tuple[int, ...]

    def offset(self, lab: str = "session") -> int:
        return self.slot[LABS.index(lab)]

    def busy(self) -> list[str]:
        """The slot's ports that something listens on, with who."""
        ports = sorted(p + offset for offset in self.slot for p in DEFAULT_PORTS.values())
        return [f"{port} ({owner})" for port in ports if (owner := port_owner(port))]


def slot_lock(slot: tuple[int, ...]) -> FileLock:
    """The lock that a test session holding ``slot`` holds for its whole length."""
    try:
        LOCK_DIR.mkdir()
        os.chmod(LOCK_DIR, 0o1777)  # shared by every user of the machine, like /tmp (mkdir's mode meets the umask)
    except FileExistsError:
        pass  # made by us or by another user
    return FileLock(LOCK_DIR / f"slot-{slot[0]}.lock", mode=0o666)


def _candidates() -> list[tuple[int, ...]]:
    pinned = os.environ.get("LABKIT_TEST_PORT_OFFSET")
    if pinned is None:
        return slots()
    chosen = [s for s in slots() if str(s[0]) == pinned.strip()]
    if not chosen:
        raise LabConfigError(f"LABKIT_TEST_PORT_OFFSET={pinned} does not start a test slot. "
                             f"Fix: use one of {', '.join(str(s[0]) for s in slots())}, or unset it.")
    return chosen


@contextmanager
def claimed_plan() -> Iterator[PortPlan]:
    """Claim a slot whose lock is free and whose ports are all free; hold it until the block ends.

    Raises:
        LabConfigError: every slot is taken (the message says by what).
    """
    taken = []
    for slot in _candidates():
        lock = slot_lock(slot)
        try:
            lock.acquire(timeout=0)
        except Timeout:
            taken.append(f"{slot[0]}: another test run holds it")
            continue
        plan = PortPlan(slot)
        if busy := plan.busy():
            lock.release()
            taken.append(f"{slot[0]}: port {busy[0]} in use")
            continue
        try:
            yield plan
        finally:
            lock.release()
        return
    raise LabConfigError(f"no free port slot for the test labs ({'; '.join(taken)}). Fix: stop a lab or test run "
                         "that uses these ports, or set LABKIT_TEST_PORT_OFFSET to a free slot.")
