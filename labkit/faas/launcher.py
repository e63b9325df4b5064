"""Worker side of the action protocol; runs as its own Python process.

The runner starts ``python -P launcher.py --reply-fd N ...`` and speaks
OpenWhisk's actionloop framing with it: one JSON message per line on stdin,
one JSON reply per line on file descriptor 3. The action's own stdout and
stderr stay free for its logs; after each message both streams get the
``XXX_THE_END_OF_A_WHISK_ACTIVATION_XXX`` guard so the runner can tell
which activation a log line belongs to.

Messages:
    startup: the launcher first sends ``{"ok": true}`` unasked (actionloop's ack).
    init: ``{"value": {"name", "main", "code", "binary", "archive", "env"}}``
        -> ``{"ok": true}`` or ``{"ok": false, "error": "..."}``
    run: ``{"value": {params}, "namespace", "action_name", "activation_id",
        "deadline", "transaction_id", ...}`` -> ``{"ok": true, "result": ...}`` or
        ``{"ok": false, "kind": "not_dict"|"invalid", "error": "..."}``

As in OpenWhisk's Python runtime, an action that raises answers ``{"error": str(exception)}``
(an application error) with the traceback on stderr, a dictionary or a list is a result, and
anything else is the platform's "did not return a dictionary or array". A binary action is a
zip the runner writes to ``ARCHIVE`` in the working directory: it is unpacked there, its
``exec`` or else its ``__main__.py`` becomes ``main__.py``, and a ``virtualenv/`` in it is
activated through its ``bin/activate_this.py``.

This file imports nothing from labkit: it must stay light and must
not pull the runner's dependencies into every worker.
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import importlib.util
import json
import os
import shutil
import signal
import sys
import traceback
import zipfile
from collections.abc import Callable
from pathlib import Path
from types import ModuleType
from typing import Any, BinaryIO

GUARD = "XXX_THE_END_OF_A_WHISK_ACTIVATION_XXX"
REPLY_FD = 3
MODULE_NAME = "main__"  # the name OpenWhisk's python runtime imports the action under
ARCHIVE = ".action.zip"  # where the runner puts a binary action's zip in the working directory
_PR_SET_PDEATHSIG = 1

Action = Callable[[dict[str, Any]], Any]


def _die_with_parent(parent_pid: int) -> None:
    """Ask Linux to kill this process when the runner dies, then check it is alive."""
    with contextlib.suppress(OSError, AttributeError):  # not Linux: stdin EOF still ends us
        ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)
    if os.getppid() != parent_pid:
        os._exit(1)


def _protocol_streams(reply_fd: int) -> tuple[BinaryIO, BinaryIO]:
    """Move the protocol off fds the action might touch.

    Returns:
        The request stream (old stdin) and the reply stream (fd 3).
    """
    if reply_fd != REPLY_FD:  # first, so that the dup below cannot take fd 3
        os.dup2(reply_fd, REPLY_FD, inheritable=False)
        os.close(reply_fd)
    requests = os.fdopen(os.dup(0), "rb")
    devnull = os.open(os.devnull, os.O_RDONLY)
    os.dup2(devnull, 0)  # an action reading stdin must not eat protocol lines
    os.close(devnull)
    return requests, os.fdopen(REPLY_FD, "wb")


def _reply(out: BinaryIO, message: dict[str, Any]) -> None:
    out.write(json.dumps(message, ensure_ascii=False).encode("utf-8") + b"\n")
    out.flush()


def _end_of_message() -> None:
    """Flush the action's output and mark the end of this message's logs."""
    for stream in (sys.stdout, sys.stderr):
        stream.write(GUARD + "\n")
        stream.flush()


def _unpack(root: Path) -> None:
    """Unzip a binary action (the runner wrote it to ``ARCHIVE``) and name its entry ``main__.py``."""
    archive = root / ARCHIVE
    try:
        with zipfile.ZipFile(archive) as zipped:
            zipped.extractall(root)  # zipfile drops absolute paths and '..' parts
    except zipfile.BadZipFile as exc:
        raise ValueError(f"the binary action is not a zip file ({exc})") from None
    finally:
        archive.unlink(missing_ok=True)
    for entry in ("exec", "__main__.py"):  # an 'exec' file prevails, as in OpenWhisk
        if (root / entry).is_file():
            shutil.copyfile(root / entry, root / f"{MODULE_NAME}.py")
            return
    raise ValueError("Zip file does not include mandatory files.")


def _activate_virtualenv(root: Path) -> None:
    """Activate ``root/virtualenv`` the way OpenWhisk's launcher does, if the zip has one."""
    venv = root / "virtualenv"
    if not venv.is_dir():
        return
    script = venv / "bin" / "activate_this.py"
    if not script.is_file():
        raise ValueError("Invalid virtualenv. Zip file does not include /virtualenv/bin/activate_this.py")
    exec(compile(script.read_text(encoding="utf-8"), str(script), "exec"), {"__file__": str(script)})


