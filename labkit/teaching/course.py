"""The course's graded exercises: build the student release and the autograder from the instructor
notebooks, and grade a student's notebook on the real stack.

The instructor notebooks in ``notebooks/`` are the source. A graded exercise is a run of cells:

- one cell tagged ``exercise`` and ``solution``: the student's function or answer, the reference
  between the lines ``### BEGIN SOLUTION`` and ``### END SOLUTION``;
- the public tests after it, cells tagged ``check``: the student sees and runs them;
- the hidden tests after those, cells tagged ``hidden``: only the autograder runs them.

``build_release`` writes ``DIR/student/`` (each notebook with every solution replaced by a stub and
every hidden test removed) and ``DIR/autograder/`` (the hidden tests, keyed by notebook and exercise).
``grade`` runs a student's notebook with papermill against the lab with the hidden tests put back
after each exercise's public ones: every test cell that runs without an error scores one point.

Example:
    labkit course release --out build/course
    labkit course grade build/course/student/04_load_and_sla.ipynb --autograder build/course/autograder
"""

from __future__ import annotations

import json
import re
import shutil
from dataclasses import dataclass, field
from pathlib import Path

import nbformat

from labkit.errors import ServiceError

BEGIN, END = "### BEGIN SOLUTION", "### END SOLUTION"
SECRET_TAGS = ("solution", "hidden")
HIDDEN_FILE = "hidden_tests.json"


def stub(source: str, exercise: int) -> str:
    """The cell with every solution region replaced by a line that tells the student to write it,
    at the region's indentation (so a function body stays a body)."""
    out, inside = [], False
    for line in source.splitlines():
        if line.strip() == BEGIN:
            inside = True
            indent = line[: len(line) - len(line.lstrip())]
            out.append(f'{indent}raise NotImplementedError("Exercise {exercise}: write your code here")')
        elif line.strip() == END:
            inside = False
        elif not inside:
            out.append(line)
    if inside:
        raise ValueError(f"exercise {exercise}: {BEGIN} without {END}")
    return "\n".join(out)


def tags(cell) -> list[str]:
    return list(cell.get("metadata", {}).get("tags", []))


def exercises_of(notebook: nbformat.NotebookNode) -> list[int]:
    """For each cell, the number (1, 2, ...) of the exercise it belongs to, 0 before the first."""
    numbers, n = [], 0
    for cell in notebook.cells:
        n += "exercise" in tags(cell)
        numbers.append(n)
    return numbers


def release_notebook(notebook: nbformat.NotebookNode) -> tuple[nbformat.NotebookNode, list[dict]]:
    """The student's copy of one instructor notebook, and its hidden tests (exercise, source)."""
    student, hidden = nbformat.from_dict(json.loads(json.dumps(notebook))), []
    cells = []
    for cell, exercise in zip(student.cells, exercises_of(student)):
        if "hidden" in tags(cell):
            hidden.append({"exercise": exercise, "source": cell.source})
            continue
        if "solution" in tags(cell):
            cell.source = stub(cell.source, exercise)
            cell.metadata["tags"] = [t for t in tags(cell) if t != "solution"]
        if cell.cell_type == "code":
            cell.outputs, cell.execution_count = [], None
        cells.append(cell)
    student.cells = cells
    return student, hidden


def graded_notebooks(source_dir: Path) -> list[Path]:
    """The instructor notebooks that hold at least one graded exercise."""
    return [p for p in sorted(source_dir.glob("[0-9][0-9]_*.ipynb"))
            if any("exercise" in tags(c) for c in nbformat.read(p, as_version=4).cells)]


def build_release(source_dir: Path, out: Path) -> dict[str, int]:
    """Write the student release (every notebook, blank) and the autograder (the hidden tests).

    Returns:
        Each graded notebook's name and its number of hidden tests.
    """
    student_dir, grader_dir = out / "student", out / "autograder"
    for d in (student_dir, grader_dir):
        shutil.rmtree(d, ignore_errors=True)
        d.mkdir(parents=True)
    all_hidden: dict[str, list[dict]] = {}
    for path in sorted(source_dir.glob("[0-9][0-9]_*.ipynb")):
        student, hidden = release_notebook(nbformat.read(path, as_version=4))
        nbformat.write(student, student_dir / path.name)
        if any("exercise" in tags(c) for c in student.cells):
            all_hidden[path.stem] = hidden
    (grader_dir / HIDDEN_FILE).write_text(json.dumps(all_hidden, indent=1, ensure_ascii=False) + "\n")
    (grader_dir / "README.md").write_text(
        "# Autograder\n\nThe hidden tests of each graded notebook. Grade a student's notebook on a running lab with\n\n"
        "    labkit course grade STUDENT.ipynb --autograder THIS_DIR\n\nKeep this directory from the students.\n")
    return {name: len(tests) for name, tests in all_hidden.items()}


