"""The whole pipeline on the session's real stack: upload -> S3 -> Kafka -> Node-RED -> FaaS -> S3 -> webhook.

Every test uses its own keys (a per-module run id), so tests do not see each other's
images. Waits poll with a bound; services stopped here are started again in ``finally``.
"""

from __future__ import annotations

import io
import itertools
import json
import re
import statistics
import time
import uuid
from collections.abc import Iterator

import httpx
import pandas as pd
import pytest
from kafka import KafkaProducer
from minio.error import S3Error

from labkit.errors import ServiceError
from labkit.experiments.faults import Fault, FaultInjector
from labkit.experiments.run import drain, fresh_outputs
from labkit.pipeline import deploy as pipeline
from labkit.pipeline import upload
from labkit.pipeline.bad_inputs import bad_input_corpus
from labkit.pipeline.images import generate_pool
from labkit.pipeline.metrics import STAMPS, lab_metrics, metrics_path
from labkit.pipeline.verify import verify
from labkit.stack.clients.openwhisk import FaasError
from labkit.stack.lab import Lab
from labkit.stack.services.storage import TOPIC, WEBHOOK_PATH
from tests.schema import assert_valid_lines, metrics_lines
from tests.support import end_offsets, poll, read_from, read_output

pytestmark = pytest.mark.stack

DLQ = "dit247-dlq"
MAX_EDGE = 640


@pytest.fixture(scope="module")
def pipe(lab: Lab) -> Iterator[Lab]:
    """The session's stack with the pipeline stood up; torn down after the module."""
    pipeline.stand_up(lab)
    try:
        yield lab
    finally:
        pipeline.tear_down(lab)


@pytest.fixture()
def run_id() -> str:
    return f"t{uuid.uuid4().hex[:8]}/"


def push_ok(lab: Lab, images, prefix: str) -> pd.DataFrame:
    sent = upload.push(lab, images, concurrency=4, progress=False, prefix=prefix)
    assert (sent["status"] == 200).all(), sent[sent["status"] != 200].to_dict("records")
    return sent


def expected_size(width: int, height: int) -> tuple[int, int]:
    scale = min(1.0, MAX_EDGE / max(width, height))
    return round(width * scale), round(height * scale)


# ---------------------------------------------------------------- the flow itself


def test_deployed_flow_holds_no_secrets_and_serves_the_dashboard(pipe: Lab) -> None:
    with pipe.nodered() as admin:
        deployed = json.dumps(admin.flows())
    assert "pl_tab" in deployed
    for name, value in pipe.ctx.secrets.as_plain_dict().items():
        if name != "nodered_user":
            assert value not in deployed, f"secret {name} is in the deployed flow"
    assert httpx.get(pipe.endpoints["nodered"] + "/dashboard/pipeline", timeout=10).status_code == 200


# ---------------------------------------------------------------- images through the pipeline


EVENT_RACE_MS = 50


def test_fifty_images_come_out_resized_with_ordered_stamps(pipe: Lab, run_id: str) -> None:
    images = generate_pool(50, seed=2470)
    sent = push_ok(pipe, images, run_id)
    rows = upload.wait_for(pipe, sent["key"], timeout_s=150)

    assert (rows["outcome"] == "ok").all(), rows[rows["outcome"] != "ok"][["key", "code", "error"]].to_dict("records")
    assert assert_valid_lines(metrics_lines(metrics_path(pipe), sent["key"])) >= len(sent)
    for image, row in zip(images, rows.itertuples()):
        width, height = read_output(pipe, row.key_out).size
        assert max(width, height) <= MAX_EDGE, row.key
        want_w, want_h = expected_size(image.width, image.height)
        assert abs(width - want_w) <= 1 and abs(height - want_h) <= 1, (row.key, (width, height), (want_w, want_h))
        assert (row.width_out, row.height_out) == (width, height)

    # The store's webhook is best-effort: a record the flow completed by finding the output
    # itself (completed_by "check") has no t_webhook, and ends at the action's end instead.
    by_hook = rows["completed_by"] == "webhook"
    assert by_hook.sum() >= len(rows) - 2, rows["completed_by"].value_counts().to_dict()
    assert rows.loc[by_hook, list(STAMPS)].notna().all().all()
    assert (rows["t_done"] == rows["t_webhook"].where(by_hook, rows["t_action_end"])).all()
    chain = ["t_upload_start", "t_uploaded", "t_event", "t_invoke_start", "t_action_start", "t_action_end"]
    for earlier, later in itertools.pairwise(chain):
        # The store publishes the event as it answers the PUT, so the event may reach Node-RED a
        # moment before the PUT's reply does: those two stamps race by a few ms (see labkit.pipeline.metrics).
        slack = EVENT_RACE_MS if (earlier, later) == ("t_uploaded", "t_event") else 0
        bad = rows[rows[earlier] > rows[later] + slack]
        assert bad.empty, f"{earlier} > {later}: {bad[['key', earlier, later]].to_dict('records')}"
    assert (rows["t_event"] >= rows["t_upload_start"]).all()
    assert (rows["t_done"] >= rows["t_action_start"]).all()  # the hook may beat the PUT's reply, as the event does
    assert (rows["duration_ms"] == rows["t_done"] - rows["t_upload_start"]).all()
    durations = rows["duration_ms"]
    print(f"\n50 images: duration_ms median {statistics.median(durations):.0f}, max {durations.max():.0f}, "
          f"attempts max {rows['attempts'].max()}")


