"""Each service of the native stack, exercised over a real connection.

Each service has a test named after it (``test_<service>_...``); tests/test_service_declarations.py
checks that a declared service has one.
"""

from __future__ import annotations

import io
import json
import smtplib
import time
import uuid
from email.message import EmailMessage
from urllib.parse import urlsplit

import httpx
from kafka import KafkaConsumer, KafkaProducer

from labkit.stack.readiness import poll_until
from labkit.stack.services.storage import TOPIC


def _consumer(lab, topic: str) -> KafkaConsumer:
    return KafkaConsumer(topic, bootstrap_servers=lab.kafka_bootstrap, auto_offset_reset="earliest",
                         group_id=f"test-{uuid.uuid4().hex[:8]}", consumer_timeout_ms=10000)


def test_kafka_produce_and_consume(lab):
    topic = f"t-{uuid.uuid4().hex[:8]}"
    producer = KafkaProducer(bootstrap_servers=lab.kafka_bootstrap)
    for i in range(5):
        producer.send(topic, f"m{i}".encode())
    producer.flush()
    values = [m.value for m, _ in zip(_consumer(lab, topic), range(5))]
    assert values == [b"m0", b"m1", b"m2", b"m3", b"m4"]


def put_and_get(lab, gateway: str, bucket: str) -> None:
    s3 = lab.s3(gateway)
    if not s3.bucket_exists(bucket):
        s3.make_bucket(bucket)
    s3.put_object(bucket, "hello.txt", io.BytesIO(b"hi there"), 8)
    assert s3.get_object(bucket, "hello.txt").read() == b"hi there"


def test_storage_puts_and_gets_objects(lab):
    put_and_get(lab, "storage", "probe-in")


def test_storage_out_puts_and_gets_objects_on_the_same_data_root(lab):
    put_and_get(lab, "storage-out", "probe-out")
    # both gateways serve one data root
    assert lab.s3("storage").get_object("probe-out", "hello.txt").read() == b"hi there"


def test_storage_sends_an_event_per_upload_to_kafka(lab):
    s3 = lab.s3("storage")
    consumer = _consumer(lab, TOPIC)
    if not s3.bucket_exists("events-probe"):
        s3.make_bucket("events-probe")
    key = f"dir/{uuid.uuid4().hex}.bin"
    s3.put_object("events-probe", key, io.BytesIO(b"x" * 10), 10)
    for message in consumer:
        try:
            records = json.loads(message.value).get("Records", [])
        except (ValueError, AttributeError):
            continue  # other tests put malformed records on the topic on purpose
        if records and records[0]["s3"]["object"]["key"] == key:
            assert records[0]["eventName"] == "s3:ObjectCreated:Put"
            assert records[0]["s3"]["bucket"]["name"] == "events-probe"
            assert records[0]["s3"]["object"]["size"] == 10
            return
    raise AssertionError(f"no ObjectCreated event for {key} on topic {TOPIC}")


HOOK_PROBE_FLOW = [
    {"id": "hookprobe_tab", "type": "tab", "label": "hook probe"},
    {"id": "hookprobe_in", "type": "http in", "z": "hookprobe_tab", "url": "/hooks/:token/object-created",
     "method": "post", "wires": [["hookprobe_fn"]]},
    {"id": "hookprobe_fn", "type": "function", "z": "hookprobe_tab", "outputs": 1,
     "func": "const seen = flow.get('seen') || []; seen.push(msg.payload); flow.set('seen', seen);"
             "msg.payload = {ok: true}; return msg;", "wires": [["hookprobe_out"]]},
    {"id": "hookprobe_out", "type": "http response", "z": "hookprobe_tab", "wires": []},
    {"id": "hookprobe_get", "type": "http in", "z": "hookprobe_tab", "url": "/probe/seen", "method": "get",
     "wires": [["hookprobe_list"]]},
    {"id": "hookprobe_list", "type": "function", "z": "hookprobe_tab", "outputs": 1,
     "func": "msg.payload = flow.get('seen') || []; return msg;", "wires": [["hookprobe_out"]]},
]


