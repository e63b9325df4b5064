"""Experiments: a load, a fault schedule and a retry policy, run on the real pipeline and measured.

An experiment is declared in a small YAML file or a dict (:mod:`labkit.experiments.spec`).
:func:`run_experiment` runs it: it stands the pipeline up with the policy, drives the load
while the faults run, settles (:mod:`labkit.experiments.settle`: drain, reconcile, classify),
and saves tidy tables in a run directory (:mod:`labkit.experiments.runs`): one row per image
with its fate (``ok``, ``error``, ``lost``, ``pending``), the health probes
(:mod:`labkit.experiments.prober`), and the environment. :func:`run_matrix` runs every
combination of a few variations.

The names of those modules are importable from here too, as they were before the split.

Example:
    >>> run = run_experiment(lab, "stack/experiments/kafka-outage.yaml", "runs")   # doctest: +SKIP
    >>> run.accounting()                                                          # doctest: +SKIP
"""

from __future__ import annotations

import contextlib
import itertools
import os
import time
from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

import pandas as pd
from pydantic import BaseModel
from tenacity import RetryError, Retrying, retry_if_result, stop_after_delay, wait_fixed

from labkit.analysis import report
from labkit.core.runs import REPO_DIR, git_revision, new_run_dir, run_id
from labkit.errors import LabConfigError
from labkit.experiments.faults import FaultInjector, Schedule
from labkit.experiments.load import LoadRun, now_ms, start_closed_loop, start_open_loop
from labkit.experiments.prober import PATH_SERVICES, PROBE_INTERVAL_S, Prober
from labkit.experiments.runs import Run, concat, save_experiment
from labkit.experiments.runs import experiment_metadata as environment
from labkit.experiments.settle import (
    POLL_INTERVAL_S,
    RESULT_COLUMNS,
    classify,
    consumer_lag,
    drain,
    fresh_outputs,
    settle,
)
from labkit.experiments.spec import (
    EXPERIMENTS_DIR,
    FAULT_PRESETS,
    ExperimentSpec,
    FaultSpec,
    LoadSpec,
    UntilRecovered,
    load_spec,
)
from labkit.pipeline import deploy as pipeline
from labkit.pipeline.metrics import STAGES, lab_metrics
from labkit.pipeline.retry import RETRY_PRESETS, RetryHops, RetryPolicy
from labkit.pipeline.upload import UPLOAD_TIMEOUT_S
from labkit.stack.lab import Lab

__all__ = [
    "EXPERIMENTS_DIR", "FAULT_PRESETS", "PATH_SERVICES", "POLL_INTERVAL_S", "PROBE_INTERVAL_S", "REPO_DIR",
    "RESULT_COLUMNS", "RETRY_PRESETS", "STAGES", "ExperimentSpec", "FaultSpec", "LoadSpec", "Prober", "RetryHops",
    "RetryPolicy", "Run", "UntilRecovered", "classify", "consumer_lag", "drain", "environment", "fresh_outputs",
    "git_revision", "load_spec", "run_experiment", "run_matrix", "settle", "vary", "wait_until_recovered",
]

OnUpload = Callable[[dict], None]


# ---------------------------------------------------------------- one experiment


def run_experiment(lab: Lab, spec: ExperimentSpec | Mapping | str | os.PathLike, out_dir: str | os.PathLike,
                   *, progress: bool = True, on_upload: OnUpload | None = None) -> Run:
    """Run an experiment on the lab and save its tables under ``out_dir/<name>-<timestamp>/``.

    Per repetition: stand the pipeline up with the policy, run the load while the fault
    schedule runs (times count from the load's start), wait for the pipeline to drain
    (bounded), reconcile if asked (and drain again), and classify every uploaded image
    (:func:`labkit.experiments.settle.classify`): ``ok``, ``error``, ``lost`` or ``pending``.

    Health probes (each service's readiness check and a synthetic ``pipeline`` probe) run
    every 0.5 s throughout. Whatever happens, every fault is cleared and the pipeline's
    default policy is restored before this returns or raises; nothing is saved then.

    Args:
        lab: The running lab.
        spec: The experiment (see :func:`load_spec`).
        out_dir: Where run directories go.
        progress: Show the load's progress bar.
        on_upload: Called with each upload's row; raising from it aborts the experiment.

    Raises:
        LabConfigError: An invalid experiment.
        ServiceError: A service refused; a fault could not be injected or cleared.
    """
    spec = load_spec(spec)
    started = datetime.now(UTC)
    stamp = run_id(started)
    injector = FaultInjector(lab)
    reps: list[dict] = []
    try:
        pipeline.stand_up(lab, spec.sla_threshold_s, spec.max_inflight, retry=spec.retry)
        with Prober(lab) as prober:
            for repetition in range(spec.repetitions):
                reps.append(run_repetition(lab, spec, repetition, f"exp/{spec.name}/{stamp}/r{repetition}/",
                                        injector, progress, on_upload))
    except BaseException:
        # The first error is the one to raise: after a failed restart the clean-up fails too
        # (the services are down), and its error would hide the cause.
        with contextlib.suppress(Exception):
            _restore(lab, injector)
        raise
    _restore(lab, injector)
    results = pd.concat([r["results"] for r in reps], ignore_index=True)
    env = environment(lab, spec, started, datetime.now(UTC), [w for r in reps for w in r["fault_windows"]])
    env["recovery"] = [r["recovery"] for r in reps if r["recovery"] is not None]
    run_dir = save_experiment(out_dir, f"{spec.name}-{stamp}", results, prober.table(), env)
    return Run(spec, run_dir, results, prober.table(), env, concat([r["load"] for r in reps]),
               concat([r["reconciliation"] for r in reps]))


