"""The upload path without services: the key corpus against the resize action's output key
rule (the flow's Node mirror of it is checked against the same corpus by
``stack/nodered/test/keys.test.js``), and labkit's upload client against canned answers."""

from __future__ import annotations

import json

import httpx
import pytest

from labkit.pipeline import upload
from labkit.pipeline.deploy import action_module
from labkit.stack.versions import STACK_DIR

CORPUS_FILE = STACK_DIR / "nodered" / "test" / "key-corpus.json"


def expand(key: str | list | None) -> str | None:
    """A corpus key: a string, or a list of pieces (a string, or ``[character, times]``)."""
    if key is None or isinstance(key, str):
        return key
    return "".join(piece if isinstance(piece, str) else piece[0] * piece[1] for piece in key)


def corpus(section: str) -> list[list]:
    """The cases of one section of the shared key corpus, keys expanded."""
    cases = json.loads(CORPUS_FILE.read_text())[section]["cases"]
    return [[expand(case[0]), *[expand(v) if isinstance(v, list) else v for v in case[1:]]] for case in cases]


@pytest.mark.parametrize(("key", "fmt", "expected"), corpus("output_keys"), ids=lambda v: str(v)[:30])
def test_the_output_key_corpus_is_the_actions_rule(key: str, fmt: str, expected: str | None) -> None:
    action = action_module()
    if expected is None:
        with pytest.raises(action.ActionError, match="output key longer than 1024 bytes"):
            action.output_key(key, fmt)
    else:
        assert action.output_key(key, fmt) == expected


def test_the_upload_corpus_covers_every_rule() -> None:
    reasons = {why for _, why in corpus("upload_keys") if why}
    for rule in ("starts with '/'", "empty segment", "'.' or '..' segment", "control character", "U+FFFE",
                 "'.sgwtmp' segment", "a segment of", "last segment", "is 1025 bytes", "output key longer",
                 "not valid UTF-8", "missing or empty"):
        assert any(rule in why for why in reasons), rule
    taken = [key for key, why in corpus("upload_keys") if why is None]
    assert max(len(k.encode()) for k in taken) == 1024  # the longest key the store takes is taken


def client(answers: list[httpx.Response], seen: list[httpx.Request]) -> httpx.Client:
    """An httpx client whose requests get ``answers`` in turn (no socket)."""
    def handle(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return answers.pop(0)

    return httpx.Client(base_url="http://nodered", transport=httpx.MockTransport(handle))


def test_the_client_says_it_is_no_form_and_waits_out_a_busy_endpoint() -> None:
    seen: list[httpx.Request] = []
    busy = httpx.Response(503, headers={"Retry-After": "0"}, json={"error": "Service Unavailable: 8 uploads"})
    ok = httpx.Response(200, json={"key": "k.jpg", "trace_id": "t", "attempts": 1})
    with client([busy, busy, ok], seen) as http:
        row = upload.upload_one(http, "k.jpg", b"x", "text/plain")
    assert row["status"] == 200 and row["client_attempts"] == 3
    assert all(r.headers["X-Requested-With"] == "labkit" for r in seen)
    assert seen[0].headers["Content-Type"] == "text/plain"


def test_the_client_takes_the_flows_own_answers_as_final() -> None:
    seen: list[httpx.Request] = []
    gave_up = httpx.Response(503, json={"error": "PUT k.jpg to storage failed: ECONNRESET", "attempts": 10})
    refused = httpx.Response(404, json={"error": "PUT k.jpg to storage failed: 404 NoSuchBucket: no bucket",
                                        "attempts": 1, "store_status": 404})
    with client([gave_up, refused], seen) as http:
        first = upload.upload_one(http, "k.jpg", b"x", "image/jpeg")
        second = upload.upload_one(http, "k.jpg", b"x", "image/jpeg")
    assert (first["status"], first["client_attempts"], first["attempts"]) == (503, 1, 10)
    assert (second["status"], second["client_attempts"]) == (404, 1)
    assert "NoSuchBucket" in second["error"]


def test_the_client_retries_node_red_that_is_not_serving_the_flow_yet() -> None:
    seen: list[httpx.Request] = []
    starting = httpx.Response(404, text="Cannot POST /upload", headers={"Content-Type": "text/html"})
    ok = httpx.Response(200, json={"key": "k.jpg", "attempts": 1})
    with client([starting, ok], seen) as http:
        row = upload.upload_one(http, "k.jpg", b"x", "image/jpeg")
    assert (row["status"], row["client_attempts"]) == (200, 2)
