"""Crash-safe file writes and cross-process locks: the one place labkit does either."""

from __future__ import annotations

import os
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

from filelock import FileLock

PRIVATE = 0o600


def atomic_write(path: Path, data: str | bytes, mode: int = PRIVATE) -> Path:
    """Write ``data`` to ``path`` so that a crash leaves either the old file or the new one.

    The temporary file is created with ``mode`` from its first byte (0600 by
    default, so a secret is never readable by other users, even for a moment),
    in the same directory, then renamed over ``path``.

    Args:
        path: The file to write; its directory is created if missing.
        data: Text (written as UTF-8) or bytes.
        mode: Permission bits of the new file.

    Returns:
        ``path``.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        os.fchmod(fd, mode)
        with os.fdopen(fd, "wb") as fh:
            fh.write(data.encode("utf-8") if isinstance(data, str) else data)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


@contextmanager
def locked(lock_path: Path, timeout_s: float = -1) -> Iterator[None]:
    """Hold an exclusive lock on ``lock_path`` (a 0600 file) across processes and threads.

    Args:
        lock_path: The lock file; created if missing.
        timeout_s: Give up after this long with ``filelock.Timeout``; -1 waits forever.
    """
    lock_path.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(str(lock_path), timeout=timeout_s, mode=PRIVATE):
        yield
