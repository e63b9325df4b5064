"""The accounting invariant on the real stack: every uploaded object is resized, dead-lettered
with a reason, or pending; an object whose event was dropped while Kafka was down is LOST,
and `labkit audit` says so with exit status 1."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
import uuid

import httpx
import pytest

from labkit.pipeline import upload
from labkit.pipeline.audit import AUDIT_STATES, CURE, _duplicates, audit
from labkit.pipeline.bad_inputs import bad_input_corpus
from labkit.pipeline.images import generate_pool
from labkit.pipeline.reconcile import reconcile
from labkit.stack.lab import Lab
from labkit.stack.readiness import poll_until
from tests.support import DROPPED

pytestmark = pytest.mark.stack





def labkit_audit(lab: Lab, *args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "LABKIT_DATA_DIR": str(lab.ctx.config.data_dir),
           "LABKIT_PORT_OFFSET": str(lab.ctx.config.port_offset), "LABKIT_BACKEND": "native"}
    return subprocess.run([sys.executable, "-m", "labkit.cli", "audit", *args], env=env, capture_output=True,
                          text=True, timeout=120, check=False)


def test_duplicates_are_keys_with_more_than_one_ok_line_of_one_version() -> None:
    lines = [{"key": "a", "outcome": "ok"}, {"key": "a", "outcome": "ok"}, {"key": "b", "outcome": "ok"},
             {"key": "c", "outcome": "error"}, {"key": "c", "outcome": "error"},
             {"key": "d", "outcome": "ok", "trace_id": "t1", "source_etag": "e1"},
             {"key": "d", "outcome": "ok", "trace_id": "t2", "source_etag": "e2"}]  # uploaded again: no duplicate
    assert _duplicates(lines) == {"a": 2}


def test_audit_accounts_for_every_object_and_finds_the_lost_one(pipe: Lab) -> None:
    prefix = f"au-{uuid.uuid4().hex[:8]}/"
    sent = upload.push(pipe, generate_pool(3, seed=31, sizes=[(800, 600)]), concurrency=3, progress=False,
                       prefix=prefix)
    assert (sent["status"] == 200).all(), sent.to_dict("records")
    corrupt = f"{prefix}bad/truncated.jpg"
    with httpx.Client(base_url=pipe.endpoints["nodered"], timeout=60) as http:
        assert upload.upload_one(http, corrupt, bad_input_corpus()["truncated.jpg"], "image/jpeg")["status"] == 200
    upload.wait_for(pipe, [*sent["key"], corrupt], timeout_s=60)

    report = audit(pipe, prefix=prefix, grace_s=0)
    assert report.counts == {"resized": 3, "stale": 0, "dead_lettered": 1, "pending": 0, "lost": 0}
    assert report.reasons == {corrupt: "truncated"}
    assert report.lost == [] and report.duplicates == {} and report.ok
    assert set(report.table["key"]) == {*sent["key"], corrupt}
    assert set(report.table["state"]) <= set(AUDIT_STATES)
    clean = labkit_audit(pipe, "--prefix", prefix, "--grace-s", "0")
    assert clean.returncode == 0, clean.stderr
    assert "resized" in clean.stdout and "lost" in clean.stdout

    # An object stored while Kafka is down: the store drops its event, nobody hears of it.
    lost = f"{prefix}direct/nobody-heard.jpg"
    image = generate_pool(1, seed=32, sizes=[(320, 240)])[0]
    drops_before = pipe.backend.logs("storage", 1000).count(DROPPED)
    pipe.backend.stop("kafka")
    try:
        pipe.s3().put_object("dit247", lost, io.BytesIO(image.data), len(image.data), content_type=image.content_type)
        # the store's Kafka writer retries for ~7.5 s, then drops the event and says so
        dropped = poll_until(lambda: pipe.backend.logs("storage", 1000).count(DROPPED) > drops_before,
                             timeout_s=30, interval_s=0.5)
        assert dropped == "ready", "versitygw never gave up on the event"
    finally:
        pipe.backend.start("kafka")

    assert audit(pipe, prefix=prefix, grace_s=600).counts["pending"] == 1  # within the grace: not judged yet
    report = audit(pipe, prefix=prefix, grace_s=2)
    assert report.lost == [lost] and not report.ok
    assert report.counts == {"resized": 3, "stale": 0, "dead_lettered": 1, "pending": 0, "lost": 1}

    result = labkit_audit(pipe, "--prefix", prefix, "--grace-s", "2", "--json")
    assert result.returncode == 1, result.stdout + result.stderr
    assert json.loads(result.stdout)["lost"] == [lost]
    assert CURE in result.stderr and "Traceback" not in result.stderr
    table = labkit_audit(pipe, "--prefix", prefix, "--grace-s", "2")
    assert table.returncode == 1 and f"lost: {lost}" in table.stdout

    # The cure the message names works: republish, and the lost object comes through.
    reconcile(pipe, prefix=prefix, grace_s=2)
    assert upload.wait_for(pipe, [lost], timeout_s=60)["outcome"].tolist() == ["ok"]
    assert audit(pipe, prefix=prefix, grace_s=2).counts == {"resized": 4, "stale": 0, "dead_lettered": 1, "pending": 0,
                                                            "lost": 0}
