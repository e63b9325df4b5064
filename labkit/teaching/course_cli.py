"""``labkit course``: build the student release and the autograder, and grade a student's notebook
(see :mod:`labkit.teaching.course`)."""

from __future__ import annotations

import click

from labkit.errors import LabError


@click.group(help="The course's graded exercises: the student release, the autograder, and grading.")
def course() -> None:
    pass


@course.command(name="release", help="Build the student release (every notebook with its solutions replaced by stubs "
                                     "and its hidden tests removed) in OUT/student and the autograder (the hidden "
                                     "tests) in OUT/autograder.")
@click.option("--out", "out_dir", default="build/course", show_default=True)
def course_release(out_dir: str) -> None:
    from pathlib import Path

    from labkit.teaching.course import build_release, leaks
    from labkit.teaching.runner import NOTEBOOKS_DIR

    out = Path(out_dir).resolve()
    hidden = build_release(NOTEBOOKS_DIR, out)
    found = leaks(out / "student")
    if found:
        raise LabError("the student release gives away: " + "; ".join(found))
    for name, count in hidden.items():
        click.echo(f"{name}: {count} hidden tests")
    click.echo(f"student release: {out / 'student'}\nautograder: {out / 'autograder'}")


@course.command(name="grade", help="Run a student's NOTEBOOK on the running lab with the hidden tests and score it: "
                                   "one point per test cell (public or hidden) that passes.")
@click.argument("notebook", type=click.Path(exists=True, dir_okay=False))
@click.option("--autograder", "autograder", default="build/course/autograder", show_default=True,
              type=click.Path(exists=True, file_okay=False))
@click.option("--out", "out_dir", default="build/course/graded", show_default=True)
@click.option("-p", "--parameter", "params", multiple=True, type=(str, str), help="A papermill parameter (YAML value).")
def course_grade(notebook: str, autograder: str, out_dir: str, params: tuple[tuple[str, str], ...]) -> None:
    from pathlib import Path

    import yaml

    from labkit.teaching.course import grade

    result = grade(Path(notebook).resolve(), Path(autograder).resolve(), Path(out_dir).resolve(),
                   {k: yaml.safe_load(v) for k, v in params})
    for exercise, (passed, total) in result.exercises.items():
        click.echo(f"exercise {exercise}: {passed} of {total} tests")
    for failure in result.failures:
        click.echo(f"  {failure}")
    click.echo(f"{result.notebook}: {result.points} of {result.out_of}")

