"""Failure injection: process faults on any service, network faults on any hop.

A *process fault* acts on a service's processes through the backend: ``stop`` (a clean
shutdown), ``kill`` (``kill -9``, like a crash) or ``pause`` (``SIGSTOP``: the process
is there, holds its ports and connections, and answers nothing). A *network fault*
degrades one hop of the pipeline with a Toxiproxy toxic on the hop's proxy (named
after the hop, see :mod:`labkit.stack.hops`); the services at both ends keep running.

Every fault in force is written to ``<data_dir>/faults.json`` until it is cleared, so
a kernel that dies mid-experiment leaves a record; :func:`repair` (run by every
``labkit up``) undoes whatever such a kernel left behind.

Example:
    >>> with FaultInjector(lab) as faults:                                  # doctest: +SKIP
    ...     faults.inject(Fault("latency", "nodered-faas", params={"latency_ms": 2000}))
    ...     push(lab, images)
    >>> schedule = FaultInjector(lab).run_schedule(                          # doctest: +SKIP
    ...     [Fault("pause", "kafka", at_s=5, duration_s=10)])
    >>> schedule.wait().pipe(print)                                          # doctest: +SKIP
"""

from __future__ import annotations

import atexit
import contextlib
import fcntl
import itertools
import json
import os
import sys
import threading
import time
import uuid
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pandas as pd

from labkit.errors import LabConfigError, LabError, ServiceError
from labkit.stack.readiness import poll_until
from labkit.stack.services import SERVICE_NAMES
from labkit.stack.services.toxiproxy import ToxiproxyClient

if TYPE_CHECKING:
    from labkit.stack.lab import Lab

# Every hop of the pipeline runs through a Toxiproxy proxy of this name (see labkit.stack.hops).
HOPS = ("client-store", "store-kafka", "nodered-faas", "action-store", "store-webhook")
PROCESS_FAULTS = ("stop", "kill", "pause")
NETWORK_FAULTS = ("latency", "timeout", "reset_peer", "bandwidth")


@dataclass(frozen=True)
class Fault:
    """One fault: what (``kind``), where (``target``: a service for process faults, a hop for
    network faults), when (``at_s`` after the schedule starts) and for how long (``duration_s``).

    ``params`` holds a network fault's attributes, e.g. ``{"latency_ms": 2000, "jitter_ms": 200}``,
    ``{"timeout_ms": 0}`` (blackhole), ``{"rate_kbps": 64}``.
    """

    kind: str
    target: str
    at_s: float = 0.0
    duration_s: float = 5.0
    params: dict[str, Any] = field(default_factory=dict)


# A network fault's parameters and their defaults. Every kind also takes ``toxicity``
# (0..1: the share of connections the toxic applies to).
NETWORK_PARAMS: dict[str, dict[str, float]] = {
    "latency": {"latency_ms": 1000, "jitter_ms": 0},
    "timeout": {"timeout_ms": 0},  # 0: a blackhole, the connection stays open and silent
    "reset_peer": {"timeout_ms": 0},  # reset the connection this long after the first byte
    "bandwidth": {"rate_kbps": 512},  # kilobits per second
}
# Which way each toxic acts. "upstream" is the request (or event) on its way to the service,
# "downstream" the answer. Latency delays the request: the service then does its work late,
# which is what the pipeline's timestamps see. A blackhole must stop traffic both ways.
STREAMS: dict[str, tuple[str, ...]] = {
    "latency": ("upstream",),
    "timeout": ("upstream", "downstream"),
    "reset_peer": ("upstream",),
    "bandwidth": ("upstream", "downstream"),
}
TOXIC_PREFIX = "labkit-"
FAULTS_FILE = "faults.json"
MIN_RATE_KBPS = 8  # Toxiproxy's rate is whole kilobytes per second


def toxic_name(kind: str, stream: str) -> str:
    """The name of the toxic a network fault adds, e.g. ``labkit-latency-upstream``."""
    return f"{TOXIC_PREFIX}{kind}-{stream}"


def label(fault: Fault) -> str:
    """A short name for tables and plots, e.g. ``latency@nodered-faas``."""
    return f"{fault.kind}@{fault.target}"


