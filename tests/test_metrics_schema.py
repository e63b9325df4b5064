"""The metrics line's JSON Schema on the Python side, without services: sample lines of every
outcome are valid, lines that drift from it are not, and labkit's reader knows its fields."""

from __future__ import annotations

import copy
import json

import pytest

from labkit.pipeline.metrics import COLUMNS, STAMPS, load_metrics
from tests.schema import SCHEMA_FILE, assert_valid_lines, line_errors

T0 = 1_760_000_000_000

OK = {
    "key": "a/cat.png", "trace_id": "4f0c2a", "attempts": 2, "upload_attempts": 1, "invoke_attempts": 2,
    "outcome": "ok", "t_upload_start": T0, "t_uploaded": T0 + 80, "t_event": T0 + 75, "t_invoke_start": T0 + 90,
    "t_action_start": T0 + 300, "t_action_end": T0 + 361.5, "t_webhook": T0 + 400, "t_done": T0 + 400,
    "completed_by": "webhook", "duration_ms": 400, "key_out": "a/cat.jpg", "bucket_out": "dit247c",
    "bytes_in": 345678, "bytes_out": 45678, "width_in": 1920, "height_in": 1080, "width_out": 640, "height_out": 360,
    "format_in": "PNG", "format": "JPEG", "download_ms": 12.5, "resize_ms": 40.25, "upload_ms": 8.1,
    "action_upload_ms": 8.1, "activation_id": "a1b2c3d4e5f6",
}
BY_CHECK = {**OK, "upload_attempts": None, "attempts": 2, "t_upload_start": None, "t_uploaded": None,
            "t_webhook": None, "t_done": T0 + 361.5, "completed_by": "check", "duration_ms": 286.5}
NO_WEBHOOK = {**OK, "outcome": "no_webhook", "t_webhook": None, "t_done": None, "completed_by": None,
              "duration_ms": None}
ERROR = {
    "key": "bad/text.jpg", "trace_id": "77aa", "attempts": 1, "upload_attempts": 1, "invoke_attempts": 1,
    "outcome": "error", "code": "not_an_image", "error": "cannot identify image file", "gave_up": None,
    "t_upload_start": T0, "t_uploaded": T0 + 50, "t_event": T0 + 60, "t_invoke_start": T0 + 70,
    "t_action_start": T0 + 100, "t_action_end": T0 + 120, "t_webhook": None, "t_failed": T0 + 130,
    "duration_ms": None, "bucket": "dit247", "activation_id": "b2",
}
GAVE_UP = {**ERROR, "trace_id": None, "attempts": 10, "upload_attempts": None, "invoke_attempts": 10,
           "code": "faas_unreachable", "error": "connect ECONNREFUSED 127.0.0.1:3233",
           "gave_up": "gave up after 10 attempts", "t_upload_start": None, "t_uploaded": None,
           "t_action_start": None, "t_action_end": None, "activation_id": None}
MALFORMED = {
    "key": None, "trace_id": None, "attempts": 0, "outcome": "malformed", "code": "malformed",
    "error": "not JSON: Unexpected token 'n'", "t_upload_start": None, "t_uploaded": None, "t_event": T0,
    "t_invoke_start": None, "t_action_start": None, "t_action_end": None, "t_webhook": None, "duration_ms": None,
    "kafka_partition": 0, "kafka_offset": "1234", "raw_bytes": 24, "raw_prefix": '{"Records": [ not json x',
}
SAMPLES = {"ok": OK, "ok by the output check": BY_CHECK, "no_webhook": NO_WEBHOOK, "error": ERROR,
           "error after the retries gave up": GAVE_UP, "malformed": MALFORMED}


@pytest.mark.parametrize("name", SAMPLES)
def test_a_sample_line_of_each_outcome_is_valid(name: str) -> None:
    assert line_errors(SAMPLES[name]) == []


def changed(line: dict, **fields) -> dict:
    out = copy.deepcopy(line)
    for field, value in fields.items():
        if value is ...:
            del out[field]
        else:
            out[field] = value
    return out


@pytest.mark.parametrize("line", [
    changed(OK, outcome=...),
    changed(OK, outcome="done"),
    changed(OK, colour="blue"),
    changed(OK, key_out=...),
    changed(OK, duration_ms="400"),
    changed(OK, t_done=None, duration_ms=None),
    changed(OK, t_webhook=None),
    changed(OK, attempts=1.5),
    changed(OK, attempts=0),
    changed(BY_CHECK, t_webhook=T0),
    changed(NO_WEBHOOK, duration_ms=5),
    changed(ERROR, duration_ms=5),
    changed(ERROR, t_failed=...),
    changed(MALFORMED, key="k"),
    changed(MALFORMED, kafka_offset=1234),
    changed(MALFORMED, raw_prefix="x" * 201),
], ids=lambda line: json.dumps(line)[:40])
def test_a_line_that_drifts_is_refused(line: dict) -> None:
    assert line_errors(line)


def test_the_helper_names_the_bad_line() -> None:
    assert assert_valid_lines(SAMPLES.values()) == len(SAMPLES)
    with pytest.raises(AssertionError, match=r"1 of 2 metrics lines break metrics-line.schema.json"):
        assert_valid_lines([OK, changed(OK, duration_ms="slow")])


def test_every_column_labkit_reads_is_in_the_schema() -> None:
    schema = json.loads(SCHEMA_FILE.read_text())
    declared = {name for branch in ("resized", "failed", "malformed")
                for name in schema["$defs"][branch]["properties"]}
    assert set(COLUMNS) <= declared
    assert set(STAMPS) <= set(schema["$defs"]["resized"]["required"])


def test_labkit_reads_the_sample_lines(tmp_path) -> None:
    path = tmp_path / "metrics.jsonl"
    path.write_text("".join(json.dumps(line) + "\n" for line in SAMPLES.values()))
    frame = load_metrics(path)
    assert list(frame["outcome"]) == [line["outcome"] for line in SAMPLES.values()]
    ok = frame.iloc[0]
    assert ok["duration_s"] == 0.4 and ok["action_ms"] == 61.5 and ok["action_upload_ms"] == 8.1


def test_a_key_with_unicode_line_separators_stays_one_line(tmp_path) -> None:
    """JSON leaves U+2028 and U+2029 unescaped, as Node-RED writes them; only "\n" ends a line."""
    keys = ["odd/\u2028line.png", "odd/\u2029para.png", "odd/\x85next.png"]
    path = tmp_path / "metrics.jsonl"
    path.write_text("".join(json.dumps({**OK, "key": k}, ensure_ascii=False) + "\n" for k in keys))
    assert list(load_metrics(path)["key"]) == keys


def test_the_outcomes_python_knows_are_the_schemas() -> None:
    """One vocabulary across the language boundary: labkit.pipeline.fate.Outcome is the schema's enum."""
    import json
    from pathlib import Path

    from labkit.pipeline.fate import Fate, Outcome

    schema = json.loads((Path(__file__).resolve().parents[1] / "stack/nodered/metrics-line.schema.json").read_text())
    assert {o.value for o in Outcome} == set(schema["properties"]["outcome"]["enum"])
    assert Fate.of_outcome("ok") is Fate.of_outcome("no_webhook") is Fate.RESIZED
    assert Fate.of_outcome("error") is Fate.DEAD_LETTERED
