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

import math
from collections.abc import Iterator, Sequence
from typing import Any, Final

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import seaborn as sns
from matplotlib.axes import Axes

from labkit.errors import LabConfigError, SLAViolation
from labkit.pipeline.metrics import STAGES

STATUSES = ("ok", "error", "lost", "pending")
STAGE_COLUMNS = tuple(STAGES)
GROUP_COLUMNS = ("experiment", "policy", "fault")
# A non-interpolating quantile: it always returns a sample value, so +inf survives
# (linear interpolation between two infinities gives NaN), and "p99 <= threshold" means
# exactly "at least 99% of the images within the threshold".
QUANTILE_METHOD: Final = "inverted_cdf"


# --- inputs ------------------------------------------------------------------------------


def _require(frame: pd.DataFrame, *columns: str, name: str = "results") -> None:
    missing = [c for c in columns if c not in frame.columns]
    if missing:
        raise LabConfigError(
            f"The {name} table lacks column(s) {', '.join(missing)}. Fix: build it with the "
            f"experiment runner, or load a run with labkit.analysis.report.load_run."
        )


def latencies_s(results: pd.DataFrame) -> np.ndarray:
    """End-to-end latency of every image in seconds, +inf for those that never finished.

    Raises:
        LabConfigError: the table lacks ``status``/``duration_ms`` or has an unknown status.
    """
    _require(results, "status", "duration_ms")
    unknown = set(results["status"].unique()) - set(STATUSES)
    if unknown:
        raise LabConfigError(f"Unknown status(es) {sorted(map(str, unknown))}; the contract allows {STATUSES}.")
    duration_s = pd.to_numeric(results["duration_ms"], errors="coerce").to_numpy(dtype=float) / 1000.0
    finished = (results["status"] == "ok").to_numpy() & np.isfinite(duration_s)
    return np.where(finished, duration_s, np.inf)


def _groups(results: pd.DataFrame, by: str | Sequence[str] | None) -> Iterator[tuple[str, pd.DataFrame]]:
    """Yield (label, rows) per group; ``by=None`` gives one group called "all"."""
    if by is None:
        yield "all", results
        return
    keys = [by] if isinstance(by, str) else list(by)
    _require(results, *keys)
    for value, rows in results.groupby(keys, sort=True):
        yield " / ".join(str(v) for v in value), rows


def _pct(share: float) -> str:
    """99.0 % as "99%", 99.9 % as "99.9%", 99.25 % as "99.25%"."""
    return f"{share * 100:.4g}%"


# --- latency: ECDF, percentiles, compliance ------------------------------------------------


def _legend_label(name: str, rows: pd.DataFrame) -> str:
    counts = rows["status"].value_counts()
    label = f"{name} (n={len(rows)}, lost {counts.get('lost', 0)}, error {counts.get('error', 0)}"
    pending = counts.get("pending", 0)
    return label + (f", pending {pending})" if pending else ")")


def _use_log(finished_s: np.ndarray, log: bool | str) -> bool:
    if log != "auto":
        return bool(log)
    median = np.median(finished_s) if finished_s.size else 0.0
    return bool(median > 0 and finished_s.max() / median > 20)


def ecdf_plot(
    results: pd.DataFrame,
    threshold_s: float = 10,
    by: str | Sequence[str] | None = "policy",
    log: bool | str = "auto",
    ax: Axes | None = None,
    target: float = 0.99,
) -> Axes:
    """Plot the ECDF of end-to-end latency, one line per group, with the SLA marked.

    Honest about failures: each group's finished durations are plotted with weight
    1/(all images of the group) and ``stat="count"``, so a curve tops out at the share of
    images that finished, never at 1 when some were lost, dead-lettered or still pending.
    (Giving them +inf instead would not work: seaborn silently drops infinite values, and
    ``stat="proportion"`` would rescale the finished ones to 1.)

    Args:
        results: the per-image results table.
        threshold_s: the SLA's latency bound, drawn as a vertical line.
        by: column(s) whose values get one line each, or None for a single line.
        log: log x-axis: True, False, or "auto" (when max/median of finished latencies > 20).
        ax: where to draw; a new figure when None.
        target: the SLA's share, drawn as a horizontal line.

    Returns:
        The axes, with one labelled line per group (label "name (n=…, lost …, error …)").
    """
    if ax is None:
        _, ax = plt.subplots(figsize=(9, 4.5), layout="constrained")
    finished = latencies_s(results)
    finished = finished[np.isfinite(finished)]
    for name, rows in _groups(results, by):
        done = latencies_s(rows)
        done = done[np.isfinite(done)]
        label = _legend_label(name, rows)
        if done.size:
            sns.ecdfplot(x=done, weights=np.full(done.size, 1 / len(rows)), stat="count", ax=ax, label=label)
        else:
            ax.plot([], [], label=label)  # nothing finished: keep the group (and its losses) in the legend
    _decorate_ecdf(ax, finished, threshold_s, target, _use_log(finished, log), by)
    return ax


