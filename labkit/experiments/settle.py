"""After a load: wait for the pipeline to drain, reconcile, and give every upload its fate.

- :func:`drain` waits (bounded) until every image has a metrics line, or the pipeline has gone
  quiet;
- :func:`classify` turns the load's table and the metrics lines into the results table, one row
  per upload (:data:`RESULT_COLUMNS`), its ``status`` one of :data:`STATUS`'s words;
- :func:`settle` does both, with reconciliation in between when the experiment asks for it.

The experiment runner, the benchmark and the fault matrix all settle this way.
"""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd
from tenacity import RetryError, Retrying, retry_if_result, stop_after_delay, wait_fixed

from labkit.experiments.spec import ExperimentSpec
from labkit.pipeline.deploy import CONSUMER_GROUP, OUTPUT_BUCKET
from labkit.pipeline.fate import Fate, Outcome
from labkit.pipeline.kafka import total_lag
from labkit.pipeline.metrics import STAGES, lab_metrics
from labkit.pipeline.reconcile import RECORD_GRACE_S, output_key, reconcile
from labkit.stack.lab import Lab

POLL_INTERVAL_S = 0.25
# How often a quiet drain asks Kafka and the store whether anything is still on its way.
QUIET_CHECK_S = 1.0
RESULT_COLUMNS = ("experiment", "policy", "fault", "repetition", "seed", "key", "status", "duplicates",
                  "duration_ms", *STAGES, "t_upload_start", "reason", "attempts", "upload_status", "reconciled",
                  "trace_id", "t_sched_ms", "t_start_ms", "t_end_ms", "t_webhook", "t_done",
                  "duration_from_sched_ms")
# The group columns come from the experiment (see :func:`settle`); classify fills the rest.
_CLASSIFIED = list(RESULT_COLUMNS[5:])


# ---------------------------------------------------------------- draining


class _Drain:
    """One look at the metrics file per call: the drain's answer once it has one, else None."""

    def __init__(self, lab: Lab, wanted: set[str], settle_s: float):
        self.lab, self.wanted, self.settle_s = lab, wanted, settle_s
        self.frame = pd.DataFrame()
        self.finished, self.changed, self.quiet_checked = -1, time.monotonic(), 0.0

    def look(self) -> tuple[pd.DataFrame, bool] | None:
        frame = lab_metrics(self.lab)
        self.frame = frame = frame[frame["key"].isin(self.wanted)]
        now = time.monotonic()
        count = frame.loc[frame["outcome"] != "malformed", "key"].nunique()
        if count >= len(self.wanted):
            return frame, False
        if count != self.finished:
            self.finished, self.changed = count, now
        if now - self.changed >= self.settle_s and now - self.quiet_checked >= QUIET_CHECK_S:
            self.quiet_checked = now
            if consumer_lag(self.lab) == 0 and not fresh_outputs(self.lab, self.wanted - set(frame["key"])):
                return frame, False
        return None


def drain(lab: Lab, keys: Sequence[str], timeout_s: float, settle_s: float) -> tuple[pd.DataFrame, bool]:
    """Wait until every key has a metrics line, or the pipeline has gone quiet, or ``timeout_s``.

    Quiet means: no key finished for ``settle_s``, the flow's consumer group has read
    everything on the topic (lag 0), and no unfinished key has a fresh output (the action
    wrote it, and the flow may still be waiting for the store's webhook to record it). Images
    still unfinished then are not coming. On a busy machine an image can take longer than
    ``settle_s``; the output check keeps such an image from being called lost.

    Returns:
        The metrics lines of ``keys``, and whether the pipeline was still moving at the end
        (the deadline passed while images were finishing or events were waiting on the topic).
    """
    drained = _Drain(lab, set(keys), settle_s)
    try:
        return Retrying(stop=stop_after_delay(timeout_s), wait=wait_fixed(POLL_INTERVAL_S),
                        retry=retry_if_result(lambda answer: answer is None))(drained.look)
    except RetryError:
        return drained.frame, True


