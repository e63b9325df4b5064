"""Comparisons across repetitions: each arm's median and spread, and the difference between two
arms with an interval, so that a difference within the noise reads as none detected.

Arms are repeated and interleaved (A, B, A, B, ...), so drift on a shared machine hits both;
repetition r of A pairs with repetition r of B. The difference's interval is Student's t
interval on the mean of the paired differences (it assumes they scatter roughly normally; with
few repetitions it is wide, as it should be).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd
from matplotlib.axes import Axes

from labkit.errors import LabConfigError


def spread(table: pd.DataFrame, by: Sequence[str], metric: str) -> pd.DataFrame:
    """Per arm (the ``by`` columns): ``repetitions``, ``median``, ``low`` and ``high`` (the
    smallest and largest repetition) of ``metric``."""
    missing = [c for c in (*by, metric) if c not in table]
    if missing:
        raise LabConfigError(f"The table lacks {', '.join(missing)}. Fix: pass the sweep's own columns.")
    grouped = table.groupby(list(by), sort=False)[metric]
    return grouped.agg(repetitions="size", median="median", low="min", high="max").reset_index()


def paired_difference(a: Sequence[float], b: Sequence[float], unit: str = "", name: str = "B − A",
                      confidence: float = 0.95) -> dict:
    """B minus A, repetition by repetition, with a t interval on the mean difference.

    Returns:
        ``differences``, ``mean``, ``low``, ``high`` (the interval; infinite with one
        repetition), ``confidence``, ``detectable`` (the interval excludes 0) and ``text``, a
        sentence that says "no detectable difference at this n" when the interval includes zero.

    Raises:
        LabConfigError: the arms have different numbers of repetitions, or none.
    """
    from scipy.stats import t

    a, b = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    if a.size != b.size or a.size == 0:
        raise LabConfigError(f"Need as many repetitions of each arm (got {a.size} and {b.size}), at least one.")
    d = b - a
    mean = float(d.mean())
    half = float(t.ppf((1 + confidence) / 2, d.size - 1) * d.std(ddof=1) / np.sqrt(d.size)) if d.size > 1 else np.inf
    low, high = mean - half, mean + half
    detectable = bool(low > 0 or high < 0)
    interval = (f"{confidence:.0%} interval {low:+.2f} to {high:+.2f}{unit} over {d.size} paired repetitions"
                if d.size > 1 else "no interval from one repetition")
    text = (f"{name}: mean {mean:+.2f}{unit}, {interval}: "
            + ("a detectable difference." if detectable else "no detectable difference at this n."))
    return {"differences": d.tolist(), "mean": mean, "low": low, "high": high, "confidence": confidence,
            "detectable": detectable, "text": text}


def errorbar_plot(summary: pd.DataFrame, label: Sequence[str], ax: Axes, ylabel: str,
                  points: pd.DataFrame | None = None, metric: str | None = None) -> Axes:
    """Each arm's median with error bars from its lowest to its highest repetition, and (when
    ``points`` and ``metric`` are given) every repetition as a dot."""
    names = summary[list(label)].astype(str).agg(lambda r: ", ".join(f"{k}={v}" for k, v in r.items()), axis=1)
    x = np.arange(len(summary))
    errors = [summary["median"] - summary["low"], summary["high"] - summary["median"]]
    ax.errorbar(x, summary["median"], yerr=errors, fmt="o", capsize=6, color="tab:blue",
                label="median, bars: lowest to highest repetition")
    if points is not None and metric:
        for i, key in enumerate(summary[list(label)].itertuples(index=False)):
            rows = points[(points[list(label)] == pd.Series(key, index=list(label))).all(axis=1)]
            ax.plot(np.full(len(rows), i) + 0.08, rows[metric], ".", color="tab:gray", alpha=0.8,
                    label="one repetition" if i == 0 else None)
    ax.set_xticks(x, names, rotation=20)
    ax.set_ylabel(ylabel)
    ax.legend(fontsize="small")
    ax.grid(True, axis="y", alpha=0.3)
    return ax
