"""Reconciliation: find the images the pipeline silently lost, and send them through again.

The store's events are best-effort. versitygw hands each ObjectCreated event to its Kafka
writer, which retries for a few seconds and then drops it (``failed to send kafka event`` in
the ``storage`` log); the upload itself had already succeeded. Nothing downstream ever
hears of such an image: no retry policy can help, because no hop failed *visibly*.

The cure is an end-to-end check that does not trust the events: compare what is in the
source bucket ``dit247`` with what came out in ``dit247c`` and with the dead-letter records,
and republish a synthetic ObjectCreated event (the same JSON shape versitygw sends) for every
source object that has neither. This is what S3 inventory reports plus a "sweeper" job do
in production systems.

The comparison is by version (:mod:`labkit.pipeline.versions`): a key uploaded again while
Kafka was down still has the output of its older version, which is *stale*, not resized; and
it is republished like a lost one, with its current ETag, so the action resizes that version.

Example:
    >>> reconcile(lab, prefix="exp/run1/")        # doctest: +SKIP
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Iterable
from datetime import UTC, datetime

import pandas as pd
from kafka import KafkaProducer
from kafka.errors import KafkaError
from minio.error import S3Error

from labkit.errors import LabConfigError, ServiceError
from labkit.pipeline.deploy import OUTPUT_BUCKET, SOURCE_BUCKET
from labkit.pipeline.fate import Fate
from labkit.pipeline.kafka import tail
from labkit.pipeline.metrics import metrics_path, read_lines
from labkit.pipeline.versions import (
    OUTPUT_FORMAT,
    Evidence,
    Versions,
    dead_line_versions,
    dlq_version,
    output_key,
    output_key_or_none,
    output_versions,
    recorded_versions,
    versions_of,
)
from labkit.stack.lab import Lab
from labkit.stack.services.storage import TOPIC

__all__ = ["OUTPUT_FORMAT", "dead_letter_keys", "object_created_event", "output_key", "publish_events", "reconcile"]

DLQ_TOPIC = "dit247-dlq"
RECONCILE_COLUMNS = ("key", "state", "action", "key_out", "last_modified_ms", "etag", "made_from")
STATES = (Fate.RESIZED, Fate.UNRECORDED, Fate.STALE, Fate.DEAD_LETTERED, Fate.LOST, Fate.PENDING)
# The states reconcile republishes: nothing downstream will bring them otherwise.
REPUBLISHED = (Fate.LOST, Fate.UNRECORDED, Fate.STALE)
# An output younger than this may still be getting its metrics line: the flow waits a few
# seconds for the store's webhook, then checks the output itself (WEBHOOK_GRACE_MS).
RECORD_GRACE_S = 15.0
# Without a prefix or a time bound, refuse to scan more than this many source objects.
MAX_KEYS = 10_000
ORIGIN = "labkit-reconcile"  # marks synthetic events (principal, request id, configuration id)


def reconcile(lab: Lab, since: datetime | float | None = None, republish: bool = True, *, prefix: str = "",
              grace_s: float = 10.0, max_keys: int = MAX_KEYS, record_grace_s: float = RECORD_GRACE_S
              ) -> pd.DataFrame:
    """Compare the source bucket with the outputs and the dead letters; republish what is missing.

    Each source object (under ``prefix``, modified at or after ``since``) gets one state, for
    its current version (its ETag):

    - ``resized``: its output (the action's output-key rule) is in ``dit247c``, made from this
      version (its ``source-etag``); two sources that map to one output, ``cat.png`` and
      ``cat.gif``, count as resized once either is;
    - ``unrecorded``: that output is there, older than ``record_grace_s``, but no metrics line
      names the version: the image was resized, yet the measurement lost it (the flow was
      redeployed or restarted between the invoke and its record);
    - ``dead_lettered``: a metrics line with outcome ``error`` or a ``dit247-dlq`` record names
      this version (or the key, in lines that name no version);
    - ``pending``: modified less than ``grace_s`` ago, so it may still be on its way (left alone);
    - ``stale``: none of the above, and an output of an *older* version is there: the event of
      this version was lost (or an older write won), so the output shows the wrong image;
    - ``lost``: none of the above, and no output at all: the pipeline lost it.

    A key the action refuses (say, one whose output key would be longer than S3 allows) can
    have no output; it is dead-lettered once the flow has seen it (the action's
    ``bad_parameter``), and lost until then, so reconcile sends it through to be dead-lettered.
    Its ``key_out`` is None.

    A lost, stale or unrecorded object is republished (action ``republished``) as a synthetic
    ObjectCreated event on topic ``dit247`` with its current ETag, or reported only (action
    ``dry_run``) when ``republish`` is False. The action is idempotent, so an unrecorded image
    is resized again onto the same output key and then recorded. Every other state has action
    ``none``.

    Args:
        lab: The running lab.
        since: Only objects modified at or after this (an aware datetime, or epoch milliseconds).
        republish: Send events for missing objects; False only reports them.
        prefix: Only keys starting with this (an experiment's run prefix).
        grace_s: Objects younger than this are not judged yet.
        max_keys: Refuse to scan more source objects than this.
        record_grace_s: Outputs younger than this are not judged unrecorded yet.

    Returns:
        One row per source object: ``key, state, action, key_out, last_modified_ms, etag`` (its
        current version) and ``made_from`` (the version its output records, None without one).

    Raises:
        LabConfigError: More than ``max_keys`` objects match (narrow with ``prefix``/``since``).
        ServiceError: The store or Kafka refused.
    """
    since_ms = _epoch_ms(since)
    sources = _sources(lab, prefix, since_ms, max_keys)
    keys_out = {key: output_key_or_none(key) for key in sources}
    outputs = _outputs(lab, prefix)
    lines = read_lines(metrics_path(lab))  # read once: dead letters and recorded versions both come from it
    evidence = Evidence(outputs, output_versions(lab, (k for k in keys_out.values() if k in outputs)),
                        dead_letter_versions(lab, since_ms, lines), recorded_versions(lines), time.time() * 1000,
                        grace_s, record_grace_s)
    rows = []
    for key, (modified_ms, size, etag) in sources.items():
        key_out = keys_out[key]
        made = evidence.made_from.get(key_out) if key_out in outputs else None
        rows.append({"key": key, "state": str(evidence.state(key, etag, modified_ms, key_out)), "action": "none",
                     "key_out": key_out, "last_modified_ms": modified_ms, "etag": etag,
                     "made_from": made.etag if made else None, "size": size})
    table = pd.DataFrame(rows, columns=[*RECONCILE_COLUMNS, "size"])
    missing = table["state"].isin(REPUBLISHED)
    if republish and missing.any():
        publish_events(lab, table[missing].itertuples())
    table.loc[missing, "action"] = "republished" if republish else "dry_run"
    return table[list(RECONCILE_COLUMNS)]


def _epoch_ms(since: datetime | float | None) -> float | None:
    if since is None:
        return None
    if isinstance(since, datetime):
        if since.tzinfo is None:
            raise LabConfigError("since must be timezone-aware (e.g. datetime.now(UTC)) or epoch milliseconds.")
        return since.timestamp() * 1000
    return float(since)


def _sources(lab: Lab, prefix: str, since_ms: float | None, max_keys: int) -> dict[str, tuple[float, int, str]]:
    """Source objects: key -> (last modified ms, size, ETag)."""
    found: dict[str, tuple[float, int, str]] = {}
    try:
        for obj in lab.s3().list_objects(SOURCE_BUCKET, prefix=prefix or None, recursive=True):
            modified_ms = obj.last_modified.timestamp() * 1000
            if since_ms is not None and modified_ms < since_ms - 1000:  # S3 times have 1 s resolution
                continue
            if len(found) >= max_keys:
                raise LabConfigError(f"More than {max_keys} objects in {SOURCE_BUCKET} match prefix {prefix!r} "
                                     "and since. Fix: narrow them with prefix= or since=, or raise max_keys.")
            found[obj.object_name] = (modified_ms, obj.size, (obj.etag or "").strip('"'))
    except (S3Error, OSError) as e:
        raise ServiceError(f"reconcile: listing {SOURCE_BUCKET} failed: {e}. Hint: `labkit status`.") from e
    return found


def _outputs(lab: Lab, prefix: str) -> dict[str, float]:
    """Output keys in ``dit247c`` under ``prefix`` (the rule keeps a key's prefix) -> last modified ms."""
    try:
        return {o.object_name: o.last_modified.timestamp() * 1000
                for o in lab.s3("storage-out").list_objects(OUTPUT_BUCKET, prefix=prefix or None, recursive=True)}
    except (S3Error, OSError) as e:
        raise ServiceError(f"reconcile: listing {OUTPUT_BUCKET} failed: {e}. Hint: `labkit status`.") from e


def dead_letter_keys(lab: Lab, since_ms: float | None = None, lines: list[dict] | None = None) -> set[str]:
    """Keys with a dead-letter record, of any version (see :func:`dead_letter_versions`)."""
    return set(dead_letter_versions(lab, since_ms, lines))


def dead_letter_versions(lab: Lab, since_ms: float | None = None, lines: list[dict] | None = None) -> Versions:
    """Versions with a dead-letter record: metrics lines of outcome ``error`` and ``dit247-dlq`` records.

    (``malformed`` records name no key: a record nobody could read cannot be matched to an object.)
    ``lines``: the metrics file's lines, when the caller has read them already.
    """
    lines = read_lines(metrics_path(lab)) if lines is None else lines
    found = dead_line_versions(lines)
    for key, etags in _dlq_versions(lab.kafka_bootstrap, since_ms).items():
        found.setdefault(key, set()).update(etags)
    return found


def _dlq_versions(bootstrap: str, since_ms: float | None) -> Versions:
    """Versions named by the DLQ's JSON records (from ``since_ms`` on), read once up to the current end."""
    try:
        records = tail(bootstrap, DLQ_TOPIC, since_ms=since_ms)
        return versions_of(version for record in records if (version := dlq_version(record.value)))
    except KafkaError as e:
        raise ServiceError(f"reconcile: Kafka is unreachable ({e}), so the DLQ cannot be read. "
                           "Hint: `labkit start kafka`.") from e


# ---------------------------------------------------------------- republishing


def object_created_event(key: str, size: int, etag: str, bucket: str = SOURCE_BUCKET) -> dict:
    """An ObjectCreated:Put event in versitygw's JSON shape, marked as sent by labkit's reconciler."""
    return {"Records": [{
        "eventVersion": "2.2", "eventSource": "aws:s3", "awsRegion": "us-east-1",
        "eventTime": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"), "eventName": "s3:ObjectCreated:Put",
        "userIdentity": {"PrincipalId": ORIGIN}, "requestParameters": {"sourceIPAddress": "127.0.0.1"},
        "responseElements": {"x-amz-request-id": f"{ORIGIN}-{uuid.uuid4().hex[:12]}", "x-amz-id-2": ""},
        "s3": {"s3SchemaVersion": "1.0", "configurationId": ORIGIN,
               "bucket": {"name": bucket, "ownerIdentity": {"PrincipalId": ORIGIN}, "arn": f"arn:aws:s3:::{bucket}"},
               "object": {"key": key, "size": size, "eTag": f'"{etag}"', "versionId": None,
                          "sequencer": f"{time.time_ns():X}"}},
        "glacierEventData": {"restoreEventData": {"lifecycleRestorationExpiryTime": "",
                                                  "lifecycleRestoreStorageClass": ""}},
    }]}


def publish_events(lab: Lab, objects: Iterable) -> int:
    """Send one synthetic ObjectCreated event per object (rows with ``key``, ``size``, ``etag``) to ``dit247``.

    Raises:
        ServiceError: Kafka refused or is unreachable.
    """
    try:
        producer = KafkaProducer(bootstrap_servers=lab.kafka_bootstrap, client_id=ORIGIN, acks="all")
    except KafkaError as e:
        raise ServiceError(f"reconcile: Kafka is unreachable ({e}); nothing was republished. "
                           "Hint: `labkit start kafka`, then reconcile again.") from e
    try:
        sent = [producer.send(TOPIC, json.dumps(object_created_event(o.key, o.size, o.etag)).encode(), key=b"")
                for o in objects]
        for future in sent:
            future.get(timeout=10)
        return len(sent)
    except KafkaError as e:
        raise ServiceError(f"reconcile: publishing to {TOPIC} failed ({e}). Hint: `labkit logs kafka`.") from e
    finally:
        producer.close()
