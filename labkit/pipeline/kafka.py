"""Look inside the pub/sub hop: the one place labkit reads Kafka's offsets and records.

- :func:`end_offsets` and :func:`committed_offsets`: where a topic ends, and how far a
  consumer group has committed, per partition;
- :func:`consumer_lag` (a table) and :func:`total_lag` (one number) from those two;
- :func:`tail`: the records of a topic from a start to its current end, bounded;
- :func:`read_events` and :func:`event_seen`: S3 events on the topic, parsed;
- :func:`consume`: read as a group and commit (the lesson on offsets in notebook 01).

Every reader is a throwaway consumer that commits nothing, so it never disturbs the
pipeline's group.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager

import pandas as pd
from kafka import KafkaAdminClient, KafkaConsumer, TopicPartition
from kafka.errors import CoordinatorNotAvailableError, KafkaError
from tenacity import retry, retry_if_exception_type, stop_after_delay, wait_fixed

from labkit.errors import ServiceError
from labkit.stack.services.storage import TOPIC

DLQ_TOPIC = f"{TOPIC}-dlq"

REQUEST_TIMEOUT_MS = 3000


@contextmanager
def _reader(bootstrap: str, purpose: str, **options) -> Iterator[KafkaConsumer]:
    """A consumer in no group (it commits nothing), closed on exit."""
    consumer = KafkaConsumer(bootstrap_servers=bootstrap, group_id=None, enable_auto_commit=False,
                             client_id=f"labkit-{purpose}-{uuid.uuid4().hex[:6]}", **options)
    try:
        yield consumer
    finally:
        consumer.close()


def _partitions(consumer: KafkaConsumer, topic: str) -> list[TopicPartition]:
    return [TopicPartition(topic, p) for p in sorted(consumer.partitions_for_topic(topic) or ())]


def end_offsets(bootstrap: str, topic: str = TOPIC) -> dict[int, int]:
    """The log-end offset of each partition of ``topic`` (empty when the topic does not exist)."""
    with _reader(bootstrap, "offsets", request_timeout_ms=REQUEST_TIMEOUT_MS) as consumer:
        ends = consumer.end_offsets(_partitions(consumer, topic))
    return {tp.partition: end for tp, end in ends.items()}


# The group coordinator needs a moment after a broker's first group appears.
_retry_coordinator = retry(retry=retry_if_exception_type(CoordinatorNotAvailableError),
                           stop=stop_after_delay(20), wait=wait_fixed(0.3), reraise=True)


def _committed_now(bootstrap: str, group: str, topic: str = TOPIC) -> dict[int, int]:
    """The offset ``group`` has committed on each partition of ``topic`` it has committed on at all."""
    admin = KafkaAdminClient(bootstrap_servers=bootstrap, client_id="labkit-offsets",
                             request_timeout_ms=REQUEST_TIMEOUT_MS)
    try:
        offsets = admin.list_group_offsets(group).get(group, {})
    finally:
        admin.close()
    return {tp.partition: meta.offset for tp, meta in offsets.items() if tp.topic == topic and meta is not None}


committed_offsets = _retry_coordinator(_committed_now)


def consumer_lag(bootstrap: str, group: str, topic: str = TOPIC) -> pd.DataFrame:
    """Per partition: the group's committed offset, the log-end offset, and the lag between them."""
    committed = committed_offsets(bootstrap, group, topic)
    rows = [{"partition": p, "committed": committed.get(p, 0), "log_end": end,
             "lag": end - max(committed.get(p, 0), 0)} for p, end in sorted(end_offsets(bootstrap, topic).items())]
    return pd.DataFrame(rows, columns=["partition", "committed", "log_end", "lag"])


def total_lag(bootstrap: str, group: str, topic: str = TOPIC) -> int | None:
    """Records of ``topic`` that ``group`` has not committed yet; None when Kafka does not answer."""
    try:
        return int(consumer_lag(bootstrap, group, topic)["lag"].sum())
    except Exception:  # noqa: BLE001 - kafka-python raises many types while the broker is away
        return None


def committed_past(bootstrap: str, group: str, partition: int, offset: int, topic: str = TOPIC) -> bool:
    """Whether ``group`` has committed past ``offset`` on ``partition``; False while it cannot say.

    On a fresh broker the group coordinator takes a moment to be elected and loaded, and a
    group that has not committed yet has no offsets: both read as "not yet".

    Raises:
        ServiceError: Kafka refused for a reason that waiting will not cure.
    """
    try:
        return _committed_now(bootstrap, group, topic).get(partition, -1) > offset
    except KafkaError as e:
        if e.retriable:
            return False
        raise ServiceError(f"Kafka refused the offsets of group {group}: {e}. Hint: `labkit logs kafka`.") from e


def replicas(bootstrap: str, topics: Sequence[str] = (TOPIC, DLQ_TOPIC)) -> pd.DataFrame:
    """Per partition of ``topics``: its leader, its replicas and those in sync (the ISR).

    In the replicated topology a partition is ``under_replicated`` while a broker that holds it
    is not in sync, e.g. from its crash until it has caught up again after its restart.
    """
    admin = KafkaAdminClient(bootstrap_servers=bootstrap, client_id="labkit-replicas",
                             request_timeout_ms=REQUEST_TIMEOUT_MS)
    try:
        described = admin.describe_topics(list(topics))
    finally:
        admin.close()
    rows = [{"topic": t["name"], "partition": p["partition_index"], "leader": p["leader_id"],
             "replicas": list(p["replica_nodes"]), "isr": list(p["isr_nodes"]),
             "under_replicated": len(p["isr_nodes"]) < len(p["replica_nodes"])}
            for t in described for p in t["partitions"]]
    return pd.DataFrame(rows, columns=["topic", "partition", "leader", "replicas", "isr", "under_replicated"])