def test_corrupt_upload_is_an_error_and_later_images_still_flow(pipe: Lab, run_id: str) -> None:
    corpus = bad_input_corpus()
    dlq_from = end_offsets(pipe, DLQ)
    with httpx.Client(base_url=pipe.endpoints["nodered"], timeout=60) as http:
        bad = {f"{run_id}bad/truncated.jpg": ("truncated.jpg", "truncated"),
               f"{run_id}bad/text.jpg": ("text.jpg", "not_an_image")}
        for key, (name, _) in bad.items():
            assert upload.upload_one(http, key, corpus[name], "image/jpeg")["status"] == 200
    good = push_ok(pipe, generate_pool(2, seed=11), run_id)

    rows = upload.wait_for(pipe, [*bad, *good["key"]], timeout_s=60).set_index("key")
    for key, (_, code) in bad.items():
        assert rows.loc[key, "outcome"] == "error"
        assert rows.loc[key, "code"] == code
        with pytest.raises(S3Error):
            pipe.s3("storage-out").stat_object("dit247c", key)  # the output key would equal the source key
    assert (rows.loc[list(good["key"]), "outcome"] == "ok").all()
    assert_valid_lines(metrics_lines(metrics_path(pipe), [*bad, *good["key"]]))

    def dead_letters() -> list[dict]:
        found = [json.loads(v) for _, v in read_from(pipe, dlq_from) if v and v.startswith(b"{")]
        letters = [d for d in found if d.get("key") in bad]
        return letters if len(letters) == len(bad) else []

    letters = poll("the failed images on the DLQ", dead_letters, timeout_s=15)
    assert {d["key"]: d["reason"] for d in letters} == {k: code for k, (_, code) in bad.items()}


def test_malformed_event_is_recorded_and_dead_lettered(pipe: Lab, run_id: str) -> None:
    raw = f'{{"Records": [ not json {run_id}'.encode()
    dlq_from = end_offsets(pipe, DLQ)
    producer = KafkaProducer(bootstrap_servers=pipe.kafka_bootstrap)
    try:
        producer.send(TOPIC, raw).get(timeout=10)
    finally:
        producer.close()

    def malformed_lines() -> list[dict]:
        frame = lab_metrics(pipe)
        if "raw_prefix" not in frame:
            return []
        return frame[(frame["outcome"] == "malformed") & (frame["raw_prefix"] == raw.decode())].to_dict("records")

    lines = poll("the malformed event's metrics line", malformed_lines)
    assert len(lines) == 1 and lines[0]["error"].startswith("not JSON")
    assert assert_valid_lines(metrics_lines(metrics_path(pipe), raw=raw.decode())) == 1
    poll("the raw value on the DLQ", lambda: raw in [v for _, v in read_from(pipe, dlq_from)], timeout_s=15)

    after = push_ok(pipe, generate_pool(1, seed=12), run_id)
    assert upload.wait_for(pipe, after["key"], timeout_s=30).iloc[0]["outcome"] == "ok"


