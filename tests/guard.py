"""The fast tier's promise, checked: a test without the ``stack`` marker leaves nothing listening.

Reading ``/proc/net/tcp*`` costs microseconds, so every unit test is checked. Only when a new
listening socket shows up does the check look for its owner, and it blames the test only when
that owner is this pytest process, one of its children, or a process whose command line or
working directory lies in this session's temporary directory (a lab the test started in the
background). A second checkout's stack starting at the same moment is not this test's doing.
"""

from __future__ import annotations

from pathlib import Path

import psutil

LISTEN = "0A"  # the TCP state code of a listening socket in /proc/net/tcp
PROC_NET = (Path("/proc/net/tcp"), Path("/proc/net/tcp6"))


def listening_inodes() -> set[int]:
    """The inode of every listening TCP socket on the machine (IPv4 and IPv6)."""
    inodes = set()
    for table in PROC_NET:
        try:
            lines = table.read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            fields = line.split()
            if len(fields) > 9 and fields[3] == LISTEN:
                inodes.add(int(fields[9]))
    return inodes


def _ours(proc: psutil.Process, me: psutil.Process, tmp_root: str) -> bool:
    try:
        if proc.pid == me.pid or me.pid in {p.pid for p in proc.parents()}:
            return True
        return tmp_root in " ".join(proc.cmdline()) or proc.cwd().startswith(tmp_root)
    except psutil.Error:
        return False


def owners(inodes: set[int], tmp_root: Path) -> list[str]:
    """Who listens on ``inodes``, limited to this session's processes: ``"pid N (name) on port P"``."""
    if not inodes:
        return []
    me, found = psutil.Process(), []
    for conn in psutil.net_connections(kind="tcp"):
        if conn.status != psutil.CONN_LISTEN or not conn.pid:
            continue
        try:
            proc = psutil.Process(conn.pid)
            if conn.fd in (-1, None) or _inode(conn.pid, conn.fd) not in inodes:
                continue
            if _ours(proc, me, str(tmp_root)):
                found.append(f"pid {proc.pid} ({proc.name()}) on port {conn.laddr.port}")
        except psutil.Error:
            continue
    return found


def _inode(pid: int, fd: int) -> int | None:
    try:
        target = Path(f"/proc/{pid}/fd/{fd}").readlink().as_posix()  # socket:[12345]
    except OSError:
        return None
    return int(target[8:-1]) if target.startswith("socket:[") else None