# ---------------------------------------------------------------- validation


def validate(fault: Fault) -> Fault:
    """Check a fault before anything is done with it; return it unchanged.

    Raises:
        LabConfigError: an unknown kind or target (the message lists the valid ones), a
            process fault on a hop or a network fault on a service, a negative time, or
            a bad parameter.
    """
    kinds = PROCESS_FAULTS + NETWORK_FAULTS
    if fault.kind not in kinds:
        raise LabConfigError(f"Unknown fault kind {fault.kind!r}. Valid kinds: {', '.join(kinds)} "
                             f"(process faults: {', '.join(PROCESS_FAULTS)}; network faults: {', '.join(NETWORK_FAULTS)}).")
    _check_target(fault)
    if fault.at_s < 0 or fault.duration_s < 0:
        raise LabConfigError(f"{label(fault)}: at_s and duration_s must not be negative, got at_s={fault.at_s}, "
                             f"duration_s={fault.duration_s}.")
    _check_params(fault)
    return fault


def _check_target(fault: Fault) -> None:
    if fault.kind in PROCESS_FAULTS and fault.target not in SERVICE_NAMES:
        hint = " That is a hop: use a network fault on it." if fault.target in HOPS else ""
        raise LabConfigError(f"Process fault {fault.kind!r} needs a service, got {fault.target!r}.{hint} "
                             f"Valid services: {', '.join(SERVICE_NAMES)}.")
    if fault.kind in NETWORK_FAULTS and fault.target not in HOPS:
        hint = " That is a service: use a process fault on it." if fault.target in SERVICE_NAMES else ""
        raise LabConfigError(f"Network fault {fault.kind!r} needs a hop, got {fault.target!r}.{hint} "
                             f"Valid hops: {', '.join(HOPS)}.")


def _check_params(fault: Fault) -> None:
    if fault.kind in PROCESS_FAULTS:
        if fault.params:
            raise LabConfigError(f"{label(fault)}: process faults take no params, got {sorted(fault.params)}.")
        return
    valid = {**NETWORK_PARAMS[fault.kind], "toxicity": 1.0}
    unknown = sorted(set(fault.params) - set(valid))
    if unknown:
        raise LabConfigError(f"{label(fault)}: unknown params {unknown}. Valid params of {fault.kind}: "
                             f"{', '.join(valid)}.")
    values = {**valid, **fault.params}
    bad = [k for k, v in values.items() if not isinstance(v, int | float) or isinstance(v, bool) or v < 0]
    if bad:
        raise LabConfigError(f"{label(fault)}: {', '.join(bad)} must be numbers >= 0, got "
                             f"{ {k: values[k] for k in bad} }.")
    if values["toxicity"] > 1:
        raise LabConfigError(f"{label(fault)}: toxicity is a share of connections, 0..1; got {values['toxicity']}.")
    if fault.kind == "bandwidth" and values["rate_kbps"] < MIN_RATE_KBPS:
        raise LabConfigError(f"{label(fault)}: rate_kbps must be at least {MIN_RATE_KBPS} (Toxiproxy limits in "
                             f"whole kilobytes per second), got {values['rate_kbps']}.")


def toxic_attributes(fault: Fault) -> dict[str, int]:
    """The Toxiproxy attributes of a network fault, defaults filled in."""
    p = {**NETWORK_PARAMS[fault.kind], **fault.params}
    if fault.kind == "latency":
        return {"latency": round(p["latency_ms"]), "jitter": round(p["jitter_ms"])}
    if fault.kind == "bandwidth":
        return {"rate": max(1, round(p["rate_kbps"] / 8))}  # Toxiproxy's rate is in KB/s
    return {"timeout": round(p["timeout_ms"])}


# ---------------------------------------------------------------- faults.json