def leaks(release_dir: Path) -> list[str]:
    """Where the student release gives away a solution or a hidden test: each file and cell named."""
    found = []
    for path in sorted(release_dir.rglob("*")):
        if not path.is_file():
            continue
        text = path.read_text(errors="replace")
        if BEGIN in text or END in text or "BEGIN HIDDEN" in text:
            found.append(f"{path.name}: a solution marker")
        if path.suffix == ".ipynb":
            for i, cell in enumerate(nbformat.read(path, as_version=4).cells):
                if set(tags(cell)) & set(SECRET_TAGS):
                    found.append(f"{path.name} cell {i}: tagged {tags(cell)}")
        if path.name == HIDDEN_FILE:
            found.append(f"{path}: the hidden tests")
    return found


@dataclass
class Score:
    """One notebook's grade: per exercise, the tests passed and the tests run, and each failure's
    last line (the feedback the student would read)."""

    notebook: str
    exercises: dict[int, list[int]] = field(default_factory=dict)
    failures: list[str] = field(default_factory=list)

    @property
    def points(self) -> int:
        return sum(passed for passed, _ in self.exercises.values())

    @property
    def out_of(self) -> int:
        return sum(total for _, total in self.exercises.values())

    def as_dict(self) -> dict:
        return {"notebook": self.notebook, "points": self.points, "out_of": self.out_of,
                "exercises": {str(k): {"passed": p, "tests": t} for k, (p, t) in self.exercises.items()},
                "failures": self.failures}


def with_hidden_tests(student: nbformat.NotebookNode, hidden: list[dict]) -> nbformat.NotebookNode:
    """The student's notebook with each hidden test after its exercise's last public test, and every
    cell from the first exercise on allowed to fail (so one wrong answer does not hide the rest)."""
    graded = nbformat.from_dict(json.loads(json.dumps(student)))
    numbers = exercises_of(graded)
    last_check = {e: i for i, (c, e) in enumerate(zip(graded.cells, numbers)) if e and "check" in tags(c)}
    cells = []
    for i, (cell, exercise) in enumerate(zip(graded.cells, numbers)):
        if exercise:
            cell.metadata["tags"] = tags(cell) + ["raises-exception"]
        cells.append(cell)
        if exercise and last_check.get(exercise) == i:
            cells += [nbformat.v4.new_code_cell(t["source"], metadata={"tags": ["hidden", "raises-exception"]})
                      for t in hidden if t["exercise"] == exercise]
    graded.cells = cells
    return graded


def score(executed: nbformat.NotebookNode, name: str) -> Score:
    """One point per test cell (public or hidden) that ran without an error."""
    result = Score(name)
    for cell, exercise in zip(executed.cells, exercises_of(executed)):
        if not exercise or not {"check", "hidden"} & set(tags(cell)):
            continue
        errors = errors_of(cell)
        passed, total = result.exercises.get(exercise, [0, 0])
        result.exercises[exercise] = [passed + (not errors), total + 1]
        for e in errors:
            result.failures.append(f"exercise {exercise}: {e['ename']}: {one_line(e['evalue'])}")
        if cell.get("execution_count") is None and not errors:  # never ran: not a pass
            result.exercises[exercise][0] -= 1
            result.failures.append(f"exercise {exercise}: a test cell did not run")
    return result


def errors_of(cell) -> list:
    return [o for o in cell.get("outputs", []) if o.get("output_type") == "error"]


def one_line(text: str) -> str:
    return re.sub(r"\s+", " ", text).strip()[:300]


def grade(notebook: Path, autograder: Path, out_dir: Path, parameters: dict | None = None,
          cwd: Path | None = None) -> Score:
    """Run a student's notebook with the hidden tests on the running lab and score it.

    Args:
        notebook: The student's notebook (from the release, filled in).
        autograder: The release's ``autograder/`` directory.
        out_dir: Where the executed notebook and ``<name>.grade.json`` go.
        parameters: papermill parameters (``data_dir``, ``port_offset``, small sizes).
        cwd: The directory the notebook runs in [default: the notebook's own].
    """
    import papermill as pm

    name = notebook.stem
    hidden = json.loads((autograder / HIDDEN_FILE).read_text()).get(name, [])
    out_dir.mkdir(parents=True, exist_ok=True)
    graded = out_dir / f"{name}.graded.ipynb"
    nbformat.write(with_hidden_tests(nbformat.read(notebook, as_version=4), hidden), graded)
    try:
        pm.execute_notebook(graded, graded, cwd=str(cwd or notebook.parent), kernel_name="python3",
                            progress_bar=False, parameters={"results_dir": str(out_dir), **(parameters or {})})
    except pm.PapermillExecutionError as e:
        executed = nbformat.read(graded, as_version=4)
        before = [c for c, n in zip(executed.cells, exercises_of(executed)) if not n and errors_of(c)]
        if before:  # the lab or the notebook broke before any exercise: no grade, the cause
            raise ServiceError(f"{name} failed before its first exercise, so it cannot be graded: "
                               f"{e.ename}: {one_line(e.evalue)}. See {graded}.") from e
    result = score(nbformat.read(graded, as_version=4), name)
    (out_dir / f"{name}.grade.json").write_text(json.dumps(result.as_dict(), indent=1) + "\n")
    return result
