"""Accounting by version, on the real stack: the last upload of a key wins, a version whose
event was lost leaves a stale output until reconciliation, an audit never fails on a key,
and uploads again of a key are versions of it, not duplicates."""

from __future__ import annotations

import hashlib
import io
import json
import threading
import uuid
from collections import Counter

import httpx
import numpy as np
import pandas as pd
import pytest
from minio.error import S3Error
from PIL import Image

from labkit.experiments.faults import Fault, FaultInjector
from labkit.pipeline import upload
from labkit.pipeline.audit import _duplicates, audit
from labkit.pipeline.fate import KEY_STATES, RESULT_FATES, Fate, Outcome
from labkit.pipeline.images import generate_pool, render_graphic
from labkit.pipeline.metrics import metrics_path, read_lines
from labkit.pipeline.reconcile import output_key, publish_events, reconcile
from labkit.pipeline.versions import MadeFrom, dlq_version, output_key_or_none, versions_of
from labkit.stack.lab import Lab
from labkit.stack.readiness import poll_until
from tests.support import DROPPED
from tests.test_audit import labkit_audit

RACES = 20
# The small upload goes this long after the large one was stored (round i: i * step), so the
# races spread over the large image's whole trip: its read, its resize, its write, and after.
RACE_STEP_S = 0.15


def md5(data: bytes) -> str:
    return hashlib.md5(data).hexdigest()


def png(img: Image.Image) -> bytes:
    buffer = io.BytesIO()
    img.save(buffer, "PNG", compress_level=1)
    return buffer.getvalue()


def lines_of(lab: Lab, key: str) -> list[dict]:
    return [r for r in read_lines(metrics_path(lab)) if r.get("key") == key]


def output_made_from(lab: Lab, key: str) -> tuple[str | None, tuple[int, int] | None]:
    """The version the output of ``key`` records, and the output's size; (None, None) without one."""
    s3 = lab.s3("storage-out")
    try:
        response = s3.get_object("dit247c", output_key(key))
    except S3Error:
        return None, None
    try:
        data, etag = response.read(), response.headers.get("x-amz-meta-source-etag")
    finally:
        response.close()
        response.release_conn()
    return etag, Image.open(io.BytesIO(data)).size


def current_etag(lab: Lab, key: str) -> str:
    return lab.s3().stat_object("dit247", key).etag.strip('"')


def settled(lab: Lab, key: str, versions: dict[str, str]) -> dict | None:
    """Once every version in ``versions`` (name -> ETag) has its line and the output is the current
    version's: the line of each version and what the output records; None before."""
    lines = {r.get("source_etag"): r for r in lines_of(lab, key)}
    if not all(etag in lines for etag in versions.values()):
        return None
    made_from, size = output_made_from(lab, key)
    if made_from != current_etag(lab, key):
        return None  # a write may still be on its way (and its check after it)
    return {"lines": {name: lines[etag] for name, etag in versions.items()}, "made_from": made_from, "size": size}


def wait_settled(lab: Lab, key: str, versions: dict[str, str], timeout_s: float = 90.0) -> dict:
    found: dict = {}

    def look() -> bool:
        found["state"] = settled(lab, key, versions)
        return found["state"] is not None

    assert poll_until(look, timeout_s=timeout_s, interval_s=0.25) == "ready", (
        f"{key} did not settle: lines {lines_of(lab, key)}, output {output_made_from(lab, key)}, "
        f"current {current_etag(lab, key)}")
    return found["state"]


@pytest.fixture(scope="module")
def large_png() -> bytes:
    """A 7000x7000 PNG: a slow image for the action (about a second to decode and resize)."""
    return png(render_graphic(7000, 7000, np.random.default_rng(7000)))


# ---------------------------------------------------------------- the last upload wins


def race(lab: Lab, http: httpx.Client, key: str, large: bytes, small: bytes, delay_s: float) -> dict:
    """Upload ``large`` to ``key``, then ``small`` ``delay_s`` after it was stored; wait until both are accounted."""
    assert upload.upload_one(http, key, large, "image/png")["status"] == 200
    sent: dict = {}
    timer = threading.Timer(delay_s, lambda: sent.update(upload.upload_one(http, key, small, "image/png")))
    timer.start()
    timer.join()
    assert sent["status"] == 200, sent
    return wait_settled(lab, key, {"large": md5(large), "small": md5(small)})


