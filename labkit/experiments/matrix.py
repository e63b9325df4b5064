"""The fault matrix: break every service and every hop during load, and show nothing is lost.

Each case runs an open-loop load on the real pipeline while one thing goes wrong:

- **process faults**: ``kill -9`` of one service (both store gateways, Kafka, Node-RED,
  the FaaS runner, the mail sink), which is started again after ``down_s``. The webhook
  endpoint is a route of Node-RED, so Node-RED's row covers it; the ``store-webhook`` hop's
  row covers the endpoint being unreachable while Node-RED runs;
- **network faults** on each hop through Toxiproxy: ``latency_ms`` of latency for
  ``latency_s``, then a blackhole (a silent, open connection) for ``blackhole_s``;
- **an ordinary restart** of the whole stack (``labkit down`` then ``up``, data kept): the
  ``restart`` fault kind on the target ``stack``.

Every case is an experiment (:func:`labkit.experiments.run.run_experiment`) whose faults run
on a schedule during the load; each fault's kind (:mod:`labkit.experiments.faults`) knows how
to inject, clear and describe it. After the load the pipeline drains, reconciliation
republishes whatever the store's best-effort events dropped (and re-records resized images
that lost their metrics line), and every upload is classified (:func:`labkit.experiments.run.classify`). A case passes when
nothing is ``lost`` or ``pending``. Each case also records two recovery times, both from the
moment the fault ended (the service was healthy again, or the toxic was removed):

- ``recovery_s``: until the first image uploaded after that moment was done (end to end).
  The load keeps running until that happens (or the scale's ``recovery_timeout_s`` passes:
  then the row says ``recovered`` False and ``waited_s`` how long it waited), so a slow
  machine makes a case longer, never unmeasured;
- ``backlog_s``: until the last image uploaded before that moment was done, without
  reconciliation (images only reconciliation brought back are counted in ``reconciled``).

Two scales: ``ci`` (4 images/s, every case; a few minutes) and ``full`` (10 images/s, the load
running at least 10 s past each fault; the figures in ``docs/reliability.md``).

Example:
    >>> matrix = run_fault_matrix(lab, "ci", "runs")       # doctest: +SKIP
    >>> matrix.summary[["case", "lost", "recovery_s"]]      # doctest: +SKIP
"""

from __future__ import annotations

import io
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from labkit.analysis.results import STATUSES
from labkit.core.files import atomic_write
from labkit.core.runs import new_run_dir, run_id, save_tables
from labkit.errors import LabConfigError
from labkit.experiments.faults import HOPS, STACK, Fault, as_spec, describe, kind_of
from labkit.experiments.run import (
    ExperimentSpec,
    UntilRecovered,
    load_spec,
    run_experiment,
)
from labkit.experiments.runs import lab_metadata
from labkit.pipeline.fate import Fate
from labkit.stack.lab import Lab
from labkit.stack.services import CRASH_TESTED

# Services killed in turn, as each service's module declares (`crash_tested`). Toxiproxy is not
# one: it is the fault tool itself, and killing it is a blackhole on every hop.
PROCESS_TARGETS = CRASH_TESTED
RESTART_CASE = "restart-stack"
SUMMARY_COLUMNS = ("case", "fault", "kind", "target", "uploaded", *STATUSES, "duplicates",
                   "reconciled", "recovered", "recovery_s", "waited_s", "backlog_s", "fault_s", "passed")
# How long a down-and-up of the whole stack is planned to take (the load's image cap allows for it).
RESTART_ALLOWANCE_S = 10.0
# Images the drain waits for once the load is over, at most (bounded, whatever the fault).
DRAIN_TIMEOUT_S = 180.0


