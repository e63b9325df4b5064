"""Shared fixtures: one real native stack per test session, on its own ports and data dir."""

from __future__ import annotations

import os
from pathlib import Path

import psutil
import pytest

from labkit.lab import Lab

# The suite's stack runs beside a student's lab: same cache, other ports and data.
TEST_PORT_OFFSET = int(os.environ.get("LABKIT_TEST_PORT_OFFSET", "10000"))


def lab_processes(data_dir: Path) -> list[psutil.Process]:
    """Every live process of this lab: its command line names the data dir, or it runs in it
    (Node-RED renames itself to ``node-red``, so only its working directory still tells)."""
    found = []
    for proc in psutil.process_iter(["cmdline", "cwd", "status"]):
        try:
            if proc.info["status"] == psutil.STATUS_ZOMBIE:
                continue
            named = str(data_dir) in " ".join(proc.info["cmdline"] or [])
            if named or (proc.info["cwd"] or "").startswith(str(data_dir)):
                found.append(proc)
        except psutil.Error:
            continue
    return found


@pytest.fixture(scope="session")
def lab(tmp_path_factory: pytest.TempPathFactory) -> Lab:
    """The whole native stack, up and healthy; stopped (and checked stopped) at the end."""
    data_dir = tmp_path_factory.mktemp("lab")
    lab = Lab.from_env(data_dir=data_dir, port_offset=TEST_PORT_OFFSET, backend="native")
    try:
        lab.up()
        yield lab
    finally:
        lab.down()
    assert lab_processes(data_dir) == [], "labkit down left processes behind"


@pytest.fixture(scope="module")
def pipe(lab: Lab):
    """The session's stack with the pipeline stood up, afresh for each module (other modules
    deploy flows of their own)."""
    from labkit import pipeline

    pipeline.stand_up(lab)
    yield lab