def test_the_newest_upload_wins_a_race_of_a_slow_large_image_and_a_fast_small_one(pipe: Lab, large_png) -> None:
    prefix = f"ver-{uuid.uuid4().hex[:8]}/race/"
    small = png(render_graphic(320, 240, np.random.default_rng(320)))
    seen = Counter()
    with httpx.Client(base_url=pipe.endpoints["nodered"], timeout=120) as http:
        for i in range(RACES):
            key = f"{prefix}{i:02d}.png"
            found = race(pipe, http, key, large_png, small, i * RACE_STEP_S)
            assert found["made_from"] == md5(small) and found["size"] == (320, 240), (key, found)
            newest, older = found["lines"]["small"], found["lines"]["large"]
            assert newest["outcome"] == Outcome.OK and (newest["width_out"], newest["height_out"]) == (320, 240)
            assert older["outcome"] in (Outcome.OK, Outcome.SUPERSEDED), older
            seen[older.get("found_at", "resized, then replaced")] += 1
    print(f"\n{RACES} races, the newest version's output every time; the older version: {dict(seen)}")
    report = audit(pipe, prefix=prefix, grace_s=0)
    assert report.counts[Fate.RESIZED] == RACES and report.ok
    assert report.duplicates == {} and sum(report.superseded.values()) == seen["read"] + seen["before_write"] + \
        seen["after_write"]


# ---------------------------------------------------------------- a lost version, and keys the action refuses


def long_key(prefix: str, size: int = 1024) -> str:
    """A key of exactly ``size`` bytes, without an extension, in segments the store can hold (255 bytes at most)."""
    left, segments = size - len(prefix.encode()), []
    while left > 0:
        n = min(200, left)
        if left - n == 1:  # a "/" with nothing after it would end the key
            n -= 1
        segments.append("k" * n)
        left -= n + 1 if left > n else n  # the segment, and the "/" before the next one
    return prefix + "/".join(segments)


def test_a_version_lost_while_kafka_was_down_is_stale_until_reconciled(pipe: Lab) -> None:
    prefix = f"ver-{uuid.uuid4().hex[:8]}/"
    key, bad = f"{prefix}photo.jpg", long_key(f"{prefix}no-ext/")
    assert len(bad.encode()) == 1024 and output_key_or_none(bad) is None
    v1, v2 = (image.data for image in generate_pool(2, seed=47, sizes=[(800, 600)]))
    with httpx.Client(base_url=pipe.endpoints["nodered"], timeout=60) as http:
        assert upload.upload_one(http, key, v1, "image/jpeg")["status"] == 200
        wait_settled(pipe, key, {"v1": md5(v1)})
        drops_before = pipe.backend.logs("storage", 1000).count(DROPPED)
        pipe.backend.stop("kafka")
        try:
            assert upload.upload_one(http, key, v2, "image/jpeg")["status"] == 200  # stored; its event is lost
            pipe.s3().put_object("dit247", bad, io.BytesIO(v1), len(v1), content_type="image/jpeg")
            dropped = poll_until(lambda: pipe.backend.logs("storage", 1000).count(DROPPED) >= drops_before + 2,
                                 timeout_s=45, interval_s=0.5)
            assert dropped == "ready", "versitygw never gave up on the events"
        finally:
            pipe.backend.start("kafka")

    report = audit(pipe, prefix=prefix, grace_s=0)
    assert (report.stale, report.lost, report.ok) == ([key], [bad], False)
    row = report.table.set_index("key").loc[key]
    assert (row["etag"], row["made_from"]) == (md5(v2), md5(v1))
    assert audit(pipe, prefix=prefix, grace_s=600).counts[Fate.PENDING] == 2  # young: not judged yet
    cli = labkit_audit(pipe, "--prefix", prefix, "--grace-s", "0")
    assert cli.returncode == 1 and f"stale: {key}" in cli.stdout and "STALE" in cli.stderr, cli.stdout + cli.stderr
    assert "Traceback" not in cli.stderr

    done = reconcile(pipe, prefix=prefix, grace_s=0).set_index("key")
    assert done.loc[[key, bad], "action"].eq("republished").all() and pd.isna(done.loc[bad, "key_out"])
    wait_settled(pipe, key, {"v2": md5(v2)})
    assert poll_until(lambda: any(r.get("outcome") == Outcome.ERROR for r in lines_of(pipe, bad)),
                      timeout_s=60, interval_s=0.25) == "ready"
    clean = audit(pipe, prefix=prefix, grace_s=0)
    assert clean.ok and clean.counts == {"resized": 1, "stale": 0, "dead_lettered": 1, "pending": 0, "lost": 0}
    assert clean.reasons == {bad: "bad_parameter"}
    assert labkit_audit(pipe, "--prefix", prefix, "--grace-s", "0").returncode == 0