@dataclass(frozen=True)
class MatrixScale:
    """How big each case is. Times count from the load's start. After the fault the load runs until
    an image sent after it has come through and at least ``tail_s``, at most ``recovery_timeout_s``."""

    rate_per_s: float
    fault_at_s: float
    down_s: float  # a killed service stays down this long
    latency_ms: int
    latency_s: float
    blackhole_s: float
    tail_s: float
    recovery_timeout_s: float  # the longest the load runs past the fault's end, waiting for recovery

    def duration_s(self, fault_end_s: float) -> float:
        """The longest the load of a case whose fault is planned to end ``fault_end_s`` after its
        start may run (a fault that ends late, like a slow restart, shortens the wait)."""
        return fault_end_s + self.recovery_timeout_s

    def images(self, fault_end_s: float) -> int:
        """The image cap of such a load: room for Poisson arrivals to run ahead of the mean."""
        return math.ceil(1.5 * self.rate_per_s * self.duration_s(fault_end_s))

    def until_recovered(self) -> UntilRecovered:
        return UntilRecovered(timeout_s=self.recovery_timeout_s, tail_s=self.tail_s)


SCALES: dict[str, MatrixScale] = {
    "ci": MatrixScale(rate_per_s=4, fault_at_s=1.0, down_s=3.0, latency_ms=2000, latency_s=2.0, blackhole_s=6.0,
                      tail_s=0.0, recovery_timeout_s=120.0),
    "full": MatrixScale(rate_per_s=10, fault_at_s=5.0, down_s=5.0, latency_ms=2000, latency_s=5.0, blackhole_s=10.0,
                        tail_s=10.0, recovery_timeout_s=180.0),
}


@dataclass(frozen=True)
class Case:
    """One row of the matrix: a name, what breaks (its faults' family and target), and the faults."""

    name: str
    kind: str  # the faults' family: process, network or restart
    target: str
    faults: list[dict] = field(default_factory=list)
    fault_end_s: float = 0.0
    description: str = ""

    @classmethod
    def of(cls, name: str, faults: Sequence[Fault]) -> Case:
        """The case that runs ``faults`` (all on one target); its kind and description come from the faults' kinds."""
        return cls(name, kind_of(faults[0].kind).family, faults[0].target, [as_spec(f) for f in faults],
                   max(f.at_s + f.duration_s for f in faults), describe(faults))


def cases(scale: MatrixScale, only: Sequence[str] | None = None) -> list[Case]:
    """The matrix's cases at ``scale`` (all of them, or those named in ``only``).

    Raises:
        LabConfigError: ``only`` names an unknown case (the message lists them).
    """
    t0 = scale.fault_at_s
    every = [Case.of(f"kill-{svc}", [Fault("kill", svc, t0, scale.down_s)]) for svc in PROCESS_TARGETS]
    black_at = t0 + scale.latency_s + 0.5  # the latency toxic is gone before the blackhole goes on
    every += [Case.of(f"{hop}-latency-blackhole",
                      [Fault("latency", hop, t0, scale.latency_s, {"latency_ms": scale.latency_ms}),
                       Fault("timeout", hop, black_at, scale.blackhole_s, {"timeout_ms": 0})])
              for hop in HOPS]
    every.append(Case.of(RESTART_CASE, [Fault("restart", STACK, t0, RESTART_ALLOWANCE_S)]))
    if not only:
        return every
    names = {c.name for c in every}
    unknown = [n for n in only if n not in names]
    if unknown:
        raise LabConfigError(f"unknown fault-matrix case(s) {', '.join(unknown)}. Valid: {', '.join(sorted(names))}.")
    return [c for c in every if c.name in only]


def case_spec(case: Case, scale: MatrixScale, seed: int) -> ExperimentSpec:
    """The experiment that runs ``case``: open-loop load, its faults, default retry, reconciliation on."""
    return load_spec({
        "name": f"matrix-{case.name}", "description": f"{case.kind} fault: {case.name}",
        "load": {"kind": "open", "rate_per_s": scale.rate_per_s, "images": scale.images(case.fault_end_s),
                 "max_duration_s": scale.duration_s(case.fault_end_s), "sizes": [[800, 600], [1280, 960]]},
        "faults": case.faults, "fault_label": case.name, "retry": "exponential", "reconcile": True,
        "seed": seed, "drain_timeout_s": DRAIN_TIMEOUT_S, "until_recovered": scale.until_recovered().model_dump()})


@dataclass
class MatrixRun:
    """A finished fault matrix: one summary row per case, every image's fate, and where they were saved."""

    scale: str
    run_dir: Path
    summary: pd.DataFrame
    results: pd.DataFrame
    plot: Path

    @property
    def passed(self) -> bool:
        """Nothing lost, nothing pending, and recovered, in every case."""
        return bool(self.summary["passed"].all())


