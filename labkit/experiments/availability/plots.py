"""The run, drawn: the timeline with the kills, and each kill's cost per topology."""

from __future__ import annotations

import numpy as np
import pandas as pd

from labkit.analysis import uptime
from labkit.experiments.availability.analysis import per_fault
from labkit.experiments.availability.model import QUORUM_PROBE, TOPOLOGIES
from labkit.experiments.availability.runner import AvailabilityRun
from labkit.pipeline.fate import Fate

# ---------------------------------------------------------------- plots


def timeline_plot(run: AvailabilityRun, repetition: int = 0):
    """One panel per topology (its run ``repetition``): images completed per second, the faults shaded
    from the kill until the broker was healthy again, and the quorum probe's outages drawn in red
    along the bottom. Seconds count from the load's first upload."""
    import matplotlib.pyplot as plt

    chosen = [r for r in run.runs if r.repetition == repetition]
    fig, axes = plt.subplots(len(chosen), 1, figsize=(10, 2.6 * len(chosen)), sharex=True, layout="constrained",
                             squeeze=False)
    for ax, one in zip(axes[:, 0], chosen):
        t0 = one.window[0]
        done = one.results.loc[one.results["status"] == Fate.RESIZED, "t_done"].astype(float)
        per_s = ((done - t0) // 1000).value_counts().sort_index()
        seconds = np.arange(0, int(per_s.index.max()) + 2) if len(per_s) else np.arange(2)
        ax.step(seconds, per_s.reindex(seconds, fill_value=0), where="post", color="tab:blue",
                label="images completed per second")
        for f in one.faults.itertuples():
            ax.axvspan((f.start_ms - t0) / 1000, (f.end_ms - t0) / 1000, color="tab:orange", alpha=0.25)
            ax.annotate(f"kill -9 {f.target}", ((f.start_ms - t0) / 1000, ax.get_ylim()[1] * 0.92), fontsize=8)
        for o in uptime.outages(one.probes[one.probes["service"] == QUORUM_PROBE], QUORUM_PROBE).itertuples():
            ax.hlines(-0.3, (o.start_ms - t0) / 1000, (o.end_ms - t0) / 1000 + 0.5, color="tab:red", linewidth=6)
        ax.set(ylabel="images/s", title=f"{one.topology} ({TOPOLOGIES[one.topology]} broker(s)): "
                                        f"{len(one.faults)} kills, {per_fault(one)['downtime_s'].sum():.1f} s down")
        ax.set_xlim(0, (one.probes["t_ms"].max() - t0) / 1000 + 1)  # the drain's stragglers are not the run
    axes[-1, 0].set_xlabel("seconds since the load started (orange: broker down until healthy; red: pipeline down)")
    axes[0, 0].legend(loc="lower right", fontsize=8)
    return fig


def downtime_plot(faults: pd.DataFrame):
    """Two panels, one dot per fault, a bar at each topology's median: downtime by the quorum probe,
    and the longest gap between completed images."""
    import matplotlib.pyplot as plt

    topologies = list(dict.fromkeys(faults["topology"]))
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.8), layout="constrained")
    rng = np.random.default_rng(0)
    for ax, column, label in ((axes[0], "downtime_s", "downtime per fault (s, quorum probe)"),
                              (axes[1], "longest_gap_s", "longest gap between completed images (s)")):
        for i, topology in enumerate(topologies):
            values = faults.loc[faults["topology"] == topology, column].astype(float)
            ax.scatter(i + rng.uniform(-0.08, 0.08, len(values)), values, color="black", s=25, zorder=3)
            if len(values):
                ax.hlines(values.median(), i - 0.25, i + 0.25, color="tab:red", linewidth=2, zorder=2)
        ax.set_xticks(range(len(topologies)), [f"{t}\n({TOPOLOGIES[t]} broker(s))" for t in topologies])
        ax.set(ylabel=label, xlim=(-0.6, len(topologies) - 0.4))
        ax.set_ylim(bottom=0)
    n = faults.groupby("topology").size()
    fig.suptitle("Each broker kill's cost, per topology (dots: faults, " +
                 ", ".join(f"{t} n={n[t]}" for t in topologies) + "; red: median)")
    return fig