class FaultFile:
    """``<data_dir>/faults.json``: the faults in force, one entry each, written atomically.

    Entries are read and written under an exclusive ``flock``, so injectors in other
    threads and processes (a notebook and its control panel, a test's subprocess) share it.
    """

    def __init__(self, data_dir: Path):
        self.path = Path(data_dir) / FAULTS_FILE

    @contextmanager
    def _locked(self) -> Iterator[None]:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.path.with_suffix(".lock"), "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            yield

    def entries(self) -> list[dict]:
        """The recorded faults (an unreadable file counts as empty)."""
        try:
            entries = json.loads(self.path.read_text())
            return entries if isinstance(entries, list) else []
        except (FileNotFoundError, ValueError):
            return []

    def _write(self, entries: list[dict]) -> None:
        tmp = self.path.with_suffix(f".{os.getpid()}.tmp")
        tmp.write_text(json.dumps(entries, indent=1))
        tmp.replace(self.path)  # atomic: a crash never leaves half a file

    def add(self, fault: Fault) -> None:
        with self._locked():
            entry = {**asdict(fault), "id": uuid.uuid4().hex[:12], "pid": os.getpid(),
                     "injected_ms": round(time.time() * 1000)}
            self._write([*self.entries(), entry])

    def remove(self, fault: Fault) -> None:
        """Forget every entry of ``fault``'s kind on its target."""
        with self._locked():
            self._write([e for e in self.entries() if (e["kind"], e["target"]) != (fault.kind, fault.target)])

    def empty(self) -> None:
        with self._locked():
            self._write([])


def _fault(entry: dict) -> Fault:
    return Fault(entry["kind"], entry["target"], entry.get("at_s", 0.0), entry.get("duration_s", 5.0),
                 entry.get("params") or {})


# ---------------------------------------------------------------- the injector