def active_controller(bootstrap: str) -> int:
    """The node id of the KRaft quorum's active controller (its leader).

    Raises:
        ServiceError: the quorum has no leader now, or Kafka did not answer.
    """
    admin = KafkaAdminClient(bootstrap_servers=bootstrap, client_id="labkit-quorum",
                             request_timeout_ms=REQUEST_TIMEOUT_MS)
    try:
        quorum = admin.describe_metadata_quorum()
    except KafkaError as e:
        raise ServiceError(f"Kafka did not describe its controller quorum: {e}. Hint: `labkit logs kafka`.") from e
    finally:
        admin.close()
    leader = quorum["topics"][0]["partitions"][0]["leader_id"]
    if leader < 0:
        raise ServiceError("Kafka's controller quorum has no leader now. Hint: `labkit status`; "
                           "a majority of the controllers must be up.")
    return int(leader)


def fully_replicated(bootstrap: str, topics: Sequence[str] = (TOPIC, DLQ_TOPIC)) -> bool:
    """Whether every replica of every partition of ``topics`` is in sync; False while Kafka cannot say."""
    try:
        table = replicas(bootstrap, topics)
    except KafkaError:
        return False
    return bool(len(table)) and not table["under_replicated"].any()


def tail(bootstrap: str, topic: str = TOPIC, last: int | None = None, since_ms: float | None = None,
         timeout_s: float = 1.0) -> Iterator:
    """The records of ``topic`` up to its end as of now, bounded.

    Starts ``last`` records before the end of each partition, or at the first record at or
    after ``since_ms``, or at the beginning. Stops at the end offsets, or after a
    ``timeout_s`` lull.
    """
    with _reader(bootstrap, "tail", consumer_timeout_ms=int(timeout_s * 1000)) as consumer:
        partitions = _partitions(consumer, topic)
        if not partitions:
            return
        consumer.assign(partitions)
        ends = consumer.end_offsets(partitions)
        for tp, start in _starts(consumer, ends, last, since_ms).items():
            consumer.seek(tp, start)
        yield from _until(consumer, ends)


def _starts(consumer: KafkaConsumer, ends: Mapping[TopicPartition, int], last: int | None,
            since_ms: float | None) -> dict[TopicPartition, int]:
    if last is not None:
        return {tp: max(0, end - last) for tp, end in ends.items()}
    if since_ms is None:
        return {tp: 0 for tp in ends}
    found = consumer.offsets_for_times({tp: int(since_ms) for tp in ends})
    return {tp: found[tp].offset if found.get(tp) else end for tp, end in ends.items()}


def _until(consumer: KafkaConsumer, ends: Mapping[TopicPartition, int]) -> Iterator:
    if all(consumer.position(tp) >= end for tp, end in ends.items()):
        return
    for record in consumer:
        yield record
        if all(consumer.position(tp) >= end for tp, end in ends.items()):
            return


def read_events(bootstrap: str, topic: str = TOPIC, limit: int = 20, timeout_s: float = 3.0) -> pd.DataFrame:
    """The last ``limit`` records of ``topic``, one row each, parsed where they are JSON."""
    rows = [_event_row(m) for m in tail(bootstrap, topic, last=limit, timeout_s=timeout_s)]
    return pd.DataFrame(rows[-limit:])


def _event_row(message) -> dict:
    row = {"partition": message.partition, "offset": message.offset, "timestamp_ms": message.timestamp}
    try:
        event = json.loads(message.value)
    except ValueError:
        return {**row, "kind": "malformed"}
    records = event.get("Records") if isinstance(event, dict) else None
    if not records:
        return {**row, "kind": event.get("Event", "other") if isinstance(event, dict) else "other"}
    s3 = records[0]["s3"]
    return {**row, "kind": records[0]["eventName"], "bucket": s3["bucket"]["name"], "key": s3["object"]["key"],
            "size": s3["object"]["size"]}


def event_keys(value: bytes | None) -> set[str]:
    """The object keys an S3 event record names (none for anything else)."""
    try:
        event = json.loads(value or b"")
        return {r["s3"]["object"]["key"] for r in event.get("Records", [])}
    except (ValueError, KeyError, TypeError, AttributeError):
        return set()


def event_seen(bootstrap: str, key: str, last: int = 500, topic: str = TOPIC) -> bool:
    """Whether one of the topic's last ``last`` records per partition is an S3 event naming ``key``."""
    return any(key in event_keys(record.value) for record in tail(bootstrap, topic, last=last, timeout_s=3.0))


def consume(bootstrap: str, group: str, max_records: int, topic: str = TOPIC, timeout_s: float = 5.0) -> int:
    """Read up to ``max_records`` as consumer group ``group`` and commit; return how many were read."""
    consumer = KafkaConsumer(topic, bootstrap_servers=bootstrap, group_id=group, auto_offset_reset="earliest",
                             enable_auto_commit=False, consumer_timeout_ms=int(timeout_s * 1000),
                             max_poll_records=max_records)
    try:
        read = 0
        for _ in consumer:
            read += 1
            if read >= max_records:
                break
        consumer.commit()
        return read
    finally:
        consumer.close()
