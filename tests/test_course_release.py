"""The course's release, fast: built from the real instructor notebooks, it gives away no solution and
no hidden test; the autograder holds the hidden tests; grading puts them back after their exercise
and scores each test cell; the SLA-verdict grader's hints."""

from __future__ import annotations

import json
from pathlib import Path

import nbformat
import numpy as np
import pytest
from click.testing import CliRunner

from labkit.cli import main
from labkit.teaching import course
from labkit.teaching.graders import (
    check_sla_verdict,
    made_up_verdict_cases,
    reference_verdict,
)

NOTEBOOKS = Path(__file__).resolve().parent.parent / "notebooks"
# notebook: exercises (a notebook added later with its own exercises joins the generic checks; add it here)
GRADED = {"02_faas": 2, "04_load_and_sla": 1, "06_retry_patterns": 2, "07_sla_report": 1, "09_error_budgets": 2,
          "10_availability": 1}


@pytest.fixture(scope="module")
def release(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("course")
    result = CliRunner().invoke(main, ["course", "release", "--out", str(out)])
    assert result.exit_code == 0, result.output
    for name in GRADED:
        assert f"{name}: " in result.output
    return out


def test_the_release_has_every_notebook_and_gives_nothing_away(release: Path) -> None:
    student = release / "student"
    assert sorted(p.name for p in student.iterdir()) == sorted(p.name for p in NOTEBOOKS.glob("[0-9][0-9]_*.ipynb"))
    assert course.leaks(student) == []
    for path in student.iterdir():
        for cell in nbformat.read(path, as_version=4).cells:
            assert not {"solution", "hidden"} & set(cell.metadata.get("tags", [])), (path.name, cell.source[:80])
            assert "SOLUTION" not in cell.source and "Hidden test" not in cell.source and "instructor only" not in cell.source
            assert cell.get("outputs", []) == []  # no instructor run's output (an answer) comes along


def test_each_solution_becomes_a_stub_and_each_hidden_test_goes_to_the_autograder(release: Path) -> None:
    hidden = json.loads((release / "autograder" / course.HIDDEN_FILE).read_text())
    assert set(GRADED) <= set(hidden) == {p.stem for p in course.graded_notebooks(NOTEBOOKS)}
    for name in hidden:
        source = nbformat.read(NOTEBOOKS / f"{name}.ipynb", as_version=4)
        exercises = GRADED.get(name, max(course.exercises_of(source)))
        student = nbformat.read(release / "student" / f"{name}.ipynb", as_version=4)
        stubs = [c.source for c in student.cells if "exercise" in c.metadata.get("tags", [])]
        assert len(stubs) == exercises
        assert all(f'raise NotImplementedError("Exercise {i}: write your code here")' in s
                   for i, s in enumerate(stubs, 1))
        secret = [c.source for c in source.cells if "hidden" in c.metadata.get("tags", [])]
        assert secret and [t["source"] for t in hidden[name]] == secret
        assert {t["exercise"] for t in hidden[name]} == set(range(1, exercises + 1))
        assert len(student.cells) == len(source.cells) - len(secret)
    assert course.leaks(release / "autograder")  # the autograder is the one place the hidden tests live


def test_a_stub_keeps_the_indentation_of_a_function_body() -> None:
    source = "def f(x):\n    ### BEGIN SOLUTION\n    return x\n    ### END SOLUTION\n"
    assert course.stub(source, 3) == 'def f(x):\n    raise NotImplementedError("Exercise 3: write your code here")'
    with pytest.raises(ValueError, match="without"):
        course.stub("### BEGIN SOLUTION\nx = 1\n", 1)


def test_grading_puts_the_hidden_tests_after_their_exercise_and_scores_each_test_cell(release: Path) -> None:
    student = nbformat.read(release / "student" / "09_error_budgets.ipynb", as_version=4)
    hidden = json.loads((release / "autograder" / course.HIDDEN_FILE).read_text())["09_error_budgets"]
    graded = course.with_hidden_tests(student, hidden)
    tags = [c.metadata.get("tags", []) for c in graded.cells]
    first = next(i for i, t in enumerate(tags) if "exercise" in t)
    assert all("raises-exception" not in t for t in tags[:first])
    assert all("raises-exception" in t for t in tags[first:])
    order = [("e" if "exercise" in t else "c" if "check" in t else "h") for t in tags
             if {"exercise", "check", "hidden"} & set(t)]
    assert "".join(order) == "echech"

    # score what an executed notebook shows: an error output fails its cell, a cell that never ran too
    for cell, t in zip(graded.cells, tags):
        cell.execution_count = 1
        if "hidden" in t and "exercise 2" in cell.source.lower():
            cell.outputs = [nbformat.v4.new_output("error", ename="AssertionError", evalue="20 min", traceback=[])]
    result = course.score(graded, "09_error_budgets")
    assert result.exercises == {1: [2, 2], 2: [1, 2]} and (result.points, result.out_of) == (3, 4)
    assert result.failures == ["exercise 2: AssertionError: 20 min"]


def test_the_reference_verdict_scores_full_marks_and_is_labkits() -> None:
    import pandas as pd

    from labkit.analysis import sla

    latencies = [0.8, 1.1, 2.5, float("nan")]
    assert check_sla_verdict(reference_verdict, latencies).passed
    for case in made_up_verdict_cases():
        x = np.asarray(case.latencies_s, dtype=float)
        table = pd.DataFrame({"status": ["resized"] * len(x), "duration_ms": x * 1000})
        assert sla.compliance(table, threshold_s=case.threshold_s)["status"] == case.expected, case.describe()


def test_each_usual_verdict_mistake_gets_its_own_hint() -> None:
    share_only = check_sla_verdict(lambda x, threshold_s, target, confidence:
                                   "PASS" if np.mean(x <= threshold_s) >= target else "FAIL")
    assert not share_only.passed and "20 images cannot show 99%" in share_only.feedback
    drops_nan = check_sla_verdict(lambda x, **k: reference_verdict(x[~np.isnan(x)], **k))
    assert "never finished (NaN) is a violation" in drops_nan.feedback
    strict = check_sla_verdict(lambda x, threshold_s, **k: reference_verdict(x, threshold_s - 1e-9, **k))
    assert "Exactly at the threshold" in strict.feedback
    crash = check_sla_verdict(lambda x, **k: 1 / 0)
    assert crash.score == 0 and "ZeroDivisionError" in crash.feedback


def test_the_activation_and_outage_graders_hint_at_each_usual_mistake() -> None:
    from labkit.teaching.graders import (
        check_outages,
        check_platform_times,
        reference_outages,
        reference_times,
    )

    assert check_platform_times(reference_times).passed
    no_init = check_platform_times(lambda r: {**reference_times(r), "run_ms": r["duration"]})
    assert not no_init.passed and "already includes `initTime`" in no_init.feedback
    assert check_outages(reference_outages).passed
    per_probe = check_outages(lambda ok, s: (ok.count(False), ok.count(False) * s))
    assert "one outage" in per_probe.feedback and per_probe.score == 2


def test_the_reconciliation_grader_finds_lost_and_stale_by_version() -> None:
    import pandas as pd

    from labkit.teaching.reconcile_grader import (
        check_to_republish,
        measured_bucket_cases,
        reference_to_republish,
    )

    assert check_to_republish(reference_to_republish).passed
    by_key = check_to_republish(lambda s, o, d, now_s, grace_s: {k for k in s if k not in o and now_s - s[k]["uploaded_s"] >= grace_s
                                                                 and (k, s[k]["version"]) not in d})
    assert not by_key.passed and "compare versions, not only keys" in by_key.feedback
    run = pd.DataFrame({"repetition": [0, 0, 0], "key": ["a", "b", "c"], "status": ["resized", "resized", "dead_lettered"],
                        "reconciled": [False, True, False], "upload_status": [200, 200, 200]})
    [case] = measured_bucket_cases(run)
    assert case.expected == {"b"}  # the image reconciliation republished is the one to find
