"""Graders for the course's exercises in real code, beside :mod:`labkit.teaching.exercises` (the page
rule of notebook 09).

**The hook.** The student writes a plain function in the notebook's exercise cell and passes it to
a ``check_*`` function here; labkit calls it on made-up corner cases and on the data the notebook
has just measured on the real pipeline, and compares each answer with labkit's own analysis. No
student code edits labkit, and labkit never imports the student's notebook.

Example:
    >>> def sla_verdict(latencies_s, threshold_s=10.0, target=0.99, confidence=0.95):
    ...     return "PASS"
    >>> grade = check_sla_verdict(sla_verdict)
    >>> grade.passed
    False
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

import numpy as np

from labkit.analysis.stats import clopper_pearson
from labkit.analysis.verdicts import n_needed


@dataclass(frozen=True)
class VerdictCase:
    """A sample of latencies (NaN: the image never finished), the clause's parameters, the verdict
    labkit reaches, and a hint for a wrong answer."""

    latencies_s: tuple[float, ...]
    threshold_s: float
    expected: str
    hint: str
    source: str = "made up"
    target: float = 0.99
    confidence: float = 0.95

    def describe(self) -> str:
        x = np.asarray(self.latencies_s, dtype=float)
        late = int(np.sum(~(x <= self.threshold_s)))
        return f"{len(x)} images, {late} late or unfinished, threshold {self.threshold_s:g} s ({self.source})"


@dataclass(frozen=True)
class VerdictGrade:
    """``score`` of ``out_of`` cases right; ``wrong`` holds each missed case with the answer given;
    ``done`` is what a full score says."""

    score: int
    out_of: int
    wrong: list[tuple] = field(default_factory=list)
    done: str = "Your verdicts are labkit's, on made-up samples and on this run's."

    @property
    def passed(self) -> bool:
        return self.score == self.out_of

    @property
    def feedback(self) -> str:
        """Markdown: the score, and each distinct hint once with one example case."""
        lines = [f"**{self.score} of {self.out_of} cases right.**"]
        if self.passed:
            return f"{lines[0]} {self.done}"
        hints: dict[str, tuple] = {}
        for case, answer in self.wrong:
            hints.setdefault(case.hint, (case, answer))
        lines += [f"- {case.describe()}: you answered `{answer!r}`, labkit says `{case.expected}`. {hint}"
                  for hint, (case, answer) in hints.items()]
        return "\n".join(lines)


def reference_verdict(latencies_s: Iterable[float], threshold_s: float = 10.0, target: float = 0.99,
                      confidence: float = 0.95) -> str:
    """labkit's verdict on the latency clause (as :func:`labkit.analysis.sla.compliance`): PASS when
    the one-sided Clopper–Pearson lower bound reaches the target, FAIL when the share is below it."""
    x = np.asarray(list(latencies_s), dtype=float)
    n, within = len(x), int(np.sum(x <= threshold_s))
    if n == 0:
        return "INCONCLUSIVE"
    if clopper_pearson(within, n, confidence)[0] >= target:
        return "PASS"
    return "FAIL" if within / n < target else "INCONCLUSIVE"


def _case(latencies: list[float], hint: str, threshold_s: float = 10.0, source: str = "made up") -> VerdictCase:
    return VerdictCase(tuple(latencies), threshold_s, reference_verdict(latencies, threshold_s), hint, source)


def made_up_verdict_cases() -> list[VerdictCase]:
    """The corners an SLA verdict must get right."""
    zero = n_needed(0, 0.99)  # 299
    one = n_needed(1, 0.99)
    nan = float("nan")
    return [
        _case([1.0] * 20, f"No image was late, but 20 images cannot show 99%: the 95% lower bound is "
              f"{clopper_pearson(20, 20)[0]:.3f}. With no violation it takes {zero} images."),
        _case([1.0] * (zero - 1), f"{zero - 1} perfect images give a lower bound of "
              f"{clopper_pearson(zero - 1, zero - 1)[0]:.6f}, still under 0.99: INCONCLUSIVE."),
        _case([1.0] * zero, f"{zero} perfect images give a lower bound of {clopper_pearson(zero, zero)[0]:.5f}, "
              "at least 0.99: the sample supports the clause, PASS."),
        _case([1.0] * 98 + [12.0, 15.0], "2 of 100 late is a share of 98%, below 99%: this sample breaks the clause, FAIL."),
        _case([1.0] * (zero + 1) + [nan], "An image that never finished (NaN) is a violation, not a missing value: "
              f"with one violation it takes {one} images to PASS."),
        _case([1.0] * one + [11.0], f"One violation among {one + 1}: the lower bound reaches 0.99, PASS. "
              "Use the Clopper–Pearson lower bound, not the observed share."),
        _case([10.0] * 300, "Exactly at the threshold is within it (latency <= threshold)."),
    ]


def measured_verdict_cases(latencies_s: Iterable[float], source: str = "this run") -> list[VerdictCase]:
    """The run's own sample, judged at the SLA's 10 s and at a threshold the run's median breaks."""
    x = [float(v) for v in latencies_s]
    finite = [v for v in x if not math.isnan(v)]
    cases = [_case(x, "This is your run's sample: count the images within the threshold and bound the share.",
                   10.0, source)]
    if finite:
        tight = float(np.median(finite))
        cases.append(_case(x, "At a threshold of the run's median, about half the images are late.", tight,
                           f"{source}, threshold at its median"))
    return cases


