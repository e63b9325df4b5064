"""Persistence: actions as JSON files, activations as a ring plus a JSONL journal."""

from __future__ import annotations

import hashlib
import json
import logging
from collections import deque
from pathlib import Path
from typing import Any
from urllib.parse import quote

from labkit.core.files import atomic_write

log = logging.getLogger(__name__)

Record = dict[str, Any]


class ActionStore:
    """Entities kept in memory and mirrored to ``DIR/<folder>/<ns>/<name>.json``.

    Actions live under ``actions`` (an action in a package has the namespace ``<ns>/<package>``),
    packages under ``packages``.
    """

    def __init__(self, data_dir: Path, folder: str = "actions") -> None:
        """Load every stored entity.

        Args:
            data_dir: The runner's data directory.
            folder: The entity kind's folder in it.
        """
        self._root = data_dir / folder
        self._root.mkdir(parents=True, exist_ok=True)
        self._actions: dict[tuple[str, str], Record] = {}
        self._load()

    def _load(self) -> None:
        for path in sorted(self._root.rglob("*.json")):
            try:
                rec = json.loads(path.read_text(encoding="utf-8"))
                self._actions[(rec["namespace"], rec["name"])] = rec
            except (OSError, ValueError, KeyError) as exc:
                log.warning("skipping unreadable action file %s: %s", path, exc)

    def _path(self, namespace: str, name: str) -> Path:
        # Names may hold spaces or '@'; quote them, and hash the rare overlong one
        # to stay under the file-name length limit.
        stem = quote(name, safe="@.-_")
        if len(stem) > 200:
            stem = "sha256-" + hashlib.sha256(name.encode()).hexdigest()
        return self._root / namespace / f"{stem}.json"

    def get(self, namespace: str, name: str) -> Record | None:
        """Return the stored action, or None."""
        return self._actions.get((namespace, name))

    def list(self, namespace: str, packaged: bool = False) -> list[Record]:
        """Return the namespace's entities, most recently updated first.

        Args:
            namespace: The namespace (``guest``) or a package in it (``guest/pkg``).
            packaged: Include the entities of the namespace's packages too.
        """
        found = [r for (ns, _), r in self._actions.items()
                 if ns == namespace or (packaged and ns.startswith(namespace + "/"))]
        return sorted(found, key=lambda r: r["updated"], reverse=True)

    def all(self) -> list[Record]:
        """Return every stored action, in every namespace."""
        return list(self._actions.values())

    def put(self, record: Record) -> None:
        """Store (create or replace) an action record."""
        path = self._path(record["namespace"], record["name"])
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write(path, json.dumps(record))
        self._actions[(record["namespace"], record["name"])] = record

    def delete(self, namespace: str, name: str) -> Record | None:
        """Remove an action; return its record, or None when it did not exist."""
        rec = self._actions.pop((namespace, name), None)
        if rec is not None:
            self._path(namespace, name).unlink(missing_ok=True)
        return rec


class ActivationStore:
    """The last N activation records in memory, every record in a JSONL journal."""

    def __init__(self, data_dir: Path, capacity: int) -> None:
        """Open the journal and reload its tail into the ring.

        Args:
            data_dir: The runner's data directory.
            capacity: Records kept in memory.
        """
        self._ring: deque[Record] = deque(maxlen=capacity)
        self._by_id: dict[str, Record] = {}
        self._journal = data_dir / "activations.jsonl"
        self._reload()
        self._fh = self._journal.open("a", encoding="utf-8")

    def _reload(self) -> None:
        if not self._journal.exists():
            return
        with self._journal.open(encoding="utf-8") as fh:
            for line in fh:
                try:
                    self._remember(json.loads(line))
                except ValueError:
                    continue  # a torn last line after a crash

    def _remember(self, record: Record) -> None:
        if len(self._ring) == self._ring.maxlen:
            self._by_id.pop(self._ring[0]["activationId"], None)
        self._ring.append(record)
        self._by_id[record["activationId"]] = record

    def add(self, record: Record) -> None:
        """Keep a finished activation and append it to the journal."""
        self._remember(record)
        self._fh.write(json.dumps(record) + "\n")
        self._fh.flush()

    def get(self, activation_id: str) -> Record | None:
        """Return one activation, or None."""
        return self._by_id.get(activation_id)

    def list(
        self,
        namespace: str,
        name: str | None = None,
        limit: int = 30,
        skip: int = 0,
        since: int | None = None,
        upto: int | None = None,
    ) -> list[Record]:
        """Return activations newest first, filtered like OpenWhisk's list API.

        Args:
            namespace: Namespace to list.
            name: Only activations of this action (``NAME``, or ``PACKAGE/NAME`` in a package).
            limit: Page size.
            skip: Records to skip.
            since: Only activations started at or after this epoch ms.
            upto: Only activations started at or before this epoch ms.

        Returns:
            The matching records.
        """
        out: list[Record] = []
        seen = 0
        for rec in sorted(self._ring, key=lambda r: r["start"], reverse=True):
            if rec["namespace"] != namespace or (name is not None and _path(rec) != f"{namespace}/{name}"):
                continue
            if (since is not None and rec["start"] < since) or (upto is not None and rec["start"] > upto):
                continue
            seen += 1
            if seen <= skip:
                continue
            out.append(rec)
            if len(out) >= limit:
                break
        return out

    def close(self) -> None:
        """Close the journal."""
        self._fh.close()


def _path(record: Record) -> str:
    """An activation's action path, ``ns/[package/]name`` (its ``path`` annotation)."""
    for note in record.get("annotations", []):
        if note.get("key") == "path":
            return str(note.get("value"))
    return f"{record['namespace']}/{record['name']}"
