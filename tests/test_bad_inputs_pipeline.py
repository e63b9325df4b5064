"""The whole bad-input corpus through the real pipeline, in one batch beside good images and odd keys.

For every case, four things hold: the image gets a clear error (outcome ``error`` with the
code of ``BAD_INPUT_EXPECTED``) or a correct output (a valid image, longest edge <= 640);
the error is recorded (metrics line and ``dit247-dlq`` record); nothing crashed (every
service still healthy); and no other image is lost (every good key resized; audit: lost 0).
A 50 MB upload (a JPEG header, then zeros) gets a clear error too. One push, one wait: the module
stays well under a minute.
"""

from __future__ import annotations

import json
import time
import uuid

import pandas as pd
import pytest
from kafka import TopicPartition

from labkit.pipeline import upload
from labkit.pipeline.audit import audit
from labkit.pipeline.bad_inputs import BAD_INPUT_EXPECTED, bad_input_corpus
from labkit.pipeline.images import PoolImage, generate_pool
from labkit.pipeline.reconcile import DLQ_TOPIC
from labkit.stack.lab import Lab
from labkit.stack.services.nodered import MAX_BODY_BYTES
from tests.support import end_offsets, read_from, read_output

pytestmark = pytest.mark.stack

MAX_EDGE = 640
CLEAR_ERROR = "clear-error"  # an error with one of CLEAR_CODES, whichever fits
FIFTY_MB = 50 * 1024 * 1024  # under Node-RED's body limit (MAX_BODY_BYTES) and the action's 60 MiB max_bytes
EITHER = "ok-or-clear-error"  # the contract when the right answer is not fixed: never silent, never a crash
REFUSED = "refused"  # a key the store would rewrite or hide: 400 at the door, nothing stored
CLEAR_CODES = {"not_an_image", "truncated", "corrupt", "unsupported", "decompression_bomb"}
CONTENT_TYPES = {"jpg": "image/jpeg", "png": "image/png", "gif": "image/gif", "heic": "image/heic"}


def _image(key: str, data: bytes, content_type: str) -> PoolImage:
    return PoolImage(key, data, content_type, 0, 0, "", "case")


def cases() -> tuple[list[PoolImage], dict[str, str]]:
    """The batch, in upload order, and what each key must come to: ``ok``, an error code, or ``EITHER``."""
    batch, expect = [], {}

    def add(key: str, data: bytes, content_type: str, want: str) -> None:
        batch.append(_image(key, data, content_type))
        expect[key] = want

    for name, data in bad_input_corpus().items():
        add(f"corpus/{name}", data, CONTENT_TYPES[name.rsplit(".", 1)[1]], BAD_INPUT_EXPECTED[name])
    good = generate_pool(6, seed=2471, sizes=[(1024, 768), (600, 900)])
    for image in good[:3]:
        add(f"good/{image.key}", image.data, image.content_type, "ok")
    odd = ["unicode/café ☕ Ωμέγα.jpg", "spaces/a b  c.jpg", "plus/a+b+c.jpg", "percent/100%25 50%.jpg",
           "n1/n2/n3/n4/deep.jpg"]
    for key, image in zip(odd, [good[3]] * len(odd)):
        add(key, image.data, image.content_type, "ok")
    # the same key twice within a few ms (pushed side by side): the last write wins, both come out
    add("twice/same.jpg", good[4].data, good[4].content_type, "ok")
    add("twice/same.jpg", good[5].data, good[5].content_type, "ok")
    # wrong content types: the action trusts the bytes, not the label, and the upload endpoint
    # keeps the bytes as sent whatever the label says (no text decoding, no JSON or form parsing).
    add("ctype/jpeg-as-png.png", good[3].data, "image/png", "ok")
    add("ctype/jpeg-as-octet.jpg", good[3].data, "application/octet-stream", "ok")
    add("ctype/jpeg-as-text.jpg", good[3].data, "text/plain", "ok")
    add("ctype/jpeg-as-json.jpg", good[3].data, "application/json", "ok")
    add("ctype/jpeg-as-form.jpg", good[3].data, "application/x-www-form-urlencoded", "ok")
    assert FIFTY_MB < MAX_BODY_BYTES
    add("big/fifty-mb.jpg", good[3].data[:4] + bytes(FIFTY_MB), "image/jpeg", CLEAR_ERROR)  # a JPEG header, then zeros
    # keys the store would keep under another key, or hide from listings (tests/test_upload_path.py has many more)
    for key in ["hostile/./dot.jpg", "hostile//twice.jpg", "hostile/../up.jpg", "hostile/tab\tkey.jpg",
                "hostile/.sgwtmp/hidden.jpg", "hostile/" + "x" * 256 + ".jpg"]:
        add(key, good[3].data, good[3].content_type, REFUSED)
    return batch, expect




