"""The pipeline's metrics file as a tidy table: one row per image, one column per fact.

Node-RED appends one JSON line per image to the metrics file. Timestamps are
epoch milliseconds (``t_*``); durations are milliseconds (``*_ms``).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

import pandas as pd

from labkit.stack.backends.base import Backend
from labkit.stack.services.nodered import METRICS_FILE

if TYPE_CHECKING:
    from labkit.stack.lab import Lab

# The stamps in pipeline order; each stage is the gap between two neighbours.
# One pair races: the store publishes an upload's event as it answers the PUT, so
# t_event can precede t_uploaded by a few ms (a slightly negative event_ms).
STAMPS = ("t_upload_start", "t_uploaded", "t_event", "t_invoke_start", "t_action_start", "t_action_end", "t_webhook")
STAGES = {
    "upload_ms": ("t_upload_start", "t_uploaded"),
    "event_ms": ("t_uploaded", "t_event"),
    "dispatch_ms": ("t_event", "t_invoke_start"),
    "invoke_ms": ("t_invoke_start", "t_action_start"),
    "action_ms": ("t_action_start", "t_action_end"),
    "webhook_ms": ("t_action_end", "t_webhook"),
}
# t_done: when the pipeline knew the image was done. That is t_webhook, or, when the store's
# best-effort webhook never came and the flow found the output itself (completed_by
# "check"), t_action_end; duration_ms = t_done - t_upload_start (t_event without an upload stamp).
COLUMNS = ("key", "trace_id", "attempts", "outcome", *STAMPS, "t_done", "completed_by", "duration_ms")


# A metrics file that Node-RED writes elsewhere (a remote lab's), mirrored here: its path ->
# what brings it up to date; every read through read_lines pulls first.
_PULLERS: dict[Path, Callable[[Path], None]] = {}


def metrics_path(lab: Lab) -> Path:
    """The metrics file Node-RED appends to (``LABKIT_METRICS_FILE`` of the nodered service).

    A remote lab's Node-RED writes it on its own machine: the path is then the lab's mirror of
    it, brought up to date here and before each read by :func:`read_lines` (and so by every
    reader here): ``Backend.pull_metrics``, the flow's ``GET /pipeline/metrics``.
    """
    path = lab.ctx.config.data_dir / METRICS_FILE
    backend = getattr(lab, "backend", None)
    if backend is not None and type(backend).pull_metrics is not Backend.pull_metrics:
        _PULLERS[path] = backend.pull_metrics
        backend.pull_metrics(path)  # for a reader that looks at the file itself (its size, its mtime)
    return path


def lab_metrics(lab: Lab) -> pd.DataFrame:
    """The lab's metrics file as a table, one row per image (see :func:`load_metrics`)."""
    return load_metrics(metrics_path(lab))


def read_lines(path: Path) -> list[dict]:
    """Parse the metrics file, skipping (never failing on) a torn last line.

    Lines end at "\n" only: a key may hold U+2028 or U+2029, which JSON leaves unescaped and
    ``str.splitlines`` would take for line ends.
    """
    rows = []
    if pull := _PULLERS.get(path):
        pull(path)
    if not path.exists():
        return rows
    for line in path.read_text(errors="replace").split("\n"):
        try:
            rows.append(json.loads(line))
        except ValueError:
            continue  # a line still being written
    return rows


def load_metrics(path: Path) -> pd.DataFrame:
    """Load the metrics file into a DataFrame with the per-stage durations derived.

    Returns:
        One row per line, with ``COLUMNS``, every ``STAGES`` column, and ``duration_s``.
    """
    frame = _action_phases_apart(pd.DataFrame(read_lines(path)))
    for column in COLUMNS:
        if column not in frame:
            frame[column] = pd.NA
    for stamp in (*STAMPS, "t_done"):
        frame[stamp] = pd.to_numeric(frame[stamp], errors="coerce")
    frame["t_done"] = frame["t_done"].fillna(frame["t_webhook"])  # lines written before t_done existed
    for stage, (start, end) in STAGES.items():
        frame[stage] = frame[end] - frame[start]
    frame["duration_ms"] = pd.to_numeric(frame["duration_ms"], errors="coerce")
    frame["duration_s"] = frame["duration_ms"] / 1000.0
    return frame


def waterfall(frame: pd.DataFrame) -> pd.DataFrame:
    """Per-image stage offsets from the upload start, ready for a waterfall plot."""
    ok = frame[frame["outcome"] == "ok"]
    offsets = ok[list(STAMPS)].sub(ok["t_upload_start"], axis=0)
    return offsets.assign(key=ok["key"]).set_index("key")


def _action_phases_apart(frame: pd.DataFrame) -> pd.DataFrame:
    """Keep the action's own phase timings as ``action_*_ms``, apart from the pipeline stages
    (the action's ``upload_ms`` is its write to S3, not the client's upload)."""
    for phase in ("download", "resize", "upload"):
        raw, named = f"{phase}_ms", f"action_{phase}_ms"
        if raw in frame and named not in frame:
            frame = frame.rename(columns={raw: named})
        elif raw in frame:
            frame = frame.drop(columns=raw)
    return frame


def waterfall_plot(frame: pd.DataFrame, ax=None, limit: int = 20):
    """Horizontal bars, one row per image, one colour per stage, from its upload start.

    Shows where each image's time went; long bars of one colour point at the slow hop.
    """
    import matplotlib.pyplot as plt
    import seaborn as sns

    offsets = waterfall(frame).head(limit)
    ax = ax or plt.subplots(figsize=(9, 0.35 * len(offsets) + 1.5))[1]
    colours = dict(zip(STAGES, sns.color_palette("colorblind", len(STAGES))))
    for row, (_, stamps) in enumerate(offsets.iterrows()):
        for stage, (start, end) in STAGES.items():
            left, right = stamps[start], stamps[end]
            if pd.notna(left) and pd.notna(right):
                ax.barh(row, (right - left) / 1000, left=left / 1000, color=colours[stage],
                        label=stage.removesuffix("_ms") if row == 0 else None)
    ax.set_yticks(range(len(offsets)), [str(k)[-28:] for k in offsets.index], fontsize=8)
    ax.invert_yaxis()
    ax.set(xlabel="seconds since upload start", title="Where each image's time goes")
    ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.12 - 1.2 / (len(offsets) + 4)), ncols=len(STAGES),
              fontsize=8, frameon=False)
    ax.figure.tight_layout()
    return ax
