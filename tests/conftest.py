"""Shared fixtures and the suite's two tiers.

- **stack**: one real native stack per test session, on ports of its own (:mod:`tests.ports`)
  and a data dir of its own. Every test that needs a running service carries the ``stack``
  marker; a test that asks for a fixture in :data:`STACK_FIXTURES` gets it automatically.
- **unit** (``pytest -m "not stack"``): starts nothing. Each unit test is checked for
  listeners it left behind (:mod:`tests.guard`).

A failing stack test gets the last lines of the log of each service it blames (the services
its failure names, and any that is unhealthy now) attached to its report.
"""

from __future__ import annotations

import re
import subprocess
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest
from click.testing import CliRunner

from labkit.stack.lab import Lab
from tests import cli_check, guard
from tests.ports import PortPlan, claimed_plan

# Fixtures that start services (or need the session's stack): a test using one is a stack test.
STACK_FIXTURES = {"lab", "pipe", "runner", "runner_factory", "nodered", "red_js", "kafka_bootstrap", "admin"}
# Words in a failure that blame a service, beyond its own name.
BLAME_WORDS = {"storage": r"storage(?!-out)|dit247\b", "storage-out": r"storage-out|dit247c", "kafka": r"kafka",
               "nodered": r"node-?red|flow|webhook", "faas": r"faas|activation|action|runner", "mail": r"mail",
               "toxiproxy": r"toxiproxy|toxic|hop"}
LOG_LINES = 40

_session_lab: Lab | None = None


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


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if STACK_FIXTURES & set(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.stack)


@pytest.fixture(scope="session")
def ports() -> Iterator[PortPlan]:
    """This session's port offsets, claimed for its whole length (see :mod:`tests.ports`)."""
    with claimed_plan() as plan:
        yield plan


@pytest.fixture(scope="session")
def lab(tmp_path_factory: pytest.TempPathFactory, ports: PortPlan) -> Iterator[Lab]:
    """The whole native stack, up and healthy; stopped (and checked stopped) at the end."""
    global _session_lab
    data_dir = tmp_path_factory.mktemp("lab")
    lab = Lab.from_env(data_dir=data_dir, port_offset=ports.offset("session"), backend="native")
    try:
        lab.up()
        _session_lab = lab
        yield lab
    finally:
        _session_lab = None
        lab.down()
    assert lab_processes(data_dir) == [], "labkit down left processes behind"


@pytest.fixture(scope="module")
def pipe(lab: Lab):
    """The session's stack with the pipeline stood up, afresh for each module (other modules
    deploy flows of their own)."""
    from labkit.pipeline import deploy as pipeline

    pipeline.stand_up(lab)
    yield lab


@pytest.fixture(autouse=True)
def _cli_errors_are_one_line(monkeypatch: pytest.MonkeyPatch) -> None:
    """Every failing ``labkit`` call of every test must print one error line and no traceback."""
    monkeypatch.setattr(CliRunner, "invoke", cli_check.checked_invoke(CliRunner.invoke))
    monkeypatch.setattr(subprocess, "run", cli_check.checked_run(subprocess.run))


@pytest.fixture(autouse=True)
def _unit_tests_start_nothing(request: pytest.FixtureRequest) -> Iterator[None]:
    """A test without the ``stack`` marker must not leave a listening socket of this session."""
    if request.node.get_closest_marker("stack"):
        yield
        return
    before = guard.listening_inodes()
    yield
    new = guard.listening_inodes() - before
    if new and (found := guard.owners(new, request.config._tmp_path_factory.getbasetemp())):
        pytest.fail(f"{request.node.nodeid} has no `stack` marker but left listeners: {'; '.join(found)}. "
                    "Fix: mark it `stack`, or stop what it started.", pytrace=False)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo) -> Iterator[None]:
    outcome = yield
    report = outcome.get_result()
    if report.failed and call.when == "call" and item.get_closest_marker("stack") and _session_lab is not None:
        for title, text in blamed_logs(_session_lab, str(report.longrepr)):
            report.sections.append((title, text))


def blamed_logs(lab: Lab, failure: str) -> list[tuple[str, str]]:
    """The last log lines of each service ``failure`` names or that is unhealthy, secrets scrubbed."""
    named = [s for s, words in BLAME_WORDS.items() if re.search(words, failure, re.IGNORECASE)]
    try:
        unhealthy = [row.name for row in lab.backend.status() if not row.healthy]
    except Exception as e:  # noqa: BLE001 - a broken stack must not hide the test's own failure
        unhealthy, named = [], [*named, f"(status failed: {e})"]
    blamed = list(dict.fromkeys(unhealthy + [s for s in named if s in BLAME_WORDS])) or ["nodered"]
    secrets = lab.ctx.secrets.secret_values()
    sections = []
    for service in blamed:
        text = lab.backend.logs(service, LOG_LINES)
        for value in secrets:
            text = text.replace(value, "***")
        why = "unhealthy" if service in unhealthy else "named in the failure" if service in named else "the flow"
        sections.append((f"last {LOG_LINES} lines of {service}'s log ({why})", text))
    return sections
