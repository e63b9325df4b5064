"""Worker side of the action protocol; runs as its own Python process.

The runner starts ``python -P launcher.py --reply-fd N ...`` and speaks
OpenWhisk's actionloop framing with it: one JSON message per line on stdin,
one JSON reply per line on file descriptor 3. The action's own stdout and
stderr stay free for its logs; after each message both streams get the
``XXX_THE_END_OF_A_WHISK_ACTIVATION_XXX`` guard so the runner can tell
which activation a log line belongs to.

Messages:
    startup: the launcher first sends ``{"ok": true}`` unasked (actionloop's ack).
    init: ``{"value": {"name", "main", "code", "binary", "env"}}``
        -> ``{"ok": true}`` or ``{"ok": false, "error": "..."}``
    run: ``{"value": {params}, "namespace", "action_name", "activation_id",
        "deadline", ...}`` -> ``{"ok": true, "result": {...}}`` or
        ``{"ok": false, "kind": "raised"|"not_dict"|"invalid"|"memory", "error": "..."}``

Replies wrap the result in a small envelope so the runner can tell an
exception (developer error) from a returned ``{"error": ...}`` (application
error). This file imports nothing from labkit: it must stay light and must
not pull the runner's dependencies into every worker.
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import importlib.util
import json
import os
import resource
import signal
import sys
import traceback
from collections.abc import Callable
from pathlib import Path
from types import ModuleType
from typing import Any, BinaryIO

GUARD = "XXX_THE_END_OF_A_WHISK_ACTIVATION_XXX"
REPLY_FD = 3
MODULE_NAME = "main__"  # the name OpenWhisk's python runtime imports the action under
_PR_SET_PDEATHSIG = 1

Action = Callable[[dict[str, Any]], Any]


def _die_with_parent(parent_pid: int) -> None:
    """Ask Linux to kill this process when the runner dies, then check it is alive."""
    with contextlib.suppress(OSError, AttributeError):  # not Linux: stdin EOF still ends us
        ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)
    if os.getppid() != parent_pid:
        os._exit(1)


def _limit_memory(limit_bytes: int) -> None:
    """Cap the address space so a runaway allocation raises MemoryError."""
    if limit_bytes > 0:
        resource.setrlimit(resource.RLIMIT_AS, (limit_bytes, limit_bytes))


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


def _load(value: dict[str, Any]) -> Action:
    """Write the action source to the working directory and import it.

    Args:
        value: The init message's ``value``.

    Returns:
        The action's entry function.
    """
    for key, val in (value.get("env") or {}).items():
        os.environ[str(key)] = str(val)
    source = Path.cwd() / f"{MODULE_NAME}.py"
    source.write_text(value.get("code") or "", encoding="utf-8")
    sys.path.insert(0, str(Path.cwd()))
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
    except MemoryError:
        traceback.print_exc(file=sys.stderr)
        return {"ok": False, "kind": "memory", "error": "MemoryError"}
    except Exception as exc:
        traceback.print_exc(file=sys.stderr)
        return {"ok": False, "kind": "raised", "error": f"{type(exc).__name__}: {exc}"}
    if not isinstance(result, dict):
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
        try:
            _reply(out, reply)
        except MemoryError:
            _reply(out, {"ok": False, "kind": "memory", "error": "MemoryError"})


def main(argv: list[str] | None = None) -> int:
    """Worker entry point.

    Args:
        argv: Command-line arguments (``--reply-fd``, ``--memory-bytes``, ``--parent-pid``).

    Returns:
        Process exit status.
    """
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--reply-fd", type=int, required=True)
    parser.add_argument("--memory-bytes", type=int, default=0)
    parser.add_argument("--parent-pid", type=int, required=True)
    args = parser.parse_args(argv)
    _die_with_parent(args.parent_pid)
    sys.stdout.reconfigure(line_buffering=True)  # type: ignore[union-attr]
    sys.stderr.reconfigure(line_buffering=True)  # type: ignore[union-attr]
    requests, out = _protocol_streams(args.reply_fd)
    _limit_memory(args.memory_bytes)
    _reply(out, {"ok": True})  # startup ack, like actionloop's __OW_WAIT_FOR_ACK
    fn = _init(requests, out)
    if fn is None:
        return 1
    _serve(fn, requests, out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