class FaultInjector:
    """Starts and ends faults on one lab; the faults in force are shared through ``faults.json``.

    Example:
        >>> with FaultInjector(lab) as faults:      # doctest: +SKIP
        ...     faults.inject(Fault("pause", "kafka"))
    """

    def __init__(self, lab: Lab):
        self.lab = lab
        self.file = FaultFile(lab.ctx.config.data_dir)
        _AT_EXIT[self.file.path] = self

    # -- the verbs -----------------------------------------------------------
    def inject(self, fault: Fault) -> Fault:
        """Start ``fault`` now (``at_s`` and ``duration_s`` are for schedules); it lasts until cleared.

        Injecting a fault that is already in force is a no-op.

        Raises:
            LabConfigError: an invalid fault, or another fault of its kind already on its
                target (one process fault per service).
            ServiceError: the backend or Toxiproxy refused; nothing stays injected.
        """
        validate(fault)
        if self._already_active(fault):
            return fault
        self.file.add(fault)  # recorded first: a crash from here on leaves a trace for repair()
        try:
            self._network(fault) if fault.kind in NETWORK_FAULTS else self._process(fault)
        except BaseException:
            self._undo_quietly(fault)
            raise
        return fault

    def clear(self, fault: Fault) -> None:
        """End ``fault`` (matched by kind and target); clearing one that is not in force is harmless.

        ``stop``/``kill``: start the service again and wait until it is healthy; ``pause``:
        resume it; network faults: remove the hop's toxic.

        Raises:
            ServiceError: the service did not come back, or Toxiproxy refused.
        """
        validate(fault)
        self._undo(fault)
        self.file.remove(fault)

    def clear_all(self) -> None:
        """End every fault in force on this lab, whoever injected it, newest first.

        Raises:
            ServiceError: some faults could not be cleared (each is tried; the message names them).
        """
        failed = []
        for fault in reversed(self.active()):
            try:
                self.clear(fault)
            except LabError as e:
                failed.append(f"{label(fault)}: {e}")
        if failed:
            raise ServiceError(f"Could not clear {len(failed)} fault(s): {'; '.join(failed)}. "
                               "Hint: `labkit up` repairs what is left.")

    def active(self) -> list[Fault]:
        """The faults in force on this lab, oldest first (from ``faults.json``)."""
        return [_fault(e) for e in self.file.entries()]

    def run_schedule(self, faults: Iterable[Fault], t0: float | None = None) -> Schedule:
        """Run a fault schedule in a background thread: inject each fault ``at_s`` after ``t0``,
        clear it ``duration_s`` later. See :class:`Schedule`.

        Args:
            faults: The schedule; two faults of one kind on one target must not overlap.
            t0: Epoch seconds the ``at_s`` count from; default now.

        Raises:
            LabConfigError: an invalid fault, or overlapping faults on one target.
        """
        return Schedule(self, list(faults), time.time() if t0 is None else t0)

    def __enter__(self) -> FaultInjector:  # noqa: PYI034
        return self

    def __exit__(self, *exc: object) -> None:
        self.clear_all()

    # -- internals -----------------------------------------------------------
    def _already_active(self, fault: Fault) -> bool:
        for other in self.active():
            same_slot = other.target == fault.target and (
                other.kind == fault.kind or {other.kind, fault.kind} <= set(PROCESS_FAULTS))
            if not same_slot:
                continue
            if other.kind == fault.kind and other.params == fault.params:
                return True
            raise LabConfigError(f"{label(other)} {other.params or ''} is already in force on {fault.target}; "
                                 f"clear it before injecting {label(fault)}.")
        return False

    def _process(self, fault: Fault) -> None:
        getattr(self.lab.backend, fault.kind)(fault.target)

    def _network(self, fault: Fault) -> None:
        client = self.lab.toxiproxy()
        toxicity = float(fault.params.get("toxicity", 1.0))
        for stream in STREAMS[fault.kind]:
            client.add_toxic(fault.target, fault.kind, stream=stream, toxicity=toxicity,
                             name=toxic_name(fault.kind, stream), **toxic_attributes(fault))

    def _undo(self, fault: Fault, restart: bool = True) -> None:
        if fault.kind in NETWORK_FAULTS:
            self._remove_toxics(fault)
        elif fault.kind == "pause":
            self._resume(fault.target)
        elif restart:
            self.lab.backend.start(fault.target)
            self._wait_healthy(fault.target)

    def _undo_quietly(self, fault: Fault) -> None:
        """Best effort, after a failed inject: the inject's own error is the one to report."""
        with contextlib.suppress(Exception):
            self.clear(fault)

    def _remove_toxics(self, fault: Fault) -> None:
        client = self.lab.toxiproxy()
        try:
            present = {t["name"] for t in client.toxics(fault.target)}
        except ServiceError:
            if self._state("toxiproxy") == "down":
                return  # no Toxiproxy, no toxics: its proxies are made afresh when it starts
            raise
        for stream in STREAMS[fault.kind]:
            if toxic_name(fault.kind, stream) in present:
                client.remove_toxic(fault.target, toxic_name(fault.kind, stream))

    def _resume(self, service: str) -> None:
        if self._state(service) == "down":
            return  # stopped meanwhile: nothing is paused
        self.lab.backend.resume(service)
        self._wait_healthy(service)

    def _state(self, service: str) -> str:
        return next(s.state for s in self.lab.backend.status() if s.name == service)

    def _wait_healthy(self, service: str) -> None:
        timeout_s = self.lab.ctx.config.ready_timeout_s

        def healthy() -> bool:
            return next(s.healthy for s in self.lab.backend.status() if s.name == service)

        if poll_until(healthy, timeout_s, 0.5) != "ready":
            raise ServiceError(f"{service} was not healthy {timeout_s:.0f} s after its fault was cleared. "
                               f"Hint: `labkit logs {service}`; `labkit restart {service}`.")

    def _clear_mine_at_exit(self) -> None:
        """Undo the faults this process injected. A stopped service is started again only
        while the rest of the lab runs (after ``lab.down()`` it stays down)."""
        mine = [_fault(e) for e in self.file.entries() if e.get("pid") == os.getpid()]
        if not mine:
            return
        try:
            lab_runs = any(s.state != "down" for s in self.lab.backend.status())
        except Exception:  # noqa: BLE001 - never fail the interpreter's exit
            lab_runs = False
        for fault in reversed(mine):
            try:
                self._undo(fault, restart=lab_runs)
                self.file.remove(fault)
            except Exception as e:  # noqa: BLE001 - never fail the interpreter's exit
                print(f"labkit: could not clear {label(fault)} at exit ({e}); `labkit up` repairs it",
                      file=sys.stderr)


