"""Progress output for long work: live on a terminal, plain lines everywhere else.

:class:`Reporter` shows named steps; :func:`bar` counts the items of one job (images sent,
resizes done) as a rich progress bar, in a terminal and in a Jupyter notebook alike.
"""

from __future__ import annotations

import sys
import time
from contextlib import contextmanager
from typing import Iterator, Self

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    ProgressColumn,
    SpinnerColumn,
    Task,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.text import Text


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


class RateColumn(ProgressColumn):
    """Items per second since the bar started, in the bar's own unit (``12.3 img/s``).

    The mean since the start, not rich's recent-samples speed: items that finish in
    bursts (a pool's chunks) would make that one jump.
    """

    def __init__(self, unit: str):
        super().__init__()
        self.unit = unit

    def render(self, task: Task) -> Text:
        elapsed = task.finished_time if task.finished else task.elapsed
        if not elapsed:
            return Text("?", style="progress.data.speed")
        return Text(f"{task.completed / elapsed:.1f} {self.unit}/s", style="progress.data.speed")


class Bar:
    """A progress bar for one counted job; a no-op when disabled.

    Thread-safe (workers may call :meth:`update` at once) and usable as a context manager.
    Each bar has a console of its own, so it can run beside a :class:`Reporter`'s live steps.
    """

    def __init__(self, total: int | None, description: str, disable: bool = False, unit: str = "img"):
        self._progress: Progress | None = None
        if disable:
            return
        # redirect_*=False: other threads keep printing to the real stdout/stderr.
        self._progress = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                                  RateColumn(unit), TimeElapsedColumn(), TimeRemainingColumn(),
                                  console=Console(stderr=True), redirect_stdout=False, redirect_stderr=False)
        self._task = self._progress.add_task(description, total=total)
        self._progress.start()

    def update(self, n: int = 1) -> None:
        """Count ``n`` more items done."""
        if self._progress is not None:
            self._progress.advance(self._task, n)

    def close(self) -> None:
        """Show the bar's final state and stop refreshing it; calling it again does nothing."""
        if self._progress is not None:
            self._progress.stop()
            self._progress = None

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def bar(total: int | None, description: str, disable: bool = False, unit: str = "img") -> Bar:
    """A progress bar counting ``total`` items (``None``: unknown), in a terminal or a notebook.

    Example:
        >>> with bar(3, "resize", disable=True) as progress:
        ...     for _ in range(3):
        ...         progress.update(1)
    """
    return Bar(total, description, disable, unit)
