"""Topic ``dit247``'s partitions: grow the topic, and count the records each partition got.

The benchmark's scaling sweep grows the topic (:func:`set_partitions`) and measures how evenly
a burst spread over it (:func:`records_since`). The offsets themselves are read by
:mod:`labkit.pipeline.kafka`, the one place labkit reads them.

Example:
    >>> before = end_offsets(lab.kafka_bootstrap)          # doctest: +SKIP
    >>> records_since(lab.kafka_bootstrap, before)         # doctest: +SKIP
    {0: 12, 1: 9}
"""

from __future__ import annotations

from kafka import KafkaAdminClient
from kafka.admin import NewPartitions

from labkit.pipeline.kafka import end_offsets
from labkit.stack.services.storage import TOPIC

__all__ = ["end_offsets", "records_since", "set_partitions"]


def set_partitions(bootstrap: str, count: int, topic: str = TOPIC) -> int:
    """Grow ``topic`` to ``count`` partitions (Kafka cannot shrink a topic); the count it has now."""
    admin = KafkaAdminClient(bootstrap_servers=bootstrap, client_id="labkit-partitions")
    try:
        current = len(admin.describe_topics([topic])[0]["partitions"])
        if count > current:
            admin.create_partitions({topic: NewPartitions(total_count=count)})
            return count
        return current
    finally:
        admin.close()


def records_since(bootstrap: str, before: dict[int, int], topic: str = TOPIC) -> dict[int, int]:
    """Records written to each partition of ``topic`` since ``before`` (its :func:`end_offsets` then)."""
    return {p: end - before.get(p, 0) for p, end in sorted(end_offsets(bootstrap, topic).items())}