# One injector per lab (data dir) in this process, to clean up after when the kernel exits.
_AT_EXIT: dict[Path, FaultInjector] = {}


@atexit.register
def _clear_at_exit() -> None:
    for injector in list(_AT_EXIT.values()):
        injector._clear_mine_at_exit()


# ---------------------------------------------------------------- schedules


class Schedule:
    """A fault schedule running in a background thread; made by :meth:`FaultInjector.run_schedule`.

    It ends after its last fault is cleared, or at :meth:`cancel`; either way nothing it
    injected stays in force. ``events`` says what happened when, to mark fault windows on plots.
    """

    def __init__(self, injector: FaultInjector, faults: list[Fault], t0: float):
        for fault in faults:
            validate(fault)
        _check_no_overlap(faults)
        self.injector, self.faults, self.t0 = injector, faults, t0
        self._events: list[dict] = []
        self._injected: list[Fault] = []
        self._error: BaseException | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="labkit-fault-schedule", daemon=True)
        self._thread.start()

    @property
    def end_s(self) -> float:
        """Seconds after ``t0`` when the last fault is cleared."""
        return max((f.at_s + f.duration_s for f in self.faults), default=0.0)

    @property
    def events(self) -> pd.DataFrame:
        """One row per action: ``fault`` (label), ``kind``, ``target``, ``action`` (inject or
        clear), ``t_ms`` (epoch milliseconds, like the metrics' stamps), ``error`` (None if it worked)."""
        return pd.DataFrame(list(self._events), columns=["fault", "kind", "target", "action", "t_ms", "error"])

    def windows(self) -> pd.DataFrame:
        """One row per injected fault: ``fault, kind, target, start_ms, end_ms`` (epoch ms; end is
        None while it is in force), for shading plots."""
        rows: list[dict] = []
        open_: dict[str, dict] = {}
        for e in list(self._events):
            if e["action"] == "inject" and e["error"] is None:
                open_[e["fault"]] = {k: e[k] for k in ("fault", "kind", "target")} | {"start_ms": e["t_ms"],
                                                                                      "end_ms": None}
                rows.append(open_[e["fault"]])
            elif e["action"] == "clear" and e["fault"] in open_:
                open_.pop(e["fault"])["end_ms"] = e["t_ms"]
        return pd.DataFrame(rows, columns=["fault", "kind", "target", "start_ms", "end_ms"])

    def done(self) -> bool:
        return not self._thread.is_alive()

    def wait(self, timeout_s: float | None = None) -> pd.DataFrame:
        """Block until the schedule has ended; return its ``events``.

        Args:
            timeout_s: Longest wait; default the schedule's remaining time plus a minute
                (for services to come back).

        Raises:
            ServiceError: a fault could not be injected or cleared (the schedule then stopped
                and cleared what it had injected), or the schedule did not end in time.
        """
        if timeout_s is None:
            timeout_s = max(0.0, self.t0 + self.end_s - time.time()) + 60.0
        self._thread.join(timeout_s)
        if self._thread.is_alive():
            raise ServiceError(f"The fault schedule was still running {timeout_s:.0f} s later "
                               f"(faults: {', '.join(map(label, self.faults))}). Hint: schedule.cancel() "
                               "ends it and clears its faults.")
        if self._error is not None:
            raise ServiceError(f"The fault schedule stopped early: {self._error}") from self._error
        return self.events

    def cancel(self) -> pd.DataFrame:
        """Stop the schedule now and clear whatever it injected; return its ``events``."""
        self._stop.set()
        self._thread.join()
        return self.events

    def _plan(self) -> list[tuple[float, str, Fault]]:
        steps = [(self.t0 + f.at_s, "inject", f) for f in self.faults]
        steps += [(self.t0 + f.at_s + f.duration_s, "clear", f) for f in self.faults]
        return sorted(steps, key=lambda s: (s[0], s[1] == "inject"))  # clears first on a tie

    def _run(self) -> None:
        try:
            for when, action, fault in self._plan():
                if self._stop.wait(max(0.0, when - time.time())):
                    break
                self._act(action, fault)
        except BaseException as e:  # noqa: BLE001 - kept for wait() to raise
            self._error = e
        finally:
            for fault in reversed(self._injected):
                try:
                    self._act("clear", fault)
                except BaseException as e:  # noqa: BLE001
                    self._error = self._error or e

    def _act(self, action: str, fault: Fault) -> None:
        event = {"fault": label(fault), "kind": fault.kind, "target": fault.target, "action": action,
                 "t_ms": round(time.time() * 1000), "error": None}
        try:
            if action == "inject":
                self.injector.inject(fault)
                self._injected.append(fault)
            else:
                self.injector.clear(fault)
                self._injected.remove(fault)
        except Exception as e:
            event["error"] = str(e)
            raise
        finally:
            self._events.append(event)


