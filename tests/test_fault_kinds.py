"""The registry of fault kinds, without services: every kind's verbs and checks, the record in
``faults.json``, the schedule's plan, the layers, and the worked example in docs/extending.md.

The kinds' effects on a real stack are checked in ``tests/test_faults.py`` (and the stack
restart in the fault matrix, ``tests/test_reliability.py``).
"""

from __future__ import annotations

import ast
import inspect
import re
from collections.abc import Iterator
from pathlib import Path

import pytest

from labkit.errors import LabConfigError
from labkit.experiments import faults
from labkit.experiments.faults import (
    HOPS,
    KINDS,
    NETWORK_FAULTS,
    PROCESS_FAULTS,
    STACK,
    Fault,
    FaultFile,
    FaultKind,
    Param,
    ToxicKind,
    describe,
    kind_of,
    register,
    repair_state,
    validate,
)
from labkit.experiments.faults.network import LimitData
from labkit.experiments.faults.schedule import check_no_overlap, plan
from labkit.stack.services import SERVICE_NAMES
from labkit.stack.services.kafka import REPLICAS
from labkit.teaching.widgets import _panel_params
from tests import test_faults

ROOT = Path(__file__).resolve().parents[1]
LABKIT = ROOT / "labkit"
HOP = "nodered-faas"

# ---------------------------------------------------------------- the registry


def test_the_kinds_that_ship() -> None:
    assert PROCESS_FAULTS == ("stop", "kill", "pause")
    assert NETWORK_FAULTS == ("latency", "timeout", "reset_peer", "bandwidth", "limit_data")
    assert set(KINDS) == {*PROCESS_FAULTS, *NETWORK_FAULTS, "restart"}
    restart = kind_of("restart")
    assert (restart.family, restart.targets(), restart.lasts) == ("restart", (STACK,), False)
    assert HOPS == kind_of("latency").targets() and SERVICE_NAMES + REPLICAS == kind_of("kill").targets()


@pytest.mark.parametrize("name", sorted(KINDS))
def test_every_kind_has_the_four_verbs_and_takes_each_of_its_targets(name: str) -> None:
    kind = KINDS[name]
    assert isinstance(kind, FaultKind) and kind.name == name and kind.targets()
    for verb in ("validate", "inject", "clear", "describe"):
        assert callable(getattr(kind, verb))
    for target in kind.targets():
        fault = Fault(name, target, at_s=1, duration_s=2)
        assert validate(fault) is fault
        text = kind.describe(fault)
        assert isinstance(text, str) and text


@pytest.mark.parametrize("name", sorted(KINDS))
def test_every_kind_refuses_a_bad_fault_in_one_line_that_names_the_fix(name: str) -> None:
    kind = KINDS[name]
    target = kind.targets()[0]
    bad = [Fault(name, "nowhere"), Fault(name, target, at_s=-1), Fault(name, target, params={"volume_db": 3})]
    for fault in bad:
        with pytest.raises(LabConfigError) as caught:
            validate(fault)
        message = str(caught.value)
        assert "\n" not in message and len(message) < 400, message
    with pytest.raises(LabConfigError) as caught:
        validate(Fault(name, "nowhere"))
    assert all(t in str(caught.value) for t in kind.targets())


def test_an_unknown_kind_lists_every_kind_by_family() -> None:
    with pytest.raises(LabConfigError) as caught:
        validate(Fault("explode", HOP))
    message = str(caught.value)
    assert all(name in message for name in KINDS)
    assert "process faults: stop, kill, pause" in message and "restart faults: restart" in message


@pytest.mark.parametrize(("fault", "words"), [
    (Fault("restart", "kafka"), ["needs the whole stack", "That is a service", "Valid targets: stack"]),
    (Fault("restart", STACK, params={"wipe": 1}), ["take no params"]),
    (Fault("latency", HOP, params={"toxicity": 1.5}), ["toxicity", "0..1"]),
    (Fault("latency", HOP, params={"latency_ms": True}), ["numbers >= 0"]),
    (Fault("limit_data", "kafka"), ["needs a hop", "That is a service"]),
    (Fault("limit_data", HOP, params={"limit_bytes": -1}), ["limit_bytes", ">= 0"]),
])
def test_bad_faults_name_what_is_wrong(fault: Fault, words: list[str]) -> None:
    with pytest.raises(LabConfigError) as caught:
        validate(fault)
    assert all(w in str(caught.value) for w in words), str(caught.value)


