"""The results table of a run, read for the SLA: latencies, groups, where the time went and where the images went."""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import numpy as np
import pandas as pd

from labkit.errors import LabConfigError
from labkit.pipeline.fate import LEGACY_STATUSES, RESULT_FATES, Fate
from labkit.pipeline.metrics import STAGES

# The results' ``status`` is an image's fate (labkit.pipeline.fate), one word per image.
STATUSES = tuple(fate.value for fate in RESULT_FATES)


STAGE_COLUMNS = tuple(STAGES)


GROUP_COLUMNS = ("experiment", "policy", "fault")


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
    finished = (results["status"] == Fate.RESIZED).to_numpy() & np.isfinite(duration_s)
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


def accounting(results: pd.DataFrame) -> pd.DataFrame:
    """Where the images went, per experiment/policy/fault.

    Returns:
        One row per group: ``uploaded``, then one count per fate (``resized``, ``dead_lettered``,
        ``refused``, ``pending``, ``lost``), and ``duplicates`` (extra deliveries, summed).
    """
    _require(results, *GROUP_COLUMNS, "status", "duplicates")
    latencies_s(results)  # validates the statuses
    status = pd.get_dummies(results["status"]).reindex(columns=list(STATUSES), fill_value=0).astype(int)
    frame = pd.concat([results[list(GROUP_COLUMNS)], status, results["duplicates"].fillna(0).astype(int)], axis=1)
    grouped = frame.groupby(list(GROUP_COLUMNS), sort=True)
    table = grouped[list(STATUSES) + ["duplicates"]].sum()
    table.insert(0, "uploaded", grouped.size())
    return table.reset_index()


def with_current_statuses(results: pd.DataFrame) -> pd.DataFrame:
    """``results`` with the words older runs used (``ok``, ``error``) replaced by the fates'."""
    if "status" not in results.columns or not results["status"].isin(list(LEGACY_STATUSES)).any():
        return results
    return results.assign(status=results["status"].replace(LEGACY_STATUSES))
