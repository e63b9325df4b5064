"""The SLA's pictures: the latency ECDF against the threshold, and the time per pipeline stage."""

from __future__ import annotations

from collections.abc import Sequence

import re

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import seaborn as sns
from matplotlib.axes import Axes

from labkit.analysis.results import STAGE_COLUMNS, _groups, _pct, breakdown, latencies_s


# Words that read as something else beside a latency curve ("exponential" as a distribution).
RETRY_WORDS = {"none": "no retry", "fixed": "fixed delay", "exponential": "exponential backoff"}
# How a value of each grouping column is named in a legend.
GROUP_PREFIX = {"policy": "retry: ", "fault": "fault: "}
# Data that span more than this ratio (a decade) get a log time axis.
LOG_SPAN = 10.0


def group_name(column: str, value: object) -> str:
    """A legend name that cannot be misread: policy "exponential" is "retry: exponential backoff"."""
    text = str(value)
    if column == "policy":
        text = re.sub(r"\b(none|fixed|exponential)\b", lambda m: RETRY_WORDS[m.group(1)], text)
    return GROUP_PREFIX.get(column, "") + text


def _named_groups(results: pd.DataFrame, by: str | Sequence[str] | None):
    keys = [] if by is None else [by] if isinstance(by, str) else list(by)
    for label, rows in _groups(results, by):
        if keys:
            label = " / ".join(group_name(k, rows[k].iloc[0]) for k in keys)
        yield label, rows


def _legend_label(name: str, rows: pd.DataFrame) -> str:
    counts = rows["status"].value_counts()
    label = (f"{name} (n={len(rows)}, lost {counts.get('lost', 0)}, "
             f"dead-lettered {counts.get('dead_lettered', 0)}")
    pending = counts.get("pending", 0)
    return label + (f", pending {pending})" if pending else ")")


def use_log(finished_s: np.ndarray, log: bool | str = "auto") -> bool:
    """The time axis's scale: log when asked, or ("auto") when the finished latencies span
    more than a decade (slowest / fastest > 10)."""
    if log != "auto":
        return bool(log)
    positive = finished_s[finished_s > 0]
    return bool(positive.size and positive.max() / positive.min() > LOG_SPAN)


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
        log: log x-axis: True, False, or "auto" (when the finished latencies span more than a decade).
        ax: where to draw; a new figure when None.
        target: the SLA's share, drawn as a horizontal line.

    Returns:
        The axes, with one labelled line per group (label "retry: fixed delay (n=…, lost …, …)").
    """
    if ax is None:
        _, ax = plt.subplots(figsize=(9, 4.5), layout="constrained")
    finished = latencies_s(results)
    finished = finished[np.isfinite(finished)]
    for name, rows in _named_groups(results, by):
        done = latencies_s(rows)
        done = done[np.isfinite(done)]
        label = _legend_label(name, rows)
        if done.size:
            sns.ecdfplot(x=done, weights=np.full(done.size, 1 / len(rows)), stat="count", ax=ax, label=label)
        else:
            ax.plot([], [], label=label)  # nothing finished: keep the group (and its losses) in the legend
    _decorate_ecdf(ax, finished, threshold_s, target, use_log(finished, log), by)
    return ax


def _decorate_ecdf(ax: Axes, finished: np.ndarray, threshold_s: float, target: float, log: bool, by) -> None:
    ax.axvline(threshold_s, color="#c62828", linestyle="--", linewidth=1.2, label=f"SLA bound {threshold_s:g} s")
    ax.axhline(target, color="#555555", linestyle=":", linewidth=1.2, label=f"SLA share {_pct(target)}")
    high = max(finished.max() if finished.size else threshold_s, threshold_s) * 1.15
    if log:
        ax.set_xscale("log")
        low = min(finished.min(), threshold_s) if finished.size else threshold_s / 100
        ax.set_xlim(max(low * 0.8, 1e-3), high)
    else:
        ax.set_xlim(0, high)
    ax.set_ylim(0, 1.02)
    ax.set_xlabel("end-to-end latency (s)" + (", log scale" if log else ""))
    ax.set_ylabel("share of all images done within x")
    grouping = "" if by is None else f" by {by if isinstance(by, str) else ' / '.join(by)}"
    ax.set_title(f"End-to-end latency{grouping} (unfinished images count as late)")
    ax.grid(True, which="major", alpha=0.3)
    ax.legend(loc="lower right", fontsize="small", framealpha=0.9)


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
    table["group"] = (table[keys].apply(lambda r: " / ".join(group_name(k, r[k]) for k in keys), axis=1)
                      if keys else "all")
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
