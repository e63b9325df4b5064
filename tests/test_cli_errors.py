"""The CLI's error paths, in one place: each ends in one line that names the fix, and a non-zero exit.

(conftest.py holds every other CLI call in the suite to the same rule.)
"""

from __future__ import annotations

import pytest
from click.testing import CliRunner

from labkit.cli import LabGroup, main, one_line
from labkit.errors import LabConfigError, ServiceError
from tests.cli_check import assert_one_line_error


def run(args: list[str], tmp_path, **env: str):
    base = {"LABKIT_DATA_DIR": str(tmp_path / "lab"), "LABKIT_PORT_OFFSET": "0"}
    return CliRunner().invoke(main, args, env={**base, **env})


@pytest.mark.parametrize(("args", "env", "code", "says"), [
    (["stop"], {}, 2, "Missing argument 'SERVICE'. Fix: see `labkit stop --help`"),
    (["nosuch"], {}, 2, "No such command 'nosuch'. Fix: see `labkit --help`"),
    (["bench", "--images-per-rate", "many"], {}, 2, "'many' is not a valid integer"),
    (["bench", "--rates", "x"], {}, 2, "--rates"),
    (["load", "--rate", "-1"], {}, 2, "rate"),
    (["reliability", "--scale", "huge"], {}, 2, "'huge' is not one of 'ci', 'full'"),
    (["run", "no-such-experiment"], {}, 2, "no-such-experiment"),
    (["report", "/nonexistent/run"], {}, 2, "/nonexistent/run"),
    (["status"], {"LABKIT_BACKEND": "kubernetes"}, 2, "native, compose, remote"),
    (["status"], {"LABKIT_PORT_OFFSET": "60000"}, 2, "LABKIT_PORT_OFFSET"),
    (["logs", "kafak"], {}, 2, "Unknown service 'kafak'"),
])
def test_each_error_is_one_line_naming_the_fix(tmp_path, args, env, code, says) -> None:
    result = run(args, tmp_path, **env)
    assert result.exit_code == code, result.output
    assert says in result.stderr
    assert_one_line_error(result.stderr, result.exit_code)


@pytest.mark.parametrize(("error", "code"), [
    (LabConfigError("bad\nthing. Fix: do this."), 2),
    (ServiceError("kafka died.\nHint: `labkit logs kafka`."), 1),
    (RuntimeError("a bug"), 1),
    (KeyboardInterrupt(), 130),
])
def test_whatever_escapes_a_command_ends_as_one_line(error, code) -> None:
    group = click_group_raising(error)
    result = CliRunner().invoke(group, ["boom"])
    assert result.exit_code == code
    assert_one_line_error(result.stderr, code)
    if isinstance(error, RuntimeError):
        assert "LABKIT_DEBUG=1" in result.stderr


def test_labkit_debug_shows_the_traceback_of_a_bug() -> None:
    result = CliRunner().invoke(click_group_raising(RuntimeError("a bug")), ["boom"], env={"LABKIT_DEBUG": "1"})
    assert isinstance(result.exception, RuntimeError)


def test_one_line_joins_lines() -> None:
    assert one_line("a\n  b\n\nc") == "a b c"


def click_group_raising(error: BaseException):
    import click

    @click.group(cls=LabGroup)
    def group() -> None:
        pass

    @group.command()
    def boom() -> None:
        raise error

    return group