def test_toxic_attributes_are_toxiproxys_terms() -> None:
    def attributes(fault: Fault) -> dict[str, int]:
        kind = kind_of(fault.kind)
        return kind.attributes(kind.values(fault))

    assert attributes(Fault("latency", HOP)) == {"latency": 1000, "jitter": 0}
    assert attributes(Fault("timeout", HOP, params={"timeout_ms": 250.4})) == {"timeout": 250}
    assert attributes(Fault("reset_peer", HOP)) == {"timeout": 0}
    assert attributes(Fault("bandwidth", HOP, params={"rate_kbps": 64})) == {"rate": 8}  # kilobytes per second
    assert attributes(Fault("limit_data", HOP, params={"limit_bytes": 4096.0})) == {"bytes": 4096}
    assert kind_of("timeout").streams == ("upstream", "downstream") and kind_of("latency").streams == ("upstream",)


def test_one_hop_shares_one_phrase() -> None:
    on_hop = [Fault("latency", HOP, 1, 2, {"latency_ms": 2000}), Fault("timeout", HOP, 3.5, 6, {"timeout_ms": 0})]
    assert describe(on_hop) == f"{HOP}: 2 s latency for 2 s, then a 6 s blackhole"
    assert describe([Fault("kill", "kafka", 1, 3)]) == "kill -9 kafka, started again after 3 s"
    assert describe([Fault("restart", STACK)]) == "labkit down, then up (data kept)"


@pytest.fixture()
def scratch_kind() -> Iterator[type[FaultKind]]:
    """A kind added the way docs/extending.md says, removed from the registry afterwards."""

    @register
    class Slicer(ToxicKind):
        name = "slicer"
        params = (Param("average_size", 64, most=1024), Param("delay_us", 0))

        def attributes(self, values: dict[str, float]) -> dict[str, int]:
            return {"average_size": round(values["average_size"]), "delay": round(values["delay_us"])}

        def describe(self, fault: Fault) -> str:
            return f"{fault.target}: sliced into ~{self.values(fault)['average_size']:g} byte pieces"

    try:
        yield Slicer
    finally:
        KINDS.pop("slicer")


def test_a_new_kind_is_one_class(scratch_kind: type[FaultKind]) -> None:
    fault = validate(Fault("slicer", HOP, params={"average_size": 32}))
    assert kind_of("slicer").describe(fault) == f"{HOP}: sliced into ~32 byte pieces"
    assert "average_size" in {p.name for p in _panel_params()}  # the control panel offers a slider
    with pytest.raises(LabConfigError, match="needs a hop"):
        validate(Fault("slicer", "kafka"))
    with pytest.raises(LabConfigError, match="defined twice"):
        register(type("Other", (scratch_kind,), {}))


# ---------------------------------------------------------------- schedules


def test_a_restart_is_cleared_as_soon_as_it_is_injected() -> None:
    restart, latency = Fault("restart", STACK, at_s=1, duration_s=10), Fault("latency", HOP, at_s=0, duration_s=2)
    steps = [(when, action, f.kind) for when, action, f in plan([restart, latency], t0=100.0)]
    assert steps == [(100.0, "inject", "latency"), (101.0, "inject", "restart"), (102.0, "clear", "latency")]


def test_process_faults_on_one_service_share_a_slot() -> None:
    with pytest.raises(LabConfigError, match="overlaps"):
        check_no_overlap([Fault("pause", "mail", 0, 5), Fault("kill", "mail", 2, 5)])
    check_no_overlap([Fault("latency", HOP, 0, 5), Fault("timeout", HOP, 2, 5)])  # two kinds, two toxics