def fresh_outputs(lab: Lab, keys: set[str], younger_than_s: float = RECORD_GRACE_S) -> list[str]:
    """The outputs of ``keys`` that were written less than ``younger_than_s`` ago: images the
    flow has resized but may not have recorded yet."""
    wanted = {}
    for key in keys:
        with contextlib.suppress(Exception):  # a key the action refuses has no output
            wanted[output_key(key)] = key
    if not wanted:
        return []
    prefix = os.path.commonprefix(list(wanted)) or None
    now = time.time()
    return [o.object_name for o in lab.s3("storage-out").list_objects(OUTPUT_BUCKET, prefix=prefix, recursive=True)
            if o.object_name in wanted and now - o.last_modified.timestamp() < younger_than_s]


def consumer_lag(lab: Lab) -> int | None:
    """Records on topic ``dit247`` the flow's consumer group has not read yet; None when Kafka does not answer."""
    return total_lag(lab.kafka_bootstrap, CONSUMER_GROUP)


# ---------------------------------------------------------------- classifying


def classify(load: pd.DataFrame, metrics: pd.DataFrame, moving: bool,
             reconciled: pd.DataFrame | None = None) -> pd.DataFrame:
    """One row per upload of the load table, with the image's fate as its ``status``:

    - ``resized``: a metrics line of outcome ok (``duplicates`` counts extra ok lines of its version);
    - ``superseded``: a newer upload of its key replaced it before it was resized (``reason`` says
      where the action found out);
    - ``dead_lettered``: the flow gave up on it (``reason`` is its error code);
    - ``refused``: its upload was refused, so the client knows (``reason`` says how);
    - ``lost``: no output and no dead-letter record once the pipeline went quiet;
    - ``pending``: still unfinished at the drain's deadline while the pipeline was moving.

    An upload's lines are those of its key with its trace id (or with none); when none of the
    key's lines has its trace id, all of them (the flow could not tell two uploads of the same
    bytes apart). (The words are :class:`labkit.pipeline.fate.Fate`'s, like reconcile's and audit's.)
    """
    republished = set() if reconciled is None else set(reconciled.loc[reconciled["action"] == "republished", "key"])
    by_key = {key: rows for key, rows in metrics.groupby("key")} if len(metrics) else {}
    rows = [_fate(upload, _own_lines(by_key.get(upload.key), upload), moving)
            | {"reconciled": upload.key in republished} for upload in load.itertuples()]
    return pd.DataFrame(rows, columns=_CLASSIFIED)


def _own_lines(lines: pd.DataFrame | None, upload: Any) -> pd.DataFrame | None:
    """The lines of ``upload``'s key that are about this upload: its trace id's, and those without one."""
    trace_id = getattr(upload, "trace_id", None)
    if lines is None or "trace_id" not in lines or not isinstance(trace_id, str):
        return lines
    mine = lines["trace_id"] == trace_id
    return lines[mine | lines["trace_id"].isna()] if mine.any() else lines


def _versions(lines: pd.DataFrame) -> int:
    """How many versions (trace id and ETag) ``lines`` are about; lines that name none are one."""
    columns = [c for c in ("trace_id", "source_etag") if c in lines]
    return len(lines[columns].fillna("").drop_duplicates()) if columns else min(1, len(lines))


