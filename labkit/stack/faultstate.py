"""The faults in force, as recorded on disk, and their repair after a kernel died.

Whoever injects a fault (:mod:`labkit.experiments.faults`) records it in
``<data_dir>/faults.json`` first and forgets it once it is cleared. A kernel that dies in
between leaves the record, and every ``labkit up`` calls :func:`repair_state` before it
starts anything. This part lives in the stack layer because ``up`` needs it; it knows
nothing about fault kinds: each record carries its own repair note, and network faults are
found by their toxics' name prefix.

Example:
    >>> repair_state(lab.ctx.config.data_dir, lab.endpoints["toxiproxy"])   # doctest: +SKIP
    ['removed toxic labkit-latency-upstream from hop nodered-faas']
"""

from __future__ import annotations

import json
import os
import time
import uuid
from pathlib import Path

from labkit.core.files import atomic_write, locked
from labkit.errors import ServiceError
from labkit.stack.services.toxiproxy import ToxiproxyClient

FAULTS_FILE = "faults.json"
# Every toxic labkit adds is named with this prefix, so repair never touches anyone else's.
TOXIC_PREFIX = "labkit-"


class FaultFile:
    """``<data_dir>/faults.json``: one entry per fault in force, written atomically under a file lock.

    The lock is shared by every thread and process that injects on this lab (a notebook and
    its control panel, a test's subprocess). Each entry is a mapping with at least ``kind``
    and ``target``; :meth:`add` stamps it with ``id``, ``pid`` and ``injected_ms``.
    """

    def __init__(self, data_dir: Path):
        self.path = Path(data_dir) / FAULTS_FILE
        self.lock = self.path.with_suffix(".lock")

    def entries(self) -> list[dict]:
        """The recorded faults, oldest first (a missing or unreadable file counts as empty)."""
        try:
            entries = json.loads(self.path.read_text())
        except (FileNotFoundError, ValueError):
            return []
        return entries if isinstance(entries, list) else []

    def add(self, entry: dict) -> dict:
        """Record ``entry`` (stamped with an id, this process's pid and the time); return it as stored."""
        stamped = {**entry, "id": uuid.uuid4().hex[:12], "pid": os.getpid(), "injected_ms": round(time.time() * 1000)}
        with locked(self.lock):
            self._write([*self.entries(), stamped])
        return stamped

    def remove(self, kind: str, target: str) -> None:
        """Forget every entry of ``kind`` on ``target``."""
        with locked(self.lock):
            self._write([e for e in self.entries() if (e.get("kind"), e.get("target")) != (kind, target)])

    def empty(self) -> None:
        """Forget every entry."""
        with locked(self.lock):
            self._write([])

    def _write(self, entries: list[dict]) -> None:
        atomic_write(self.path, json.dumps(entries, indent=1))


def repair_state(data_dir: Path, toxiproxy_url: str | None) -> list[str]:
    """Remove every ``labkit-*`` toxic from Toxiproxy's proxies and empty ``faults.json``.

    Called by ``labkit up`` before it starts anything. Paused services are resumed by the
    backend itself, and stopped or killed ones are started by ``up``: a record's ``repair``
    note says which, for the report. When Toxiproxy is not running there is no toxic to
    remove: its proxies are made afresh when it starts.

    Args:
        data_dir: The lab's data dir (where ``faults.json`` is).
        toxiproxy_url: Toxiproxy's API, or None when it is not running.

    Returns:
        One sentence per thing repaired (empty when nothing was left behind).
    """
    file = FaultFile(data_dir)
    done = [f"removed toxic {name} from hop {proxy}" for proxy, name in remove_labkit_toxics(toxiproxy_url)]
    done += [f"{e.get('kind')} of {e.get('target')} was left in force: {e['repair']}"
             for e in file.entries() if e.get("repair")]
    if file.path.exists():
        file.empty()
    return done


def remove_labkit_toxics(toxiproxy_url: str | None) -> list[tuple[str, str]]:
    """Remove every toxic whose name starts with :data:`TOXIC_PREFIX`; return ``(proxy, toxic)`` pairs."""
    if not toxiproxy_url:
        return []
    client = ToxiproxyClient(toxiproxy_url, timeout_s=2.0)
    try:
        proxies = client.proxies()
    except ServiceError:
        return []  # not answering: restarted by up, with fresh proxies
    removed = []
    for proxy, spec in proxies.items():
        for toxic in spec.get("toxics") or []:
            if toxic["name"].startswith(TOXIC_PREFIX):
                client.remove_toxic(proxy, toxic["name"])
                removed.append((proxy, toxic["name"]))
    return removed
