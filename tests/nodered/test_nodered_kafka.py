"""The labkit-kafka nodes against the lab's real Kafka broker."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from typing import Any

import httpx
import pytest
from kafka import KafkaConsumer, KafkaProducer
from nodered_flows import function, http_in, http_response, kafka_broker, kafka_in, kafka_out, tab
from nodered_support import NodeRedEndpoint

from labkit.stack.clients.nodered import NodeRedAdmin

STORE = ("const got = flow.get('got') || [];\n"
         "got.push({payload: msg.payload, topic: msg.topic, kafka: msg.kafka});\n"
         "flow.set('got', got);\nreturn null;")
REPORT = "msg.payload = flow.get('got') || [];\nreturn msg;"
# second output goes back into labkit-kafka-in: acknowledges the oldest un-acked record
ACK = ("const got = flow.get('got') || [];\nconst n = flow.get('acked') || 0;\n"
       "if (n >= got.length) { msg.payload = {acked: n}; return [msg, null]; }\n"
       "flow.set('acked', n + 1);\nmsg.payload = {acked: n + 1};\n"
       "return [msg, {kafka: got[n].kafka}];")


def poll(what: str, fetch: Callable[[], Any], done: Callable[[Any], bool], timeout_s: float = 30) -> Any:
    deadline = time.monotonic() + timeout_s
    value = None
    while time.monotonic() < deadline:
        value = fetch()
        if done(value):
            return value
        time.sleep(0.25)
    raise AssertionError(f"{what}: not reached within {timeout_s} s; last value {value!r}")


def consumer_flow(topic: str, group: str, max_in_flight: int = 0) -> list[dict[str, Any]]:
    z = f"tab-{group}"  # flow context lives as long as the tab id: a fresh tab per test
    return [
        tab(z, "kafka smoke"),
        # ${...} is substituted from Node-RED's environment (labkit sets LABKIT_KAFKA_BOOTSTRAP)
        kafka_broker("kafkabroker001", "${LABKIT_KAFKA_BOOTSTRAP}"),
        kafka_in("kafkain0000001", z, "kafkabroker001", topic, group, [["kafkastore001"]],
                 max_in_flight=max_in_flight, ack_timeout_s=120),
        function("kafkastore001", z, STORE, [[]]),
        http_in("kafkaget000001", z, "/smoke/kafka", [["kafkareport01"]]),
        function("kafkareport01", z, REPORT, [["kafkaresp0001"]]),
        http_response("kafkaresp0001", z),
        http_in("kafkaackin0001", z, "/smoke/kafka/ack", [["kafkaackfn001"]]),
        function("kafkaackfn001", z, ACK, [["kafkaackres01"], ["kafkain0000001"]]),
        http_response("kafkaackres01", z),
    ]


def received(nodered: NodeRedEndpoint) -> list[dict[str, Any]]:
    response = httpx.get(nodered.base_url + "/smoke/kafka", timeout=10)
    assert response.status_code == 200, response.text
    return response.json()


def produce(bootstrap: str, topic: str, values: list[str]) -> None:
    producer = KafkaProducer(bootstrap_servers=bootstrap)
    try:
        for i, value in enumerate(values):
            producer.send(topic, key=f"k{i}".encode(), value=value.encode())
        producer.flush(timeout=20)
    finally:
        producer.close(timeout=10)


@pytest.fixture()
def topic(unique: str) -> str:
    return f"labkit-nodered-test-{unique}"


def test_consumer_emits_produced_records(nodered: NodeRedEndpoint, admin: NodeRedAdmin, kafka_bootstrap: str,
                                         topic: str, unique: str) -> None:
    admin.deploy(consumer_flow(topic, f"labkit-test-{unique}"))
    values = [json.dumps({"object": f"img-{i}.jpg", "n": i}) for i in range(3)]
    produce(kafka_bootstrap, topic, values)
    got = poll("3 records in the flow", lambda: received(nodered), lambda g: len(g) >= 3)
    assert sorted(r["payload"] for r in got) == sorted(values)
    for record in got:
        assert record["topic"] == topic
        meta = record["kafka"]
        assert meta["topic"] == topic and meta["partition"] == 0
        assert meta["key"] in {"k0", "k1", "k2"}
        assert int(meta["offset"]) in {0, 1, 2} and int(meta["timestamp"]) > 0
    assert len(received(nodered)) == 3  # nothing duplicated


def test_max_in_flight_pauses_until_acked(nodered: NodeRedEndpoint, admin: NodeRedAdmin, kafka_bootstrap: str,
                                          topic: str, unique: str) -> None:
    admin.deploy(consumer_flow(topic, f"labkit-test-{unique}", max_in_flight=2))
    produce(kafka_bootstrap, topic, ["a", "b", "c"])
    poll("2 records in flight", lambda: received(nodered), lambda g: len(g) >= 2)
    time.sleep(2.0)  # give the consumer the chance to (wrongly) emit the third record
    assert [r["payload"] for r in received(nodered)] == ["a", "b"]
    ack = httpx.get(nodered.base_url + "/smoke/kafka/ack", timeout=10)
    assert ack.status_code == 200 and ack.json() == {"acked": 1}
    got = poll("third record after one ack", lambda: received(nodered), lambda g: len(g) >= 3)
    assert [r["payload"] for r in got] == ["a", "b", "c"]


def test_producer_node_writes_records(nodered: NodeRedEndpoint, admin: NodeRedAdmin, kafka_bootstrap: str,
                                      topic: str) -> None:
    z = "kafkaouttab0001"
    admin.deploy([
        tab(z, "kafka out"),
        kafka_broker("kafkabroker002", "${LABKIT_KAFKA_BOOTSTRAP}"),
        http_in("produceIn00001", z, "/smoke/produce", [["produceFn00001"]], method="post"),
        function("produceFn00001", z,
                 "const record = {payload: msg.payload, key: 'dlq-key'};\n"
                 "msg.payload = {queued: true};\nreturn [record, msg];",
                 [["kafkaout000001"], ["produceRes0001"]]),
        kafka_out("kafkaout000001", z, "kafkabroker002", topic),
        http_response("produceRes0001", z),
    ])
    body = {"object": "broken.jpg", "error": "decode failed"}
    response = httpx.post(nodered.base_url + "/smoke/produce", json=body, timeout=10)
    assert response.status_code == 200 and response.json() == {"queued": True}

    consumer = KafkaConsumer(topic, bootstrap_servers=kafka_bootstrap, group_id=None,
                             auto_offset_reset="earliest", consumer_timeout_ms=1000)
    try:
        records: list[Any] = []
        deadline = time.monotonic() + 30
        while not records and time.monotonic() < deadline:
            for batch in consumer.poll(timeout_ms=500).values():
                records.extend(batch)
    finally:
        consumer.close()
    assert len(records) == 1, records
    assert records[0].key == b"dlq-key"
    assert json.loads(records[0].value) == body
