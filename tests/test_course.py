"""The grading chain on the real stack, on notebook 04 (the cheapest graded notebook, with a small
load): the instructor's solution scores full marks under the autograder, public and hidden tests
alike; the blank student release runs without an error up to its first exercise and scores zero.
(That the release holds no solution and no hidden test is checked fast, in test_course_release.py.)"""

from __future__ import annotations

import time
from pathlib import Path

import nbformat
import pytest

from labkit.teaching import course
from tests.test_notebooks import NOTEBOOKS

NAME = "04_load_and_sla"
SMALL = {"n_images": 8, "rate": 4.0}


@pytest.fixture(scope="module")
def release(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("course")
    course.build_release(NOTEBOOKS, out)
    assert course.leaks(out / "student") == []
    return out


def params(lab) -> dict:
    return {"data_dir": str(lab.ctx.config.data_dir), "port_offset": lab.ctx.config.port_offset, **SMALL}


def test_the_solution_scores_full_marks_under_the_autograder(lab, release, tmp_path):
    # what a student who wrote the reference hands in: the instructor notebook without its hidden tests
    solved = nbformat.read(NOTEBOOKS / f"{NAME}.ipynb", as_version=4)
    solved.cells = [c for c in solved.cells if "hidden" not in c.metadata.get("tags", [])]
    handed_in = tmp_path / f"{NAME}.ipynb"
    nbformat.write(solved, handed_in)
    started = time.monotonic()
    result = course.grade(handed_in, release / "autograder", tmp_path / "graded", params(lab), cwd=NOTEBOOKS)
    print(f"\ngraded {NAME} (solution) in {time.monotonic() - started:.1f} s: {result.as_dict()}")
    assert result.failures == []
    assert result.points == result.out_of == 2 and result.exercises == {1: [2, 2]}  # one public, one hidden


def test_the_blank_release_runs_to_its_first_exercise_and_scores_zero(lab, release, tmp_path):
    started = time.monotonic()
    # grade() raises ServiceError when a cell before the first exercise fails
    result = course.grade(release / "student" / f"{NAME}.ipynb", release / "autograder", tmp_path / "graded",
                          params(lab))
    print(f"\ngraded {NAME} (blank) in {time.monotonic() - started:.1f} s: {result.as_dict()}")
    assert result.points == 0 and result.out_of == 2
    assert all("NotImplementedError" in f or "AssertionError" in f for f in result.failures), result.failures
    executed = nbformat.read(tmp_path / "graded" / f"{NAME}.graded.ipynb", as_version=4)
    numbers = course.exercises_of(executed)
    assert all(not course.errors_of(c) for c, n in zip(executed.cells, numbers) if not n)
    check = next(c for c in executed.cells if "check" in c.metadata.get("tags", []))
    assert "Exercise 1: write your code here" in str(check.outputs)  # the stub's message reaches the feedback
