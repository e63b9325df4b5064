"""Retry policies compared under one fault: repeated, interleaved, and counted by the attempts they made.

:func:`compare_policies` runs the same experiment (a load and a fault schedule, see
:mod:`labkit.experiments.spec`) once per retry policy and repetition, the policies
interleaved within each repetition so that drift on a shared machine hits every arm. Each
run is the usual skeleton (stand the pipeline up with the policy, drive the load while the
faults run, settle: drain, reconcile if asked, classify), without the health prober and
with one restore of the default policy at the end, so a comparison stays short.

The result keeps one row per image with the attempts the flow made for it, read from its
metrics line: ``upload_attempts`` (Node-RED -> store) and ``invoke_attempts`` (Node-RED ->
FaaS; 0 for an image whose event never reached the flow). :meth:`PolicyComparison.per_run`
turns them into one row per run: where the images went, how many invoke requests were sent,
and the *amplification*, requests per image uploaded (1.0 when nothing was retried).

Example:
    >>> study = compare_policies(lab, spec, ["none", "exponential"], 3, "runs")  # doctest: +SKIP
    >>> study.per_run()[["policy", "repetition", "resized", "amplification"]]  # doctest: +SKIP
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pandas as pd

from labkit.core.runs import new_run_dir, run_id, save_tables
from labkit.errors import LabConfigError
from labkit.experiments.faults import FaultInjector
from labkit.experiments.run import run_repetition
from labkit.experiments.runs import lab_metadata
from labkit.experiments.spec import ExperimentSpec, load_spec
from labkit.pipeline import deploy as pipeline
from labkit.pipeline.fate import Fate
from labkit.pipeline.metrics import lab_metrics
from labkit.stack.lab import Lab

ATTEMPT_COLUMNS = ("upload_attempts", "invoke_attempts")
# One row per run of :meth:`PolicyComparison.per_run`.
RUN_COLUMNS = ("policy", "repetition", "images", "resized", "dead_lettered", "lost", "republished",
               "retried", "max_invoke_attempts", "requests", "amplification")


@dataclass
class PolicyComparison:
    """A finished comparison: every image of every run, the fault windows, where they were saved.

    Attributes:
        results: One row per image (the experiments' result columns, ``policy`` and
            ``repetition`` among them) with ``upload_attempts`` and ``invoke_attempts``.
        windows: One row per injected fault: ``policy``, ``repetition``, ``start_ms``, ``end_ms``, ...
        policies: The policies' names, in the order they ran.
        repetitions: Runs per policy.
        run_dir: Holds ``results.csv``, ``windows.csv``, ``runs.csv`` and ``env.json``.
    """

    results: pd.DataFrame
    windows: pd.DataFrame
    policies: list[str]
    repetitions: int
    run_dir: Path

    def per_run(self) -> pd.DataFrame:
        """One row per run (:data:`RUN_COLUMNS`): counts by fate, retried images, and load amplification.

        ``requests`` is every invoke the flow sent (the sum of ``invoke_attempts``);
        ``amplification`` is ``requests / images``; ``retried`` counts images with more than
        one invoke or upload attempt.
        """
        rows = [_run_row(policy, repetition, part)
                for (policy, repetition), part in self.results.groupby(["policy", "repetition"], sort=False)]
        frame = pd.DataFrame(rows, columns=list(RUN_COLUMNS))
        order = {p: i for i, p in enumerate(self.policies)}
        return frame.sort_values(["policy", "repetition"], key=lambda s: s.map(order) if s.name == "policy" else s,
                                 ignore_index=True)

    def before_fault_end_s(self) -> pd.Series:
        """Per image: seconds from the flow's first invoke to the end of its run's fault (the
        last window's end); negative for an image first invoked after the fault was over."""
        ends = self.windows.groupby(["policy", "repetition"])["end_ms"].max().rename("fault_end_ms")
        ended = self.results.join(ends, on=["policy", "repetition"])
        return (ended["fault_end_ms"] - ended["t_invoke_start"]) / 1000

    def summary(self) -> pd.DataFrame:
        """Per policy: the median of each per-run figure, and its range over the repetitions."""
        runs = self.per_run()
        figures = [c for c in RUN_COLUMNS if c not in ("policy", "repetition")]
        grouped = runs.groupby("policy", sort=False)[figures]
        table = grouped.median().join(grouped.min().add_suffix("_min")).join(grouped.max().add_suffix("_max"))
        table.insert(0, "runs", grouped.size())
        return table.reindex(self.policies)


def _run_row(policy: str, repetition: int, part: pd.DataFrame) -> dict:
    counts = part["status"].value_counts()
    invokes = part["invoke_attempts"].fillna(0)
    retried = (invokes > 1) | (part["upload_attempts"].fillna(1) > 1)
    requests = int(invokes.sum())
    return {"policy": policy, "repetition": int(repetition), "images": len(part),
            "resized": int(counts.get(Fate.RESIZED.value, 0)), "dead_lettered": int(counts.get(Fate.DEAD_LETTERED.value, 0)),
            "lost": int(counts.get(Fate.LOST.value, 0)), "republished": int(part["reconciled"].astype(bool).sum()),
            "retried": int(retried.sum()), "max_invoke_attempts": int(invokes.max()) if len(part) else 0,
            "requests": requests, "amplification": requests / len(part) if len(part) else np.nan}


def compare_policies(lab: Lab, base: ExperimentSpec | Mapping | str | os.PathLike, policies: Sequence[str],
                     repetitions: int, out_dir: str | os.PathLike, *, progress: bool = False) -> PolicyComparison:
    """Run ``base`` (an open-loop load and its faults) for each policy, ``repetitions`` times, interleaved.

    Repetition ``r`` uses seed ``base.seed + r`` for every policy, so within a repetition the
    policies see the same images at the same arrival times. Whatever happens, every fault is
    cleared and the pipeline's default policy is restored before this returns or raises.

    Args:
        lab: The running lab.
        base: The experiment; its ``retry`` is replaced by each policy (a preset name).
        policies: Retry presets (``none``, ``fixed``, ``exponential``).
        repetitions: Runs per policy (at least 1).
        out_dir: Where the run directory goes.
        progress: Show each load's progress bar.

    Raises:
        LabConfigError: An invalid experiment or policy, or a closed-loop load.
        ServiceError: A service refused; a fault could not be injected or cleared.
    """
    base = load_spec(base)
    specs = {p: load_spec({**base.model_dump(), "retry": p, "policy_label": p}) for p in policies}
    if base.load.kind != "open" or repetitions < 1:
        raise LabConfigError("compare_policies needs an open-loop load and at least one repetition. "
                             "Fix: load.kind: open, repetitions >= 1.")
    started = datetime.now(UTC)
    stamp = run_id(started)
    injector = FaultInjector(lab)
    frames, windows = [], []
    try:
        for repetition in range(repetitions):
            for name, spec in specs.items():
                results, faults = _one_run(lab, spec, repetition, f"exp/{base.name}/{stamp}/{name}/r{repetition}/",
                                           injector, progress)
                frames.append(results)
                windows.append(faults.assign(policy=name, repetition=repetition))
    finally:
        try:
            injector.clear_all()
        finally:
            pipeline.stand_up(lab)  # the default policy again
    results = with_attempts(pd.concat(frames, ignore_index=True), lab_metrics(lab))
    study = PolicyComparison(results, pd.concat(windows, ignore_index=True), list(policies), repetitions,
                             new_run_dir(out_dir, f"{base.name}-policies-{stamp}"))
    env = lab_metadata(lab, started, datetime.now(UTC), seed=base.seed, labels={"experiment": base.name},
                       parameters={"base": base.model_dump(mode="json"), "policies": list(policies),
                                   "repetitions": repetitions})
    save_tables(study.run_dir, {"results": results, "windows": study.windows, "runs": study.per_run()}, env)
    return study


def _one_run(lab: Lab, spec: ExperimentSpec, repetition: int, prefix: str, injector: FaultInjector,
             progress: bool) -> tuple[pd.DataFrame, pd.DataFrame]:
    """One run: stand up with the policy, then the experiments' repetition (load under the fault
    schedule, settle); the results and fault windows."""
    pipeline.stand_up(lab, spec.sla_threshold_s, spec.max_inflight, retry=spec.retry)
    run = run_repetition(lab, spec, repetition, prefix, injector, progress)
    return run["results"], run["windows"]


def with_attempts(results: pd.DataFrame, metrics: pd.DataFrame) -> pd.DataFrame:
    """``results`` with each image's ``upload_attempts``, ``invoke_attempts`` and ``t_invoke_start``
    (the flow's first invoke) from its metrics lines.

    An upload's lines are those with its trace id; when it has several (a dead-lettered image
    republished, say), the most attempts of each kind. An image with no line (its event was
    dropped and nothing republished it) has NaN.
    """
    present = [c for c in ATTEMPT_COLUMNS if c in metrics]
    if not len(metrics) or not present:
        return results.assign(**dict.fromkeys((*ATTEMPT_COLUMNS, "t_invoke_start"), np.nan))
    lines = metrics.dropna(subset=["trace_id"])[["trace_id", *present]]
    lines = lines.assign(**{c: pd.to_numeric(lines[c], errors="coerce") for c in present})
    most = lines.groupby("trace_id")[present].max()
    if "t_invoke_start" in metrics:  # the flow's first invoke of the image, for timelines
        first = pd.to_numeric(metrics["t_invoke_start"], errors="coerce").groupby(metrics["trace_id"]).min()
        most = most.join(first.rename("t_invoke_start"))
    merged = results.drop(columns=[c for c in (*ATTEMPT_COLUMNS, "t_invoke_start") if c in results])
    merged = merged.join(most, on="trace_id")
    for column in (*ATTEMPT_COLUMNS, "t_invoke_start"):
        if column not in merged:
            merged[column] = np.nan
    return merged


# ---------------------------------------------------------------- what the data say, in words


def spread(values: pd.Series, fmt: str = "{:g}") -> str:
    """The median of per-run values and, when they differ, their range: ``3.5 (3.0–4.0)``."""
    low, mid, high = values.min(), values.median(), values.max()
    return fmt.format(mid) if low == high else f"{fmt.format(mid)} ({fmt.format(low)}–{fmt.format(high)})"


def compare(runs: pd.DataFrame, column: str, a: str, b: str) -> str:
    """How ``column`` of policy ``a`` compares with ``b`` over the runs: ``higher``, ``lower``, or
    ``no detectable difference`` when the two ranges over the repetitions overlap."""
    va, vb = runs.loc[runs["policy"] == a, column], runs.loc[runs["policy"] == b, column]
    if va.min() > vb.max():
        return "higher"
    if va.max() < vb.min():
        return "lower"
    return "no detectable difference"


def wasted_requests(results: pd.DataFrame, policy: str) -> int:
    """Invoke requests the policy sent for images it dead-lettered anyway."""
    part = results[(results["policy"] == policy) & (results["status"] == Fate.DEAD_LETTERED.value)]
    return int(part["invoke_attempts"].fillna(0).sum())


def span(values: pd.Series, fmt: str = "{:.1f}") -> str:
    """The range of ``values`` as ``low–high``, or one value when they are all the same."""
    low, high = fmt.format(values.min()), fmt.format(values.max())
    return low if low == high else f"{low}–{high}"


def plural(count: float, noun: str) -> str:
    """``1 event``, ``2 events``, ``1.5 events``."""
    return f"{count:g} {noun}" + ("" if count == 1 else "s")
