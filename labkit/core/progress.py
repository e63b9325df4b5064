"""Progress output for long work: live on a terminal, plain lines everywhere else."""

from __future__ import annotations

import sys
import time
from contextlib import contextmanager
from typing import Iterator

from rich.console import Console
from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn


class Reporter:
    """Shows steps that may run in parallel. Thread-safe, like rich itself."""

    def __init__(self, console: Console | None = None, quiet: bool = False):
        self.console = console or Console(stderr=True, quiet=quiet)
        self.quiet = quiet
        self._live: Progress | None = None

    @contextmanager
    def session(self) -> Iterator["Reporter"]:
        """Group steps under one live display (a no-op when not on a terminal)."""
        if self.quiet or not self.console.is_terminal:
            yield self
            return
        with Progress(SpinnerColumn(), TextColumn("{task.description}"), TimeElapsedColumn(),
                      console=self.console, transient=False) as live:
            self._live = live
            try:
                yield self
            finally:
                self._live = None

    @contextmanager
    def step(self, description: str) -> Iterator[None]:
        """Report one step: its start, and its end with the time it took."""
        started = time.monotonic()
        task = self._live.add_task(description, total=1) if self._live else None
        if task is None:
            self._plain(f"{description} ...")
        try:
            yield
        except BaseException:
            self._finish(task, description, "failed", started)
            raise
        self._finish(task, description, "done", started)

    def note(self, message: str) -> None:
        if self._live is not None:
            self._live.console.print(message, markup=False, highlight=False)
        else:
            self._plain(message)

    def _finish(self, task, description: str, outcome: str, started: float) -> None:
        took = f"{outcome} in {time.monotonic() - started:.1f} s"
        if task is not None and self._live is not None:
            self._live.update(task, description=f"{description}: {took}", completed=1)
        else:
            self._plain(f"{description}: {took}")

    def _plain(self, line: str) -> None:
        if not self.quiet:
            print(line, file=sys.stderr, flush=True)


QUIET = Reporter(quiet=True)
