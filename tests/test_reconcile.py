"""Reconciliation on the real stack: images whose events were dropped while Kafka was down are
found and sent through again; processed and dead-lettered images are left alone."""

from __future__ import annotations

import io
import uuid

import httpx
import pytest
from minio.error import S3Error

from labkit.experiments.run import drain
from labkit.pipeline import upload
from labkit.pipeline.audit import audit
from labkit.pipeline.bad_inputs import bad_input_corpus
from labkit.pipeline.images import generate_pool
from labkit.pipeline.reconcile import object_created_event, output_key, reconcile
from labkit.stack.lab import Lab
from labkit.stack.readiness import poll_until
from tests.support import DROPPED

pytestmark = pytest.mark.stack





def output_exists(lab: Lab, key: str) -> bool:
    try:
        lab.s3("storage-out").stat_object("dit247c", output_key(key))
        return True
    except S3Error:
        return False


def test_output_key_is_the_actions_rule() -> None:
    assert output_key("a/b/cat.png") == "a/b/cat.jpg"
    assert output_key("scan.2024") == "scan.2024.jpg"


def test_synthetic_event_has_versitygws_shape() -> None:
    record = object_created_event("p/x.jpg", 12, "abc")["Records"][0]
    assert record["eventName"] == "s3:ObjectCreated:Put"
    assert record["s3"]["bucket"]["name"] == "dit247"
    assert record["s3"]["object"] == {"key": "p/x.jpg", "size": 12, "eTag": '"abc"', "versionId": None,
                                      "sequencer": record["s3"]["object"]["sequencer"]}


def test_images_lost_while_kafka_was_down_are_republished_and_arrive(pipe: Lab) -> None:
    prefix = f"rc-{uuid.uuid4().hex[:8]}/"
    good, bad = f"{prefix}good.jpg", f"{prefix}bad.jpg"
    image = generate_pool(1, seed=21, sizes=[(640, 480)])[0]
    with httpx.Client(base_url=pipe.endpoints["nodered"], timeout=60) as http:
        assert upload.upload_one(http, good, image.data, image.content_type)["status"] == 200
        assert upload.upload_one(http, bad, bad_input_corpus()["text.jpg"], "image/jpeg")["status"] == 200
    before = upload.wait_for(pipe, [good, bad], timeout_s=30).set_index("key")
    assert before.loc[good, "outcome"] == "ok" and before.loc[bad, "outcome"] == "error"

    direct = [f"{prefix}direct-{i}.jpg" for i in range(2)]
    drops_before = pipe.backend.logs("storage", 1000).count(DROPPED)
    pipe.backend.stop("kafka")
    try:
        s3 = pipe.s3()
        for key in direct:
            s3.put_object("dit247", key, io.BytesIO(image.data), len(image.data), content_type=image.content_type)
        # the store's Kafka writer retries for ~7.5 s, then drops the event and says so
        dropped = poll_until(lambda: pipe.backend.logs("storage", 1000).count(DROPPED) > drops_before,
                             timeout_s=30, interval_s=0.5)
        assert dropped == "ready", "versitygw never gave up on the event"
    finally:
        pipe.backend.start("kafka")

    rows, moving = drain(pipe, direct, timeout_s=60, settle_s=4)
    lost = [k for k in direct if k not in set(rows["key"])]
    assert lost and not moving, "the dropped event's image should be lost once the pipeline is quiet"
    assert not any(output_exists(pipe, k) for k in lost)

    found = reconcile(pipe, prefix=prefix, republish=False, grace_s=0).set_index("key")
    assert set(found.index) == {good, bad, *direct}
    assert found.loc[good, "state"] == "resized" and found.loc[bad, "state"] == "dead_lettered"
    assert (found.loc[lost, "state"] == "lost").all() and (found.loc[lost, "action"] == "dry_run").all()

    done = reconcile(pipe, prefix=prefix, grace_s=0).set_index("key")
    assert sorted(done.index[done["action"] == "republished"]) == sorted(lost)
    assert done.loc[[good, bad], "action"].eq("none").all()  # processed and dead-lettered: left alone
    arrived = upload.wait_for(pipe, lost, timeout_s=30)
    assert (arrived["outcome"] == "ok").all()
    assert all(output_exists(pipe, k) for k in lost)

    again = reconcile(pipe, prefix=prefix, grace_s=0)
    assert not (again["action"] == "republished").any()
    assert set(again["state"]) == {"resized", "dead_lettered"}


def test_young_objects_wait_and_old_unprocessed_ones_are_missing(pipe: Lab) -> None:
    prefix = f"rc-{uuid.uuid4().hex[:8]}/"
    key = f"{prefix}no-event.jpg"
    # Written through the storage-out gateway (same data, no Kafka events): an object nobody heard of.
    pipe.s3("storage-out").put_object("dit247", key, io.BytesIO(b"no event"), 8)
    young = reconcile(pipe, prefix=prefix, republish=False, grace_s=600)
    assert young[["key", "state", "action"]].to_dict("records") == [{"key": key, "state": "pending", "action": "none"}]
    old = reconcile(pipe, prefix=prefix, republish=False, grace_s=0)
    assert old[["key", "state", "action"]].to_dict("records") == [{"key": key, "state": "lost", "action": "dry_run"}]


def test_a_resized_image_with_no_metrics_line_is_reported_and_recorded_again(pipe: Lab) -> None:
    prefix = f"rc-{uuid.uuid4().hex[:8]}/"
    key = f"{prefix}unrecorded.jpg"
    image = generate_pool(1, seed=41, sizes=[(800, 600)])[0]
    # Stored with no Kafka event, then resized by calling the action directly: the output is
    # there, yet the flow never saw the invoke, so no metrics line names the key.
    pipe.s3("storage-out").put_object("dit247", key, io.BytesIO(image.data), len(image.data),
                                      content_type=image.content_type)
    with pipe.faas() as faas:
        assert faas.invoke("resize", {"bucket": "dit247", "key": key}, result=True)["key_out"] == output_key(key)
    assert pipe.s3("storage-out").stat_object("dit247c", output_key(key)).size > 0

    report = audit(pipe, prefix=prefix, grace_s=0, record_grace_s=0)
    assert report.counts["resized"] == 1 and report.ok  # the image is safe ...
    assert report.unrecorded == [key]                    # ... but its measurement is missing
    assert audit(pipe, prefix=prefix, grace_s=0).unrecorded == []  # a fresh output may still get its line

    done = reconcile(pipe, prefix=prefix, grace_s=0, record_grace_s=0)
    assert done[["key", "state", "action"]].to_dict("records") == [
        {"key": key, "state": "unrecorded", "action": "republished"}]
    assert upload.wait_for(pipe, [key], timeout_s=60)["outcome"].tolist() == ["ok"]
    assert audit(pipe, prefix=prefix, grace_s=0, record_grace_s=0).unrecorded == []
