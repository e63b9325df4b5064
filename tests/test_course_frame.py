"""Every notebook is a lesson a student can plan for: it opens with its objectives, prerequisites and
an estimated time, and ends with a short checkpoint (see docs/teaching.md)."""

from __future__ import annotations

import re
from pathlib import Path

import nbformat
import pytest

NOTEBOOKS = sorted((Path(__file__).resolve().parent.parent / "notebooks").glob("[0-9][0-9]_*.ipynb"))
VERBS = r"\*\*(start|explain|find|trace|measure|deploy|follow|drive|decide|inject|render|defend|compare|compute|implement)\*\*"


def test_the_notebooks_are_numbered_in_order() -> None:
    assert len(NOTEBOOKS) >= 10 and [p.name[:2] for p in NOTEBOOKS] == [f"{i:02d}" for i in range(len(NOTEBOOKS))]


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_notebook_opens_with_objectives_prerequisites_and_time(path: Path) -> None:
    first = nbformat.read(path, as_version=4).cells[0]
    assert first.cell_type == "markdown" and first.source.startswith(f"# {path.name[:2]} · ")
    objectives = first.source.split("**Objectives.**", 1)
    assert len(objectives) == 2, f"{path.name}: no **Objectives.** in the first cell"
    bullets = re.findall(r"^- (.*)$", objectives[1].split("**Before this:**")[0], re.MULTILINE)
    assert 3 <= len(bullets) <= 4, bullets
    assert all(re.match(VERBS, b) for b in bullets), f"{path.name}: each objective starts with a checkable verb"
    assert re.search(r"\*\*Before this:\*\* \S", first.source), f"{path.name}: no prerequisites"
    assert re.search(r"\*\*Time:\*\* about \d+\s+minutes", first.source), f"{path.name}: no time estimate"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_notebook_ends_with_a_checkpoint(path: Path) -> None:
    cells = nbformat.read(path, as_version=4).cells
    story = [c for c in cells if "bookkeeping" not in c.metadata.get("tags", [])]
    last = story[-1]
    assert last.cell_type == "markdown" and last.source.startswith("## Checkpoint"), f"{path.name}: {last.source[:60]!r}"
    questions = re.findall(r"^\d+\. .*\?$", last.source, re.MULTILINE)
    assert 2 <= len(questions) <= 3, questions
