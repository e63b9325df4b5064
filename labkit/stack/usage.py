"""What each service's processes cost the machine: CPU time and memory, over its process tree.

A native service is the process group ``labkit`` started (its leader's pid is the group id),
plus whatever its leader forked; the FaaS runner's action workers are its children. A
service's CPU time counts its live processes and the children they have already reaped, so
an action worker the pool retires mid-phase is not lost. Other backends have no local
processes: their services are absent here.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterable, Mapping
from dataclasses import replace
from typing import Any

import psutil

from labkit.stack.backends.base import ServiceStatus

LOAD_CLIENT = "load client"
WORKERS_SUFFIX = " workers"
STATUS_SAMPLE_S = 0.5
# Services whose leader does different work from its children: the FaaS runner and its action
# workers. Elsewhere a leader's children are the same service (a launcher and its server).
SPLIT_WORKERS = ("faas",)


def service_pids(backend: Any) -> dict[str, int]:
    """The leader pid of each running native service; empty for a backend without local processes."""
    services = getattr(backend, "services", None) or {}
    return {name: record.pid for name, service in services.items() if (record := service.record()) is not None}


def process_tree(leader: int) -> tuple[psutil.Process | None, list[psutil.Process]]:
    """A service's leader and the rest of its tree (its process group and the leader's descendants)."""
    try:
        head = psutil.Process(leader)
        rest = {p.pid: p for p in head.children(recursive=True)}
    except psutil.Error:
        return None, []
    for proc in psutil.process_iter(["pid"]):
        try:
            if proc.pid != leader and proc.pid not in rest and os.getpgid(proc.pid) == leader:
                rest[proc.pid] = proc
        except (ProcessLookupError, psutil.Error):
            continue
    return head, list(rest.values())


def _cpu_s(proc: psutil.Process, reaped: bool = True) -> float:
    try:
        t = proc.cpu_times()
    except psutil.Error:
        return 0.0
    return t.user + t.system + ((t.children_user + t.children_system) if reaped else 0.0)


def cpu_seconds(pids: Mapping[str, int], client_pid: int | None = None) -> dict[str, float]:
    """CPU seconds used so far by each service's tree (with the children it reaped); for the
    services of :data:`SPLIT_WORKERS` the leader under its name and the rest under ``"<name> workers"``;
    the load client (``client_pid``, itself only)."""
    used: dict[str, float] = {}
    for name, leader in pids.items():
        head, rest = process_tree(leader)
        if head is None:
            continue
        tree_s = sum(_cpu_s(p) for p in rest) + _cpu_s(head)
        if name in SPLIT_WORKERS:
            used[name] = _cpu_s(head, reaped=False)
            used[name + WORKERS_SUFFIX] = tree_s - used[name]
        else:
            used[name] = tree_s
    if client_pid is not None:
        used[LOAD_CLIENT] = _cpu_s(psutil.Process(client_pid), reaped=False)
    return used


def cpu_per_image_ms(before: Mapping[str, float], after: Mapping[str, float], images: int) -> dict[str, float]:
    """CPU ms per image of each process between two :func:`cpu_seconds` samples; zero rows dropped
    (a service with no worker processes has no workers row), and ``"all"`` their sum."""
    if images <= 0:
        return {}
    rows = {name: round((after[name] - before.get(name, 0.0)) * 1000 / images, 2) for name in after}
    rows = {name: ms for name, ms in rows.items() if ms > 0 or not name.endswith(WORKERS_SUFFIX)}
    rows["all"] = round(sum(rows.values()), 2)
    return rows


def rss_mb(leader: int) -> float:
    """Resident memory of a service's whole tree, MB."""
    head, rest = process_tree(leader)
    total = 0
    for proc in ([head] if head else []) + rest:
        try:
            total += proc.memory_info().rss
        except psutil.Error:
            continue
    return round(total / 2**20, 1)


def footprint(pids: Mapping[str, int], sample_s: float = STATUS_SAMPLE_S) -> dict[str, dict[str, float]]:
    """Each service's RSS (MB, its tree) and CPU (% of one core over ``sample_s``, its tree)."""
    before = cpu_seconds(pids)
    time.sleep(sample_s)
    after = cpu_seconds(pids)
    usage = {}
    for name, leader in pids.items():
        if name not in after:
            continue
        used_s = sum(after[k] - before.get(k, after[k]) for k in (name, name + WORKERS_SUFFIX) if k in after)
        usage[name] = {"rss_mb": rss_mb(leader), "cpu_pct": round(max(used_s, 0.0) / sample_s * 100, 1)}
    return usage


def with_usage(backend: Any, rows: Iterable[ServiceStatus], sample_s: float = STATUS_SAMPLE_S) -> list[ServiceStatus]:
    """``rows`` with ``rss_mb`` and ``cpu_pct`` filled in for each running native service."""
    usage = footprint(service_pids(backend), sample_s)
    return [replace(row, **usage[row.name]) if row.name in usage else row for row in rows]
