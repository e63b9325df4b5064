"""Fault windows on plots."""

from __future__ import annotations

from typing import Any

import pandas as pd


def shade(ax: Any, windows: pd.DataFrame, origin_ms: float = 0.0, colour: str = "tab:red") -> None:
    """Shade each fault window of :meth:`Schedule.windows` on a plot whose x axis is seconds
    after ``origin_ms`` (epoch ms); a window still open runs to the plot's right edge.

    Example:
        >>> shade(ax, schedule.windows(), origin_ms)   # doctest: +SKIP
    """
    right_s = ax.get_xlim()[1]
    for i, w in enumerate(windows.itertuples()):
        end_s = right_s if pd.isna(w.end_ms) else (w.end_ms - origin_ms) / 1000
        first = i == 0 or w.fault not in windows.fault.iloc[:i].tolist()  # one legend entry per fault
        ax.axvspan((w.start_ms - origin_ms) / 1000, end_s, color=colour, alpha=0.15, lw=0, zorder=0,
                   label=w.fault if first else None)
