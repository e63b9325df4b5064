"""The pipeline's metrics file as a tidy table: one row per image, one column per fact.

Node-RED appends one JSON line per image to the metrics file. Timestamps are
epoch milliseconds (``t_*``); durations are milliseconds (``*_ms``).
"""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd

# The stamps in pipeline order; each stage is the gap between two neighbours.
STAMPS = ("t_upload_start", "t_uploaded", "t_event", "t_invoke_start", "t_action_start", "t_action_end", "t_webhook")
STAGES = {
    "upload_ms": ("t_upload_start", "t_uploaded"),
    "event_ms": ("t_uploaded", "t_event"),
    "dispatch_ms": ("t_event", "t_invoke_start"),
    "invoke_ms": ("t_invoke_start", "t_action_start"),
    "action_ms": ("t_action_start", "t_action_end"),
    "webhook_ms": ("t_action_end", "t_webhook"),
}
COLUMNS = ("key", "trace_id", "attempts", "outcome", *STAMPS, "duration_ms")


def read_lines(path: Path) -> list[dict]:
    """Parse the metrics file, skipping (never failing on) a torn last line."""
    rows = []
    if not path.exists():
        return rows
    for line in path.read_text(errors="replace").splitlines():
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
    for stamp in STAMPS:
        frame[stamp] = pd.to_numeric(frame[stamp], errors="coerce")
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
