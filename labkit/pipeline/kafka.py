"""Look inside the pub/sub hop: the events on a topic, and how far a consumer group lags."""

from __future__ import annotations

import json
import uuid

import pandas as pd
from kafka import KafkaAdminClient, KafkaConsumer, TopicPartition
from kafka.errors import CoordinatorNotAvailableError
from tenacity import retry, retry_if_exception_type, stop_after_delay, wait_fixed

from labkit.stack.services.storage import TOPIC


def read_events(bootstrap: str, topic: str = TOPIC, limit: int = 20, timeout_s: float = 3.0) -> pd.DataFrame:
    """The last ``limit`` records of ``topic``, one row each, parsed where they are JSON.

    Reads with a throwaway consumer that commits nothing, so it never disturbs the pipeline's group.
    """
    consumer = KafkaConsumer(bootstrap_servers=bootstrap, group_id=None, enable_auto_commit=False,
                             consumer_timeout_ms=int(timeout_s * 1000), client_id=f"labkit-peek-{uuid.uuid4().hex[:6]}")
    try:
        partitions = [TopicPartition(topic, p) for p in consumer.partitions_for_topic(topic) or ()]
        consumer.assign(partitions)
        for tp, end in consumer.end_offsets(partitions).items():
            consumer.seek(tp, max(0, end - limit))
        rows = [_event_row(m) for m in consumer]
    finally:
        consumer.close()
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


# The group coordinator needs a moment after a broker's first group appears.
_retry_coordinator = retry(retry=retry_if_exception_type(CoordinatorNotAvailableError),
                           stop=stop_after_delay(20), wait=wait_fixed(0.3), reraise=True)


@_retry_coordinator
def consumer_lag(bootstrap: str, group: str, topic: str = TOPIC) -> pd.DataFrame:
    """Per partition: the group's committed offset, the log-end offset, and the lag between them."""
    admin = KafkaAdminClient(bootstrap_servers=bootstrap, client_id="labkit-lag")
    consumer = KafkaConsumer(bootstrap_servers=bootstrap, group_id=None)
    try:
        offsets = admin.list_group_offsets(group).get(group, {})
        committed = {tp: meta.offset for tp, meta in offsets.items() if tp.topic == topic}
        partitions = [TopicPartition(topic, p) for p in consumer.partitions_for_topic(topic) or ()]
        ends = consumer.end_offsets(partitions)
    finally:
        admin.close()
        consumer.close()
    rows = [{"partition": tp.partition, "committed": committed.get(tp, 0), "log_end": end,
             "lag": end - max(committed.get(tp, 0), 0)} for tp, end in sorted(ends.items())]
    return pd.DataFrame(rows)


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
