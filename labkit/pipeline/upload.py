"""Feed images into the pipeline through Node-RED's upload endpoint, and wait for their metrics.

Example:
    >>> images = generate_pool(20, seed=1)                      # doctest: +SKIP
    >>> sent = push(lab, images, prefix="run1/")                # doctest: +SKIP
    >>> rows = wait_for(lab, sent["key"], timeout_s=120)        # doctest: +SKIP
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor

import httpx
import pandas as pd
from tenacity import (
    RetryCallState,
    RetryError,
    Retrying,
    retry_if_exception_type,
    stop_after_delay,
    wait_random_exponential,
)

from labkit.core.progress import bar
from labkit.errors import LabConfigError, ServiceError
from labkit.pipeline.images import PoolImage
from labkit.pipeline.metrics import load_metrics, metrics_path  # noqa: F401 - metrics_path: re-exported
from labkit.stack.lab import Lab
from labkit.stack.readiness import poll_until

UPLOAD_PATH = "/upload"
# The header that tells the upload endpoint a request is not a browser form's (a form cannot
# send it): without it, a form-like Content-Type (text/plain, urlencoded, none) is refused.
CLIENT_HEADERS = {"X-Requested-With": "labkit"}
# An upload may wait out the flow's retry deadline (30 s by default) before it answers.
UPLOAD_TIMEOUT_S = 90.0
POLL_INTERVAL_S = 0.25
PUSH_COLUMNS = ("key", "trace_id", "status", "attempts", "client_attempts", "t_upload_start", "t_uploaded", "bytes",
                "error")
# The client's own retry, for when the upload endpoint itself is unreachable (Node-RED
# restarting): errors where the request got no answer, the connection being refused or
# dropped. A retried upload that had in fact been stored overwrites the same key (at least
# once). Not a read timeout: a slow endpoint is not helped by more requests.
# 404 too: Node-RED answers before its flows have started, and then no /upload route exists yet
# (a 404 in the flow's JSON is the store's answer, and final). And a 503 with Retry-After:
# Node-RED has as many uploads in flight as it takes (settings.js, UPLOAD_LIMITS); the client
# waits at least that long. (The flow's own 503, when its retries gave up, has no Retry-After.)
CLIENT_RETRY_ON = (httpx.ConnectError, httpx.ConnectTimeout, httpx.RemoteProtocolError, httpx.ReadError,
                   httpx.WriteError)
NOT_READY_STATUSES = (404, 502)
CLIENT_RETRY_DEADLINE_S = 45.0
CLIENT_RETRY_MAX_WAIT_S = 3.0
_BACKOFF = wait_random_exponential(multiplier=0.2, max=CLIENT_RETRY_MAX_WAIT_S)


class _NotReady(Exception):
    """The endpoint answered, but as one that is starting or busy (see :func:`_not_ready`)."""

    def __init__(self, response: httpx.Response, retry_after_s: float = 0.0) -> None:
        super().__init__(f"HTTP {response.status_code}")
        self.response = response
        self.retry_after_s = retry_after_s


def _not_ready(response: httpx.Response) -> _NotReady | None:
    """The answer as a :class:`_NotReady` when it is worth another try, else None.

    A 404 or 502 that is not the flow's JSON (Node-RED starting, flows not deployed yet), or a
    503 with Retry-After (too many uploads in flight: try again after that many seconds).
    """
    is_flows = response.headers.get("content-type", "").startswith("application/json")
    if response.status_code in NOT_READY_STATUSES and not is_flows:
        return _NotReady(response)
    retry_after = response.headers.get("retry-after", "")
    if response.status_code == 503 and retry_after.isdigit():
        return _NotReady(response, float(retry_after))
    return None


def _client_wait(retry_state: RetryCallState) -> float:
    """Exponential backoff with full jitter, but no shorter than the answer's Retry-After."""
    error = retry_state.outcome.exception() if retry_state.outcome else None
    return max(_BACKOFF(retry_state), getattr(error, "retry_after_s", 0.0))