def test_nodered_deploys_a_flow_whose_webhook_gets_storage_out_events(lab):
    admin = lab.nodered()
    admin.deploy(HOOK_PROBE_FLOW)
    assert {n["id"] for n in admin.flows()} >= {"hookprobe_in", "hookprobe_fn"}
    s3 = lab.s3("storage-out")
    if not s3.bucket_exists("hook-probe"):
        s3.make_bucket("hook-probe")
    key = f"{uuid.uuid4().hex}.txt"
    s3.put_object("hook-probe", key, io.BytesIO(b"out"), 3)

    def seen_keys() -> set[str]:
        events = httpx.get(f"{lab.endpoints['nodered']}/probe/seen").json()
        return {r["s3"]["object"]["key"] for e in events for r in e.get("Records", [])}

    assert poll_until(lambda: key in seen_keys(), timeout_s=10, interval_s=0.1) == "ready"


def test_faas_deploys_invokes_and_records_an_activation(lab):
    faas = lab.faas()
    faas.put_action("probe-echo", "def main(args):\n    return {'echo': args.get('x'), 'bound': args.get('b')}\n",
                    params={"b": 7})
    activation = faas.invoke("probe-echo", {"x": 42}, blocking=True)
    assert activation["response"]["status"] == "success"
    assert activation["response"]["result"] == {"echo": 42, "bound": 7}
    record = faas.get_activation(activation["activationId"])
    assert record["name"] == "probe-echo"
    assert record["end"] >= record["start"] and record["duration"] >= 0
    annotations = {a["key"] for a in record["annotations"]}
    assert {"waitTime", "kind", "limits"} <= annotations


def test_mail_sent_over_smtp_is_readable_through_api(lab):
    host, port = lab.backend.service("mail").smtp()
    subject = f"probe {uuid.uuid4().hex[:8]}"
    message = EmailMessage()
    message["From"], message["To"], message["Subject"] = "lab@example.test", "student@example.test", subject
    message.set_content("the body")
    with smtplib.SMTP(host, port, timeout=5) as smtp:
        smtp.send_message(message)
    mailbox = lab.mailbox()
    assert poll_until(lambda: any(m["Subject"] == subject for m in mailbox.messages()), 5, 0.1) == "ready"
    found = next(m for m in mailbox.messages() if m["Subject"] == subject)
    assert "the body" in mailbox.message(found["ID"])["Text"]


def test_toxiproxy_latency_toxic_adds_measured_latency(lab):
    toxi = lab.toxiproxy()
    storage = urlsplit(lab.endpoints["storage"])  # https natively: the store speaks TLS
    listen_port = lab.ctx.config.port("toxiproxy") + 100
    toxi.ensure_proxy("probe-storage", f"127.0.0.1:{listen_port}", storage.netloc)
    url = f"{storage.scheme}://127.0.0.1:{listen_port}/health"

    def median_ms() -> float:
        samples = []
        for _ in range(7):
            with httpx.Client(verify=lab.verify) as client:  # a new connection each time, through the proxy
                t0 = time.perf_counter()
                client.get(url).raise_for_status()
                samples.append((time.perf_counter() - t0) * 1000)
        return sorted(samples)[len(samples) // 2]

    try:
        base = median_ms()
        toxi.add_toxic("probe-storage", "latency", latency=300, jitter=0)
        slowed = median_ms()
    finally:
        toxi.delete_proxy("probe-storage")
    assert 280 <= slowed - base <= 1000, (base, slowed)



def test_poll_until_says_why_it_stopped():
    calls = []
    assert poll_until(lambda: calls.append(1) or len(calls) >= 3, timeout_s=5, interval_s=0.01) == "ready"
    assert len(calls) == 3
    assert poll_until(lambda: False, timeout_s=5, interval_s=0.01, alive=lambda: False) == "died"
    started = time.monotonic()
    assert poll_until(lambda: False, timeout_s=0.3, interval_s=0.05) == "timeout"
    assert 0.3 <= time.monotonic() - started < 2
    assert poll_until(lambda: True, timeout_s=0, interval_s=1) == "ready"  # probed once, however short