def _restore(lab: Lab, injector: FaultInjector) -> None:
    """Clear every fault, then stand the pipeline up with its default policy again."""
    try:
        injector.clear_all()
    finally:
        pipeline.stand_up(lab)


def run_repetition(lab: Lab, spec: ExperimentSpec, repetition: int, prefix: str, injector: FaultInjector,
                   progress: bool, on_upload: OnUpload | None = None) -> dict:
    """One repetition on the pipeline as it is deployed: load under the fault schedule, drain,
    reconcile, classify.

    Returns:
        ``results`` (one row per upload), ``load``, ``reconciliation``, ``fault_windows`` (records)
        and ``windows`` (the schedule's windows as a table), and ``recovery``.
    """
    seed = spec.seed + repetition
    # The load builds its image pool before it returns; the fault clock starts with its arrivals.
    load = _start_load(lab, spec.load, seed, prefix, progress, on_upload)
    try:
        schedule = injector.run_schedule([f.fault() for f in spec.faults])
    except BaseException:
        load.stop()
        raise
    try:
        table, recovery = _drive(lab, spec, load, schedule)
        schedule.wait()
    finally:
        schedule.cancel()  # a no-op once it has ended; else it clears what it injected
    results, reconciled = settle(lab, spec, table, prefix, repetition, seed)
    return {"results": results, "load": table.assign(repetition=repetition),
            "reconciliation": None if reconciled is None else reconciled.assign(repetition=repetition),
            "fault_windows": schedule.windows().to_dict("records"), "windows": schedule.windows(),
            "recovery": None if recovery is None else {**recovery, "repetition": repetition}}


def _drive(lab: Lab, spec: ExperimentSpec, load: LoadRun, schedule: Schedule) -> tuple[pd.DataFrame, dict | None]:
    """Let the load run its course (or, with ``until_recovered``, until the pipeline has recovered
    from the faults); the load's table and the recovery (None without ``until_recovered``)."""
    try:
        recovery = None
        if spec.until_recovered is not None:
            schedule.wait()
            ends = schedule.windows()["end_ms"].dropna()
            since_ms = float(ends.max()) if len(ends) else now_ms()
            recovery = wait_until_recovered(lab, load, since_ms, spec.until_recovered)
        return load.wait(), recovery
    except BaseException:
        load.stop()
        with contextlib.suppress(BaseException):  # the first error is the one to raise
            load.wait(UPLOAD_TIMEOUT_S)
        raise


def wait_until_recovered(lab: Lab, load: LoadRun, since_ms: float, until: UntilRecovered) -> dict:
    """Let ``load`` run until an image whose upload started at ``since_ms`` or later has come
    through end to end (an ``ok`` metrics line) and ``until.tail_s`` have passed since
    ``since_ms``, at most ``until.timeout_s``; then stop the load.

    This measures recovery by what happened, not by a fixed window: on a busy machine a
    service takes longer to come back, and the load simply runs longer. The wait also ends
    when the load has ended on its own and none of its uploads since ``since_ms`` is unfinished.

    Returns:
        ``recovered`` (bool), ``waited_s`` (how long it waited), ``timeout_s``, ``since_ms``
        and ``key`` (the first image through, None when none came).
    """
    started = time.monotonic()
    first: list[str] = []

    def first_through() -> str | None:
        """The first image through (None: keep waiting; "": the load ended with nothing to wait for)."""
        if not first:
            sent = load.results()
            after = set(sent.loc[(sent["t_upload_start"] >= since_ms) & (sent["status_code"] == 200), "key"])
            if not after:
                return "" if load.done() else None  # nothing sent since, and nothing more will be
            lines = lab_metrics(lab)
            first.extend(lines.loc[lines["key"].isin(after) & (lines["outcome"] == "ok"), "key"].iloc[:1])
        tail_over = now_ms() >= since_ms + until.tail_s * 1000 or load.done()
        return first[0] if first and tail_over else None

    with contextlib.suppress(RetryError):  # out of time: not recovered, as the result says
        Retrying(stop=stop_after_delay(until.timeout_s), wait=wait_fixed(POLL_INTERVAL_S * 2),
                 retry=retry_if_result(lambda k: k is None))(first_through)
    load.stop()
    return {"recovered": bool(first), "waited_s": round(time.monotonic() - started, 2), "timeout_s": until.timeout_s,
            "since_ms": since_ms, "key": first[0] if first else None}


