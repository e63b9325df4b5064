"""The two ways a worker's memory limit holds, each on its own: the kernel's, through a memory
cgroup where the runner may make one, and the resident-memory watchdog everywhere else. Real
worker processes; the other one is switched off in each test."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

import pytest

from labkit.faas import worker as worker_module
from labkit.faas.cgroup import MemoryGroups
from labkit.faas.worker import Worker

pytestmark = pytest.mark.stack  # starts real worker processes

LIMIT = 128 * 1024 * 1024
HOG = "def main(args):\n    hoard = []\n    while True:\n        hoard.append(bytearray(8 * 1024 * 1024))\n"
# The same hog in a child process: the watchdog counts the worker's children too.
CHILD_HOG = ("import subprocess, sys\n"
             "def main(args):\n"
             "    code = 'hoard = []\\nwhile True:\\n    hoard.append(bytearray(8 * 1024 * 1024))'\n"
             "    subprocess.run([sys.executable, '-c', code])\n"
             "    return {}\n")


async def _hog(workdir: Path, groups: MemoryGroups | None, code: str = HOG) -> tuple[str | None, Path | None]:
    """Run the hog on a fresh worker; the run's failure and the worker's cgroup."""
    worker = await Worker.spawn(workdir, dict(os.environ), LIMIT, groups=groups)
    try:
        init = await worker.init({"name": "hog", "main": "main", "code": code, "binary": False, "env": {}},
                                 30, 1 << 20)
        assert init.reply == {"ok": True}
        outcome = await worker.run({"value": {}}, 60, 1 << 20)
        return outcome.failure, worker.group
    finally:
        await worker.stop()


def test_the_cgroup_stops_an_action_past_its_limit(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    groups = MemoryGroups()
    if not groups.enabled:
        pytest.skip("this machine lets the runner make no memory cgroup (the watchdog holds the limit)")
    monkeypatch.setattr(worker_module, "MEMORY_POLL_S", 3600.0)  # the watchdog never looks
    failure, group = asyncio.run(_hog(tmp_path / "worker", groups))
    assert failure == "memory"
    assert group is not None and not group.exists()  # removed with its worker


def test_the_watchdog_stops_an_action_past_its_limit_without_a_cgroup(tmp_path: Path) -> None:
    failure, group = asyncio.run(_hog(tmp_path / "worker", None))
    assert failure == "memory" and group is None


def test_the_watchdog_counts_the_children_of_an_action(tmp_path: Path) -> None:
    failure, group = asyncio.run(_hog(tmp_path / "worker", None, CHILD_HOG))
    assert failure == "memory" and group is None
