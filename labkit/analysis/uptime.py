"""Availability from health probes, estimated as downtime per outage rather than as a count of
independent probes.

Probes taken inside one outage are not independent: a service that is down at one probe is
almost surely down at the next, so ten failed probes in a row are one event, not ten. So the
downtime is estimated per outage: a run of consecutive failed probes of one service is one
outage, and each failed probe stands for one probe interval (the median spacing of the
service's probes) of downtime.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from labkit.analysis.results import _pct, _require


def probe_spacing_s(probes: pd.DataFrame) -> float:
    """The median time between two consecutive probes of one service, in seconds (0 with fewer than two)."""
    _require(probes, "t_ms", "service", name="probes")
    gaps = probes.sort_values("t_ms").groupby("service")["t_ms"].diff().dropna()
    return float(gaps.median() / 1000) if len(gaps) else 0.0


def outages(probes: pd.DataFrame, service: str = "pipeline") -> pd.DataFrame:
    """One row per outage of ``service``: a run of consecutive failed probes.

    Returns:
        ``start_ms``, ``end_ms`` (the first and last failed probe), ``failed_probes`` and
        ``downtime_s`` (failed probes times the probe spacing).
    """
    _require(probes, "t_ms", "service", "ok", name="probes")
    rows = probes[probes["service"] == service].sort_values("t_ms")
    down = ~rows["ok"].astype(bool).to_numpy()
    run = np.cumsum(np.concatenate([[down[0]], down[1:] & ~down[:-1]])) if down.size else down
    failed = rows.assign(outage=run)[down]
    table = failed.groupby("outage")["t_ms"].agg(start_ms="min", end_ms="max", failed_probes="size").reset_index(drop=True)
    return table.assign(downtime_s=table["failed_probes"] * probe_spacing_s(probes))


def downtime(probes: pd.DataFrame, target: float = 0.999) -> pd.DataFrame:
    """Per service: ``outages``, ``downtime_s``, the observed ``window_s`` (first probe to last,
    plus one spacing), ``downtime_share`` of it, and ``budget_s``, the downtime the target allows
    in that window."""
    spacing = probe_spacing_s(probes)
    rows = []
    for service, group in probes.groupby("service", sort=False):
        cut = outages(group, str(service))
        window_s = (group["t_ms"].max() - group["t_ms"].min()) / 1000 + spacing
        rows.append({"service": service, "outages": len(cut), "downtime_s": float(cut["downtime_s"].sum()),
                     "window_s": float(window_s), "budget_s": (1 - target) * float(window_s)})
    table = pd.DataFrame(rows, columns=["service", "outages", "downtime_s", "window_s", "budget_s"])
    return table.assign(downtime_share=(table["downtime_s"] / table["window_s"]).where(table["window_s"] > 0, 0.0))


def method_text(probes: pd.DataFrame, service: str = "pipeline") -> str:
    """How availability was estimated, in one paragraph with this run's numbers."""
    spacing = probe_spacing_s(probes)
    row = downtime(probes).set_index("service").loc[service]
    n = int((probes["service"] == service).sum())
    return (
        f"Estimated from {n} probes of the {service}, one every {spacing:.2g} s over a {row['window_s']:.0f} s window. "
        "Probes inside one outage are not independent, so consecutive failed probes count as one outage, and each "
        f"failed probe stands for one probe interval of downtime: {int(row['outages'])} outage(s), "
        f"{row['downtime_s']:.1f} s down, {_pct(row['downtime_share'])} of the window. An outage shorter than "
        f"{spacing:.2g} s can fall between two probes and go unseen. The verdict counts the outages, not the probes, "
        "as the independent events: its bound on the time down is the upper Poisson bound on how many outages the "
        "window could hold, each as long as the longest seen (one probe interval when none was)."
    )