def _start_load(lab: Lab, load: LoadSpec, seed: int, prefix: str, progress: bool,
                on_upload: OnUpload | None) -> LoadRun:
    common = {"seed": seed, "prefix": prefix, "sizes": load.sizes, "progress": progress, "on_upload": on_upload}
    if load.kind == "open":
        return start_open_loop(lab, load.rate_per_s, load.images, load.max_duration_s, workers=load.workers, **common)
    return start_closed_loop(lab, load.concurrency, load.images, load.max_duration_s, **common)


# ---------------------------------------------------------------- matrices


def run_matrix(lab: Lab, base: ExperimentSpec | Mapping | str | os.PathLike, axes: Mapping[str, Sequence[Any]],
               out_dir: str | os.PathLike, *, progress: bool = True) -> Run:
    """Run ``base`` once per combination of ``axes`` and concatenate the results.

    Axes: ``policy`` (a retry preset name or mapping, as ``retry``), ``fault`` (a fault preset
    name, or a list of faults), ``reconcile`` (true/false), or any field of the experiment
    by its dotted path (``load.rate_per_s``). Every combination is validated before the
    first one runs.

    Returns:
        A run whose tables hold every combination (``parts`` holds each one's run), saved
        under ``out_dir/<name>-matrix-<timestamp>/`` with each part in ``parts/``.

    Raises:
        LabConfigError: An unknown axis, an empty one, or an invalid combination.
    """
    base = load_spec(base)
    names = list(axes)
    for name in names:
        if not axes[name]:
            raise LabConfigError(f"matrix axis {name!r} has no values. Fix: give it at least one.")
    specs = [vary(base, dict(zip(names, combo, strict=True))) for combo in itertools.product(*(axes[n] for n in names))]
    started = datetime.now(UTC)
    run_dir = new_run_dir(out_dir, f"{base.name}-matrix-{run_id(started)}")
    parts = [run_experiment(lab, spec, run_dir / "parts", progress=progress) for spec in specs]
    results = pd.concat([p.results for p in parts], ignore_index=True)
    probes = pd.concat([p.probes.assign(policy=p.spec.policy_name, fault=p.spec.fault_name) for p in parts],
                       ignore_index=True)
    env = {**parts[-1].env, "started": started.isoformat(timespec="seconds"), "policy": None, "fault": None,
           "parameters": {"base": base.model_dump(mode="json"), "axes": _jsonable(axes)},
           "fault_windows": [w for p in parts for w in p.env["fault_windows"]],
           "runs": [p.run_dir.name for p in parts]}
    report.save_run(results, probes, env, run_dir)
    return Run(base, run_dir, results, probes, env, concat([p.load for p in parts]),
               concat([p.reconciliation for p in parts]), parts)


def vary(base: ExperimentSpec, changes: Mapping[str, Any]) -> ExperimentSpec:
    """``base`` with some fields changed (``policy``, ``fault``, ``reconcile`` or dotted paths), validated."""
    spec = base.model_dump()
    for name, value in changes.items():
        if name == "policy":
            spec["retry"] = value
            spec["policy_label"] = value if isinstance(value, str) else None
        elif name == "fault":
            spec["faults"] = value
            spec["fault_label"] = value if isinstance(value, str) else None
        else:
            _set_path(spec, name, value)
    return load_spec(spec)


def _set_path(spec: dict, path: str, value: Any) -> None:
    *parents, leaf = path.split(".")
    node = spec
    for part in parents:
        if not isinstance(node.get(part), dict):
            raise LabConfigError(f"matrix axis {path!r} names no field. Fix: use policy, fault, reconcile or a "
                                 f"field's dotted path such as load.rate_per_s.")
        node = node[part]
    if leaf not in node:
        raise LabConfigError(f"matrix axis {path!r} names no field. Fix: use policy, fault, reconcile or one of "
                             f"{', '.join(node)}.")
    node[leaf] = value


def _jsonable(axes: Mapping[str, Sequence[Any]]) -> dict:
    return {k: [v.model_dump(mode="json") if isinstance(v, BaseModel) else v for v in vals] for k, vals in axes.items()}
