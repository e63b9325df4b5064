"""SLA verdicts on experiment results: "99% of images finish end to end within 10 s" and
"availability >= 99.9%".

Inputs are the experiment runner's tidy tables:

- ``results``: one row per image with ``experiment``, ``policy``, ``fault``, ``repetition``,
  ``seed``, ``key``, ``status`` (``ok``, ``error`` = dead-lettered, ``lost``, ``pending``),
  ``duplicates``, ``duration_ms`` (NaN unless ok), the stage columns of
  :data:`labkit.pipeline.metrics.STAGES` and ``t_upload_start``.
- ``probes``: one row per health probe with ``t_ms``, ``service`` (including a synthetic
  ``pipeline`` service) and ``ok``.

Failures are never dropped: an image that did not finish (error, lost, pending, or ok without
a duration) has an end-to-end latency of +inf, so it counts as a violation of any threshold.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import pandas as pd

# The tables, the statistics and the plots live in their own modules; the notebooks reach
# them all through `sla`, so the names they use are re-exported here.
from labkit.analysis.plots import ecdf_plot, stage_plot  # noqa: F401
from labkit.analysis.results import (  # noqa: F401
    GROUP_COLUMNS,
    STAGE_COLUMNS,
    STATUSES,
    _pct,
    _require,
    accounting,
    breakdown,
    latencies_s,
)
from labkit.analysis import uptime, uptime_clause, verdicts
from labkit.analysis.stats import (  # noqa: F401
    QUANTILE_METHOD,
    clopper_pearson,
    min_samples_zero_violations,
    percentiles,
)
from labkit.errors import LabConfigError, SLAViolation

# --- latency: compliance ------------------------------------------------------------------


def _verdict_text(c: dict) -> tuple[str, str]:
    within = f"{c['share']:.2%} of {c['n']} images within {c['threshold_s']:g} s"
    bound = f"the {_pct(c['confidence'])} lower bound {c['lower_bound']:.2%}"
    facts = f"({verdicts.clause_facts(c['n'], c['confidence'], c['n_needed'])})"
    if c["supports_claim"]:
        return verdicts.PASS, f"PASS: {within}; {bound} is at least {_pct(c['target'])} {facts}."
    if c["share"] < c["target"]:
        return verdicts.FAIL, (
            f"FAIL: only {within} ({c['violations']} late or unfinished), below {_pct(c['target'])}; "
            f"the true share is at most {c['upper_bound']:.2%} at {_pct(c['confidence'])} confidence {facts}."
        )
    if c["n"] < c["min_samples_zero_violations"]:
        return verdicts.INCONCLUSIVE, (
            f"INCONCLUSIVE: n={c['n']} < {c['min_samples_zero_violations']}, the fewest images that can "
            f"show {_pct(c['target'])} at {_pct(c['confidence'])} confidence even with zero violations; "
            f"so far {within} {facts}."
        )
    return verdicts.INCONCLUSIVE, (
        f"INCONCLUSIVE: {within} ({c['violations']} late or unfinished), but {bound} is below "
        f"{_pct(c['target'])}: with {c['violations']} violation(s), at least {c['n_needed']} images are needed "
        f"{facts}."
    )


def compliance(
    results: pd.DataFrame, threshold_s: float = 10, target: float = 0.99, confidence: float = 0.95
) -> dict:
    """Judge the latency clause: is the true share of images within ``threshold_s`` >= target?

    Every image that did not finish counts as a violation. Verdicts: PASS when the one-sided
    Clopper–Pearson lower bound reaches the target (the sample supports the claim); FAIL when
    the measured share is below the target (this run broke the SLA); INCONCLUSIVE otherwise
    (too few images, or too many near-misses, to support the claim either way).

    Returns:
        ``n``, ``within``, ``violations``, ``share``, ``lower_bound``, ``upper_bound``,
        ``threshold_s``, ``target``, ``confidence``, ``supports_claim``,
        ``min_samples_zero_violations``, ``n_needed`` (the fewest images that could support the
        claim with this many violations), ``status`` ("PASS"/"FAIL"/"INCONCLUSIVE") and
        ``verdict`` (a sentence starting with the status).

    Raises:
        LabConfigError: the table has no images, or is malformed.
    """
    latency = latencies_s(results)
    n = int(latency.size)
    if n == 0:
        raise LabConfigError("The results table has no images. Fix: run the experiment before judging it.")
    within = int((latency <= threshold_s).sum())
    lower, upper = clopper_pearson(within, n, confidence)
    c: dict[str, Any] = {
        "n": n, "within": within, "violations": n - within, "share": within / n,
        "lower_bound": lower, "upper_bound": upper, "threshold_s": threshold_s, "target": target,
        "confidence": confidence, "supports_claim": lower >= target,
        "min_samples_zero_violations": min_samples_zero_violations(target, confidence),
        "n_needed": verdicts.n_needed(n - within, target, confidence),
    }
    c["status"], c["verdict"] = _verdict_text(c)
    return c


def compliance_by(
    results: pd.DataFrame, by: Sequence[str] = ("policy", "fault"), threshold_s: float = 10, **kwargs
) -> pd.DataFrame:
    """:func:`compliance` per group, one row each (the ``by`` columns first)."""
    keys = list(by)
    _require(results, *keys)
    rows = [
        {**dict(zip(keys, value if isinstance(value, tuple) else (value,))), **compliance(g, threshold_s, **kwargs)}
        for value, g in results.groupby(keys, sort=True)
    ]
    return pd.DataFrame(rows)


# --- availability ---------------------------------------------------------------------------


def availability(probes: pd.DataFrame, target: float = 0.999) -> pd.DataFrame:
    """Availability per probed service, the synthetic ``pipeline`` service first.

    These are checks, not verdicts: ``check`` is "met" or "not met" (see :mod:`verdicts`).

    Returns:
        One row per service: ``service``, ``probes``, ``ok``, ``availability`` (share of probes
        up), ``target``, ``met`` (availability >= target), ``check`` ("met"/"not met"),
        ``error_budget_burn`` = (1 - availability) / (1 - target): 1.0 spends exactly the allowed
        downtime, 2.0 twice as much; and, from :func:`uptime.downtime`, ``outages``,
        ``downtime_s`` and ``window_s``.

    Raises:
        LabConfigError: the table lacks columns, or the target is not strictly between 0 and 1.
    """
    _require(probes, "service", "ok", name="probes")
    if not 0 < target < 1:
        raise LabConfigError(f"Availability target {target} must be strictly between 0 and 1 (e.g. 0.999).")
    table = probes.groupby("service")["ok"].agg(probes="size", ok="sum").reset_index()
    table["ok"] = table["ok"].astype(int)
    table["availability"] = table["ok"] / table["probes"]
    table["target"] = target
    table["met"] = table["availability"] >= target
    table["check"] = table["met"].map(verdicts.check_word)
    table["error_budget_burn"] = (1 - table["availability"]) / (1 - target)
    if "t_ms" in probes:
        table = table.merge(uptime.downtime(probes, target)[["service", "outages", "downtime_s", "window_s"]],
                            on="service", how="left")
    order = table["service"].ne("pipeline")  # False sorts first
    return table.assign(_order=order).sort_values(["_order", "service"]).drop(columns="_order").reset_index(drop=True)


def pipeline_availability(probes: pd.DataFrame, target: float = 0.999, confidence: float = 0.95) -> dict:
    """Judge the availability clause on the synthetic ``pipeline`` service.

    With probe times (``t_ms``), the clause is judged on time, with the outages as the independent
    events (:func:`labkit.analysis.uptime_clause.judge_probes`, as notebook 10 judges it): FAIL when
    the pipeline was down more than ``1 - target`` of the window; PASS when the bound on the time
    down is within it; INCONCLUSIVE otherwise, with the observation needed (``needed_s``). Probes
    inside one outage are one event, so more probes per second are no more evidence.

    Without probe times, only the share of probes is left: PASS when its one-sided Clopper–Pearson
    lower bound reaches the target. That treats the probes as independent, so it is optimistic;
    ``lower_bound`` and ``n_needed`` (probes) are this bound either way, for comparison.

    Returns:
        The ``pipeline`` row of :func:`availability` plus ``lower_bound``,
        ``min_probes_zero_failures``, ``n_needed``, ``method`` (how availability was estimated),
        ``judged_on`` ("time" or "probe count"), ``status`` and ``verdict`` (a sentence starting with
        the status); judged on time also ``share_bound``, ``needed_s``, ``longest_s`` and ``window_s``.

    Raises:
        LabConfigError: there are no ``pipeline`` probes.
    """
    table = availability(probes, target)
    rows = table[table["service"] == "pipeline"]
    if rows.empty:
        raise LabConfigError(
            "The probes table has no 'pipeline' service. Fix: the experiment runner must record a "
            "synthetic 'pipeline' probe (ok when an image goes through end to end) beside each service."
        )
    row = rows.iloc[0].to_dict()
    row["lower_bound"] = clopper_pearson(int(row["ok"]), int(row["probes"]), confidence)[0]
    row["min_probes_zero_failures"] = min_samples_zero_violations(target, confidence)
    row["n_needed"] = verdicts.n_needed(int(row["probes"] - row["ok"]), target, confidence)
    if "t_ms" in probes:
        on_time = uptime_clause.judge_probes(probes, "pipeline", target, confidence)
        row.update({k: on_time[k] for k in ("status", "verdict", "share_bound", "needed_s", "longest_s", "window_s")})
        row["judged_on"], row["method"] = "time", uptime.method_text(probes)
    else:
        row["judged_on"], row["method"] = "probe count", (
            "Estimated from the share of probes up, without their times: the bound treats the probes as "
            "independent, so it is optimistic.")
        row["status"], row["verdict"] = _availability_text(row, target, confidence)
    return row


def _availability_text(row: dict, target: float, confidence: float) -> tuple[str, str]:
    """The probe-count verdict (probes without times)."""
    measured = (
        f"pipeline up in {row['availability']:.3%} of {row['probes']} probes "
        f"({row['probes'] - row['ok']} failed; error budget burn {row['error_budget_burn']:.1f}x)"
    )
    facts = f"({verdicts.clause_facts(int(row['probes']), confidence, row['n_needed'], 'probes')})"
    if not row["met"]:
        return verdicts.FAIL, f"FAIL: {measured}, below {_pct(target)} {facts}."
    if row["lower_bound"] >= target:
        return verdicts.PASS, (f"PASS: {measured}; the {_pct(confidence)} lower bound {row['lower_bound']:.3%} "
                               f"is at least {_pct(target)} {facts}.")
    return verdicts.INCONCLUSIVE, (
        f"INCONCLUSIVE: {measured}, but {row['probes']} probes cannot show {_pct(target)} at "
        f"{_pct(confidence)} confidence (that takes at least {row['n_needed']} probes with "
        f"{row['probes'] - row['ok']} failed) {facts}."
    )


# --- where the time goes, and where the images went -----------------------------------------


# --- the verdict for scripts and CI ---------------------------------------------------------


def check(
    results: pd.DataFrame,
    probes: pd.DataFrame,
    threshold_s: float = 10,
    target: float = 0.99,
    availability_target: float = 0.999,
    confidence: float = 0.95,
    require_conclusive: bool = False,
) -> None:
    """Raise unless both SLA clauses hold: latency (all images) and pipeline availability.

    Args:
        require_conclusive: also raise when a verdict is INCONCLUSIVE (too few images or
            probes to support the claim); by default only a FAIL raises.

    Raises:
        SLAViolation: a clause fails; the message gives each failing clause's verdict.
        LabConfigError: the tables are malformed, empty, or lack the ``pipeline`` probes.
    """
    clauses = {
        "latency": compliance(results, threshold_s, target, confidence),
        "availability": pipeline_availability(probes, availability_target, confidence),
    }
    failures = [
        f"{name}: {verdict['verdict']}"
        for name, verdict in clauses.items()
        if verdict["status"] == "FAIL" or (require_conclusive and verdict["status"] != "PASS")
    ]
    if failures:
        raise SLAViolation("SLA violated. " + " | ".join(failures))