def shade(ax: Any, windows: pd.DataFrame, origin_ms: float = 0.0, colour: str = "tab:red") -> None:
    """Shade each fault window of :meth:`Schedule.windows` on a plot whose x axis is seconds
    after ``origin_ms`` (epoch ms); a window still open runs to the plot's right edge."""
    right_s = ax.get_xlim()[1]
    for i, w in enumerate(windows.itertuples()):
        end_s = right_s if pd.isna(w.end_ms) else (w.end_ms - origin_ms) / 1000
        ax.axvspan((w.start_ms - origin_ms) / 1000, end_s, color=colour, alpha=0.15, lw=0, zorder=0,
                   label=w.fault if i == 0 or w.fault not in windows.fault.iloc[:i].tolist() else None)


def _check_no_overlap(faults: list[Fault]) -> None:
    slots: dict[tuple[str, str], list[Fault]] = {}
    for f in faults:
        slot = ("process" if f.kind in PROCESS_FAULTS else f.kind, f.target)
        slots.setdefault(slot, []).append(f)
    for group in slots.values():
        group.sort(key=lambda f: f.at_s)
        for a, b in itertools.pairwise(group):
            if b.at_s < a.at_s + a.duration_s:
                raise LabConfigError(f"The schedule overlaps {label(a)} (at {a.at_s} s for {a.duration_s} s) and "
                                     f"{label(b)} (at {b.at_s} s) on one target; one must end before the other starts.")


# ---------------------------------------------------------------- repair


def repair(lab: Lab) -> list[str]:
    """Undo the faults a dead kernel left behind; see :func:`repair_state`."""
    return repair_state(lab.ctx.config.data_dir, lab.endpoints.get("toxiproxy"))


def repair_state(data_dir: Path, toxiproxy_url: str | None) -> list[str]:
    """Remove every ``labkit-*`` toxic from Toxiproxy's proxies and empty ``faults.json``.

    Called by ``labkit up`` before it starts anything. Paused services are resumed by the
    backend itself, and stopped or killed ones are started by ``up``. When Toxiproxy is
    not running there is no toxic to remove: its proxies are made afresh when it starts.

    Args:
        data_dir: The lab's data dir (where ``faults.json`` is).
        toxiproxy_url: Toxiproxy's API, or None when it is not running.

    Returns:
        One sentence per thing repaired (empty when nothing was left behind).
    """
    file = FaultFile(data_dir)
    done = [f"removed toxic {name} from hop {proxy}" for proxy, name in _remove_our_toxics(toxiproxy_url)]
    for entry in file.entries():
        if entry.get("kind") in PROCESS_FAULTS:
            fix = "resumed" if entry["kind"] == "pause" else "started again by up"
            done.append(f"{entry['kind']} of {entry.get('target')} was left in force: {fix}")
    if file.path.exists():
        file.empty()
    return done


def _remove_our_toxics(toxiproxy_url: str | None) -> list[tuple[str, str]]:
    if not toxiproxy_url:
        return []
    client = ToxiproxyClient(toxiproxy_url, timeout_s=2.0)
    try:
        proxies = client.proxies()
    except ServiceError:
        return []  # not answering: restarted by up, with fresh proxies
    removed = []
    for proxy, spec in proxies.items():
        for toxic in spec.get("toxics") or []:
            if toxic["name"].startswith(TOXIC_PREFIX):
                client.remove_toxic(proxy, toxic["name"])
                removed.append((proxy, toxic["name"]))
    return removed
