"""Grader of notebook 06's reconciliation exercise: which uploaded images must be published again?

The student writes ``to_republish(sources, outputs, dead_letters, now_s, grace_s)``; the check
cell hands it to :func:`check_to_republish` (the hook: labkit calls the student's function, see
:mod:`labkit.teaching.graders`). The rule is :func:`labkit.pipeline.reconcile.reconcile`'s, by
version: a source object is republished when no output was made from its *current* version (none
at all: lost; one from an older version: stale), it was not dead-lettered at that version, and it
is older than the grace period (younger ones may still be on their way).

Example:
    >>> sources = {"a.jpg": {"version": "v2", "uploaded_s": 0.0}}
    >>> sorted(reference_to_republish(sources, {"a.jpg": "v1"}, set(), now_s=100.0))
    ['a.jpg']
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import pandas as pd

from labkit.teaching.graders import VerdictGrade


def reference_to_republish(sources: dict[str, dict], outputs: dict[str, str], dead_letters: set[tuple[str, str]],
                           now_s: float, grace_s: float = 60.0) -> set[str]:
    """The keys to publish again (see the module's docstring)."""
    return {key for key, src in sources.items()
            if outputs.get(key) != src["version"] and (key, src["version"]) not in dead_letters
            and now_s - src["uploaded_s"] >= grace_s}


@dataclass(frozen=True)
class BucketCase:
    """A bucket, the outputs and dead letters, the clock, labkit's answer and a hint."""

    sources: dict
    outputs: dict
    dead_letters: frozenset
    now_s: float
    grace_s: float
    hint: str
    source: str = "made up"

    @property
    def expected(self) -> set[str]:
        return reference_to_republish(self.sources, self.outputs, set(self.dead_letters), self.now_s, self.grace_s)

    def describe(self) -> str:
        return (f"{len(self.sources)} source objects, {len(self.outputs)} outputs, {len(self.dead_letters)} dead "
                f"letters, grace {self.grace_s:g} s ({self.source})")


def _src(version: str, age_s: float) -> dict:
    return {"version": version, "uploaded_s": 1000.0 - age_s}


def made_up_bucket_cases() -> list[BucketCase]:
    """The corners of finding what was silently lost."""
    def case(sources, outputs, dead, hint, grace_s=60.0):
        return BucketCase(sources, outputs, frozenset(dead), 1000.0, grace_s, hint)

    return [
        case({"a": _src("v1", 120), "b": _src("v1", 120)}, {"a": "v1"}, [],
             "An old object with no output and no dead letter is lost: republish it."),
        case({"a": _src("v2", 120)}, {"a": "v1"}, [],
             "An output made from an older version is stale: compare versions, not only keys."),
        case({"a": _src("v1", 10)}, {}, [],
             "An object younger than the grace period may still be on its way: leave it."),
        case({"a": _src("v1", 120)}, {}, [("a", "v1")],
             "A dead-lettered image is accounted for (the pipeline said why): do not republish it."),
        case({"a": _src("v2", 120)}, {}, [("a", "v1")],
             "A dead letter of an older version says nothing about the current one: republish it."),
        case({"a": _src("v1", 30)}, {}, [], "Exactly at the grace period counts as old enough.", grace_s=30.0),
        case({}, {"x": "v1"}, [], "An output whose source is gone needs nothing: republish only sources."),
    ]


def measured_bucket_cases(results: pd.DataFrame) -> list[BucketCase]:
    """Each repetition of a run, as the bucket looked before reconciliation: every uploaded key at one
    version, an output for each image that went through on its own, a dead letter for each one the
    pipeline gave up on; the images reconciliation republished are the ones to find."""
    cases = []
    for rep, part in results.groupby("repetition") if "repetition" in results else [(0, results)]:
        ok = part["upload_status"].fillna(200).astype(float) < 300 if "upload_status" in part else True
        part = part[ok]
        through = part[(part["status"] == "resized") & ~part["reconciled"].astype(bool)]
        dead = part[part["status"] == "dead_lettered"]
        cases.append(BucketCase(
            {k: {"version": "v1", "uploaded_s": 0.0} for k in part["key"]}, {k: "v1" for k in through["key"]},
            frozenset((k, "v1") for k in dead["key"]), 3600.0, 60.0,
            "This is one of this notebook's runs: the store dropped these images' events.", f"repetition {rep}"))
    return cases


def check_to_republish(fn: Callable[..., set[str]], results: pd.DataFrame | None = None) -> VerdictGrade:
    """Grade the student's ``to_republish`` on made-up buckets and on the runs of ``results``."""
    cases = made_up_bucket_cases() + (measured_bucket_cases(results) if results is not None and len(results) else [])
    wrong = []
    for case in cases:
        try:
            answer = fn(dict(case.sources), dict(case.outputs), set(case.dead_letters), case.now_s, case.grace_s)
            right = set(answer) == case.expected
        except Exception as e:  # noqa: BLE001 - a crash is a wrong answer, with its message as feedback
            answer, right = f"{type(e).__name__}: {e}", False
        if not right:
            wrong.append((case, sorted(answer) if isinstance(answer, (set, list, tuple)) else answer))
    return VerdictGrade(len(cases) - len(wrong), len(cases), wrong,
                        "You find what reconciliation finds: lost and stale, not dead-lettered, not too young.")