def upload_one(http: httpx.Client, key: str, data: bytes, content_type: str, trace_id: str | None = None,
               retry_deadline_s: float = CLIENT_RETRY_DEADLINE_S) -> dict:
    """POST one file to ``/upload``; one row of :func:`push`'s table (never raises on HTTP errors).

    The flow retries the store behind the endpoint (``attempts``), unless the store refused
    for good (a 4xx: the answer is the store's status and reason, at once); the client retries
    the endpoint itself when it cannot be reached or is busy, with exponential backoff and full
    jitter (at least the Retry-After it is given) for up to ``retry_deadline_s``
    (``client_attempts``; 0 turns that off). It sends ``X-Requested-With``
    (:data:`CLIENT_HEADERS`), which the endpoint wants from a non-browser client.

    Args:
        http: A client whose ``base_url`` is Node-RED.
        key: The object key in bucket ``dit247``.
        data: The file.
        content_type: Its MIME type.
        trace_id: Optional; the flow generates one when omitted.
        retry_deadline_s: How long the client keeps retrying an unreachable endpoint.
    """
    params = {"key": key, **({"trace_id": trace_id} if trace_id else {})}
    row = dict.fromkeys(PUSH_COLUMNS)
    row.update(key=key, trace_id=trace_id, bytes=len(data), client_attempts=0)
    retrying = Retrying(retry=retry_if_exception_type((*CLIENT_RETRY_ON, _NotReady)),
                        stop=stop_after_delay(retry_deadline_s), wait=_client_wait, reraise=True)
    try:
        for attempt in retrying:
            with attempt:
                row["client_attempts"] += 1
                response = http.post(UPLOAD_PATH, params=params, content=data,
                                     headers={"Content-Type": content_type, **CLIENT_HEADERS})
                if (again := _not_ready(response)) is not None:
                    raise again
    except _NotReady as e:
        response = e.response  # still not ready at the deadline: report its answer
    except (httpx.HTTPError, RetryError) as e:
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
        lab: The running lab (the flow deployed with :func:`labkit.pipeline.deploy.stand_up`).
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
            ThreadPoolExecutor(max_workers=concurrency) as pool, bar(len(images), "upload", not progress) as sent:

        def one(image: PoolImage) -> dict:
            row = upload_one(http, prefix + image.key, image.data, image.content_type, uuid.uuid4().hex)
            sent.update(1)
            return row

        rows = list(pool.map(one, images))
    return pd.DataFrame(rows, columns=list(PUSH_COLUMNS))


def wait_for(lab: Lab, keys: Iterable[str], timeout_s: float = 120.0) -> pd.DataFrame:
    """Poll the metrics file until every key has a line (any outcome); return those rows.

    Args:
        lab: The running lab.
        keys: Source object keys, as pushed.
        timeout_s: Give up after this long.

    Returns:
        The latest metrics row of each key (see :func:`labkit.pipeline.metrics.load_metrics`), in key order.

    Raises:
        ServiceError: Some keys have no line after ``timeout_s``; the message lists them.
    """
    wanted = list(dict.fromkeys(keys))
    path = metrics_path(lab)
    seen: dict[str, pd.DataFrame] = {}

    def all_recorded() -> bool:
        frame = load_metrics(path)
        seen["found"] = frame[frame["key"].isin(wanted)].drop_duplicates("key", keep="last").set_index("key")
        return len(seen["found"]) == len(wanted)

    if poll_until(all_recorded, timeout_s, POLL_INTERVAL_S) == "ready":
        return seen["found"].loc[wanted].reset_index()
    missing = [k for k in wanted if k not in seen["found"].index]
    raise ServiceError(
        f"{len(missing)} of {len(wanted)} images have no line in {path} after {timeout_s:.0f} s "
        f"(first: {missing[:3]}). Hint: `labkit.pipeline.verify.verify(lab)` names the hop that fails.")
