"""Fault schedules: inject each fault at its time, clear it after its duration, in a background thread."""

from __future__ import annotations

import itertools
import threading
import time
from typing import Protocol

import pandas as pd

from labkit.errors import LabConfigError, ServiceError
from labkit.experiments.faults.kinds import kind_of, validate
from labkit.experiments.faults.model import Fault, label

EVENT_COLUMNS = ["fault", "kind", "target", "action", "t_ms", "error"]
WINDOW_COLUMNS = ["fault", "kind", "target", "start_ms", "end_ms"]


class Injector(Protocol):
    """What a schedule needs of :class:`~labkit.experiments.faults.injector.FaultInjector`."""

    def inject(self, fault: Fault) -> Fault: ...

    def clear(self, fault: Fault) -> None: ...


class Schedule:
    """A fault schedule running in a background thread; made by :meth:`FaultInjector.run_schedule`.

    It ends after its last fault is cleared, or at :meth:`cancel`; either way nothing it
    injected stays in force. ``events`` says what happened when, to mark fault windows on plots.
    """

    def __init__(self, injector: Injector, faults: list[Fault], t0: float):
        for fault in faults:
            validate(fault)
        check_no_overlap(faults)
        self.injector, self.faults, self.t0 = injector, faults, t0
        self._events: list[dict] = []
        self._injected: list[Fault] = []
        self._error: BaseException | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="labkit-fault-schedule", daemon=True)
        self._thread.start()

    @property
    def end_s(self) -> float:
        """Seconds after ``t0`` when the last fault is planned to be cleared."""
        return max((f.at_s + f.duration_s for f in self.faults), default=0.0)

    @property
    def events(self) -> pd.DataFrame:
        """One row per action: ``fault`` (label), ``kind``, ``target``, ``action`` (inject or
        clear), ``t_ms`` (epoch milliseconds, like the metrics' stamps), ``error`` (None if it worked)."""
        return pd.DataFrame(list(self._events), columns=EVENT_COLUMNS)

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
        return pd.DataFrame(rows, columns=WINDOW_COLUMNS)

    def done(self) -> bool:
        return not self._thread.is_alive()

    def wait(self, timeout_s: float | None = None) -> pd.DataFrame:
        """Block until the schedule has ended; return its ``events``.

        Args:
            timeout_s: Longest wait; default the schedule's remaining time plus its kinds'
                slack (a minute, for services to come back; longer for a stack restart).

        Raises:
            ServiceError: a fault could not be injected or cleared (the schedule then stopped
                and cleared what it had injected), or the schedule did not end in time.
        """
        if timeout_s is None:
            slack_s = max((kind_of(f.kind).slack_s for f in self.faults), default=60.0)
            timeout_s = max(0.0, self.t0 + self.end_s - time.time()) + slack_s
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

    def _run(self) -> None:
        try:
            for when, action, fault in plan(self.faults, self.t0):
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
        if action == "inject" and not kind_of(fault.kind).lasts:
            self._act("clear", fault)  # over already (a restart): its window ends now


def plan(faults: list[Fault], t0: float) -> list[tuple[float, str, Fault]]:
    """The schedule's steps ``(epoch s, "inject" or "clear", fault)`` in order; clears come first on
    a tie. A kind that does not last gets no planned clear: it is cleared as soon as it is injected."""
    steps = [(t0 + f.at_s, "inject", f) for f in faults]
    steps += [(t0 + f.at_s + f.duration_s, "clear", f) for f in faults if kind_of(f.kind).lasts]
    return sorted(steps, key=lambda s: (s[0], s[1] == "inject"))


def check_no_overlap(faults: list[Fault]) -> None:
    """Raises:
        LabConfigError: two faults in one slot (one target) overlap in time.
    """
    slots: dict[tuple[str, str], list[Fault]] = {}
    for f in faults:
        slots.setdefault(kind_of(f.kind).slot(f), []).append(f)
    for group in slots.values():
        group.sort(key=lambda f: f.at_s)
        for a, b in itertools.pairwise(group):
            if b.at_s < a.at_s + a.duration_s:
                raise LabConfigError(f"The schedule overlaps {label(a)} (at {a.at_s} s for {a.duration_s} s) and "
                                     f"{label(b)} (at {b.at_s} s) on one target; one must end before the other starts.")
