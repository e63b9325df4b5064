"""Fault injection on the session's real stack: every fault is observed, then undone.

Network faults are checked with HTTP requests through a hop's proxy (HTTPS, with the lab's CA,
on the hops that carry credentials); process faults
on ``mail`` (it restarts in well under a second). Every test clears its faults in ``finally``
(the ``faults`` fixture), so a failing test leaves the stack as it found it.
"""

from __future__ import annotations

import contextlib
import json
import statistics
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from typing import Any

import httpx
import psutil
import pytest

from labkit.errors import LabConfigError, ServiceError
from labkit.experiments.faults import (
    FAULTS_FILE,
    HOPS,
    NETWORK_FAULTS,
    PROCESS_FAULTS,
    Fault,
    FaultInjector,
    repair,
    validate,
)
from labkit.stack import hops
from labkit.stack.lab import Lab
from tests.support import poll

pytestmark = pytest.mark.stack

HOP = "nodered-faas"  # Node-RED -> faas: a GET of the FaaS API through it answers in milliseconds
BIG_HOP, BIG_PATH = "store-webhook", "/red/style.min.css"  # Node-RED's editor stylesheet, ~300 KB
SMALL_PATH = "/red/images/node-red.svg"  # Node-RED's logo, ~3 KB, on the same hop
SERVICE = "mail"



@pytest.fixture()
def faults(lab: Lab) -> Iterator[FaultInjector]:
    injector = FaultInjector(lab)
    try:
        yield injector
    finally:
        injector.clear_all()
        assert injector.active() == []


def through(lab: Lab, hop: str, path: str = "/api/v1", timeout_s: float = 5.0) -> float:
    """Seconds one GET through ``hop``'s proxy takes (a fresh connection each time)."""
    started = time.monotonic()
    httpx.get(lab.backend.hop_url(hop) + path, timeout=timeout_s, verify=lab.verify).raise_for_status()
    return time.monotonic() - started


def median_through(lab: Lab, hop: str, n: int = 3, **kwargs: Any) -> float:
    return statistics.median(through(lab, hop, **kwargs) for _ in range(n))


def state(lab: Lab, service: str) -> tuple[str, bool, int | None]:
    row = next(s for s in lab.backend.status() if s.name == service)
    return row.state, row.healthy, row.pid


def recorded(lab: Lab) -> list[dict]:
    path = lab.ctx.config.data_dir / FAULTS_FILE
    return json.loads(path.read_text()) if path.exists() else []


# ---------------------------------------------------------------- network faults


def test_hops_are_the_pipelines_hops():
    assert HOPS == hops.HOP_NAMES


def test_latency_slows_a_request_by_about_the_latency(lab, faults):
    before = median_through(lab, HOP)
    fault = faults.inject(Fault("latency", HOP, params={"latency_ms": 400}))
    assert [t["name"] for t in lab.toxiproxy().toxics(HOP)] == ["labkit-latency-upstream"]
    assert [e["kind"] for e in recorded(lab)] == ["latency"]
    slowed = median_through(lab, HOP)
    faults.clear(fault)
    after = median_through(lab, HOP)
    # Each fresh connection sends upstream twice over TLS (its ClientHello, then its Finished
    # with the request), once over plain HTTP: each pays the latency.
    flights = 2 if hops.hop(HOP).secure(lab.ctx.config) else 1
    assert 0.35 * flights <= slowed - before <= 0.4 * flights + 0.25, (before, slowed)
    assert after < before + 0.15 and recorded(lab) == [] and lab.toxiproxy().toxics(HOP) == []


def test_blackhole_stops_traffic_both_ways_until_cleared(lab, faults):
    fault = faults.inject(Fault("timeout", HOP, params={"timeout_ms": 0}))
    assert {t["stream"] for t in lab.toxiproxy().toxics(HOP)} == {"upstream", "downstream"}
    with pytest.raises(httpx.TimeoutException):
        through(lab, HOP, timeout_s=1.0)
    faults.clear(fault)
    assert through(lab, HOP) < 1.0


def test_timeout_closes_the_connection_after_timeout_ms(lab, faults):
    faults.inject(Fault("timeout", HOP, params={"timeout_ms": 500}))
    started = time.monotonic()
    with pytest.raises(httpx.TransportError) as caught:
        through(lab, HOP, timeout_s=5.0)
    assert not isinstance(caught.value, httpx.TimeoutException)  # closed by the proxy, not our timeout
    assert 0.4 <= time.monotonic() - started < 2.0