def test_audit_and_reconcile_report_any_key_in_the_bucket(pipe: Lab) -> None:
    prefix = f"ver-{uuid.uuid4().hex[:8]}/"
    data = generate_pool(1, seed=48, sizes=[(320, 240)])[0].data
    odd = [long_key(f"{prefix}a/"), long_key(f"{prefix}b/", 1020), f"{prefix}scan.2024", f"{prefix}ü %+.jpg",
           f"{prefix}.hidden", f"{prefix}tab\there.jpg"]
    s3 = pipe.s3()
    for key in odd:  # straight into the store, as /upload would refuse some of them
        s3.put_object("dit247", key, io.BytesIO(data), len(data), content_type="image/jpeg")
    found = reconcile(pipe, prefix=prefix, republish=False, grace_s=0)
    assert sorted(found["key"]) == sorted(odd)
    for key in odd:  # each one comes through the pipeline: resized, or refused by the action and dead-lettered
        assert poll_until(lambda key=key: lines_of(pipe, key), timeout_s=60, interval_s=0.25) == "ready", key
    report = audit(pipe, prefix=prefix, grace_s=0)
    states = report.table.set_index("key")["state"]
    assert report.ok and set(states) <= {Fate.RESIZED, Fate.DEAD_LETTERED}, report.as_dict()
    assert (states[odd[1:5]] == Fate.RESIZED).all(), states  # 1020 bytes and ".jpg" still fit in S3's 1024
    assert [states[odd[0]], states[odd[5]]] == [Fate.DEAD_LETTERED] * 2  # too long with ".jpg"; a control character
    assert report.reasons == {odd[0]: "bad_parameter", odd[5]: "bad_parameter"}
    assert json.dumps(report.as_dict())


# ---------------------------------------------------------------- uploads again are versions, not duplicates


