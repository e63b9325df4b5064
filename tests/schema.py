"""The metrics line's JSON Schema (``stack/nodered/metrics-line.schema.json``), for the tests.

The flow writes the lines and labkit reads them; the schema is the contract between the two.
The module's Node tests (``stack/nodered/test/``) validate the lines it builds against it; these
helpers validate lines on the Python side: samples, and the real metrics file of a stack test.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from functools import cache
from pathlib import Path

from jsonschema import Draft202012Validator

SCHEMA_FILE = Path(__file__).resolve().parents[1] / "stack" / "nodered" / "metrics-line.schema.json"


@cache
def validator() -> Draft202012Validator:
    schema = json.loads(SCHEMA_FILE.read_text())
    Draft202012Validator.check_schema(schema)
    return Draft202012Validator(schema)


def line_errors(line: dict) -> list[str]:
    """What the schema finds wrong with one metrics line ([] when it is valid)."""
    return [f"{'/'.join(map(str, e.absolute_path)) or '(line)'}: {e.message}" for e in validator().iter_errors(line)]


def assert_valid_lines(lines: Iterable[dict]) -> int:
    """Fail naming the first invalid metrics lines; return how many lines were checked."""
    lines = list(lines)
    bad = [(line, errors) for line in lines if (errors := line_errors(line))]
    assert not bad, f"{len(bad)} of {len(lines)} metrics lines break {SCHEMA_FILE.name}:\n" + "\n".join(
        f"  {json.dumps(line)[:300]}\n    {'; '.join(errors[:5])}" for line, errors in bad[:3])
    return len(lines)


def metrics_lines(path: Path, keys: Iterable[str] = (), raw: str | None = None) -> list[dict]:
    """The lines of the metrics file at ``path`` about the source keys ``keys`` (or about the
    malformed Kafka record ``raw``), as written; a torn last line is skipped."""
    wanted = set(keys)
    lines = []
    for text in path.read_text(errors="replace").splitlines() if path.exists() else []:
        try:
            line = json.loads(text)
        except ValueError:
            continue  # still being written
        if line.get("key") in wanted or (raw is not None and line.get("raw_prefix") == raw[:200]):
            lines.append(line)
    return lines
