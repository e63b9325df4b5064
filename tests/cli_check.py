"""Every CLI error path in the suite is checked: one line on stderr, no traceback.

``conftest.py`` wraps ``CliRunner.invoke`` and ``subprocess.run`` (for ``python -m labkit.cli``) so
that every failing ``labkit`` call any test makes is held to :func:`assert_one_line_error`.
"""

from __future__ import annotations

import subprocess
from typing import Any

from click.testing import CliRunner, Result

PREFIXES = ("error: ", "interrupted")


def assert_one_line_error(stderr: str, exit_code: int) -> None:
    """A failed ``labkit`` call wrote exactly one line to stderr, an error line, and no traceback."""
    lines = [line for line in (stderr or "").splitlines() if line.strip()]
    assert "Traceback" not in (stderr or ""), f"labkit exited {exit_code} with a traceback:\n{stderr}"
    errors = [line for line in lines if line.startswith(PREFIXES)]
    assert len(errors) == 1 and lines[-1] == errors[0], (
        f"labkit exited {exit_code}; stderr must end in one error line, got:\n{stderr}")


def checked_invoke(original):
    def invoke(self: CliRunner, *args: Any, **kwargs: Any) -> Result:
        result = original(self, *args, **kwargs)
        debugging = "LABKIT_DEBUG" in (kwargs.get("env") or {})  # asks for the traceback on purpose
        if result.exit_code not in (0, None) and not debugging:
            assert isinstance(result.exception, SystemExit), f"labkit raised {result.exception!r}"
            assert_one_line_error(result.stderr, result.exit_code)
        return result

    return invoke


def checked_run(original):
    def run(command, *args: Any, **kwargs: Any) -> subprocess.CompletedProcess:
        done = original(command, *args, **kwargs)
        is_cli = isinstance(command, (list, tuple)) and "labkit.cli" in [str(c) for c in command]
        if is_cli and done.returncode != 0 and isinstance(done.stderr, str):
            assert_one_line_error(done.stderr, done.returncode)
        return done

    return run
