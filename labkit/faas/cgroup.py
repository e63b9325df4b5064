"""A memory cgroup per worker, like the container OpenWhisk gives each action, where the runner may make one.

OpenWhisk's limit is the container's cgroup: the kernel counts the action's resident memory
(its children's too) and kills it when it passes the limit. The runner does the same when it
can create cgroups (running as root with cgroup v1's memory controller, or cgroup v2 with
memory delegated to its own cgroup): each worker gets ``labkit-faas-<runner pid>-<id>``, a
child of the runner's own cgroup (so any limit above the runner still holds), with the action's
limit, and an OOM kill there is the memory error. Where it cannot (an ordinary user,
a container), the worker's resident-memory watchdog (``labkit.faas.worker``) is the limit, and
it stays on in both cases.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import uuid
from dataclasses import dataclass
from pathlib import Path

import psutil
from tenacity import RetryError, Retrying, retry_if_exception, stop_after_delay, wait_fixed

log = logging.getLogger(__name__)

PREFIX = "labkit-faas-"
REMOVE_WAIT_S = 2.0


@dataclass(frozen=True)
class Flavour:
    """Where a cgroup version keeps the memory controller's files.

    Attributes:
        mount: Where the hierarchy is mounted.
        controller: How ``/proc/self/cgroup`` names the hierarchy (``memory``; ``""`` for v2).
        limit_file: The limit's file in a cgroup.
        events_file: The file holding the ``oom_kill`` counter.
    """

    mount: Path
    controller: str
    limit_file: str
    events_file: str

    def own(self) -> Path | None:
        """This process's cgroup in the hierarchy, or None when it is not mounted here."""
        for line in _read(Path("/proc/self/cgroup")).splitlines():
            _, controllers, rel = line.split(":", 2)
            if self.controller in controllers.split(",") or controllers == self.controller:
                return self.mount / rel.lstrip("/")
        return None


FLAVOURS = (
    Flavour(Path("/sys/fs/cgroup/memory"), "memory", "memory.limit_in_bytes", "memory.oom_control"),  # v1
    Flavour(Path("/sys/fs/cgroup"), "", "memory.max", "memory.events"),  # v2
)


def _oom_kills(path: Path, events_file: str) -> int:
    """The ``oom_kill`` counter of a cgroup (0 when unreadable)."""
    with contextlib.suppress(OSError, ValueError):
        for line in (path / events_file).read_text().splitlines():
            key, _, value = line.partition(" ")
            if key == "oom_kill":
                return int(value)
    return 0


class MemoryGroups:
    """Creates, watches and removes the workers' memory cgroups; off once any step fails."""

    def __init__(self) -> None:
        """Pick the first cgroup flavour where the runner's own cgroup may have memory-limited children."""
        self.flavour: Flavour | None = None
        self.base = Path("/nonexistent")
        for flavour in FLAVOURS:
            own = flavour.own()
            if own is not None and _usable(flavour, own):
                self.flavour, self.base = flavour, own
                break
        # kept when cgroups turn off, for the groups already made
        self._events_file = self.flavour.events_file if self.flavour else ""

    @property
    def enabled(self) -> bool:
        """Whether workers get a cgroup."""
        return self.flavour is not None

    def attach(self, pid: int, limit_bytes: int) -> Path | None:
        """Put process ``pid`` (and its future children) in a new cgroup limited to ``limit_bytes``.

        Returns:
            The cgroup's directory, or None when cgroups are off (they are turned off on failure).
        """
        if self.flavour is None:
            return None
        path = self.base / f"{PREFIX}{os.getpid()}-{uuid.uuid4().hex[:12]}"
        try:
            path.mkdir()
            (path / self.flavour.limit_file).write_text(str(limit_bytes))
            (path / "cgroup.procs").write_text(str(pid))
        except OSError as exc:
            log.info("memory cgroups are off (%s); the resident-memory watchdog enforces the limit", exc)
            self.flavour = None
            self.remove(path)
            return None
        return path

    def oom_killed(self, path: Path | None) -> bool:
        """Whether the kernel killed a process of this cgroup for memory."""
        return path is not None and _oom_kills(path, self._events_file) > 0

    @staticmethod
    def remove(path: Path | None) -> None:
        """Remove an emptied cgroup, waiting a little for killed processes to leave it (best
        effort: one that outlives the wait keeps it until the next runner's sweep)."""
        if path is None:
            return
        retrying = Retrying(stop=stop_after_delay(REMOVE_WAIT_S), wait=wait_fixed(0.05),
                            retry=retry_if_exception(lambda e: isinstance(e, OSError) and e.errno == errno.EBUSY))
        with contextlib.suppress(OSError, RetryError):
            for attempt in retrying:
                with attempt:
                    path.rmdir()

    def sweep(self) -> None:
        """Remove the empty cgroups of runners that are gone (killed before they could)."""
        if self.flavour is None:
            return
        for path in self.base.glob(f"{PREFIX}*"):
            owner = path.name.removeprefix(PREFIX).partition("-")[0]
            if owner.isdigit() and not psutil.pid_exists(int(owner)):
                self.remove(path)


def _usable(flavour: Flavour, own: Path) -> bool:
    """v1: the runner's memory cgroup is writable; v2: it is, and memory is enabled for its children."""
    if not os.access(own, os.W_OK) or not (own / "cgroup.procs").exists():
        return False
    if flavour.controller:
        return (own / flavour.limit_file).exists()
    return "memory" in _read(own / "cgroup.subtree_control").split()


def _read(path: Path) -> str:
    with contextlib.suppress(OSError):
        return path.read_text()
    return ""
