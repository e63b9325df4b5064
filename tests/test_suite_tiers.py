"""The suite's own contract: the fast tier selects no test that needs a service, and a failing
stack test is reported with the log of the service it blames."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from labkit.lab import Lab
from tests.conftest import LOG_LINES, blamed_logs

ROOT = Path(__file__).resolve().parent.parent


def test_the_fast_tier_selects_no_test_that_uses_a_service() -> None:
    listed = subprocess.run([sys.executable, "-m", "pytest", "--collect-only", "-q", "-m", "not stack",
                             "-p", "no:cacheprovider"], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert listed.returncode == 0, listed.stdout[-2000:] + listed.stderr[-2000:]
    selected = {line.split("[")[0] for line in listed.stdout.splitlines() if "::" in line}
    # fixtures that start services mark their tests without a marker of their own
    assert "tests/faas/test_faas_runner.py::test_ping_and_api_info" not in selected
    assert "tests/nodered/test_nodered_runtime.py::test_admin_api_needs_a_token" not in selected
    assert not {t for t in selected if t.startswith(("tests/test_pipeline.py", "tests/test_crash_safety.py"))}
    assert "tests/test_config.py::test_no_two_test_labs_of_any_slots_share_a_port" in selected


@pytest.mark.stack
def test_a_failure_brings_the_log_of_the_service_it_names(lab: Lab) -> None:
    sections = dict(blamed_logs(lab, "AssertionError: no record on Kafka topic dit247 after 20 s"))
    kafka = [title for title in sections if title.startswith("last") and "kafka's log" in title]
    assert kafka and "named in the failure" in kafka[0] and str(LOG_LINES) in kafka[0]
    assert sections[kafka[0]].strip() and "(no log yet)" not in sections[kafka[0]]
    for value in lab.ctx.secrets.secret_values():
        assert all(value not in text for text in sections.values())
    # a failure that names no service still brings the flow's log: Node-RED sees every hop
    assert [t for t, _ in blamed_logs(lab, "assert 3 == 4")] == ["last 40 lines of nodered's log (the flow)"]