def run_fault_matrix(lab: Lab, scale: str | MatrixScale, out_dir: str | Path, *, only: Sequence[str] | None = None,
                     seed: int = 0, progress: bool = True,
                     on_case: Callable[[Case, dict], None] | None = None) -> MatrixRun:
    """Run every case of the matrix on the running lab and save ``summary.csv``, ``results.csv``,
    ``env.json`` and ``recovery.png`` under ``out_dir/fault-matrix-<scale>-<time>/``.

    Args:
        lab: The running lab, pipeline stood up or not (each case stands it up).
        scale: ``ci``, ``full`` or a :class:`MatrixScale`.
        out_dir: Where the run directory goes.
        only: Case names to run (default: all).
        seed: Seeds the images and arrivals of the first case (each case adds its index).
        progress: Show each load's progress bar.
        on_case: Called with each case and its summary row as it finishes.

    Raises:
        LabConfigError: An unknown scale or case.
        ServiceError: A service refused, or did not come back after its fault.
    """
    name, scale = _scale(scale)
    chosen = cases(scale, only)
    started = datetime.now(UTC)
    run_dir = new_run_dir(out_dir, f"fault-matrix-{name}-{run_id(started)}")
    rows, frames = [], []
    for i, case in enumerate(chosen):
        results, windows, recovery = _run_case(lab, case, scale, seed + i, run_dir / "parts", progress)
        row = summarize(case, results, windows, recovery)
        rows.append(row)
        frames.append(results)
        if on_case is not None:
            on_case(case, row)
    summary = pd.DataFrame(rows, columns=list(SUMMARY_COLUMNS))
    results = pd.concat(frames, ignore_index=True)
    env = lab_metadata(lab, started, datetime.now(UTC), seed=seed, labels={"experiment": "fault-matrix"},
                       parameters={"scale": name, **scale.__dict__, "cases": [c.name for c in chosen]})
    save_tables(run_dir, {"summary": summary, "results": results}, env)
    plot = recovery_plot(summary, run_dir / "recovery.png")
    return MatrixRun(name, run_dir, summary, results, plot)


def _scale(scale: str | MatrixScale) -> tuple[str, MatrixScale]:
    if isinstance(scale, MatrixScale):
        return "custom", scale
    if scale not in SCALES:
        raise LabConfigError(f"unknown fault-matrix scale {scale!r}. Valid: {', '.join(SCALES)}.")
    return scale, SCALES[scale]


def _run_case(lab: Lab, case: Case, scale: MatrixScale, seed: int, parts: Path,
              progress: bool) -> tuple[pd.DataFrame, list[dict], dict]:
    """One case, as an experiment: its faults run on a schedule during the load, whatever their kind."""
    run = run_experiment(lab, case_spec(case, scale, seed), parts, progress=progress)
    return run.results, run.env["fault_windows"], run.env["recovery"][0]


def summarize(case: Case, results: pd.DataFrame, windows: Sequence[dict], recovery: dict) -> dict:
    """One summary row: where the case's images went, and how long the pipeline took to recover."""
    counts = results["status"].value_counts()
    ends = [w["end_ms"] for w in windows if w.get("end_ms") is not None]
    starts = [w["start_ms"] for w in windows if w.get("start_ms") is not None]
    fault_end = max(ends) if ends else np.nan
    ok = results[results["status"] == Fate.RESIZED]
    after = ok[ok["t_upload_start"] >= fault_end]
    before = ok[(ok["t_upload_start"] < fault_end) & ~ok["reconciled"].astype(bool)]
    lost, pending, recovered = int(counts.get("lost", 0)), int(counts.get("pending", 0)), bool(recovery["recovered"])
    return {"case": case.name, "fault": case.description, "kind": case.kind, "target": case.target, "uploaded": len(results),
            **{status: int(counts.get(status, 0)) for status in STATUSES},
            "duplicates": int(results["duplicates"].fillna(0).sum()), "reconciled": int(results["reconciled"].sum()),
            "recovered": recovered, "waited_s": recovery["waited_s"],
            "recovery_s": _seconds(after["t_done"].min() - fault_end) if len(after) else np.nan,
            "backlog_s": _seconds(max(0.0, before["t_done"].max() - fault_end)) if len(before) else np.nan,
            "fault_s": _seconds(fault_end - min(starts)) if starts and ends else np.nan,
            "passed": lost == 0 and pending == 0 and recovered}