def _decorate_ecdf(ax: Axes, finished: np.ndarray, threshold_s: float, target: float, log: bool, by) -> None:
    ax.axvline(threshold_s, color="#c62828", linestyle="--", linewidth=1.2, label=f"SLA bound {threshold_s:g} s")
    ax.axhline(target, color="#555555", linestyle=":", linewidth=1.2, label=f"SLA share {_pct(target)}")
    high = max(finished.max() if finished.size else threshold_s, threshold_s) * 1.15
    if log:
        ax.set_xscale("log")
        ax.set_xlim(max(finished.min() * 0.8, 1e-3) if finished.size else threshold_s / 100, high)
    else:
        ax.set_xlim(0, high)
    ax.set_ylim(0, 1.02)
    ax.set_xlabel("end-to-end latency (s)" + (", log scale" if log else ""))
    ax.set_ylabel("share of all images done within x")
    grouping = "" if by is None else f" by {by if isinstance(by, str) else ' / '.join(by)}"
    ax.set_title(f"End-to-end latency{grouping} (unfinished images count as late)")
    ax.grid(True, which="major", alpha=0.3)
    ax.legend(loc="lower right", fontsize="small", framealpha=0.9)


def _boot_quantiles(x: np.ndarray, qs: np.ndarray, n_boot: int, rng: np.random.Generator) -> np.ndarray:
    """Quantiles of ``n_boot`` resamples, shape (n_boot, len(qs)), in chunks of ~4M values."""
    chunk = max(1, 4_000_000 // x.size)
    parts = []
    for start in range(0, n_boot, chunk):
        idx = rng.integers(0, x.size, size=(min(chunk, n_boot - start), x.size))
        parts.append(np.quantile(x[idx], qs, axis=1, method=QUANTILE_METHOD).T)
    return np.vstack(parts)


def percentiles(
    durations_s: Sequence[float] | np.ndarray,
    qs: Sequence[float] = (0.5, 0.95, 0.99),
    n_boot: int = 2000,
    ci: float = 0.95,
    seed: int = 0,
) -> pd.DataFrame:
    """Latency percentiles with percentile-bootstrap confidence intervals.

    NaN or +inf means the image never finished and counts as slower than any finished one,
    so p99 is inf when more than 1% of the images did not finish. Quantiles use numpy's
    non-interpolating ``inverted_cdf`` method (see ``QUANTILE_METHOD``).

    Returns:
        One row per q: ``q``, ``estimate``, ``low``, ``high`` (seconds; may be inf).

    Raises:
        LabConfigError: no durations were given.
    """
    x = np.asarray(durations_s, dtype=float)
    if x.size == 0:
        raise LabConfigError("No durations to take percentiles of. Fix: pass at least one image.")
    x = np.where(np.isnan(x), np.inf, x)
    q = np.asarray(qs, dtype=float)
    boots = _boot_quantiles(x, q, n_boot, np.random.default_rng(seed))
    alpha = (1 - ci) / 2
    low, high = np.quantile(boots, [alpha, 1 - alpha], axis=0, method=QUANTILE_METHOD)
    estimate = np.quantile(x, q, method=QUANTILE_METHOD)
    return pd.DataFrame({"q": q, "estimate": estimate, "low": low, "high": high})


def min_samples_zero_violations(target: float = 0.99, confidence: float = 0.95) -> int:
    """The fewest images that can support "share >= target" at this confidence, and only when
    none of them is late: the smallest n with target**n <= 1 - confidence (299 for 99%/95%)."""
    return math.ceil(math.log(1 - confidence) / math.log(target))


def _binom_cdf(k: int, n: int, p: float) -> float:
    """P(X <= k) for X ~ Binomial(n, p), 0 < p < 1, summed in log space."""
    if k < 0:
        return 0.0
    log_fact = np.concatenate([[0.0], np.cumsum(np.log(np.arange(1, n + 1)))])
    ks = np.arange(k + 1)
    log_pmf = log_fact[n] - log_fact[ks] - log_fact[n - ks] + ks * math.log(p) + (n - ks) * math.log1p(-p)
    return float(np.exp(log_pmf).sum())


def _bisect_increasing(f, iterations: int = 60) -> float:
    """The root in (0, 1) of an increasing function, to ~1e-18."""
    lo, hi = 0.0, 1.0
    for _ in range(iterations):
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if f(mid) < 0 else (lo, mid)
    return (lo + hi) / 2


def clopper_pearson(successes: int, n: int, confidence: float = 0.95) -> tuple[float, float]:
    """One-sided Clopper–Pearson bounds (lower, upper) on a binomial proportion.

    Each bound holds on its own at ``confidence``. Uses scipy's beta quantiles when scipy is
    installed, else inverts the binomial CDF by bisection (numpy only), which agrees to ~1e-12.
    """
    alpha = 1 - confidence
    try:
        from scipy.stats import beta
    except ImportError:
        lower = 0.0 if successes == 0 else _bisect_increasing(lambda p: 1 - _binom_cdf(successes - 1, n, p) - alpha)
        upper = 1.0 if successes == n else _bisect_increasing(lambda p: alpha - _binom_cdf(successes, n, p))
        return lower, upper
    lower = 0.0 if successes == 0 else float(beta.ppf(alpha, successes, n - successes + 1))
    upper = 1.0 if successes == n else float(beta.ppf(confidence, successes + 1, n - successes))
    return lower, upper


def _verdict_text(c: dict) -> tuple[str, str]:
    within = f"{c['share']:.2%} of {c['n']} images within {c['threshold_s']:g} s"
    bound = f"the {_pct(c['confidence'])} lower bound {c['lower_bound']:.2%}"
    if c["supports_claim"]:
        return "PASS", f"PASS: {within}; {bound} is at least {_pct(c['target'])}."
    if c["share"] < c["target"]:
        return "FAIL", (
            f"FAIL: only {within} ({c['violations']} late or unfinished), below {_pct(c['target'])}; "
            f"the true share is at most {c['upper_bound']:.2%} at {_pct(c['confidence'])} confidence."
        )
    if c["n"] < c["min_samples_zero_violations"]:
        return "INCONCLUSIVE", (
            f"INCONCLUSIVE: n={c['n']} < {c['min_samples_zero_violations']}, the fewest images that can "
            f"show {_pct(c['target'])} at {_pct(c['confidence'])} confidence even with zero violations; "
            f"so far {within}."
        )
    return "INCONCLUSIVE", (
        f"INCONCLUSIVE: {within} ({c['violations']} late or unfinished), but {bound} is below "
        f"{_pct(c['target'])}. Measure more images to support the claim."
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
        ``min_samples_zero_violations``, ``status`` ("PASS"/"FAIL"/"INCONCLUSIVE") and
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

    Returns:
        One row per service: ``service``, ``probes``, ``ok``, ``availability``, ``target``,
        ``met`` (availability >= target) and ``error_budget_burn`` = (1 - availability) /
        (1 - target): 1.0 spends exactly the allowed downtime, 2.0 twice as much.

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
    table["error_budget_burn"] = (1 - table["availability"]) / (1 - target)
    order = table["service"].ne("pipeline")  # False sorts first
    return table.assign(_order=order).sort_values(["_order", "service"]).drop(columns="_order").reset_index(drop=True)


def pipeline_availability(probes: pd.DataFrame, target: float = 0.999, confidence: float = 0.95) -> dict:
    """Judge the availability clause on the synthetic ``pipeline`` service.

    FAIL when the measured availability is below the target; PASS when the one-sided
    Clopper–Pearson lower bound over the probes reaches it; INCONCLUSIVE otherwise (too few
    probes: 99.9% needs 2995 without a failure). Probes during one outage are not independent,
    so the bound is optimistic; treat it as a floor on how many probes to take.

    Returns:
        The ``pipeline`` row of :func:`availability` plus ``lower_bound``,
        ``min_probes_zero_failures``, ``status`` and ``verdict`` (a sentence starting with the status).

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
    row["status"], row["verdict"] = _availability_text(row, target, confidence)
    return row


def _availability_text(row: dict, target: float, confidence: float) -> tuple[str, str]:
    measured = (
        f"pipeline up in {row['availability']:.3%} of {row['probes']} probes "
        f"({row['probes'] - row['ok']} failed; error budget burn {row['error_budget_burn']:.1f}x)"
    )
    if not row["met"]:
        return "FAIL", f"FAIL: {measured}, below {_pct(target)}."
    if row["lower_bound"] >= target:
        return "PASS", f"PASS: {measured}; the {_pct(confidence)} lower bound {row['lower_bound']:.3%} is at least {_pct(target)}."
    return "INCONCLUSIVE", (
        f"INCONCLUSIVE: {measured}, but {row['probes']} probes cannot show {_pct(target)} at "
        f"{_pct(confidence)} confidence (that takes at least {row['min_probes_zero_failures']} without a failure)."
    )


# --- where the time goes, and where the images went -----------------------------------------


def breakdown(results: pd.DataFrame, by: str | Sequence[str] | None = "policy") -> pd.DataFrame:
    """Median, p95 and p99 of each pipeline stage, in ms, per group.

    Every image with a known stage time contributes to that stage, finished or not.

    Returns:
        One row per group and stage (in pipeline order): the ``by`` columns, ``stage``,
        ``n``, ``median_ms``, ``p95_ms``, ``p99_ms``.
    """
    _require(results, *STAGE_COLUMNS)
    keys = [] if by is None else [by] if isinstance(by, str) else list(by)
    long = results.melt(id_vars=keys, value_vars=list(STAGE_COLUMNS), var_name="stage", value_name="ms")
    long["ms"] = pd.to_numeric(long["ms"], errors="coerce")
    long = long.dropna(subset=["ms"])
    long["stage"] = pd.Categorical(long["stage"], categories=STAGE_COLUMNS, ordered=True)
    grouped = long.groupby([*keys, "stage"], observed=True, sort=True)["ms"]
    return grouped.agg(
        n="size",
        median_ms="median",
        p95_ms=lambda s: s.quantile(0.95),
        p99_ms=lambda s: s.quantile(0.99),
    ).reset_index()


def stage_plot(results: pd.DataFrame, by: str | Sequence[str] | None = "policy", ax: Axes | None = None) -> Axes:
    """Stacked horizontal bars of the median time of each stage, one bar per group."""
    table = breakdown(results, by)
    if table.empty:  # no image finished a stage (all lost, say): say so rather than draw nothing
        if ax is None:
            _, ax = plt.subplots(figsize=(9, 1.6), layout="constrained")
        ax.text(0.5, 0.5, "no image finished any stage: no stage times to show", ha="center", va="center",
                transform=ax.transAxes)
        ax.set_axis_off()
        return ax
    keys = [c for c in table.columns if c not in ("stage", "n", "median_ms", "p95_ms", "p99_ms")]
    table["group"] = table[keys].astype(str).agg(" / ".join, axis=1) if keys else "all"
    wide = table.pivot(index="group", columns="stage", values="median_ms").reindex(columns=list(STAGE_COLUMNS))
    if ax is None:
        _, ax = plt.subplots(figsize=(9, 1.2 + 0.45 * len(wide)), layout="constrained")
    wide.columns = [c.removesuffix("_ms") for c in wide.columns]
    wide.iloc[::-1].plot.barh(stacked=True, ax=ax, color=sns.color_palette("Set2", len(STAGE_COLUMNS)), width=0.7)
    ax.set_xlabel("median time per stage (ms); medians do not add up to the end-to-end median")
    ax.set_ylabel("")
    ax.set_title("Where the time goes: median of each stage")
    ax.legend(title="stage", loc="center left", bbox_to_anchor=(1.0, 0.5), fontsize="small")
    ax.grid(True, axis="x", alpha=0.3)
    return ax


def accounting(results: pd.DataFrame) -> pd.DataFrame:
    """Where the images went, per experiment/policy/fault.

    Returns:
        One row per group: ``uploaded``, ``ok``, ``error`` (dead-lettered), ``lost``,
        ``pending`` and ``duplicates`` (extra deliveries, summed).
    """
    _require(results, *GROUP_COLUMNS, "status", "duplicates")
    latencies_s(results)  # validates the statuses
    status = pd.get_dummies(results["status"]).reindex(columns=list(STATUSES), fill_value=0).astype(int)
    frame = pd.concat([results[list(GROUP_COLUMNS)], status, results["duplicates"].fillna(0).astype(int)], axis=1)
    grouped = frame.groupby(list(GROUP_COLUMNS), sort=True)
    table = grouped[list(STATUSES) + ["duplicates"]].sum()
    table.insert(0, "uploaded", grouped.size())
    return table.reset_index()


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
