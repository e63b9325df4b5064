"""What a run measured: each kill's cost, the 99.9% clause on time, the p99 effect, the budget."""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence

import numpy as np
import pandas as pd

from labkit.analysis import sla, stats, uptime, uptime_clause
from labkit.analysis.budget import error_budget
from labkit.experiments.availability.model import (
    BUDGET_S,
    QUORUM_PROBE,
    UPTIME_TARGET,
    TopologyRun,
)
from labkit.pipeline.fate import Fate

# ---------------------------------------------------------------- analysis


def outage_downtime(probes: pd.DataFrame, service: str, start_ms: float, end_ms: float) -> tuple[int, float]:
    """``(outages, downtime_s)`` of ``service`` within ``[start_ms, end_ms)``: its failed probes there,
    each one probe spacing of the whole table, and their runs (an outage under way at ``start_ms``
    counts too: the span shares it)."""
    mine = probes[probes["service"] == service]
    inside = mine[(mine["t_ms"] >= start_ms) & (mine["t_ms"] < end_ms)]
    if inside.empty:
        return 0, 0.0
    cut = uptime.outages(inside, service)
    return len(cut), float((~inside["ok"].astype(bool)).sum() * uptime.probe_spacing_s(mine))


def longest_gap_s(done_ms: Sequence[float], start_ms: float, end_ms: float) -> float:
    """The longest time between two consecutive completed images around ``[start_ms, end_ms]``:
    of the gaps that overlap the span (a gap still open at ``end_ms`` counts up to it)."""
    times = np.sort(np.asarray([t for t in done_ms if np.isfinite(t)], dtype=float))
    times = np.concatenate([times[times <= end_ms], [end_ms]])
    gaps = [b - a for a, b in itertools.pairwise(times) if b > start_ms and a < end_ms]
    return round(max(gaps, default=0.0) / 1000, 2)


def per_fault(run: TopologyRun) -> pd.DataFrame:
    """One row per fault of ``run``: the broker, its downtime by the quorum probe (its failed probes
    between this kill and the next, or the run's end, each span opening one probe spacing early), the longest gap between completed images
    from the kill until the pipeline recovered, the recovery, and the share of a month's 99.9%
    error budget (43.2 min) the fault burned."""
    faults = run.faults.sort_values("start_ms")
    # A probe round is stamped when it starts, a moment before it looks: one that started just
    # before a kill may see the broker gone. So each fault's span opens one probe spacing early.
    early_ms = uptime.probe_spacing_s(run.probes) * 1000
    begins = faults["start_ms"] - early_ms
    ends = [*begins.iloc[1:], run.probes["t_ms"].max() + 1]
    done = run.results.loc[run.results["status"] == Fate.RESIZED, "t_done"].astype(float).tolist()
    rows = []
    for f, begin, until in zip(faults.itertuples(), begins, ends):
        outages, down_s = outage_downtime(run.probes, QUORUM_PROBE, begin, until)
        recovered = f.recovered_ms if f.recovered else until
        rows.append({"topology": run.topology, "repetition": run.repetition, "fault": f.fault,
                     "target": f.target, "start_ms": f.start_ms, "end_ms": f.end_ms, "recovered_ms": f.recovered_ms,
                     "outages": outages, "downtime_s": down_s,
                     "longest_gap_s": longest_gap_s(done, f.start_ms, recovered),
                     "broker_back_s": round((f.end_ms - f.start_ms) / 1000, 2),
                     "recovery_s": round((f.recovered_ms - f.end_ms) / 1000, 2) if f.recovered else math.nan,
                     "recovered": bool(f.recovered), "budget_share": down_s / BUDGET_S,
                     "faults_per_month": faults_per_budget(down_s)})
    return pd.DataFrame(rows)


def topology_probes(runs: Sequence[TopologyRun], topology: str) -> list[pd.DataFrame]:
    return [r.probes for r in runs if r.topology == topology]


def uptime_verdicts(runs: Sequence[TopologyRun], target: float = UPTIME_TARGET,
                    confidence: float = 0.95) -> pd.DataFrame:
    """Per topology, the 99.9% clause judged two ways on the quorum probe, every run pooled:

    - ``status``/``verdict``: on time, with the outages as the events (:func:`uptime_clause.judge`);
    - ``probe_status``/``probe_verdict``: for comparison only, the probe-count Clopper–Pearson bound
      (:func:`labkit.analysis.sla.pipeline_availability` on probes without times), which treats
      probes as independent.
    """
    rows = []
    for topology in dict.fromkeys(r.topology for r in runs):
        judged = [uptime_clause.judge_probes(p, QUORUM_PROBE, target, confidence)
                  for p in topology_probes(runs, topology)]
        pooled = uptime_clause.judge(sum(j["downtime_s"] for j in judged), sum(j["outages"] for j in judged),
                                     max(j["longest_s"] for j in judged), sum(j["window_s"] for j in judged),
                                     max(uptime.probe_spacing_s(p) for p in topology_probes(runs, topology)),
                                     target, confidence)
        probes = pd.concat(topology_probes(runs, topology), ignore_index=True)
        by_count = sla.pipeline_availability(
            probes[probes["service"] == QUORUM_PROBE].assign(service="pipeline").drop(columns="t_ms"),
            target, confidence)
        rows.append({"topology": topology, **{k: pooled[k] for k in (
            "status", "availability", "downtime_s", "outages", "window_s", "share_bound", "needed_s", "verdict")},
            "probes": int(by_count["probes"]), "probe_status": by_count["status"],
            "probe_lower_bound": by_count["lower_bound"], "probe_verdict": by_count["verdict"]})
    return pd.DataFrame(rows)


def latency_effect(runs: Sequence[TopologyRun], q: float = 0.99, confidence: float = 0.95) -> pd.DataFrame:
    """Per topology, the ``q`` percentile of end-to-end latency for images sent during a fault (from
    the kill until the pipeline recovered) and for the others, with distribution-free bounds
    (an image that never finished counts as slower than any): ``topology, phase, q, n, estimate,
    low, high``, in seconds (a bound the sample cannot give is infinite)."""
    rows = []
    for topology in dict.fromkeys(r.topology for r in runs):
        during, outside = [], []
        for run in (r for r in runs if r.topology == topology):
            sent = run.results["t_upload_start"].astype(float)
            hit = np.zeros(len(sent), dtype=bool)
            for f in run.faults.itertuples():
                until = f.recovered_ms if f.recovered else sent.max() + 1
                hit |= ((sent >= f.start_ms) & (sent <= until)).to_numpy()
            seconds = run.results["duration_ms"].astype(float).to_numpy() / 1000
            during += list(seconds[hit])
            outside += list(seconds[~hit])
        for phase, sample in (("during a fault", during), ("outside faults", outside)):
            if not sample:
                continue
            row = stats.percentiles(sample, [q], confidence).iloc[0]
            rows.append({"topology": topology, "phase": phase, "q": q, "n": int(row["n"]), "estimate": row["estimate"],
                         "low": row["low"], "high": row["high"]})
    return pd.DataFrame(rows)


def faults_per_budget(downtime_s: float, slo: float = UPTIME_TARGET, days: float = 30) -> float:
    """How many faults that each cost ``downtime_s`` the SLO's error budget over ``days`` absorbs
    (whole faults; infinite when a fault costs nothing).

    Example:
        >>> faults_per_budget(2.592)         # 99.9% of 30 days leaves 2592 s
        1000
    """
    budget_s = error_budget(slo, days=days).minutes * 60
    return math.inf if downtime_s <= 0 else math.floor(budget_s / downtime_s + 1e-9)