def test_webhook_with_a_wrong_token_is_refused_and_records_nothing(pipe: Lab, run_id: str) -> None:
    key = f"{run_id}forged.jpg"
    event = {"Records": [{"eventName": "s3:ObjectCreated:Put",
                          "s3": {"bucket": {"name": "dit247c"}, "object": {"key": key, "eTag": "x"}}}]}
    right = pipe.ctx.secrets.webhook_token.get_secret_value()
    wrong = ["wrong", right[:-1] + ("A" if right[-1] != "A" else "B"), right + "x"]
    with httpx.Client(base_url=pipe.endpoints["nodered"], timeout=10) as http:
        for token in wrong:
            assert http.post(WEBHOOK_PATH.format(token=token), json=event).status_code == 401
    # An image sent after the forged hooks is a barrier: once it is recorded, they were handled.
    barrier = push_ok(pipe, generate_pool(1, seed=13), run_id)
    upload.wait_for(pipe, barrier["key"], timeout_s=30)
    frame = lab_metrics(pipe)
    assert not ((frame["key"] == key) | (frame.get("key_out", pd.Series(dtype=object)) == key)).any()


def test_a_lost_webhook_is_made_good_by_finding_the_output(pipe: Lab, run_id: str) -> None:
    # A blackhole on store -> webhook: the store gives up on each hook after its client
    # timeout and drops it, as it does with a busy receiver. The flow must still complete.
    injector = FaultInjector(pipe)
    with injector:
        injector.inject(Fault("timeout", "store-webhook", params={"timeout_ms": 0}))
        sent = push_ok(pipe, generate_pool(2, seed=18), run_id)
        poll("both outputs written", lambda: len(fresh_outputs(pipe, set(sent["key"]))) == 2, timeout_s=60)
        # Resized but not recorded yet (the flow waits WEBHOOK_GRACE_MS for the hook): a drain
        # whose quiet window is shorter than that must wait for the record, not call them lost.
        drained, moving = drain(pipe, list(sent["key"]), timeout_s=60, settle_s=0.5)
        assert set(drained.loc[drained["outcome"] == "ok", "key"]) == set(sent["key"]) and not moving
        rows = upload.wait_for(pipe, sent["key"], timeout_s=60)
    assert (rows["outcome"] == "ok").all() and (rows["completed_by"] == "check").all(), rows.to_dict("records")
    assert_valid_lines(metrics_lines(metrics_path(pipe), sent["key"]))
    assert rows["t_webhook"].isna().all()
    assert (rows["t_done"] == rows["t_action_end"]).all()
    assert (rows["duration_ms"] == rows["t_done"] - rows["t_upload_start"]).all()
    for row in rows.itertuples():
        assert read_output(pipe, row.key_out).size == (row.width_out, row.height_out)
    after = push_ok(pipe, generate_pool(1, seed=19), run_id)  # and the hook is back once the fault is gone
    assert upload.wait_for(pipe, after["key"], timeout_s=30).iloc[0]["completed_by"] == "webhook"


@pytest.mark.parametrize("content_type", ["text/plain", "application/json", "application/x-www-form-urlencoded"])
def test_the_upload_endpoint_keeps_the_bytes_whatever_the_content_type(pipe: Lab, run_id: str,
                                                                      content_type: str) -> None:
    data = generate_pool(1, seed=20)[0].data
    key = f"{run_id}bytes/{content_type.replace('/', '-')}.jpg"
    with httpx.Client(base_url=pipe.endpoints["nodered"], timeout=60) as http:
        assert upload.upload_one(http, key, data, content_type)["status"] == 200
    stored = pipe.s3().get_object("dit247", key)
    try:
        assert stored.read() == data
    finally:
        stored.close()
        stored.release_conn()
    assert upload.wait_for(pipe, [key], timeout_s=30).iloc[0]["outcome"] == "ok"


def test_a_slow_image_sends_exactly_one_alert(pipe: Lab, run_id: str) -> None:
    mailbox = pipe.mailbox()
    try:
        pipeline.stand_up(pipe, sla_threshold_s=0.001)  # every image is slow now
        slow = push_ok(pipe, generate_pool(1, seed=14), run_id)
        key = slow["key"][0]
        row = upload.wait_for(pipe, [key], timeout_s=30).iloc[0]

        def alerts() -> list[dict]:
            return [m for m in mailbox.messages() if key in m["Subject"]]

        first = poll("the SLA alert e-mail", alerts, timeout_s=20)
    finally:
        pipeline.stand_up(pipe)  # the configured threshold again
    barrier = push_ok(pipe, generate_pool(1, seed=15), run_id)
    upload.wait_for(pipe, barrier["key"], timeout_s=30)

    assert len(alerts()) == 1
    message = mailbox.message(first[0]["ID"])
    assert message["Subject"] == f"SLA alert: {key} took {row['duration_ms'] / 1000:.2f} s"
    assert [to["Address"] for to in message["To"]] == ["instructor@lab.local"]
    assert key in message["Text"] and "SLA threshold" in message["Text"]
    assert not [m for m in mailbox.messages() if barrier["key"][0] in m["Subject"]]