@pytest.fixture(scope="module")
def run(pipe: Lab) -> dict:
    """Push the whole batch once and wait once; every test below reads the result."""
    prefix = f"bad-{uuid.uuid4().hex[:8]}/"
    batch, expect = cases()
    dlq_from = end_offsets(pipe, DLQ_TOPIC)
    started = time.monotonic()
    sent = upload.push(pipe, batch, concurrency=8, progress=False, prefix=prefix)
    accepted = sorted(set(sent.loc[sent["status"] == 200, "key"]))
    rows = upload.wait_for(pipe, accepted, timeout_s=45).set_index("key")
    print(f"bad-input batch: {len(batch)} uploads, all through in {time.monotonic() - started:.1f} s")
    return {"prefix": prefix, "sent": sent, "rows": rows, "expect": {prefix + k: v for k, v in expect.items()},
            "dlq_from": dlq_from}


def _dlq_reasons(lab: Lab, offsets: dict[TopicPartition, int]) -> dict[str, str]:
    """key -> reason of every JSON DLQ record after ``offsets``."""
    records = [json.loads(v) for _, v in read_from(lab, offsets) if v and v.startswith(b"{")]
    return {d["key"]: d.get("reason") for d in records if isinstance(d.get("key"), str)}


def _fitted(width: int, height: int) -> tuple[int, int]:
    scale = min(1.0, MAX_EDGE / max(width, height))
    return round(width * scale), round(height * scale)


def _check_ok(lab: Lab, key: str, row: pd.Series) -> None:
    assert row["outcome"] == "ok", (key, row.get("code"), row.get("error"))
    img = read_output(lab, row["key_out"])
    assert max(img.size) <= MAX_EDGE and min(img.size) >= 1, (key, img.size)
    assert (row["width_out"], row["height_out"]) == img.size, key


def test_every_case_gets_a_clear_error_or_a_correct_output(run: dict, pipe: Lab) -> None:
    sent = run["sent"].set_index("key")
    for key, want in run["expect"].items():
        status = sent.loc[[key], "status"].tolist()
        if want == REFUSED:
            assert status == [400] and "query parameter 'key'" in sent.loc[key, "error"], (key, status)
            continue
        if want == EITHER and status != [200]:
            assert all(400 <= s < 500 for s in status) and sent.loc[[key], "error"].notna().all(), key
            continue  # refused at the door, with a reason: a clear error too
        assert status and all(s == 200 for s in status), (key, sent.loc[[key]].to_dict("records"))
        row = run["rows"].loc[key]
        if want == "ok" or (want == EITHER and row["outcome"] == "ok"):
            _check_ok(pipe, key, row)
        elif want in (EITHER, CLEAR_ERROR):
            assert row["outcome"] == "error" and row["code"] in CLEAR_CODES, (key, row["code"], row["error"])
        else:
            assert row["outcome"] == "error" and row["code"] == want, (key, row["code"], row["error"])
            assert row["error"], f"{key}: the error has no message"


def test_the_key_uploaded_twice_comes_out_as_one_of_the_two(run: dict, pipe: Lab) -> None:
    key = run["prefix"] + "twice/same.jpg"
    good = generate_pool(6, seed=2471, sizes=[(1024, 768), (600, 900)])
    row = run["rows"].loc[key]
    _check_ok(pipe, key, row)
    sizes = {_fitted(i.width, i.height) for i in good[4:6]}
    size = read_output(pipe, row["key_out"]).size
    assert any(abs(size[0] - w) <= 1 and abs(size[1] - h) <= 1 for w, h in sizes), (size, sizes)


def test_every_error_is_recorded_in_metrics_and_on_the_dlq(run: dict, pipe: Lab) -> None:
    errors = {k: v for k, v in run["expect"].items() if v not in ("ok", EITHER, CLEAR_ERROR, REFUSED)}
    errors |= {k: run["rows"].loc[k, "code"] for k, v in run["expect"].items()
               if v in (EITHER, CLEAR_ERROR) and k in run["rows"].index and run["rows"].loc[k, "outcome"] == "error"}
    deadline = time.monotonic() + 15
    while (letters := _dlq_reasons(pipe, run["dlq_from"])).keys() < errors.keys() and time.monotonic() < deadline:
        time.sleep(0.5)
    assert {k: letters.get(k) for k in errors} == errors
    assert audit(pipe, prefix=run["prefix"], grace_s=0).reasons == errors


def test_nothing_crashed_and_no_good_image_is_lost(run: dict, pipe: Lab) -> None:
    status = pipe.status()
    assert (status["state"] == "up").all() and status["healthy"].all(), status[["state", "healthy"]].to_dict()
    report = audit(pipe, prefix=run["prefix"], grace_s=0)
    assert report.lost == [] and report.counts["pending"] == 0, report.as_dict()
    resized = set(report.table.loc[report.table["state"] == "resized", "key"])
    good = {k for k, v in run["expect"].items() if v == "ok"}
    assert good <= resized, sorted(good - resized)