def test_uploads_again_of_a_key_are_versions_and_a_redelivered_version_is_a_duplicate(pipe: Lab) -> None:
    prefix = f"ver-{uuid.uuid4().hex[:8]}/"
    key, twin = f"{prefix}again.jpg", f"{prefix}twin.jpg"
    v1, v2 = (image.data for image in generate_pool(2, seed=49, sizes=[(640, 480)]))
    with httpx.Client(base_url=pipe.endpoints["nodered"], timeout=60) as http:
        for data in (v1, v2):
            assert upload.upload_one(http, key, data, "image/jpeg")["status"] == 200
            wait_settled(pipe, key, {"this": md5(data)})
        # two uploads of the same bytes to one key at once: one version twice, yet two uploads
        threads = [threading.Thread(target=upload.upload_one, args=(http, twin, v1, "image/jpeg")) for _ in range(2)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    assert poll_until(lambda: len([r for r in lines_of(pipe, twin) if r["outcome"] == Outcome.OK]) >= 2,
                      timeout_s=60, interval_s=0.25) == "ready"
    twins = [r for r in lines_of(pipe, twin) if r["outcome"] == Outcome.OK]
    assert len({r["trace_id"] for r in twins}) == 2, twins  # each upload its own trace id
    assert audit(pipe, prefix=prefix, grace_s=0).duplicates == {}

    # the same version delivered again (an event republished) is a duplicate
    etag = current_etag(pipe, key)
    row = type("Row", (), {"key": key, "size": len(v2), "etag": etag})()
    publish_events(pipe, [row])
    assert poll_until(lambda: len([r for r in lines_of(pipe, key) if r.get("source_etag") == etag]) >= 2,
                      timeout_s=60, interval_s=0.25) == "ready"
    assert audit(pipe, prefix=prefix, grace_s=0).duplicates == {key: 2}


def test_uploads_of_the_same_bytes_before_their_events_each_get_their_own_line(pipe: Lab) -> None:
    """Three uploads of one image to one key while the store's events are held back (latency on
    the store-kafka hop): all three are stored before the first event reaches the flow, and each
    upload still gets its own line (its trace id, its upload's start), not one line of the latest
    upload and two of trace ids the flow made up."""
    key = f"ver-{uuid.uuid4().hex[:8]}/same.jpg"
    data = generate_pool(1, seed=50, sizes=[(320, 240)])[0].data
    sent = []
    with httpx.Client(base_url=pipe.endpoints["nodered"], timeout=60) as http, FaultInjector(pipe) as faults:
        held = faults.inject(Fault("latency", "store-kafka", params={"latency_ms": 8000}))
        try:
            for _ in range(3):
                sent.append(upload.upload_one(http, key, data, "image/jpeg", trace_id=uuid.uuid4().hex))
            before = len(lines_of(pipe, key))  # 0: the events were still held
        finally:
            faults.clear(held)  # the held events go on, in order
    assert [row["status"] for row in sent] == [200] * 3, sent
    assert poll_until(lambda: len(lines_of(pipe, key)) >= 3, timeout_s=60, interval_s=0.25) == "ready", lines_of(pipe, key)
    lines = {r["trace_id"]: r for r in lines_of(pipe, key)}
    print(f"\nlines before the events were let through: {before}; after: {len(lines)}")
    assert set(lines) == {row["trace_id"] for row in sent}, (lines.keys(), [row["trace_id"] for row in sent])
    for row in sent:
        line = lines[row["trace_id"]]
        assert (line["outcome"], line["t_upload_start"]) == (Outcome.OK, row["t_upload_start"]), (line, row)
    assert audit(pipe, prefix=key.rsplit("/", 1)[0] + "/", grace_s=0).duplicates == {}


# ---------------------------------------------------------------- the pieces, without services


def test_duplicates_are_counted_per_version() -> None:
    lines = [{"key": "a", "outcome": "ok", "trace_id": "t1", "source_etag": "e1"},
             {"key": "a", "outcome": "ok", "trace_id": "t2", "source_etag": "e2"},  # an upload again
             {"key": "a", "outcome": "ok", "trace_id": "t3", "source_etag": "e1"},  # the same bytes again
             {"key": "b", "outcome": "ok", "trace_id": "t4", "source_etag": "e4"},
             {"key": "b", "outcome": "ok", "trace_id": "t4", "source_etag": "e4"},  # delivered twice
             {"key": "c", "outcome": "superseded", "trace_id": "t5", "source_etag": "e5"}]
    assert _duplicates(lines) == {"b": 2}


def test_the_version_index_and_dead_letters() -> None:
    index = versions_of([("a", "e1"), ("b", None), {"key": "c", "source_etag": ""}, {"key": None}])
    assert index == {"a": {"e1"}, "b": {None}, "c": {None}}
    record = {"key": "k.jpg", "reason": "truncated", "event": {"s3": {"object": {"key": "k.jpg", "eTag": '"e9"'}}}}
    assert dlq_version(json.dumps(record).encode()) == ("k.jpg", "e9")
    assert dlq_version(json.dumps({"key": "k.jpg", "event": None}).encode()) == ("k.jpg", None)
    assert dlq_version(b"not json") is None and dlq_version(b"[1]") is None and dlq_version(None) is None
    assert MadeFrom("k", None) == MadeFrom("k", None)


def test_stale_and_superseded_are_fates_and_only_superseded_is_an_uploads() -> None:
    assert Fate.of_outcome(Outcome.SUPERSEDED) is Fate.SUPERSEDED
    assert Fate.STALE.is_failure and Fate.STALE.has_output and not Fate.SUPERSEDED.is_failure
    assert Fate.STALE in KEY_STATES and Fate.SUPERSEDED in RESULT_FATES and Fate.STALE not in RESULT_FATES


def test_the_schema_takes_a_superseded_line() -> None:
    from tests.schema import line_errors

    line = {"key": "a/cat.png", "trace_id": "4f0c2a", "source_etag": "e1", "attempts": 1, "upload_attempts": None,
            "invoke_attempts": 1, "outcome": "superseded", "found_at": "read", "current_etag": "e2",
            "repaired": False, "t_upload_start": None, "t_uploaded": None, "t_event": 1, "t_invoke_start": 2,
            "t_action_start": 3, "t_action_end": 4, "t_webhook": None, "t_done": None, "duration_ms": None,
            "key_out": "a/cat.jpg", "bucket_out": "dit247c", "activation_id": None}
    assert line_errors(line) == []
    assert line_errors({**line, "found_at": "later"}) and line_errors({**line, "duration_ms": 5})