def check_sla_verdict(verdict: Callable[..., str], latencies_s: Iterable[float] = ()) -> VerdictGrade:
    """Grade ``verdict(latencies_s, threshold_s=..., target=..., confidence=...)``: does it return
    labkit's "PASS", "FAIL" or "INCONCLUSIVE" on every case?

    Args:
        verdict: The student's function.
        latencies_s: The run's end-to-end latencies (NaN for an image that never finished).
    """
    measured = [float(v) for v in latencies_s]
    cases = made_up_verdict_cases() + (measured_verdict_cases(measured) if measured else [])
    wrong = []
    for case in cases:
        try:
            answer = verdict(np.asarray(case.latencies_s, dtype=float), threshold_s=case.threshold_s,
                             target=case.target, confidence=case.confidence)
        except Exception as e:  # noqa: BLE001 - a crash is a wrong answer, with its message as feedback
            answer = f"{type(e).__name__}: {e}"
        if answer != case.expected:
            wrong.append((case, answer))
    return VerdictGrade(len(cases) - len(wrong), len(cases), wrong)


@dataclass(frozen=True)
class RecordCase:
    """An activation record, the times labkit reads from it, and a hint for a wrong answer."""

    record: dict
    expected: dict
    hint: str
    source: str = "made up"

    def describe(self) -> str:
        notes = {a["key"]: a["value"] for a in self.record.get("annotations", [])}
        return f"a record with duration {self.record.get('duration')} and annotations {notes} ({self.source})"


def reference_times(record: dict) -> dict:
    """The platform's times in one activation record (OpenWhisk's semantics, as
    :func:`labkit.pipeline.activations.activation_row` reads them): ``duration`` includes ``initTime``."""
    from labkit.pipeline.activations import activation_row

    row = activation_row(record)
    init_ms, wait_ms = float(row["init_ms"] or 0), float(row["wait_ms"] or 0)
    return {"cold": bool(row["cold"]), "wait_ms": wait_ms, "init_ms": init_ms,
            "run_ms": float(row["duration_ms"]) - init_ms, "total_ms": wait_ms + float(row["duration_ms"])}


def _record(duration: int, **notes: int) -> dict:
    return {"activationId": "made-up", "duration": duration, "response": {"status": "success"},
            "annotations": [{"key": "kind", "value": "python:3"}] + [{"key": k, "value": v} for k, v in notes.items()]}


def made_up_record_cases() -> list[RecordCase]:
    """The corners of reading an activation record."""
    cases = [
        (_record(900, waitTime=400, initTime=600), ("`duration` already includes `initTime`: the run is "
         "duration - initTime (here 300 ms), and the time in the platform is waitTime + duration.")),
        (_record(120, waitTime=15), "A warm call has no `initTime` annotation: it is not cold, and its init time is 0."),
        ({**_record(500, initTime=200, waitTime=50), "annotations": [{"key": "initTime", "value": 200},
                                                                       {"key": "waitTime", "value": 50}]},
         "Annotations are a list of {key, value}: look each key up, do not read them by position."),
        (_record(80), "A record without `waitTime` waited 0 ms, as far as it tells."),
    ]
    return [RecordCase(r, reference_times(r), hint) for r, hint in cases]


def _same(answer: object, expected: dict) -> bool:
    try:
        return all(k in answer and (answer[k] == v if isinstance(v, bool) else math.isclose(float(answer[k]), v))
                   for k, v in expected.items())
    except (TypeError, ValueError):
        return False


