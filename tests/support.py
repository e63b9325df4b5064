"""Helpers shared by the test modules (fixtures live in conftest.py)."""

from __future__ import annotations

import io
import time
from collections.abc import Callable
from typing import Any

import pytest
from kafka import KafkaConsumer, TopicPartition
from PIL import Image

# versitygw's log line when its Kafka writer gives up on an event (the event is lost)
DROPPED = "failed to send kafka event"


def poll(what: str, fetch: Callable[[], Any], timeout_s: float = 30.0, interval_s: float = 0.2) -> Any:
    """Call ``fetch`` until it returns something truthy, and return that; fail the test after ``timeout_s``."""
    deadline = time.monotonic() + timeout_s
    while not (value := fetch()):
        if time.monotonic() >= deadline:
            pytest.fail(f"timed out after {timeout_s:.0f} s waiting for {what}")
        time.sleep(interval_s)
    return value


def output_bytes(lab, key_out: str, bucket: str = "dit247c") -> bytes:
    """The action's output object, as stored."""
    response = lab.s3("storage-out").get_object(bucket, key_out)
    try:
        return response.read()
    finally:
        response.close()
        response.release_conn()


def read_output(lab, key_out: str, bucket: str = "dit247c") -> Image.Image:
    """The action's output object, checked to be a valid image and decoded."""
    data = output_bytes(lab, key_out, bucket)
    with Image.open(io.BytesIO(data)) as img:
        img.verify()  # verify() leaves the image unusable, so decode a second copy
    img = Image.open(io.BytesIO(data))
    img.load()
    return img


def end_offsets(lab, topic: str) -> dict[TopicPartition, int]:
    """The topic's end offset per partition: read from there to see only what comes next."""
    consumer = KafkaConsumer(bootstrap_servers=lab.kafka_bootstrap)
    try:
        partitions = [TopicPartition(topic, p) for p in consumer.partitions_for_topic(topic) or {0}]
        return consumer.end_offsets(partitions)
    finally:
        consumer.close()


def read_from(lab, offsets: dict[TopicPartition, int]) -> list[tuple[bytes | None, bytes | None]]:
    """(key, value) of every record after ``offsets`` (one pass, bounded by a 2 s idle timeout)."""
    consumer = KafkaConsumer(bootstrap_servers=lab.kafka_bootstrap, enable_auto_commit=False,
                             consumer_timeout_ms=2000)
    try:
        consumer.assign(list(offsets))
        for tp, offset in offsets.items():
            consumer.seek(tp, offset)
        return [(r.key, r.value) for r in consumer]
    finally:
        consumer.close()
