"""Accounting by version: which version of a key each piece of evidence is about.

A key can be uploaded again, so "is there an output?" is not the question; "is there an output
of the source's *current* version?" is. Each piece of evidence names a version by its ETag:

- an output object records the version it was made from (its ``source-etag`` metadata, and
  ``source-key``: two sources such as ``cat.png`` and ``cat.gif`` share one output key);
- a metrics line names its version (``source_etag``); lines written before the flow accounted
  by version name none, and then stand for any version of their key;
- a dead letter on ``dit247-dlq`` carries the store's event, and the event its ETag.

:class:`Evidence` puts one source object (key and current ETag) in its state.

Example:
    >>> index = versions_of([{"key": "a.jpg", "source_etag": "e1"}, {"key": "b.jpg"}])
    >>> names(index, "a.jpg", "e1"), names(index, "a.jpg", "e2"), names(index, "b.jpg", "e2")
    (True, False, True)
"""

from __future__ import annotations

import contextlib
import json
import urllib.parse
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

from minio.error import S3Error

from labkit.errors import ServiceError
from labkit.pipeline.deploy import OUTPUT_BUCKET, action_module
from labkit.pipeline.fate import Fate, Outcome
from labkit.stack.lab import Lab

OUTPUT_FORMAT = "JPEG"  # the flow invokes the action without a format: its default
HEAD_THREADS = 8  # the output checks run this many at once
ANY = None  # the version of a line or dead letter that names none: it stands for every version of its key

Versions = dict[str, set[str | None]]  # key -> the ETags named (ANY: a version not named)


def output_key(key: str) -> str:
    """Where the action writes the output of source ``key`` (its documented output-key rule).

    Raises:
        ActionError: The action refuses ``key`` (e.g. its output key would be too long).
    """
    return action_module().output_key(key, OUTPUT_FORMAT)


def output_key_or_none(key: str) -> str | None:
    """The output key of ``key``, or None when the action refuses the key: no output can ever exist."""
    with contextlib.suppress(action_module().ActionError):
        return output_key(key)
    return None


def versions_of(rows: Iterable[tuple[str, str | None] | dict]) -> Versions:
    """An index of the versions named: from ``(key, etag)`` pairs, or metrics lines (their ``source_etag``)."""
    index: Versions = {}
    for row in rows:
        key, etag = (row.get("key"), row.get("source_etag")) if isinstance(row, dict) else row
        if isinstance(key, str):
            index.setdefault(key, set()).add(etag if isinstance(etag, str) and etag else ANY)
    return index


def names(index: Versions, key: str, etag: str) -> bool:
    """Does ``index`` name version ``etag`` of ``key`` (or a version of it without saying which)?"""
    found = index.get(key)
    return found is not None and (ANY in found or etag in found)


def recorded_versions(lines: list[dict]) -> Versions:
    """The versions some metrics line speaks for; a superseded version's line speaks for none that is current."""
    return versions_of(r for r in lines if r.get("outcome") != Outcome.SUPERSEDED)


def dead_line_versions(lines: list[dict]) -> Versions:
    """The versions dead-lettered by a metrics line (outcome ``error``)."""
    return versions_of(r for r in lines if r.get("outcome") == Outcome.ERROR)


def dlq_version(value: bytes | None) -> tuple[str, str | None] | None:
    """``(key, etag)`` of a dead letter's JSON record; None for a malformed one (kept raw, it names no key)."""
    try:
        record = json.loads(value or b"")
    except ValueError:
        return None
    key = record.get("key") if isinstance(record, dict) else None
    if not isinstance(key, str):
        return None
    etag = _dig(record, "event", "s3", "object", "eTag")
    return key, etag.strip('"') if isinstance(etag, str) and etag.strip('"') else None


def _dig(value, *path: str):
    for name in path:
        value = value.get(name) if isinstance(value, dict) else None
    return value


# ---------------------------------------------------------------- outputs


@dataclass(frozen=True)
class MadeFrom:
    """The source version an output object records (either may be unknown: None)."""

    key: str | None
    etag: str | None


def output_versions(lab: Lab, keys_out: Iterable[str]) -> dict[str, MadeFrom]:
    """Output key -> the source version it was made from, read from each output's metadata (HEAD).

    An output gone since it was listed is left out.

    Raises:
        ServiceError: The output store refused.
    """
    s3 = lab.s3("storage-out")
    wanted = sorted(set(keys_out))
    with ThreadPoolExecutor(HEAD_THREADS) as pool:
        found = dict(zip(wanted, pool.map(lambda key_out: _made_from(s3, key_out), wanted), strict=True))
    return {key_out: made for key_out, made in found.items() if made is not None}


def _made_from(s3, key_out: str) -> MadeFrom | None:
    try:
        meta = s3.stat_object(OUTPUT_BUCKET, key_out).metadata
    except S3Error as e:
        if e.code in ("NoSuchKey", "NoSuchObject"):
            return None
        raise ServiceError(f"reconcile: reading {OUTPUT_BUCKET}/{key_out} failed: {e}. Hint: `labkit status`.") from e
    except OSError as e:
        raise ServiceError(f"reconcile: reading {OUTPUT_BUCKET}/{key_out} failed: {e}. Hint: `labkit status`.") from e
    source_key, etag = meta.get("x-amz-meta-source-key"), meta.get("x-amz-meta-source-etag")
    return MadeFrom(urllib.parse.unquote(source_key) if source_key else None, etag.strip('"') if etag else None)


# ---------------------------------------------------------------- one object's state


@dataclass(frozen=True)
class Evidence:
    """What the store, the metrics file and the dead letters say, to judge one source object by.

    Attributes:
        outputs: Output key -> when it was last written (epoch ms).
        made_from: Output key -> the source version it records.
        dead: The versions dead-lettered.
        recorded: The versions some metrics line speaks for.
        now_ms: The moment of judgement (epoch ms).
        grace_s: Objects younger than this are pending.
        record_grace_s: Outputs younger than this may still be getting their metrics line.
    """

    outputs: dict[str, float]
    made_from: dict[str, MadeFrom]
    dead: Versions
    recorded: Versions
    now_ms: float
    grace_s: float
    record_grace_s: float

    def state(self, key: str, etag: str, modified_ms: float, key_out: str | None) -> Fate:
        """The state of version ``etag`` of ``key`` (see :func:`labkit.pipeline.reconcile.reconcile`)."""
        out_ms = self.outputs.get(key_out) if key_out is not None else None
        if out_ms is not None and self.is_current(key, etag, key_out):
            settled = self.now_ms - out_ms >= max(self.grace_s, self.record_grace_s) * 1000
            return Fate.UNRECORDED if settled and not names(self.recorded, key, etag) else Fate.RESIZED
        if names(self.dead, key, etag):
            return Fate.DEAD_LETTERED
        if self.now_ms - modified_ms < self.grace_s * 1000:
            return Fate.PENDING
        return Fate.STALE if out_ms is not None else Fate.LOST

    def is_current(self, key: str, etag: str, key_out: str) -> bool:
        """Was the output made from version ``etag`` of ``key``? An output of another source sharing its key
        (``cat.gif`` for ``cat.png``), or one that records no version, counts as current."""
        made = self.made_from.get(key_out, MadeFrom(None, None))
        return made.key not in (None, key) or made.etag is None or made.etag == etag