# ---------------------------------------------------------------- faults.json (the stack layer)


def test_the_record_is_shared_and_repair_reports_and_empties_it(tmp_path: Path) -> None:
    file = FaultFile(tmp_path)
    file.add({"kind": "pause", "target": "mail", "repair": "resumed"})
    file.add({"kind": "latency", "target": HOP, "repair": None})
    assert [e["kind"] for e in FaultFile(tmp_path).entries()] == ["pause", "latency"]
    assert all({"id", "pid", "injected_ms"} <= set(e) for e in file.entries())
    assert file.path.stat().st_mode & 0o077 == 0
    file.remove("latency", HOP)
    assert [e["kind"] for e in file.entries()] == ["pause"]
    assert repair_state(tmp_path, None) == ["pause of mail was left in force: resumed"]
    assert file.entries() == [] and repair_state(tmp_path, None) == []


def test_an_unreadable_record_counts_as_empty(tmp_path: Path) -> None:
    (tmp_path / faults.FAULTS_FILE).write_text("{half a file")
    assert FaultFile(tmp_path).entries() == []


# ---------------------------------------------------------------- layers and branches


def imports(path: Path) -> set[str]:
    """Every module ``path`` imports, at any depth of its code (function-level imports too)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
    return found


@pytest.mark.parametrize(("paths", "allowed"), [
    (["stack/faultstate.py", "stack/backends/native.py"], ("labkit.errors", "labkit.core", "labkit.stack")),
    (["experiments/faults"], ("labkit.errors", "labkit.core", "labkit.stack", "labkit.pipeline",
                              "labkit.experiments.faults")),
])
def test_the_fault_modules_import_no_higher_layer(paths: list[str], allowed: tuple[str, ...]) -> None:
    files = [f for p in paths for f in ((LABKIT / p).rglob("*.py") if (LABKIT / p).is_dir() else [LABKIT / p])]
    wrong = {f"{f.relative_to(ROOT)}: {m}" for f in files for m in imports(f)
             if m.startswith("labkit") and not m.startswith(allowed)}
    assert not wrong, sorted(wrong)


def kind_branches(path: Path) -> list[str]:
    """Comparisons of something named ``kind`` with a kind's name, and tables keyed by kind names."""
    source = path.read_text()
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Compare):
            names = {c.value for c in ast.walk(node) if isinstance(c, ast.Constant)} & set(KINDS)
            if names and "kind" in ast.get_source_segment(source, node):
                found.append(f"{path.relative_to(ROOT)}:{node.lineno}: {ast.get_source_segment(source, node)}")
        elif isinstance(node, ast.Dict):
            keys = {k.value for k in node.keys if isinstance(k, ast.Constant)} & set(KINDS)
            if len(keys) > 1:
                found.append(f"{path.relative_to(ROOT)}:{node.lineno}: a table keyed by kinds {sorted(keys)}")
    return found


def test_nothing_branches_on_a_kinds_name() -> None:
    found = [line for path in sorted(LABKIT.rglob("*.py")) for line in kind_branches(path)]
    assert not found, "ask the kind (labkit.experiments.faults.kind_of) instead:\n" + "\n".join(found)


# ---------------------------------------------------------------- docs/extending.md


def doc_blocks() -> list[str]:
    """The Python code blocks of the "Adding a fault" section of docs/extending.md."""
    text = (ROOT / "docs" / "extending.md").read_text()
    section = text.split("\n## Adding a fault\n", 1)[1].split("\n## ", 1)[0]
    return re.findall(r"```python\n(.*?)```", section, flags=re.DOTALL)


def test_the_worked_example_is_the_registered_class_and_its_test() -> None:
    blocks = doc_blocks()
    assert inspect.getsource(LimitData) in blocks, "docs/extending.md shows a LimitData that is not the code's"
    assert KINDS["limit_data"].__class__ is LimitData
    test = test_faults.test_limit_data_cuts_a_long_answer_and_lets_a_short_one_through
    assert inspect.getsource(test) in blocks, "docs/extending.md shows a limit_data test that is not the suite's"
