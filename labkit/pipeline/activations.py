"""OpenWhisk activation records as tidy rows (one per activation, times in ms)."""

from __future__ import annotations

import pandas as pd


def activation_row(record: dict) -> dict:
    """Flatten one activation record: its timings, status and the annotations that matter."""
    notes = {a["key"]: a["value"] for a in record.get("annotations", [])}
    response = record.get("response", {})
    return {
        "activation_id": record["activationId"],
        "name": record.get("name"),
        "status": response.get("status"),
        "success": response.get("success"),
        "start_ms": record.get("start"),
        "duration_ms": record.get("duration"),
        "wait_ms": notes.get("waitTime"),
        "init_ms": notes.get("initTime"),
        "cold": "initTime" in notes,
    }


def activations_frame(records: list[dict]) -> pd.DataFrame:
    return pd.DataFrame([activation_row(r) for r in records])