def test_reset_peer_resets_the_connection(lab, faults):
    fault = faults.inject(Fault("reset_peer", HOP))
    with pytest.raises((httpx.ReadError, httpx.RemoteProtocolError, httpx.ConnectError)):
        through(lab, HOP)
    faults.clear(fault)
    assert through(lab, HOP) < 1.0


def test_bandwidth_limits_a_download(lab, faults):
    size = len(httpx.get(lab.backend.hop_url(BIG_HOP) + BIG_PATH, timeout=10, verify=lab.verify).content)
    before = through(lab, BIG_HOP, BIG_PATH)
    rate_kbps = round(size * 8 / 1000 / 1.0)  # about one second for the whole file
    faults.inject(Fault("bandwidth", BIG_HOP, params={"rate_kbps": rate_kbps}))
    limited = through(lab, BIG_HOP, BIG_PATH, timeout_s=10)
    # about a second at the limited rate, whatever the machine's own pace (``before``)
    assert 0.7 <= limited <= 3.0 + before and limited >= before + 0.5, (size, before, limited)


def test_limit_data_cuts_a_long_answer_and_lets_a_short_one_through(lab, faults):
    fault = faults.inject(Fault("limit_data", BIG_HOP, params={"limit_bytes": 65_536}))
    assert sorted(t["name"] for t in lab.toxiproxy().toxics(BIG_HOP)) == [
        "labkit-limit_data-downstream", "labkit-limit_data-upstream"]
    through(lab, BIG_HOP, SMALL_PATH)  # about 3 KB: whole
    with pytest.raises(httpx.RemoteProtocolError, match="without sending complete message body"):
        through(lab, BIG_HOP, BIG_PATH)  # about 300 KB: cut after 64 KB
    faults.clear(fault)
    assert through(lab, BIG_HOP, BIG_PATH) < 1.0 and lab.toxiproxy().toxics(BIG_HOP) == []


def test_one_fault_of_a_kind_per_target(lab, faults):
    fault = Fault("latency", HOP, params={"latency_ms": 100})
    faults.inject(fault)
    faults.inject(fault)  # the same again: a no-op
    with pytest.raises(LabConfigError, match="already in force"):
        faults.inject(Fault("latency", HOP, params={"latency_ms": 300}))
    assert len(faults.active()) == 1 and len(lab.toxiproxy().toxics(HOP)) == 1


# ---------------------------------------------------------------- process faults


def test_pause_fails_the_health_probe_and_clear_resumes(lab, faults):
    fault = faults.inject(Fault("pause", SERVICE))
    assert state(lab, SERVICE)[:2] == ("paused", False)
    faults.clear(fault)
    assert state(lab, SERVICE)[:2] == ("up", True)


@pytest.mark.parametrize("kind", ["kill", "stop"])
def test_kill_and_stop_end_the_process_and_clear_restarts_it(lab, faults, kind):
    _, _, pid = state(lab, SERVICE)
    fault = faults.inject(Fault(kind, SERVICE))
    assert not psutil.pid_exists(pid) or psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    assert state(lab, SERVICE)[:2] == ("down", False)
    faults.clear(fault)
    new_state, healthy, new_pid = state(lab, SERVICE)
    assert (new_state, healthy) == ("up", True) and new_pid != pid


# ---------------------------------------------------------------- schedules


def test_schedule_runs_on_time_and_leaves_nothing_active(lab, faults):
    t0 = time.time()
    schedule = faults.run_schedule([Fault("latency", HOP, at_s=0.5, duration_s=1.0, params={"latency_ms": 200}),
                                    Fault("pause", SERVICE, at_s=1.5, duration_s=1.0)], t0=t0)
    time.sleep(1.0)
    assert [t["name"] for t in lab.toxiproxy().toxics(HOP)] == ["labkit-latency-upstream"]
    events = schedule.wait(timeout_s=30)
    assert list(zip(events["fault"], events["action"])) == [
        ("latency@nodered-faas", "inject"), ("latency@nodered-faas", "clear"),
        ("pause@mail", "inject"), ("pause@mail", "clear")]
    offsets_s = (events["t_ms"] / 1000 - t0).tolist()
    assert offsets_s[0] == pytest.approx(0.5, abs=0.3) and offsets_s[2] == pytest.approx(1.5, abs=0.4)
    assert events["error"].isna().all()
    windows = schedule.windows()
    assert (windows["end_ms"] > windows["start_ms"]).all() and len(windows) == 2
    assert faults.active() == [] and lab.toxiproxy().toxics(HOP) == [] and state(lab, SERVICE)[:2] == ("up", True)