def check_platform_times(times: Callable[[dict], dict], records: Iterable[dict] = ()) -> VerdictGrade:
    """Grade ``times(record)``: does it return labkit's ``cold``, ``wait_ms``, ``init_ms``, ``run_ms``
    and ``total_ms`` for made-up records and for the activation records the notebook just fetched?"""
    cases = made_up_record_cases() + [RecordCase(r, reference_times(r), "This is one of your own calls: "
                                                 "read its annotations and its duration.", "this notebook's call")
                                      for r in records]
    wrong = []
    for case in cases:
        try:
            answer = times(case.record)
        except Exception as e:  # noqa: BLE001 - a crash is a wrong answer, with its message as feedback
            answer = f"{type(e).__name__}: {e}"
        if not _same(answer, case.expected):
            wrong.append((case, answer))
    return VerdictGrade(len(cases) - len(wrong), len(cases), wrong,
                        "You read activation records as labkit does, the made-up ones and your own calls.")


@dataclass(frozen=True)
class ProbeCase:
    """One service's probes in time order (True: up), their spacing, labkit's ``(outages,
    downtime_s)``, and a hint for a wrong answer."""

    ok: tuple[bool, ...]
    spacing_s: float
    expected: tuple[int, float]
    hint: str
    source: str = "made up"

    def describe(self) -> str:
        shown = "".join("+" if up else "x" for up in self.ok[:60]) + ("..." if len(self.ok) > 60 else "")
        return f"probes `{shown or '(none)'}` every {self.spacing_s:g} s ({self.source})"


def reference_outages(ok: Iterable[bool], spacing_s: float) -> tuple[int, float]:
    """labkit's count of outages (runs of failed probes) and downtime, as :func:`labkit.analysis.uptime.outages`."""
    import pandas as pd

    from labkit.analysis.uptime import outages

    ok = [bool(v) for v in ok]
    probes = pd.DataFrame({"service": "s", "t_ms": [i * spacing_s * 1000 for i in range(len(ok))], "ok": ok})
    cut = outages(probes, "s") if ok else pd.DataFrame({"downtime_s": []})
    return len(cut), round(float(cut["downtime_s"].sum()), 9)


def _probe_case(ok: str, hint: str, spacing_s: float = 0.5) -> ProbeCase:
    flags = tuple(c == "+" for c in ok)
    return ProbeCase(flags, spacing_s, reference_outages(flags, spacing_s), hint)


def made_up_probe_cases() -> list[ProbeCase]:
    """The corners of counting outages from probes."""
    return [
        _probe_case("++++++", "Every probe up: no outage, no downtime."),
        _probe_case("+xx+x+", "Consecutive failed probes are one outage (probes inside one outage are not "
                    "independent): here 2 outages, 3 failed probes of 0.5 s each."),
        _probe_case("xx++", "An outage that is already on at the first probe still counts."),
        _probe_case("++xxx", "An outage still on at the last probe still counts."),
        _probe_case("xxxx", "All probes down is one outage as long as the window.", spacing_s=2.0),
        _probe_case("", "No probes: nothing seen, (0, 0.0)."),
    ]


def check_outages(count: Callable[[list[bool], float], tuple[int, float]], probes=None) -> VerdictGrade:
    """Grade ``count(ok, spacing_s) -> (outages, downtime_s)`` on made-up probes and on each
    service of a run's probes table (``service``, ``t_ms``, ``ok``)."""
    cases = made_up_probe_cases()
    if probes is not None and len(probes):
        from labkit.analysis.uptime import probe_spacing_s

        spacing = probe_spacing_s(probes)
        for service, group in probes.sort_values("t_ms").groupby("service", sort=False):
            flags = tuple(bool(v) for v in group["ok"])
            cases.append(ProbeCase(flags, spacing, reference_outages(flags, spacing),
                                   "These are this run's probes of one service.", f"this run, {service}"))
    wrong = []
    for case in cases:
        try:
            answer = count(list(case.ok), case.spacing_s)
            right = int(answer[0]) == case.expected[0] and math.isclose(float(answer[1]), case.expected[1],
                                                                           abs_tol=1e-6)
        except Exception as e:  # noqa: BLE001 - a crash is a wrong answer, with its message as feedback
            answer, right = f"{type(e).__name__}: {e}", False
        if not right:
            wrong.append((case, answer))
    return VerdictGrade(len(cases) - len(wrong), len(cases), wrong,
                        "You count outages and downtime as the SLA report does.")
