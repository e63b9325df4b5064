"""The lab's ports: inside 1024..65535, outside the kernel's ephemeral range, and the test
suite's own slots, which let two checkouts run their tests at once."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
from filelock import Timeout

from labkit.errors import LabConfigError
from labkit.stack.backends.remote import RemoteBackend
from labkit.stack.config import DEFAULT_PORTS, ephemeral_range, load_config, safe_offsets
from labkit.stack.context import LabContext
from labkit.stack.lab import Lab
from labkit.stack.services import SERVICE_TYPES
from tests import guard
from tests.ports import LABS, claimed_plan, port_distances, slot_lock, slots


def test_the_ephemeral_range_is_read_from_the_kernel(tmp_path: Path) -> None:
    fake = tmp_path / "range"
    fake.write_text("20000\t40000\n")
    assert ephemeral_range(fake) == (20000, 40000)
    assert ephemeral_range(tmp_path / "missing") == (32768, 60999)
    assert safe_offsets((20000, 40000)).stop - 1 + max(DEFAULT_PORTS.values()) == 19999


def test_an_offset_into_the_ephemeral_range_is_refused_with_the_range_and_a_safe_offset() -> None:
    low, high = ephemeral_range()
    offset = low - min(DEFAULT_PORTS.values())  # the lowest port lands on the range's first
    with pytest.raises(LabConfigError) as refused:
        load_config(port_offset=offset)
    message = str(refused.value)
    assert f"{low}-{high}" in message and "ip_local_port_range" in message and "for example 10000" in message
    assert "\n" not in message
    safe = safe_offsets()
    assert load_config(port_offset=safe.stop - 1).port_offset == safe.stop - 1
    with pytest.raises(LabConfigError):
        load_config(port_offset=safe.stop)


def test_labkit_up_with_offset_30000_exits_2_in_one_line_and_starts_nothing(tmp_path: Path) -> None:
    env = {**os.environ, "LABKIT_DATA_DIR": str(tmp_path / "lab"), "LABKIT_PORT_OFFSET": "30000"}
    done = subprocess.run([sys.executable, "-m", "labkit.cli", "up"], env=env, capture_output=True, text=True,
                          timeout=60)
    low, high = ephemeral_range()
    assert done.returncode == 2, done.stderr
    assert done.stderr.strip().count("\n") == 0 and f"ephemeral port range {low}-{high}" in done.stderr
    assert "Traceback" not in done.stderr
    assert not (tmp_path / "lab" / "run").exists() or not list((tmp_path / "lab" / "run").iterdir())


def test_no_two_test_labs_of_any_slots_share_a_port() -> None:
    every = [offset for slot in slots() for offset in slot]
    assert len(slots()) >= 4 and all(len(slot) == len(LABS) for slot in slots())
    assert len(set(every)) == len(every)
    distances = port_distances()
    assert not [(a, b) for a in every for b in every if a < b and b - a in distances]
    ports = [p + offset for offset in every for p in DEFAULT_PORTS.values()]
    assert len(set(ports)) == len(ports) and max(ports) < ephemeral_range()[0]


def test_two_sessions_claim_different_slots_and_release_them() -> None:
    with claimed_plan() as first, claimed_plan() as second:
        assert first.slot != second.slot
        taken = first.slot
        with pytest.raises(Timeout):
            slot_lock(taken).acquire(timeout=0)  # held while the block runs
    lock = slot_lock(taken)
    lock.acquire(timeout=0)  # released at the end of the block
    lock.release()


def test_a_busy_port_of_a_slot_is_named() -> None:
    with claimed_plan() as plan:  # held, so no other test run starts a lab on it meanwhile
        assert plan.busy() == []
        port = plan.offset("session") + DEFAULT_PORTS["nodered"]
        blocker = socket.socket()
        blocker.bind(("127.0.0.1", port))
        blocker.listen()
        try:
            assert [b for b in plan.busy() if b.startswith(f"{port} (pid {os.getpid()}")]
        finally:
            blocker.close()


def test_a_pinned_offset_must_start_a_slot(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("LABKIT_TEST_PORT_OFFSET", raising=False)
    with claimed_plan() as free:  # a slot no other test run holds right now
        slot = free.slot
    monkeypatch.setenv("LABKIT_TEST_PORT_OFFSET", "10001")
    with pytest.raises(LabConfigError, match="does not start a test slot"), claimed_plan():
        pass
    monkeypatch.setenv("LABKIT_TEST_PORT_OFFSET", str(slot[0]))
    with claimed_plan() as plan:
        assert plan.slot == slot


def test_the_unit_tier_guard_sees_a_listener_of_this_process(tmp_path: Path) -> None:
    before = guard.listening_inodes()
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen()
    try:
        new = guard.listening_inodes() - before
        found = guard.owners(new, tmp_path)
        assert any(f"on port {server.getsockname()[1]}" in line for line in found), found
    finally:
        server.close()
    assert not guard.listening_inodes() - before


def test_each_declared_remote_endpoint_is_a_setting_read_from_the_environment(monkeypatch, tmp_path) -> None:
    monkeypatch.chdir(tmp_path)  # no .env of the checkout
    remote = {t.name: t.remote for t in SERVICE_TYPES if t.remote}
    for name, endpoint in remote.items():
        monkeypatch.setenv(endpoint.variable, f"http://{name}.example:1")
    config = load_config(backend="remote", data_dir=tmp_path)
    assert RemoteBackend(LabContext(config)).endpoints() == {n: f"http://{n}.example:1" for n in remote}


def test_a_kafka_bootstrap_without_a_port_is_refused_in_one_line(tmp_path) -> None:
    ctx = LabContext.from_env(backend="remote", data_dir=tmp_path, remote_kafka_bootstrap="kafka.example")
    with pytest.raises(LabConfigError, match="LABKIT_REMOTE_KAFKA_BOOTSTRAP='kafka.example' is not a list") as refused:
        RemoteBackend(ctx).up()
    assert "\n" not in str(refused.value)


def test_a_lab_without_an_endpoint_for_a_service_names_the_setting(tmp_path) -> None:
    lab = Lab.from_env(backend="remote", data_dir=tmp_path, remote_s3_url="http://s3.example:9000")
    assert lab.endpoint("storage") == "http://s3.example:9000"
    with pytest.raises(LabConfigError, match="no endpoint for faas. Fix: set LABKIT_REMOTE_FAAS_URL"):
        lab.faas()
    # network faults act on the remote deployment's own Toxiproxy, when it has one
    with pytest.raises(LabConfigError, match="no endpoint for toxiproxy. Fix: set LABKIT_REMOTE_TOXIPROXY_URL"):
        lab.toxiproxy()
    with pytest.raises(LabConfigError, match="Unknown service 'kafak'"):
        lab.endpoint("kafak")