def case_label(row) -> str:
    """A case's name, with what went wrong: images lost, or no recovery within the wait."""
    marks = [f"{row.lost} lost"] if row.lost else []
    if not row.recovered:
        marks.append(f"not recovered in {row.waited_s:g} s")
    return f"{row.case}  ✗ {', '.join(marks)}" if marks else row.case


def _seconds(ms: float) -> float:
    return round(float(ms) / 1000, 2)


def recovery_plot(summary: pd.DataFrame, path: Path) -> Path:
    """Horizontal bars per case: recovery and backlog times; lost images marked in red."""
    frame = summary.iloc[::-1]
    fig = Figure(figsize=(8, 0.42 * len(frame) + 1.4))
    ax = fig.subplots()
    y = np.arange(len(frame))
    ax.barh(y + 0.2, frame["backlog_s"].fillna(0), height=0.4, color="tab:orange", label="backlog cleared (s)")
    ax.barh(y - 0.2, frame["recovery_s"].fillna(0), height=0.4, color="tab:blue", label="first new image done (s)")
    labels = [case_label(row) for row in frame.itertuples(index=False)]
    ax.set_yticks(y, labels)
    for tick, row in zip(ax.get_yticklabels(), frame.itertuples(index=False), strict=True):
        tick.set_color("black" if row.passed else "tab:red")
    ax.set_xlabel("seconds after the fault ended")
    ax.set_title("Fault matrix: time to recover, per case (nothing lost, all recovered unless marked)")
    ax.legend(loc="lower right")
    fig.tight_layout()
    png = io.BytesIO()
    fig.savefig(png, format="png", dpi=110)
    return atomic_write(path, png.getvalue(), mode=0o644)


def markdown_table(summary: pd.DataFrame) -> str:
    """The summary as a Markdown table, for ``docs/reliability.md``."""
    columns = {"case": "case", "fault": "fault", "uploaded": "uploaded", "resized": "resized",
               "dead_lettered": "dead-lettered", "refused": "refused",
               "lost": "lost", "duplicates": "duplicates", "reconciled": "reconciled", "recovery_s": "recovery (s)",
               "backlog_s": "backlog (s)"}
    lines = ["| " + " | ".join(columns.values()) + " |", "|" + "---|" * len(columns)]
    for full, row in zip(summary.itertuples(index=False), summary[list(columns)].itertuples(index=False), strict=True):
        cells = ["–" if isinstance(v, float) and math.isnan(v) else str(v) for v in row]
        if not full.recovered:
            cells[list(columns).index("recovery_s")] = f"not recovered after {full.waited_s:g} s"
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


DOC_START, DOC_END = "<!-- fault-matrix results: start -->", "<!-- fault-matrix results: end -->"


def write_doc(run: MatrixRun, path: Path) -> Path:
    """Put ``run``'s table (and its plot, copied beside ``path``) between the markers in ``path``.

    Raises:
        LabConfigError: ``path`` exists but lacks the two markers.
    """
    plot = path.parent / "img" / f"fault-matrix-{run.scale}.png"
    plot.parent.mkdir(parents=True, exist_ok=True)
    plot.write_bytes(run.plot.read_bytes())
    when = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    block = (f"{DOC_START}\n_Scale `{run.scale}`, run {run.run_dir.name}, {when}; "
             f"{'nothing lost' if run.passed else 'IMAGES LOST'}._\n\n{markdown_table(run.summary)}\n\n"
             f"![recovery per case]({plot.relative_to(path.parent).as_posix()})\n{DOC_END}")
    text = path.read_text() if path.exists() else f"# Reliability\n\n{DOC_START}\n{DOC_END}\n"
    if DOC_START not in text or DOC_END not in text:
        raise LabConfigError(f"{path} has no '{DOC_START}' ... '{DOC_END}' markers. Fix: add them where the "
                             "results table should go.")
    head, rest = text.split(DOC_START, 1)
    path.write_text(head + block + rest.split(DOC_END, 1)[1])
    return path
