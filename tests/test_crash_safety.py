"""labkit's own state survives a killed ``labkit``: a `labkit up` SIGKILLed while it starts services,
a stale pid file, and a service killed -9 behind labkit's back are all repaired by the next
`labkit up`, with exactly one process per service; `labkit down` then leaves nothing.
So are the two narrow windows of a start: a kill before toxiproxy has created the hop proxies
(the next `up` redoes every survivor's provisioning), and a kill between spawning a service and
writing its pid file (the next `up` stops the process it cannot account for, found by its
working directory)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest

from labkit.stack.config import DEFAULT_PORTS
from labkit.stack.hops import HOPS
from labkit.stack.readiness import poll_until
from labkit.stack.services import SERVICE_NAMES
from labkit.stack.services.toxiproxy import ToxiproxyClient
from tests.conftest import lab_processes
from tests.test_lifecycle import LABKIT, lab_env, labkit

pytestmark = pytest.mark.stack  # every test runs a lab of its own



def records(data_dir: Path) -> dict[str, dict]:
    """The pid files labkit keeps: service name -> record."""
    return {p.stem: json.loads(p.read_text()) for p in (data_dir / "run").glob("*.json")}


def assert_healthy_one_process_per_service(data_dir: Path, env: dict[str, str]) -> dict[str, int]:
    """Every service up and healthy, one pid file each, and every lab process in a recorded
    service's process group (a duplicate started by an earlier, killed `labkit up` is not)."""
    rows = json.loads(labkit("status", "--json", env=env, check=True).stdout)
    assert {r["name"] for r in rows} == set(SERVICE_NAMES)
    assert all(r["state"] == "up" and r["healthy"] for r in rows), rows
    found = records(data_dir)
    assert set(found) == set(SERVICE_NAMES), sorted(found)
    leaders = {r["pid"] for r in found.values()}
    assert len(leaders) == len(found) and leaders == {r["pid"] for r in rows}
    for proc in lab_processes(data_dir):
        try:
            group = os.getpgid(proc.pid)
        except ProcessLookupError:
            continue
        assert group in leaders, f"pid {proc.pid} ({' '.join(proc.cmdline())[:200]}) belongs to no service"
    return {r["name"]: r["pid"] for r in rows}


def kill_what_we_started(data_dir: Path) -> None:
    """Last resort after a failed test: SIGKILL, by pid, the processes of this test's own lab."""
    for proc in lab_processes(data_dir):
        try:
            proc.kill()
        except psutil.Error:
            pass


def start_up_and_kill_when(data_dir: Path, env: dict[str, str], pid_file: str) -> None:
    """Run `labkit up` and SIGKILL it as soon as ``run/<pid_file>`` appears (that service just spawned)."""
    target = data_dir / "run" / pid_file
    interrupted = subprocess.Popen([*LABKIT, "up"], env={**os.environ, **env}, stdout=subprocess.DEVNULL,
                                   stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 120
        while not target.exists() and interrupted.poll() is None and time.monotonic() < deadline:
            time.sleep(0.02)
        assert target.exists() and interrupted.poll() is None, f"`labkit up` never spawned {pid_file}"
    finally:
        interrupted.send_signal(signal.SIGKILL)  # mid-start: some services ready, some starting, some not yet
        interrupted.wait(10)
    assert lab_processes(data_dir), "the killed `labkit up` had started nothing: the test tests nothing"


@pytest.fixture()
def env(tmp_path: Path, ports) -> Iterator[dict[str, str]]:
    """A lab of its own for each test; whatever a test leaves, this stops, and checks nothing is left."""
    env = lab_env(tmp_path, ports.offset("crash"))
    try:
        yield env
    finally:
        labkit("down", env=env)
        kill_what_we_started(tmp_path)
    assert lab_processes(tmp_path) == []


def test_killed_up_is_repaired_by_the_next_up(tmp_path: Path, env: dict[str, str]) -> None:
    # storage-out is the last service spawned (second wave, after storage): killed then, the first
    # wave is up and storage and storage-out are starting. (Not mid-spawn: see the orphan test below.)
    start_up_and_kill_when(tmp_path, env, "storage-out.json")
    labkit("up", env=env, check=True)
    pids = assert_healthy_one_process_per_service(tmp_path, env)

    # kill -9 a service behind labkit's back (its pid file stays): the next `up` restarts it
    os.killpg(pids["nodered"], signal.SIGKILL)
    labkit("up", env=env, check=True)
    after = assert_healthy_one_process_per_service(tmp_path, env)
    assert after["nodered"] != pids["nodered"]
    assert {k: v for k, v in after.items() if k != "nodered"} == {k: v for k, v in pids.items() if k != "nodered"}

    labkit("down", env=env, check=True)
    assert lab_processes(tmp_path) == [] and records(tmp_path) == {}


def test_up_killed_before_the_hops_exist_is_repaired_by_the_next_up(tmp_path: Path, env: dict[str, str]) -> None:
    # nodered is the first wave's last spawn; toxiproxy's on_ready (the proxies) runs only after
    # mail and toxiproxy are ready, so a kill now lands before it
    start_up_and_kill_when(tmp_path, env, "nodered.json")
    # Which side of the race the kill landed on varies by a few ms; make it the same every run:
    # toxiproxy running with no proxies is exactly the state a kill before its on_ready leaves.
    toxiproxy = ToxiproxyClient(f"http://127.0.0.1:{DEFAULT_PORTS['toxiproxy'] + int(env['LABKIT_PORT_OFFSET'])}")
    assert poll_until(lambda: _answers(toxiproxy), timeout_s=10, interval_s=0.1) == "ready"
    for name in toxiproxy.proxies():
        toxiproxy.http.delete(f"/proxies/{name}")
    labkit("up", env=env, check=True)
    assert_healthy_one_process_per_service(tmp_path, env)
    assert set(toxiproxy.proxies()) == {h.name for h in HOPS}


def test_a_service_whose_pid_file_was_never_written_is_not_duplicated(tmp_path: Path, env: dict[str, str]) -> None:
    labkit("up", env=env, check=True)
    # the state a kill between spawn and save leaves: the service runs, its pid file does not exist
    (tmp_path / "run" / "nodered.json").unlink()
    labkit("up", env=env, check=True)
    assert_healthy_one_process_per_service(tmp_path, env)


def _answers(client: ToxiproxyClient) -> bool:
    try:
        client.proxies()
        return True
    except Exception:  # noqa: BLE001 - not up yet
        return False


def test_stale_pid_files_are_cleared_by_up(tmp_path: Path, env: dict[str, str]) -> None:
    gone = subprocess.Popen(["true"])
    gone.wait()
    stale = {"pid": gone.pid, "create_time": time.time() - 3600, "cmd": ["true"], "ports": {}, "version": "stale",
             "started_at": time.time() - 3600}
    (tmp_path / "run").mkdir(parents=True)
    for name in SERVICE_NAMES:
        (tmp_path / "run" / f"{name}.json").write_text(json.dumps({"name": name, **stale}))
    labkit("up", env=env, check=True)
    pids = assert_healthy_one_process_per_service(tmp_path, env)
    assert gone.pid not in pids.values()
    assert all(r["version"] != "stale" for r in records(tmp_path).values())
    labkit("down", env=env, check=True)
    assert lab_processes(tmp_path) == [] and records(tmp_path) == {}
