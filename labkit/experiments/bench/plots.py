"""The benchmark's figures: latency against rate beside the bare loop, and a scaling sweep."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from labkit.experiments.bench.cpu import cpu_table
from labkit.experiments.bench.result import BenchResult
from labkit.experiments.bench.sweep import SWEEP_AXES
from labkit.pipeline.metrics import STAGES

if TYPE_CHECKING:
    from matplotlib.figure import Figure


def _percentile_with_bounds(ax, table, name: str, style: str) -> None:
    """One percentile against the rate, with its 95% order-statistic bounds as error bars; where
    the sample gives no upper bound (a p99 from fewer than 299 images), an open arrow says so."""
    estimate = table[f"{name}_ms"].astype(float)
    if f"{name}_high_ms" not in table:  # a result written before the bounds were
        ax.plot(table.index, estimate, style, label=name)
        return
    low, high = table[f"{name}_low_ms"].astype(float), table[f"{name}_high_ms"].astype(float)
    bounded = np.isfinite(high)
    below = (estimate - low.where(np.isfinite(low), estimate)).clip(lower=0)
    above = (high.where(bounded, estimate) - estimate).clip(lower=0)
    lines = ax.errorbar(table.index, estimate, yerr=[below, above], fmt=style, capsize=3,
                        label=f"{name} (95% bounds)")
    if (~bounded).any():
        ax.plot(table.index[~bounded], estimate[~bounded] * 1.6, marker="^", linestyle="none", markersize=9,
                markerfacecolor="none", color=lines[0].get_color(), label=f"{name}: no upper bound at this n")


def plot(result: BenchResult) -> Figure:
    """Left: p50/p95/p99 against the rate, with the bare ms per image; middle: stage medians per rate;
    right (when the run sampled it): CPU ms per image of each process at saturation."""
    import matplotlib

    if matplotlib.get_backend().lower() not in ("module://matplotlib_inline.backend_inline", "inline"):
        matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    table = result.rates
    cpu = cpu_table(result.data)
    figure, axes = plt.subplots(1, 3 if len(cpu) else 2, figsize=(18 if len(cpu) else 12, 4.5))
    left, right = axes[0], axes[1]
    if len(cpu):
        draw_cpu(axes[2], cpu, result.data["bare"]["ms_per_image_median"])
    for column, style in (("p50_ms", "o-"), ("p95_ms", "s--"), ("p99_ms", "^:")):
        _percentile_with_bounds(left, table, column.removesuffix("_ms"), style)
    left.axhline(result.data["bare"]["ms_per_image_median"], color="grey", linestyle="-.",
                 label="bare resize, ms/image")
    left.set(xlabel="offered rate (images/s)", ylabel="end to end (ms)", yscale="log",
             title="Latency against rate")
    left.legend(fontsize=8)
    stages = table[list(STAGES)].clip(lower=0).rename(columns=lambda s: s.removesuffix("_ms"))
    stages.plot.bar(stacked=True, ax=right, colormap="tab10", rot=0)
    right.set(xlabel="offered rate (images/s)", ylabel="median per stage (ms)", title="Where the time goes")
    right.legend(fontsize=8, ncols=3)
    saturation = result.data["saturation"]["throughput_img_s"]
    figure.suptitle(f"saturation {saturation:g} img/s vs bare {result.data['bare']['throughput_img_s']:g} img/s "
                    f"({result.data['environment']['machine']['cores']} cores)")
    figure.tight_layout()
    return figure


def draw_cpu(ax, cpu: pd.DataFrame, bare_ms: float) -> None:
    """Horizontal bars: each process's CPU ms per image (the total in the title), the bare resize marked."""
    rows = cpu.drop(index="all", errors="ignore").iloc[::-1]
    ax.barh(rows.index, rows["cpu_ms_per_image"], color="tab:orange")
    ax.axvline(bare_ms, color="grey", linestyle="-.", label="bare resize, ms/image (wall)")
    total = cpu["cpu_ms_per_image"].get("all")
    ax.set(xlabel="CPU ms per image", title=f"Where the CPU goes (all: {total:g} ms/image)")
    ax.legend(fontsize=8)


def cpu_plot(result: BenchResult) -> Figure:
    """Its own figure: CPU ms per image of each process at saturation."""
    import matplotlib.pyplot as plt

    figure, ax = plt.subplots(figsize=(7, 4))
    draw_cpu(ax, cpu_table(result.data), result.data["bare"]["ms_per_image_median"])
    figure.tight_layout()
    return figure


def sweep_plot(table: pd.DataFrame, varied: Sequence[str] | None = None) -> Figure:
    """Throughput (left) and p50/p99 (right) for each point of a sweep, labelled by the axes that vary."""
    import matplotlib.pyplot as plt

    varied = list(varied or [a for a in SWEEP_AXES if table[a].nunique() > 1] or ["partitions"])
    labels = table[varied].astype(str).agg(lambda r: " ".join(f"{a[0].upper()}{v}" for a, v in r.items()), axis=1)
    figure, (left, right) = plt.subplots(1, 2, figsize=(12, 4))
    left.bar(labels, table["throughput_img_s"], color="tab:blue")
    left.set(ylabel="images/s", title="Saturation throughput")
    right.plot(labels, table["p50_ms"], "o-", label="p50")
    right.plot(labels, table["p99_ms"], "^:", label="p99")
    right.set(ylabel="end to end (ms)", title="Latency under the burst")
    right.legend()
    for ax in (left, right):
        ax.tick_params(axis="x", rotation=30)
        ax.set_xlabel(" ".join(f"{a[0].upper()}={a}" for a in varied))
    figure.tight_layout()
    return figure