def test_cancel_clears_what_the_schedule_injected(lab, faults):
    schedule = faults.run_schedule([Fault("timeout", HOP, duration_s=60)])
    poll("the schedule's toxic", lambda: lab.toxiproxy().toxics(HOP), timeout_s=5)
    events = schedule.cancel()
    assert events["action"].tolist() == ["inject", "clear"]
    assert schedule.done() and faults.active() == [] and lab.toxiproxy().toxics(HOP) == []


def test_a_schedule_must_not_overlap_on_one_target(lab):
    with pytest.raises(LabConfigError, match="overlaps"):
        FaultInjector(lab).run_schedule([Fault("pause", SERVICE, at_s=0, duration_s=5),
                                         Fault("stop", SERVICE, at_s=2, duration_s=5)])


# ---------------------------------------------------------------- validation


@pytest.mark.parametrize(("fault", "names"), [
    (Fault("explode", HOP), [*PROCESS_FAULTS, *NETWORK_FAULTS]),
    (Fault("latency", "nowhere"), list(HOPS)),
    (Fault("pause", "nowhere"), ["kafka", "storage-out", "toxiproxy"]),
    (Fault("pause", HOP), ["needs a service", "kafka"]),
    (Fault("latency", "kafka"), ["needs a hop", *HOPS]),
    (Fault("latency", HOP, params={"delay_ms": 5}), ["latency_ms", "jitter_ms"]),
    (Fault("latency", HOP, params={"latency_ms": -5}), ["latency_ms", ">= 0"]),
    (Fault("latency", HOP, at_s=-1), ["negative"]),
    (Fault("pause", SERVICE, duration_s=-2), ["negative"]),
    (Fault("bandwidth", HOP, params={"rate_kbps": 2}), ["at least 8"]),
    (Fault("stop", SERVICE, params={"latency_ms": 1}), ["no params"]),
])
def test_invalid_faults_name_the_valid_choices(fault, names):
    with pytest.raises(LabConfigError) as caught:
        validate(fault)
    assert all(name in str(caught.value) for name in names), str(caught.value)


# ---------------------------------------------------------------- crash safety


def test_repair_removes_our_toxics_and_empties_the_record(lab):
    FaultInjector(lab).inject(Fault("latency", HOP, params={"latency_ms": 50}))
    assert repair(lab) == ["removed toxic labkit-latency-upstream from hop nodered-faas"]
    assert lab.toxiproxy().toxics(HOP) == [] and recorded(lab) == []


def test_up_repairs_what_a_dead_kernel_left_behind(lab):
    """A kernel injects a toxic and pauses a service, then dies without cleaning up."""
    config = lab.ctx.config
    script = textwrap.dedent(f"""
        import os
        from labkit.experiments.faults import Fault, FaultInjector
        from labkit.stack.lab import Lab
        lab = Lab.from_env(data_dir={str(config.data_dir)!r}, port_offset={config.port_offset})
        faults = FaultInjector(lab)
        faults.inject(Fault("latency", {HOP!r}, params={{"latency_ms": 3000}}))
        faults.inject(Fault("pause", {SERVICE!r}))
        os._exit(1)  # no atexit, no finally: a dead kernel
    """)
    try:
        dead = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60, check=False)
        assert dead.returncode == 1, dead.stderr
        assert lab.toxiproxy().toxics(HOP) and state(lab, SERVICE)[0] == "paused"
        assert {e["kind"] for e in recorded(lab)} == {"latency", "pause"}
        lab.up()
        assert lab.toxiproxy().toxics(HOP) == []
        assert state(lab, SERVICE)[:2] == ("up", True)
        assert recorded(lab) == []
    finally:
        FaultInjector(lab).clear_all()
        with contextlib.suppress(ServiceError):
            lab.backend.resume(SERVICE)
