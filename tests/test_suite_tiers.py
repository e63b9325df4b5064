"""The suite's own contract: the fast tier selects no test that needs a service, and a failing
stack test is reported with the log of the service it blames."""

from __future__ import annotations

import pytest

from labkit.stack.lab import Lab
from tests.conftest import LOG_LINES, STACK_FIXTURES, blamed_logs, pytest_collection_modifyitems


def test_a_test_that_uses_a_service_fixture_is_marked_stack(request: pytest.FixtureRequest) -> None:
    # this session's own tests: whatever uses a service fixture carries the marker
    for item in request.session.items:
        if STACK_FIXTURES & set(getattr(item, "fixturenames", ())):
            assert item.get_closest_marker("stack"), f"{item.nodeid} uses a service but is not marked stack"

    class Item:  # the two attributes the hook reads and writes
        def __init__(self, *fixtures: str) -> None:
            self.fixturenames, self.markers = list(fixtures), []

        def add_marker(self, marker: pytest.MarkDecorator) -> None:
            self.markers.append(marker.name)

    runner_test, lab_test, unit_test = Item("runner", "tmp_path"), Item("pipe"), Item("tmp_path", "monkeypatch")
    pytest_collection_modifyitems([runner_test, lab_test, unit_test])
    assert runner_test.markers == lab_test.markers == ["stack"] and unit_test.markers == []


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