def test_images_stored_directly_in_s3_flow_too(pipe: Lab, run_id: str) -> None:
    image = generate_pool(1, seed=16)[0]
    stamped, bare = f"{run_id}direct/stamped.jpg", f"{run_id}direct/bare.jpg"
    s3 = pipe.s3()
    t_upload_start = int(time.time() * 1000)
    s3.put_object("dit247", stamped, io.BytesIO(image.data), len(image.data), content_type=image.content_type,
                  metadata={"t-upload-start": str(t_upload_start), "trace-id": f"{run_id}trace".replace("/", "")})
    s3.put_object("dit247", bare, io.BytesIO(image.data), len(image.data), content_type=image.content_type)

    rows = upload.wait_for(pipe, [stamped, bare], timeout_s=30).set_index("key")
    assert (rows["outcome"] == "ok").all()
    assert_valid_lines(metrics_lines(metrics_path(pipe), [stamped, bare]))
    assert rows.loc[stamped, "t_upload_start"] == t_upload_start
    assert rows.loc[stamped, "trace_id"] == f"{run_id}trace".replace("/", "")
    assert rows.loc[stamped, "duration_ms"] == rows.loc[stamped, "t_done"] - t_upload_start
    assert pd.isna(rows.loc[bare, "t_upload_start"]) and pd.isna(rows.loc[bare, "t_uploaded"])
    assert rows.loc[bare, "duration_ms"] == rows.loc[bare, "t_done"] - rows.loc[bare, "t_event"]


# ---------------------------------------------------------------- failures and verify


def test_upload_retries_by_the_policy_then_answers_503_when_storage_is_down(pipe: Lab, run_id: str) -> None:
    policy = pipeline.RetryPolicy(policy="fixed", max_attempts=3, base_ms=100)
    try:
        pipeline.stand_up(pipe, retry=policy)
        pipe.backend.stop("storage")
        try:
            with httpx.Client(base_url=pipe.endpoints["nodered"], timeout=60) as http:
                started = time.monotonic()
                sent = upload.upload_one(http, f"{run_id}storage-down.jpg", b"\xff\xd8\xff", "image/jpeg")
                took_s = time.monotonic() - started
        finally:
            pipe.backend.start("storage")
    finally:
        pipeline.stand_up(pipe)
    assert sent["status"] == 503
    assert sent["attempts"] == 3  # the tab's policy reached the retry subflow
    assert 0.2 <= took_s < 10
    # through the client-store hop's proxy a dead store shows as a refused or dropped connection
    assert re.search(r"ECONNREFUSED|ECONNRESET|socket hang up|closed", sent["error"]), sent["error"]


def test_verify_returns_the_metrics_row(pipe: Lab) -> None:
    row = verify(pipe)
    assert row["outcome"] == "ok"
    assert row["duration_ms"] > 0 and row["key"].startswith("verify/")


def test_verify_names_the_faas_hop_when_faas_is_down(pipe: Lab) -> None:
    pipe.backend.stop("faas")
    try:
        with pytest.raises(ServiceError, match=r"invoke hop.*faas|faas.*invoke hop") as failure:
            verify(pipe, timeout_s=10)
    finally:
        pipe.backend.start("faas")
        pipeline.deploy_action(pipe)
    assert "storage" not in str(failure.value).split("failed")[0]
    assert verify(pipe)["outcome"] == "ok"  # and it recovers


def test_tear_down_removes_the_flow_and_the_action_but_keeps_the_buckets(pipe: Lab) -> None:
    try:
        pipeline.tear_down(pipe)
        with pipe.nodered() as admin:
            assert not [n for n in admin.flows() if str(n.get("id", "")).startswith("pl_")
                        or n.get("z") in ("pl_tab", "pl_retry")]
        with pipe.faas() as faas, pytest.raises(FaasError) as missing:
            faas.get_action(pipeline.ACTION)
        assert missing.value.status == 404
        assert all(pipe.s3().bucket_exists(b) for b in pipeline.BUCKETS)
    finally:
        pipeline.stand_up(pipe)  # whatever runs next finds the pipeline up
