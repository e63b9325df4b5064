"""Run the lab's notebooks headless, in order, the way CI and `make lab` do."""

from __future__ import annotations

from pathlib import Path

import papermill as pm

from labkit.core.progress import Reporter
from labkit.errors import LabConfigError
from labkit.stack.lab import Lab

NOTEBOOKS_DIR = Path(__file__).resolve().parents[2] / "notebooks"


def notebook_paths() -> list[Path]:
    """The numbered notebooks, in teaching order."""
    return sorted(p for p in NOTEBOOKS_DIR.glob("[0-9][0-9]_*.ipynb"))


def run_all(lab: Lab, out_dir: Path, reporter: Reporter, only: list[str] | None = None,
            parameters: dict | None = None) -> list[Path]:
    """Execute each notebook with papermill into ``out_dir``; stop at the first that fails.

    Raises:
        LabConfigError: ``only`` names a notebook that does not exist.
    """
    paths = notebook_paths()
    if only:
        unknown = sorted(set(only) - {p.stem for p in paths})
        if unknown:
            raise LabConfigError(f"No such notebook: {', '.join(unknown)}. Valid: {', '.join(p.stem for p in paths)}.")
        paths = [p for p in paths if p.stem in only]
    out_dir.mkdir(parents=True, exist_ok=True)
    config = lab.ctx.config
    params = {"data_dir": str(config.data_dir), "port_offset": config.port_offset,
              "results_dir": str(out_dir), **(parameters or {})}
    executed = []
    for path in paths:
        target = out_dir / path.name
        with reporter.step(f"notebook {path.stem}"):
            pm.execute_notebook(path, target, parameters=_accepted(path, params), cwd=NOTEBOOKS_DIR,
                                kernel_name="python3", progress_bar=False,
                                log_output=False, request_save_on_cell_execute=False)
        executed.append(target)
    return executed


def _accepted(path: Path, params: dict) -> dict:
    """Only the parameters a notebook declares (papermill would add the others as new variables)."""
    declared = {p for p in pm.inspect_notebook(str(path))}
    return {k: v for k, v in params.items() if k in declared}