def _load(value: dict[str, Any]) -> Action:
    """Put the action's code into the working directory and import it.

    Args:
        value: The init message's ``value``.

    Returns:
        The action's entry function.
    """
    for key, val in (value.get("env") or {}).items():
        os.environ[str(key)] = str(val)
    root = Path.cwd()
    source = root / f"{MODULE_NAME}.py"
    if value.get("binary"):
        _unpack(root)
        _activate_virtualenv(root)
    else:
        source.write_text(value.get("code") or "", encoding="utf-8")
    sys.path.insert(0, str(root))
    spec = importlib.util.spec_from_file_location(MODULE_NAME, source)
    assert spec is not None and spec.loader is not None
    module: ModuleType = importlib.util.module_from_spec(spec)
    sys.modules[MODULE_NAME] = module
    spec.loader.exec_module(module)
    entry = value.get("main") or "main"
    fn = getattr(module, entry, None)
    if not callable(fn):
        raise AttributeError(f"the action defines no function named '{entry}'")
    action: Action = fn
    return action


def _init(requests: BinaryIO, out: BinaryIO) -> Action | None:
    """Handle the init message; return the action, or None when init failed."""
    line = requests.readline()
    if not line:
        return None
    try:
        fn = _load(json.loads(line)["value"])
    except BaseException as exc:  # SyntaxError, ImportError, SystemExit at import...
        traceback.print_exc(file=sys.stderr)
        _end_of_message()
        _reply(out, {"ok": False, "error": f"{type(exc).__name__}: {exc}"})
        return None
    _end_of_message()
    _reply(out, {"ok": True})
    return fn


def _call(fn: Action, payload: dict[str, Any]) -> dict[str, Any]:
    """Run the action once and build the reply envelope."""
    try:
        result = fn(payload)
    except Exception as exc:  # OpenWhisk's launcher answers with the exception's text
        traceback.print_exc(file=sys.stderr)
        result = {"error": str(exc)}
    if not isinstance(result, (dict, list)):
        return {"ok": False, "kind": "not_dict", "error": type(result).__name__}
    try:
        json.dumps(result)
    except (TypeError, ValueError) as exc:
        return {"ok": False, "kind": "invalid", "error": str(exc)}
    return {"ok": True, "result": result}


def _serve(fn: Action, requests: BinaryIO, out: BinaryIO) -> None:
    """Answer run messages until the runner closes stdin."""
    for line in requests:
        message = json.loads(line)
        payload = message.get("value") or {}
        for key, val in message.items():
            if key != "value":
                os.environ[f"__OW_{key.upper()}"] = str(val)
        reply = _call(fn, payload)
        _end_of_message()
        _reply(out, reply)


def main(argv: list[str] | None = None) -> int:
    """Worker entry point.

    Args:
        argv: Command-line arguments (``--reply-fd``, ``--parent-pid``).

    Returns:
        Process exit status.
    """
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--reply-fd", type=int, required=True)
    parser.add_argument("--parent-pid", type=int, required=True)
    args = parser.parse_args(argv)
    _die_with_parent(args.parent_pid)
    sys.stdout.reconfigure(line_buffering=True)  # type: ignore[union-attr]
    sys.stderr.reconfigure(line_buffering=True)  # type: ignore[union-attr]
    requests, out = _protocol_streams(args.reply_fd)
    _reply(out, {"ok": True})  # startup ack, like actionloop's __OW_WAIT_FOR_ACK
    fn = _init(requests, out)
    if fn is None:
        return 1
    _serve(fn, requests, out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
