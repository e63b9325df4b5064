"""Detached service processes, tracked by small JSON state files that survive a
killed ``labkit`` process."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import psutil

from labkit.core.files import atomic_write
from labkit.stack.readiness import poll_until

EXIT_POLL_S = 0.05
# Every service runs with this umask, so whatever it writes in the lab's data dir (objects,
# logs, the mail database, Kafka's log segments) is its user's alone: files 0600, dirs 0700.
SERVICE_UMASK = 0o077


@dataclass
class ProcessRecord:
    """What labkit remembers of one running service process."""

    name: str
    pid: int
    create_time: float
    cmd: list[str]
    ports: dict[str, int]
    version: str
    started_at: float = field(default_factory=time.time)


class ProcessTable:
    """The state files of one lab's processes, one per service under ``run_dir``."""

    def __init__(self, run_dir: Path):
        self.run_dir = run_dir

    def _path(self, name: str) -> Path:
        return self.run_dir / f"{name}.json"

    def save(self, record: ProcessRecord) -> None:
        self.run_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        atomic_write(self._path(record.name), json.dumps(asdict(record)))  # a crash never leaves half a file

    def load(self, name: str) -> ProcessRecord | None:
        """Return the record of a service whose process is still alive, clearing stale ones."""
        path = self._path(name)
        try:
            record = ProcessRecord(**json.loads(path.read_text()))
        except FileNotFoundError:
            return None
        except (ValueError, TypeError):
            path.unlink(missing_ok=True)
            return None
        if not is_alive(record):
            path.unlink(missing_ok=True)
            return None
        return record

    def forget(self, name: str) -> None:
        self._path(name).unlink(missing_ok=True)


def is_alive(record: ProcessRecord) -> bool:
    """True when the recorded pid still runs the process labkit started (not a reused pid)."""
    try:
        proc = psutil.Process(record.pid)
        return abs(proc.create_time() - record.create_time) < 1.0 and proc.status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False


def is_paused(record: ProcessRecord) -> bool:
    try:
        return psutil.Process(record.pid).status() == psutil.STATUS_STOPPED
    except psutil.Error:
        return False


def spawn(cmd: list[str], env: dict[str, str], cwd: Path, log: Path) -> psutil.Process:
    """Start ``cmd`` in its own session, detached from labkit, logging to ``log`` (0600), with
    umask :data:`SERVICE_UMASK`."""
    log.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    with os.fdopen(os.open(log, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600), "ab") as out:
        popen = subprocess.Popen(
            cmd, cwd=cwd, env=env, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
            start_new_session=True, umask=SERVICE_UMASK,
        )
    return psutil.Process(popen.pid)


def signal_group(record: ProcessRecord, sig: signal.Signals) -> None:
    """Send ``sig`` to the service's whole process group (its workers included)."""
    try:
        os.killpg(record.pid, sig)
    except ProcessLookupError:
        pass


def terminate(record: ProcessRecord, timeout_s: float, force: bool = False) -> None:
    """Stop the process group politely (or at once with ``force``), then by force;
    return when every member is gone (and reaped, when it is labkit's child)."""
    group = _group_members(record)
    if not force:
        signal_group(record, signal.SIGCONT)  # a paused process cannot act on SIGTERM
        signal_group(record, signal.SIGTERM)
    alive = _wait_gone(group, timeout_s)
    if alive:
        signal_group(record, signal.SIGKILL)
        _wait_gone(alive, 5)


def _wait_gone(procs: list[psutil.Process], timeout_s: float) -> list[psutil.Process]:
    """Wait until every process has exited; return those still running.

    A zombie counts as gone: when labkit is not the parent, reaping it is up to
    init, which may take its time."""
    def all_gone() -> bool:
        for proc in procs:
            try:
                proc.wait(0)  # reaps it when it is labkit's own child
            except (psutil.TimeoutExpired, psutil.NoSuchProcess, ChildProcessError):
                pass
        return not any(_running(p) for p in procs)

    poll_until(all_gone, timeout_s, EXIT_POLL_S)
    return [p for p in procs if _running(p)]


def _running(proc: psutil.Process) -> bool:
    try:
        return proc.is_running() and proc.status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False


def processes_in(workdir: Path) -> list[psutil.Process]:
    """Live processes whose working directory is ``workdir`` (every service runs in its own)."""
    found = []
    for proc in psutil.process_iter(["cwd"]):
        if proc.info["cwd"] == str(workdir) and _running(proc):
            found.append(proc)
    return found


def in_group(proc: psutil.Process, pgid: int) -> bool:
    try:
        return os.getpgid(proc.pid) == pgid
    except ProcessLookupError:
        return False


def terminate_process(proc: psutil.Process, timeout_s: float) -> None:
    """Stop one untracked process and its group, politely and then by force."""
    record = ProcessRecord("orphan", os.getpgid(proc.pid) if _running(proc) else proc.pid, 0.0, [], {}, "")
    terminate(record, timeout_s)


def _group_members(record: ProcessRecord) -> list[psutil.Process]:
    members = []
    for proc in psutil.process_iter(["pid"]):
        try:
            if os.getpgid(proc.pid) == record.pid:
                members.append(proc)
        except (ProcessLookupError, psutil.Error):
            continue
    return members


def port_owner(port: int) -> str | None:
    """Describe the process listening on 127.0.0.1:``port``, or None when the port is free."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # TIME_WAIT is no conflict
        try:
            s.bind(("127.0.0.1", port))
            return None
        except OSError:
            pass
    for conn in psutil.net_connections(kind="tcp"):
        if conn.laddr and conn.laddr.port == port and conn.status == psutil.CONN_LISTEN and conn.pid:
            try:
                return f"pid {conn.pid} ({psutil.Process(conn.pid).name()})"
            except psutil.Error:
                break
    return "another process"
