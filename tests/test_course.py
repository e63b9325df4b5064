"""The grading chain on the real stack, for every graded notebook, each at its smallest parameters
on the session's lab: the instructor's solution scores full marks under the autograder, public and
hidden tests alike; the blank student release runs without an error up to its first exercise and
scores zero on every exercise. (That the release holds no solution and no hidden test is checked
fast, in test_course_release.py, and again on the release built here.)"""

from __future__ import annotations

import time
from pathlib import Path

import nbformat
import pytest

from labkit.teaching import course
from tests.test_notebooks import NOTEBOOKS

# Each graded notebook's smallest parameters (those of its own notebook test, or smaller); a graded
# notebook not named here runs with its defaults.
SMALL = {
    "02_faas": {"seed": 5, "warm_calls": 2, "policy_images": 4},
    "04_load_and_sla": {"n_images": 8, "rate": 4.0},
    "06_retry_patterns": {"repetitions": 1, "drop_repetitions": 1, "n_images": 4, "backoff_images": 3},
    "07_sla_report": {"experiment": "smoke", "n_images": 4},
    "09_error_budgets": {"repetitions": 1, "burst": 4},
    "10_availability": {"topologies": ["single"]},  # its kills on the session's own broker; no second lab
}
# A blank answer fails as its stub does, or a check then finds it wrong or missing.
BLANK_ERRORS = ("NotImplementedError", "AssertionError", "NameError")


GRADED = [p.stem for p in course.graded_notebooks(NOTEBOOKS)]


def test_the_small_parameters_name_graded_notebooks() -> None:
    assert set(SMALL) <= set(GRADED) and len(GRADED) >= 5


@pytest.fixture(scope="module")
def release(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("course")
    course.build_release(NOTEBOOKS, out)
    assert course.leaks(out / "student") == []
    return out


def params(lab, name: str, tmp_path: Path) -> dict:
    extra = {"reports_dir": str(tmp_path / "reports")} if name == "07_sla_report" else {}
    return {"data_dir": str(lab.ctx.config.data_dir), "port_offset": lab.ctx.config.port_offset, **SMALL.get(name, {}),
            **extra}


def counted_tests(name: str) -> dict[int, int]:
    """From the instructor notebook: each exercise's public and hidden test cells."""
    notebook = nbformat.read(NOTEBOOKS / f"{name}.ipynb", as_version=4)
    counts: dict[int, int] = {}
    for cell, exercise in zip(notebook.cells, course.exercises_of(notebook)):
        if exercise and {"check", "hidden"} & set(cell.metadata.get("tags", [])):
            counts[exercise] = counts.get(exercise, 0) + 1
    return counts


@pytest.mark.parametrize("name", GRADED)
def test_the_solution_scores_full_marks(lab, release, tmp_path, name):
    expected = counted_tests(name)
    # what a student who wrote the reference hands in: the instructor notebook without its hidden tests
    solved = nbformat.read(NOTEBOOKS / f"{name}.ipynb", as_version=4)
    solved.cells = [c for c in solved.cells if "hidden" not in c.metadata.get("tags", [])]
    handed_in = tmp_path / f"{name}.ipynb"
    nbformat.write(solved, handed_in)
    started = time.monotonic()
    result = course.grade(handed_in, release / "autograder", tmp_path / "solved", params(lab, name, tmp_path),
                          cwd=NOTEBOOKS)
    print(f"\ngraded {name} (solution) in {time.monotonic() - started:.1f} s: {result.as_dict()}")
    assert result.failures == []
    assert result.exercises == {e: [n, n] for e, n in expected.items()}  # every public and hidden test passed


@pytest.mark.parametrize("name", GRADED)
def test_the_blank_release_runs_to_its_first_exercise_and_scores_zero(lab, release, tmp_path, name):
    expected = counted_tests(name)
    started = time.monotonic()
    # grade() raises ServiceError when a cell before the first exercise fails
    blank = course.grade(release / "student" / f"{name}.ipynb", release / "autograder", tmp_path / "blank",
                         params(lab, name, tmp_path), cwd=NOTEBOOKS)
    print(f"\ngraded {name} (blank) in {time.monotonic() - started:.1f} s: {blank.as_dict()}")
    assert blank.points == 0 and blank.exercises == {e: [0, n] for e, n in expected.items()}
    assert blank.failures and all(any(e in f for e in BLANK_ERRORS) for f in blank.failures), blank.failures
    executed = nbformat.read(tmp_path / "blank" / f"{name}.graded.ipynb", as_version=4)
    numbers = course.exercises_of(executed)
    assert all(not course.errors_of(c) for c, n in zip(executed.cells, numbers) if not n)
    first_check = next(c for c in executed.cells if "check" in c.metadata.get("tags", []))
    assert "Exercise 1: write your code here" in str(first_check.outputs)  # the stub's message reaches the feedback
