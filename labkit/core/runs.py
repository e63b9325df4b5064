"""The run skeleton's files: a run's name, its directory, its metadata, its tidy tables.

Every runner (an experiment, a matrix, the benchmark, the fault matrix) saves the same way:

- :func:`run_id` names a run by when it started (and a few random letters);
- :func:`new_run_dir` creates its directory under a name no other run has;
- :func:`run_metadata` says what the run needs to be understood and repeated: versions, git
  revision, machine, seed, start and end;
- :func:`save_tables` writes its tables as CSV and the metadata as ``env.json``, each file
  atomically (:func:`labkit.core.files.atomic_write`), so a crash never leaves half a table.

This module knows nothing of the lab: the caller passes the service versions and the backend.
"""

from __future__ import annotations

import json
import os
import platform
import re
import subprocess
import uuid
from collections.abc import Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import psutil

from labkit.core.files import atomic_write

if TYPE_CHECKING:
    import pandas as pd

REPO_DIR = Path(__file__).resolve().parents[2]
ENV_FILE = "env.json"
# Run files are results, not secrets: readable like any file the user writes.
RUN_FILE_MODE = 0o644
# Names of metadata entries that are never saved or shown, whatever their value.
SECRET_NAME = re.compile("KEY|SECRET|PASSWORD|TOKEN|AUTH", re.IGNORECASE)


def run_id(started: datetime) -> str:
    """``20250101T120000-1a2b``: the start time (UTC), then four random hex digits so two runs
    started in the same second get different names."""
    return f"{started.astimezone(UTC):%Y%m%dT%H%M%S}-{uuid.uuid4().hex[:4]}"


def new_run_dir(parent: str | os.PathLike, name: str) -> Path:
    """Create ``parent/name`` (or ``name-2``, ``name-3``, ... when taken) and return it.

    Creating is the claim: two runs that pick the same name at once get two directories.
    """
    parent = Path(parent)
    parent.mkdir(parents=True, exist_ok=True)
    for n in range(1, 10_000):
        path = parent / (name if n == 1 else f"{name}-{n}")
        try:
            path.mkdir()
            return path
        except FileExistsError:
            continue
    raise FileExistsError(f"{parent} already holds 10000 runs named {name}")


def git_revision(repo: Path = REPO_DIR) -> dict[str, Any]:
    """``git_revision`` (the commit, or "unknown" outside a checkout) and ``git_dirty``."""
    def git(*args: str) -> str:
        return subprocess.run(["git", "-C", str(repo), *args], capture_output=True, text=True, timeout=10,
                              check=True).stdout.strip()
    try:
        return {"git_revision": git("rev-parse", "HEAD"), "git_dirty": bool(git("status", "--porcelain"))}
    except (OSError, subprocess.SubprocessError):
        return {"git_revision": "unknown", "git_dirty": None}


def machine() -> dict[str, Any]:
    """The machine a run ran on: platform, cores, memory and the load when it ended."""
    return {"platform": platform.platform(), "arch": platform.machine(), "cores": os.cpu_count(),
            "memory_gb": round(psutil.virtual_memory().total / 2**30, 1),
            "load_avg_1m": round(os.getloadavg()[0], 2)}


def run_metadata(started: datetime, finished: datetime, *, versions: Mapping[str, str], backend: str,
                 seed: int | None, labels: Mapping[str, Any] | None = None, **more: Any) -> dict[str, Any]:
    """What a run needs to be understood and repeated (saved as ``env.json``).

    Args:
        started: When the run started.
        finished: When it finished.
        versions: Each service's version.
        backend: Where the services ran (``native``, ``compose``, ``remote``).
        seed: What seeded the images and arrivals.
        labels: What the run is called (experiment, policy, fault); they come first.
        **more: The runner's own entries (``parameters``, ``fault_windows``, ...); they come last.

    Returns:
        ``labels``, ``seed``, ``started``, ``finished``, ``versions``, ``backend``, ``machine``,
        ``python``, ``pillow``, ``git_revision``, ``git_dirty``, then ``more``.
    """
    import PIL  # the resize's own library: its version moves the bare figures

    return {**(labels or {}), "seed": seed,
            "started": started.isoformat(timespec="seconds"), "finished": finished.isoformat(timespec="seconds"),
            "versions": dict(versions), "backend": backend, "machine": machine(),
            "python": platform.python_version(), "pillow": PIL.__version__, **git_revision(), **more}


def public_env(env: Mapping[str, Any]) -> dict[str, Any]:
    """``env`` without any entry (at any depth) whose name contains KEY/SECRET/PASSWORD/TOKEN/AUTH."""
    return {k: public_env(v) if isinstance(v, Mapping) else v for k, v in env.items() if not SECRET_NAME.search(str(k))}


def write_json(path: Path, data: Any, *, allow_nan: bool = True) -> Path:
    """Write ``data`` as indented JSON, atomically; values JSON lacks (dates, paths) as strings.

    Raises:
        ValueError: ``allow_nan`` is False and ``data`` holds NaN or infinity.
    """
    return atomic_write(path, json.dumps(data, indent=2, default=str, allow_nan=allow_nan) + "\n", RUN_FILE_MODE)


def write_table(path: Path, frame: pd.DataFrame) -> Path:
    """Write a tidy table as CSV (no index), atomically."""
    return atomic_write(path, frame.to_csv(index=False), RUN_FILE_MODE)


def save_tables(run_dir: str | os.PathLike, tables: Mapping[str, pd.DataFrame], env: Mapping[str, Any]) -> Path:
    """Write each table as ``<name>.csv`` and the metadata as ``env.json`` (secret-named entries
    dropped, see :func:`public_env`) in ``run_dir`` (created if missing).

    ``env.json`` goes last, so a run directory that has it has all its tables.

    Returns:
        The run directory.
    """
    run_dir = Path(run_dir)
    for name, frame in tables.items():
        write_table(run_dir / f"{name}.csv", frame)
    write_json(run_dir / ENV_FILE, public_env(env))
    return run_dir