def _fate(upload: Any, lines: pd.DataFrame | None, moving: bool) -> dict:
    """One upload's row: what the load saw, then what its metrics lines (if any) say."""
    row = _upload_row(upload)
    ok = lines[lines["outcome"] == "ok"].sort_values("t_done") if lines is not None else None
    superseded = lines[lines["outcome"] == Outcome.SUPERSEDED] if lines is not None else None
    failed = lines[~lines["outcome"].isin([Outcome.OK, Outcome.SUPERSEDED])] if lines is not None else None
    if ok is not None and len(ok):
        line, fate = ok.iloc[0], Fate.RESIZED  # the first delivery; the others are duplicates
        row.update({stage: line[stage] for stage in STAGES})
        row.update(reason=None, duplicates=len(ok) - _versions(ok), duration_ms=line["duration_ms"],
                   t_webhook=line["t_webhook"],
                   t_done=line["t_done"], attempts=line["attempts"],
                   t_upload_start=_first(line["t_upload_start"], row["t_upload_start"]),
                   duration_from_sched_ms=line["t_done"] - upload.t_sched_ms)
    elif superseded is not None and len(superseded):
        line, fate = superseded.iloc[-1], Fate.SUPERSEDED
        row.update({stage: line[stage] for stage in STAGES})
        row.update(reason=f"superseded at {line.get('found_at')}", attempts=line["attempts"])
    elif failed is not None and len(failed):
        line, fate = failed.iloc[-1], Fate.DEAD_LETTERED
        row.update({stage: line[stage] for stage in STAGES})
        row.update(reason=str(line.get("code") or line["outcome"]), attempts=line["attempts"])
    elif upload.status_code != 200:
        fate = Fate.REFUSED
        row["reason"] = (f"upload refused: HTTP {upload.status_code}: {upload.error}" if upload.status_code
                         else f"upload failed: {upload.error}")
    else:
        fate = Fate.PENDING if moving else Fate.LOST
        row["reason"] = "still in flight at the cut-off" if moving else "no output and no dead-letter record"
    return row | {"status": fate.value}


def _upload_row(upload: Any) -> dict:
    """What the load generator knows of one upload; the timings it cannot know are NaN."""
    return {"key": upload.key, "trace_id": upload.trace_id, "upload_status": upload.status_code,
            "t_sched_ms": upload.t_sched_ms, "t_start_ms": upload.t_start_ms, "t_end_ms": upload.t_end_ms,
            "attempts": upload.attempts, "duplicates": 0, "duration_ms": np.nan, "t_webhook": np.nan,
            "t_done": np.nan, "duration_from_sched_ms": np.nan,
            "t_upload_start": _first(upload.t_upload_start, upload.t_start_ms), **dict.fromkeys(STAGES, np.nan)}


def _first(*values: Any) -> Any:
    return next((v for v in values if v is not None and not pd.isna(v)), np.nan)


# ---------------------------------------------------------------- the whole step


def settle(lab: Lab, spec: ExperimentSpec, table: pd.DataFrame, prefix: str, repetition: int = 0,
           seed: int | None = None, fault: str | None = None) -> tuple[pd.DataFrame, pd.DataFrame | None]:
    """After a load: drain, reconcile if ``spec`` says so (and drain again), classify every upload.

    Returns:
        The results (:data:`RESULT_COLUMNS`, grouped by ``spec`` and ``fault``, default its
        fault's name) and what reconciliation found (None when it did not run).
    """
    sent = table.loc[table["status_code"] == 200, "key"].tolist()
    rows, moving = drain(lab, sent, spec.drain_timeout_s, spec.settle_s)
    reconciled = None
    if spec.reconcile:
        # The drain saw settle_s of quiet, so an output that old without a line lost its record.
        reconciled = reconcile(lab, republish=True, prefix=prefix, grace_s=0, record_grace_s=spec.settle_s + 2.0)
        if (reconciled["action"] == "republished").any():
            rows, moving = drain(lab, sent, spec.drain_timeout_s, spec.settle_s)
    results = classify(table, rows, moving, reconciled)
    for column, value in (("seed", spec.seed if seed is None else seed), ("repetition", repetition),
                          ("fault", fault or spec.fault_name), ("policy", spec.policy_name),
                          ("experiment", spec.name)):
        results.insert(0, column, value)
    return results[list(RESULT_COLUMNS)], reconciled
