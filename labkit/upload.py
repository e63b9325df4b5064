"""Feed images into the pipeline through Node-RED's upload endpoint, and wait for their metrics.

Example:
    >>> images = generate_pool(20, seed=1)                      # doctest: +SKIP
    >>> sent = push(lab, images, prefix="run1/")                # doctest: +SKIP
    >>> rows = wait_for(lab, sent["key"], timeout_s=120)        # doctest: +SKIP
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pandas as pd
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from labkit.errors import LabConfigError, ServiceError
from labkit.images import PoolImage
from labkit.lab import Lab
from labkit.metrics import load_metrics
from labkit.services.nodered import METRICS_FILE

UPLOAD_PATH = "/upload"
# An upload may wait out the flow's retry deadline (30 s by default) before it answers.
UPLOAD_TIMEOUT_S = 90.0
POLL_INTERVAL_S = 0.25
PUSH_COLUMNS = ("key", "trace_id", "status", "attempts", "t_upload_start", "t_uploaded", "bytes", "error")


def metrics_path(lab: Lab) -> Path:
    """The metrics file Node-RED appends to (``LABKIT_METRICS_FILE`` of the nodered service)."""
    return lab.ctx.config.data_dir / METRICS_FILE


def upload_one(http: httpx.Client, key: str, data: bytes, content_type: str, trace_id: str | None = None) -> dict:
    """POST one file to ``/upload``; one row of :func:`push`'s table (never raises on HTTP errors).

    Args:
        http: A client whose ``base_url`` is Node-RED.
        key: The object key in bucket ``dit247``.
        data: The file.
        content_type: Its MIME type.
        trace_id: Optional; the flow generates one when omitted.
    """
    params = {"key": key, **({"trace_id": trace_id} if trace_id else {})}
    row = dict.fromkeys(PUSH_COLUMNS)
    row.update(key=key, trace_id=trace_id, bytes=len(data))
    try:
        response = http.post(UPLOAD_PATH, params=params, content=data, headers={"Content-Type": content_type})
    except httpx.HTTPError as e:
        row.update(status=None, error=f"{type(e).__name__}: {e}")
        return row
    row["status"] = response.status_code
    try:
        body = response.json()
    except ValueError:
        body = {"error": response.text[:300]}
    row.update({k: body.get(k) for k in ("trace_id", "attempts", "t_upload_start", "t_uploaded") if k in body})
    if response.status_code != 200:
        row["error"] = body.get("error") or response.reason_phrase
    return row


def push(lab: Lab, images: Sequence[PoolImage], concurrency: int = 4, progress: bool = True,
         prefix: str = "") -> pd.DataFrame:
    """Upload images through the pipeline's upload endpoint, ``concurrency`` at a time.

    Args:
        lab: The running lab (the flow deployed with :func:`labkit.pipeline.stand_up`).
        images: What to upload; each goes to ``prefix + image.key``.
        concurrency: Uploads in flight at once (1..64).
        progress: Show a progress bar.
        prefix: Put before every key, e.g. a run id, so runs do not overwrite each other.

    Returns:
        One row per image, in input order: ``key, trace_id, status`` (HTTP, None when
        Node-RED was unreachable), ``attempts, t_upload_start, t_uploaded`` (epoch ms),
        ``bytes``, ``error``. Failed uploads are rows with an error, not exceptions.

    Raises:
        LabConfigError: ``concurrency`` is out of range.
    """
    if not 1 <= concurrency <= 64:
        raise LabConfigError(f"concurrency must be between 1 and 64, got {concurrency}")
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    with httpx.Client(base_url=lab.endpoints["nodered"], timeout=UPLOAD_TIMEOUT_S, limits=limits) as http, \
            ThreadPoolExecutor(max_workers=concurrency) as pool, _ProgressBar(progress, len(images)) as advance:

        def one(image: PoolImage) -> dict:
            row = upload_one(http, prefix + image.key, image.data, image.content_type, uuid.uuid4().hex)
            advance()
            return row

        rows = list(pool.map(one, images))
    return pd.DataFrame(rows, columns=list(PUSH_COLUMNS))


class _ProgressBar:
    """A rich progress bar (or nothing) whose ``advance`` is safe from worker threads."""

    def __init__(self, show: bool, total: int):
        self.progress = Progress(TextColumn("upload"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                                 disable=not show)
        self.task = self.progress.add_task("upload", total=total)

    def __enter__(self):
        self.progress.start()
        return lambda: self.progress.advance(self.task)

    def __exit__(self, *exc: object) -> None:
        self.progress.stop()


def wait_for(lab: Lab, keys: Iterable[str], timeout_s: float = 120.0) -> pd.DataFrame:
    """Poll the metrics file until every key has a line (any outcome); return those rows.

    Args:
        lab: The running lab.
        keys: Source object keys, as pushed.
        timeout_s: Give up after this long.

    Returns:
        The latest metrics row of each key (see :func:`labkit.metrics.load_metrics`), in key order.

    Raises:
        ServiceError: Some keys have no line after ``timeout_s``; the message lists them.
    """
    wanted = list(dict.fromkeys(keys))
    path = metrics_path(lab)
    deadline = time.monotonic() + timeout_s
    while True:
        frame = load_metrics(path)
        found = frame[frame["key"].isin(wanted)].drop_duplicates("key", keep="last").set_index("key")
        missing = [k for k in wanted if k not in found.index]
        if not missing:
            return found.loc[wanted].reset_index()
        if time.monotonic() >= deadline:
            raise ServiceError(
                f"{len(missing)} of {len(wanted)} images have no line in {path} after {timeout_s:.0f} s "
                f"(first: {missing[:3]}). Hint: `labkit.pipeline.verify(lab)` names the hop that fails.")
        time.sleep(POLL_INTERVAL_S)
