"""Runner side of one warm worker process (see ``launcher.py`` for the other side)."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import os
import shutil
import signal
import sys
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

import psutil

from labkit.faas.cgroup import MemoryGroups
from labkit.faas.launcher import ARCHIVE, GUARD

LAUNCHER = str(Path(__file__).with_name("launcher.py"))
LOG_LINE_LIMIT = 1024 * 1024  # longer log lines are split, not dropped
REPLY_LIMIT = 64 * 1024 * 1024  # hard cap on one reply line held in memory
GUARD_WAIT_S = 2.0  # how long to wait for the log guards after a reply
LOG_DATA_WARNING = "The action did not initialize or run as expected. Log data might be missing."
STARTUP_TIMEOUT_S = 30.0  # interpreter start; generous because a busy machine is slow
MEMORY_POLL_S = 0.05
# How often the watchdog looks for new children: a look scans every process's /proc entry, which
# took about a fifth of the runner's and workers' CPU at saturation when it ran on every poll
# (docs/performance.md). The children it knows are measured on every poll.
CHILD_SCAN_S = 0.5

Failure = Literal["timeout", "memory", "died", "too_big"]


class WorkerStartError(RuntimeError):
    """The worker process could not be started (a platform problem, not the action's)."""


def _timestamp() -> str:
    """OpenWhisk's log timestamp: UTC with microseconds and a ``Z``."""
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


class LogCollector:
    """Gathers a worker's stdout/stderr lines for the message in flight."""

    def __init__(self) -> None:
        """Start with an empty buffer and no guard seen."""
        self.lines: list[str] = []
        self._size = 0
        self._limit = 10 * 1024 * 1024
        self._truncated = False
        self.guards = {"stdout": asyncio.Event(), "stderr": asyncio.Event()}

    def begin(self, limit_bytes: int) -> None:
        """Start collecting for a new message, keeping lines printed in between."""
        self._limit = limit_bytes
        for event in self.guards.values():
            event.clear()

    def add(self, stream: str, text: str) -> None:
        """Record one line, honouring the log size limit like OpenWhisk."""
        if self._truncated:
            return
        size = len(text.encode("utf-8", "replace"))
        if self._size + size > self._limit:
            self._truncated = True
            note = f"Logs were truncated because the total bytes size exceeds the limit of {self._limit} bytes."
            self.lines.append(f"{_timestamp()} stderr: {note}")
            return
        self._size += size
        self.lines.append(f"{_timestamp()} {stream}: {text}")

    def take(self) -> list[str]:
        """Hand over the collected lines and reset the buffer."""
        lines, self.lines, self._size, self._truncated = self.lines, [], 0, False
        return lines


@dataclass
class Outcome:
    """What one init or run message produced.

    Attributes:
        reply: The launcher's reply envelope, when one arrived.
        failure: Why no usable reply arrived, if so.
        logs: Log lines attributed to this message.
        elapsed_ms: Time from sending the message to the reply (or failure).
    """

    reply: dict[str, Any] | None = None
    failure: Failure | None = None
    logs: list[str] = field(default_factory=list)
    elapsed_ms: int = 0


async def _read_line(reader: asyncio.StreamReader) -> bytes | None:
    """Read one line; split overlong lines; None at EOF."""
    try:
        return await reader.readuntil(b"\n")
    except asyncio.IncompleteReadError as exc:
        return exc.partial or None
    except asyncio.LimitOverrunError as exc:
        return await reader.read(max(exc.consumed, 1))


class Worker:
    """One launcher process bound to one action version."""

    def __init__(
        self,
        proc: asyncio.subprocess.Process,
        replies: asyncio.StreamReader,
        reply_transport: asyncio.BaseTransport,
        workdir: Path,
        memory_limit_bytes: int,
    ) -> None:
        """Wrap a started process; use :meth:`spawn` instead of calling this."""
        self.proc = proc
        self._replies = replies
        self._reply_transport = reply_transport
        self.workdir = workdir
        self.memory_limit_bytes = memory_limit_bytes
        self.logs = LogCollector()
        self.last_used = time.monotonic()
        self._oom = False
        self.groups: MemoryGroups | None = None
        self.group: Path | None = None  # this worker's memory cgroup, when there is one
        self._pumps = [
            asyncio.create_task(self._pump(proc.stdout, "stdout")),
            asyncio.create_task(self._pump(proc.stderr, "stderr")),
        ]

    @classmethod
    async def spawn(
        cls,
        workdir: Path,
        env: Mapping[str, str],
        memory_limit_bytes: int,
        groups: MemoryGroups | None = None,
    ) -> Worker:
        """Start a launcher process in its own session (process group).

        Args:
            workdir: Private working directory for the action (created here).
            env: Environment for the process.
            memory_limit_bytes: Resident-memory limit (the process group's RSS), enforced by
                polling, as OpenWhisk's container cgroup counts resident memory.
            groups: Memory cgroups, when the runner may make them: the kernel then enforces
                the limit as well (before the action's code is loaded).

        Returns:
            The started worker, not yet initialised.
        """
        workdir.mkdir(parents=True, exist_ok=True)
        read_fd, write_fd = os.pipe()
        try:
            proc = await asyncio.create_subprocess_exec(
                sys.executable, "-P", LAUNCHER,
                "--reply-fd", str(write_fd),
                "--parent-pid", str(os.getpid()),
                stdin=asyncio.subprocess.PIPE,
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.PIPE,
                pass_fds=(write_fd,),
                start_new_session=True,  # own process group: one killpg ends the action and its children
                cwd=workdir,
                env=dict(env),
                limit=LOG_LINE_LIMIT,
            )
        except BaseException:
            os.close(read_fd)
            raise
        finally:
            os.close(write_fd)  # only the child may hold the write end, so its death reads as EOF
        replies = asyncio.StreamReader(limit=REPLY_LIMIT)
        loop = asyncio.get_running_loop()
        transport, _ = await loop.connect_read_pipe(
            lambda: asyncio.StreamReaderProtocol(replies), os.fdopen(read_fd, "rb", buffering=0)
        )
        worker = cls(proc, replies, transport, workdir, memory_limit_bytes)
        try:
            await worker._await_startup()
            if groups is not None:
                worker.groups = groups
                worker.group = await asyncio.to_thread(groups.attach, worker.pid, memory_limit_bytes)
        except BaseException:
            await worker.stop(grace_s=0)
            raise
        return worker

    async def _await_startup(self) -> None:
        """Wait for the launcher's unasked ``{"ok": true}``.

        Interpreter start-up is the platform's cost (like creating a container
        in OpenWhisk), so it is kept out of the action's init time and timeout.
        """
        try:
            line = await asyncio.wait_for(self._replies.readline(), STARTUP_TIMEOUT_S)
        except TimeoutError:
            raise WorkerStartError(f"worker did not start within {STARTUP_TIMEOUT_S:.0f}s") from None
        if not line.endswith(b"\n") or not json.loads(line).get("ok"):
            raise WorkerStartError(f"worker exited during start-up: {self.logs.take()[-5:]}")

    @property
    def pid(self) -> int:
        """Process id (also the process-group id)."""
        return self.proc.pid

    @property
    def alive(self) -> bool:
        """Whether the process is still running."""
        return self.proc.returncode is None

    async def _pump(self, stream: asyncio.StreamReader | None, name: str) -> None:
        """Move a stdout/stderr line stream into the log collector."""
        assert stream is not None
        while (raw := await _read_line(stream)) is not None:
            text = raw.decode("utf-8", "replace").rstrip("\r\n")
            if text.endswith(GUARD):
                text = text[: -len(GUARD)]
                if text:  # output without a trailing newline shares the guard's line
                    self.logs.add(name, text)
                self.logs.guards[name].set()
            else:
                self.logs.add(name, text)
        self.logs.guards[name].set()  # EOF: no guard will ever come

    async def init(self, value: dict[str, Any], timeout_s: float, log_limit: int) -> Outcome:
        """Send the init message and wait for its acknowledgement.

        Args:
            value: ``{"name", "main", "code", "binary", "env"}``.
            timeout_s: Limit for the whole init.
            log_limit: Log size limit in bytes.

        Returns:
            The outcome; ``reply["ok"]`` tells whether the action loaded.
        """
        if value.get("binary"):
            # The zip goes to the worker as a file, not as base64 through its stdin: the worker's
            # memory then holds what it imports, as when OpenWhisk's proxy unzips it for the launcher.
            archive = self.workdir / ARCHIVE
            await asyncio.to_thread(archive.write_bytes, base64.b64decode(value.get("code") or ""))
            value = {**value, "code": "", "archive": ARCHIVE}
        return await self._exchange({"value": value}, timeout_s, log_limit)

    async def run(self, message: dict[str, Any], timeout_s: float, log_limit: int) -> Outcome:
        """Send one run message and wait for the result.

        Args:
            message: ``{"value": params, "namespace", "action_name", ...}``.
            timeout_s: The action's time limit.
            log_limit: Log size limit in bytes.

        Returns:
            The outcome of this activation.
        """
        outcome = await self._exchange(message, timeout_s, log_limit)
        self.last_used = time.monotonic()
        return outcome

    async def _exchange(self, message: dict[str, Any], timeout_s: float, log_limit: int) -> Outcome:
        """Write one message, await its reply under time and memory limits."""
        self.logs.begin(log_limit)
        started = time.monotonic()
        monitor = asyncio.create_task(self._watch_memory())
        try:
            raw, failure = await self._send_and_receive(message, timeout_s)
        finally:
            monitor.cancel()
        elapsed_ms = int((time.monotonic() - started) * 1000)
        if failure is None and raw is not None:
            await self._await_guards(GUARD_WAIT_S)
            return Outcome(reply=json.loads(raw), logs=self.logs.take(), elapsed_ms=elapsed_ms)
        await self.kill()
        await self._await_guards(GUARD_WAIT_S)
        logs = self.logs.take()
        logs.append(f"{_timestamp()} stderr: {LOG_DATA_WARNING}")
        return Outcome(failure=failure, logs=logs, elapsed_ms=elapsed_ms)

    async def _send_and_receive(self, message: dict[str, Any], timeout_s: float) -> tuple[bytes | None, Failure | None]:
        """Do the I/O of one exchange; classify why it failed, if it did."""
        assert self.proc.stdin is not None
        try:
            self.proc.stdin.write(json.dumps(message).encode("utf-8") + b"\n")
            await self.proc.stdin.drain()
            raw = await asyncio.wait_for(self._replies.readline(), timeout_s)
        except TimeoutError:
            return None, "timeout"
        except ValueError:  # reply longer than REPLY_LIMIT
            return None, "too_big"
        except (BrokenPipeError, ConnectionResetError):
            raw = b""
        if not raw.endswith(b"\n"):  # EOF: the process is gone
            await self._wait_exit(1.0)
            return None, "memory" if self._oom or self._cgroup_oom() else "died"
        return raw, None

    async def _watch_memory(self) -> None:
        """Kill the worker when its resident memory (with children) passes the limit."""
        try:
            root = psutil.Process(self.pid)
            children: list[psutil.Process] = []
            scanned_at = time.monotonic()  # the first scan after CHILD_SCAN_S: most activations are over
            while True:
                # Look after the first interval, not at once: most activations are over by then.
                await asyncio.sleep(MEMORY_POLL_S)
                if time.monotonic() - scanned_at >= CHILD_SCAN_S:
                    children, scanned_at = root.children(recursive=True), time.monotonic()
                rss = root.memory_info().rss + sum(_rss(child) for child in children)
                if rss > self.memory_limit_bytes:
                    self._oom = True
                    self._signal_group(signal.SIGKILL)
                    return
        except psutil.Error:
            return  # the process ended; the reply reader sees EOF

    async def _await_guards(self, timeout_s: float) -> None:
        waits = [asyncio.create_task(ev.wait()) for ev in self.logs.guards.values()]
        _, pending = await asyncio.wait(waits, timeout=timeout_s)
        for task in pending:
            task.cancel()

    async def _wait_exit(self, timeout_s: float) -> None:
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(self.proc.wait(), timeout_s)

    def _signal_group(self, sig: int) -> None:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.pid, sig)

    async def kill(self) -> None:
        """Kill the whole process group at once and reap the process."""
        self._signal_group(signal.SIGKILL)
        await self.proc.wait()

    async def stop(self, grace_s: float = 0.5) -> None:
        """Stop the worker: close its stdin (it exits on EOF), then kill what is left.

        Args:
            grace_s: Time allowed for a clean exit before SIGKILL.
        """
        if self.alive and self.proc.stdin is not None:
            with contextlib.suppress(OSError):
                self.proc.stdin.close()
            await self._wait_exit(grace_s)
        self._signal_group(signal.SIGKILL)  # also catches processes the action started
        await self.proc.wait()
        await asyncio.wait(self._pumps, timeout=1.0)
        for task in self._pumps:
            task.cancel()
        self._reply_transport.close()
        shutil.rmtree(self.workdir, ignore_errors=True)
        if self.groups is not None:
            await asyncio.to_thread(self.groups.remove, self.group)  # may wait for stragglers

    def _cgroup_oom(self) -> bool:
        return self.groups is not None and self.groups.oom_killed(self.group)


def _rss(proc: psutil.Process) -> int:
    try:
        return int(proc.memory_info().rss)
    except psutil.Error:
        return 0
