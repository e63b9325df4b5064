"""Load generators: feed the pipeline images at a chosen rate (open loop) or concurrency (closed loop).

Both draw their images from a deterministic pool (:func:`labkit.pipeline.images.generate_pool`),
upload through Node-RED's ``/upload`` endpoint (:func:`labkit.pipeline.upload.upload_one` over one
shared ``httpx.Client``), are bounded by a number of images *and* a duration, can be
stopped at any time, and return one tidy row per upload (:data:`LOAD_COLUMNS`).

Open loop versus closed loop:

- **Open loop** (:func:`start_open_loop`): arrivals follow a Poisson process of rate ``R``,
  whatever the pipeline does, the way independent users arrive. Each arrival is handed to
  a bounded pool of upload workers; when every worker is busy the arrival waits in the
  pool's queue, and the arrival clock keeps ticking.
- **Closed loop** (:func:`start_closed_loop`): ``C`` uploaders, each sending its next image
  as soon as its previous upload returns. The offered load adapts to the system: a slow
  pipeline receives fewer images.

The coordinated-omission trap: a closed-loop client (or an open-loop one that waits for a
slow request before scheduling the next) stops sending exactly when the system is slow, so
the slow period contributes few samples and percentiles look better than what users saw.
The open loop here never waits: it records ``t_sched_ms`` (when the image *should* have been
sent) beside ``t_start_ms`` (when a worker actually sent it). ``t_start_ms - t_sched_ms`` is
the client-side queueing delay; measuring latency from ``t_sched_ms`` includes it, which is
what an arriving user experiences.

Example:
    >>> run = start_open_loop(lab, rate_per_s=5, max_images=50, max_duration_s=30)  # doctest: +SKIP
    >>> run.stop()                                                                  # doctest: +SKIP
    >>> table = run.wait()                                                          # doctest: +SKIP
    >>> switch = LoadSwitch(lab, rate_per_s=2)                                      # doctest: +SKIP
    >>> control_panel(lab, load_start=switch.start, load_stop=switch.stop)          # doctest: +SKIP
"""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import httpx
import numpy as np
import pandas as pd

from labkit.core.progress import bar
from labkit.errors import LabConfigError
from labkit.pipeline.images import PoolImage, generate_pool
from labkit.pipeline.upload import UPLOAD_TIMEOUT_S, upload_one
from labkit.stack.lab import Lab

LOAD_COLUMNS = ("key", "trace_id", "t_sched_ms", "t_start_ms", "t_end_ms", "status_code", "attempts", "client_attempts",
                "error", "t_upload_start", "t_uploaded", "bytes")
# Hard caps, whatever the caller asks for.
MAX_IMAGES = 100_000
MAX_DURATION_S = 24 * 3600.0
MAX_RATE_PER_S = 500.0
MAX_WORKERS = 64
# Distinct images generated up front; a longer run cycles through them (under distinct keys).
DEFAULT_POOL_SIZE = 16
SMALL_SIZES = [(640, 480), (800, 600), (1024, 768), (1280, 720)]

OnUpload = Callable[[dict], None]


def now_ms() -> float:
    return time.time() * 1000.0


def make_pool(max_images: int, seed: int = 0, sizes: Sequence[tuple[int, int]] | None = None,
              pool_size: int = DEFAULT_POOL_SIZE) -> list[PoolImage]:
    """The images a run uploads: ``min(max_images, pool_size)`` from :func:`generate_pool`."""
    return generate_pool(min(max_images, pool_size), seed=seed, sizes=sizes)


def _check(max_images: int, max_duration_s: float) -> None:
    if isinstance(max_images, bool) or not isinstance(max_images, int) or not 1 <= max_images <= MAX_IMAGES:
        raise LabConfigError(f"max_images must be an integer in 1..{MAX_IMAGES}, got {max_images!r}. "
                             "Fix: pass how many images the run may upload at most.")
    if not 0 < max_duration_s <= MAX_DURATION_S:
        raise LabConfigError(f"max_duration_s must be in (0, {MAX_DURATION_S:.0f}], got {max_duration_s!r}. "
                             "Fix: pass the longest the run may last, in seconds.")


def check_open_loop(rate_per_s: float, max_images: int, max_duration_s: float, workers: int = 16) -> None:
    """Refuse an open loop's bad parameters before anything is sent.

    Raises:
        LabConfigError: a bad rate, bound or worker count (the message names the fix).
    """
    _check(max_images, max_duration_s)
    if not 0 < rate_per_s <= MAX_RATE_PER_S:
        raise LabConfigError(f"rate_per_s must be in (0, {MAX_RATE_PER_S:.0f}], got {rate_per_s!r}. "
                             "Fix: pass the mean number of uploads per second.")
    if not 1 <= workers <= MAX_WORKERS:
        raise LabConfigError(f"workers must be in 1..{MAX_WORKERS}, got {workers!r}.")


@dataclass
class LoadRun:
    """A load generator running in a background thread.

    Use :meth:`stop` to end it early, :meth:`wait` to block until it has ended and get
    its table, :meth:`results` for the table so far. ``in_flight`` and ``max_in_flight``
    count uploads being sent right now and the most at once.
    """

    kind: str
    planned: int
    _stop: threading.Event = field(default_factory=threading.Event, repr=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)
    _rows: list[dict] = field(default_factory=list, repr=False)
    _thread: threading.Thread | None = field(default=None, repr=False)
    _error: BaseException | None = field(default=None, repr=False)
    in_flight: int = 0
    max_in_flight: int = 0

    def stop(self) -> None:
        """Send no more images; uploads already under way finish, queued ones are dropped."""
        self._stop.set()

    @property
    def stopping(self) -> bool:
        return self._stop.is_set()

    def done(self) -> bool:
        return self._thread is not None and not self._thread.is_alive()

    def wait(self, timeout_s: float | None = None) -> pd.DataFrame:
        """Block until the run has ended; return :meth:`results`.

        Raises:
            TimeoutError: still running after ``timeout_s`` (it keeps running; call :meth:`stop`).
            Exception: whatever ended the run abnormally (e.g. raised by an ``on_upload`` callback).
        """
        assert self._thread is not None
        self._thread.join(timeout_s)
        if self._thread.is_alive():
            raise TimeoutError(f"the {self.kind} load run was still running after {timeout_s} s")
        if self._error is not None:
            raise self._error
        return self.results()

    def results(self) -> pd.DataFrame:
        """One row per upload sent so far (:data:`LOAD_COLUMNS`), in the order they were sent."""
        with self._lock:
            rows = list(self._rows)
        frame = pd.DataFrame(rows, columns=list(LOAD_COLUMNS))
        return frame.sort_values("t_start_ms", kind="stable").reset_index(drop=True)

    # -- used by the generators ------------------------------------------------
    def _begin(self) -> None:
        with self._lock:
            self.in_flight += 1
            self.max_in_flight = max(self.max_in_flight, self.in_flight)

    def _end(self, row: dict) -> None:
        with self._lock:
            self.in_flight -= 1
            self._rows.append(row)

    def _start(self, target: Callable[[], None]) -> LoadRun:
        def body() -> None:
            try:
                target()
            except BaseException as e:  # noqa: BLE001 - kept for wait() to raise
                self._error = e
                self._stop.set()

        self._thread = threading.Thread(target=body, name=f"labkit-load-{self.kind}", daemon=True)
        self._thread.start()
        return self


class _Uploader:
    """Uploads image number ``i`` of a run (cycling through the pool under a distinct key)."""

    def __init__(self, lab: Lab, run: LoadRun, images: Sequence[PoolImage], prefix: str, workers: int,
                 on_upload: OnUpload | None, progress: bool):
        if not images:
            raise LabConfigError("the image pool is empty. Fix: pass images, or leave images=None.")
        self.run, self.images, self.prefix, self.on_upload = run, images, prefix, on_upload
        limits = httpx.Limits(max_connections=workers, max_keepalive_connections=workers)
        self.http = httpx.Client(base_url=lab.endpoints["nodered"], timeout=UPLOAD_TIMEOUT_S, limits=limits)
        self.bar = bar(run.planned, f"{run.kind} loop", disable=not progress)

    def key(self, i: int) -> str:
        name = self.images[i % len(self.images)].key.rsplit("/", 1)[-1]  # 0003-640x480.jpg
        return f"{self.prefix}{i:05d}-{name.split('-', 1)[-1]}"

    def __call__(self, i: int, t_sched_ms: float | None = None) -> None:
        """Upload image ``i``; ``t_sched_ms`` None means "now" (the closed loop schedules nothing ahead)."""
        if self.run.stopping:
            return  # queued, never sent
        image = self.images[i % len(self.images)]
        self.run._begin()
        t_start = now_ms()
        t_sched_ms = t_start if t_sched_ms is None else t_sched_ms
        sent = upload_one(self.http, self.key(i), image.data, image.content_type, uuid.uuid4().hex)
        row = {"key": sent["key"], "trace_id": sent["trace_id"], "t_sched_ms": t_sched_ms, "t_start_ms": t_start,
               "t_end_ms": now_ms(), "status_code": sent["status"], "attempts": sent["attempts"],
               "client_attempts": sent["client_attempts"],
               "error": sent["error"], "t_upload_start": sent["t_upload_start"], "t_uploaded": sent["t_uploaded"],
               "bytes": sent["bytes"]}
        self.run._end(row)
        self.bar.update(1)
        if self.on_upload is not None:
            try:
                self.on_upload(row)
            except BaseException:
                self.run.stop()  # a failing callback ends the run; wait() raises its error
                raise

    def close(self) -> None:
        self.bar.close()
        self.http.close()


def start_open_loop(lab: Lab, rate_per_s: float, max_images: int, max_duration_s: float, *, seed: int = 0,
                    prefix: str = "", images: Sequence[PoolImage] | None = None,
                    sizes: Sequence[tuple[int, int]] | None = None, workers: int = 16, progress: bool = True,
                    on_upload: OnUpload | None = None) -> LoadRun:
    """Start Poisson arrivals at ``rate_per_s`` in the background; see :class:`LoadRun`.

    Inter-arrival gaps are exponential with mean ``1 / rate_per_s``, drawn from a generator
    seeded with ``seed``, so a run's schedule is reproducible. The run ends after
    ``max_images`` arrivals, ``max_duration_s`` seconds, or :meth:`LoadRun.stop`, whichever
    comes first. Late arrivals are not skipped: each is queued for the ``workers`` upload
    threads, so a slow pipeline never slows the arrival process (no coordinated omission;
    the queueing shows as ``t_start_ms - t_sched_ms``).

    Args:
        lab: The running lab, with the pipeline stood up.
        rate_per_s: Mean arrivals per second (0 < R <= 500).
        max_images: Most images to send (hard cap 100 000).
        max_duration_s: Longest the run lasts, in seconds.
        seed: Seeds the arrival times and, when ``images`` is None, the image pool.
        prefix: Put before every key (e.g. ``exp/run1/``), so runs do not overwrite each other.
        images: The pool to draw from; default :func:`make_pool` with ``sizes``.
        sizes: Image sizes for the default pool (see :func:`labkit.pipeline.images.generate_pool`).
        workers: Upload threads (1..64): the most uploads in flight at once.
        progress: Show a progress bar.
        on_upload: Called with each finished upload's row (from a worker thread); if it
            raises, the run stops and :meth:`LoadRun.wait` raises that error.

    Raises:
        LabConfigError: A bad rate, bound or worker count.
    """
    check_open_loop(rate_per_s, max_images, max_duration_s, workers)
    pool = list(images) if images is not None else make_pool(max_images, seed, sizes)
    run = LoadRun("open", max_images)
    gaps_s = np.random.default_rng(seed).exponential(1.0 / rate_per_s, max_images)
    uploader = _Uploader(lab, run, pool, prefix, workers, on_upload, progress)

    def arrivals() -> None:
        t0 = time.monotonic()
        t0_ms = now_ms()
        futures = []
        with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="labkit-upload") as executor:
            try:
                for i, due_s in enumerate(np.cumsum(gaps_s)):
                    if due_s > max_duration_s or run._stop.wait(max(0.0, t0 + due_s - time.monotonic())):
                        break
                    futures.append(executor.submit(uploader, i, t0_ms + due_s * 1000.0))
            finally:
                try:
                    for future in futures:
                        future.result()  # re-raises a callback's error
                finally:
                    uploader.close()

    return run._start(arrivals)


def start_closed_loop(lab: Lab, concurrency: int, max_images: int, max_duration_s: float, *, seed: int = 0,
                      prefix: str = "", images: Sequence[PoolImage] | None = None,
                      sizes: Sequence[tuple[int, int]] | None = None, progress: bool = True,
                      on_upload: OnUpload | None = None) -> LoadRun:
    """Start ``concurrency`` uploaders in the background, each sending its next image as soon as
    its previous upload returns; see :class:`LoadRun`.

    The run ends after ``max_images`` uploads, ``max_duration_s`` seconds, or
    :meth:`LoadRun.stop`. At most ``concurrency`` uploads are ever in flight. In a closed
    loop ``t_sched_ms`` equals ``t_start_ms``: nothing is scheduled ahead.

    Args: as :func:`start_open_loop`, with ``concurrency`` (1..64) instead of a rate and workers.

    Raises:
        LabConfigError: A bad concurrency or bound.
    """
    _check(max_images, max_duration_s)
    if isinstance(concurrency, bool) or not isinstance(concurrency, int) or not 1 <= concurrency <= MAX_WORKERS:
        raise LabConfigError(f"concurrency must be an integer in 1..{MAX_WORKERS}, got {concurrency!r}. "
                             "Fix: pass how many uploaders run at once.")
    pool = list(images) if images is not None else make_pool(max_images, seed, sizes)
    run = LoadRun("closed", max_images)
    uploader = _Uploader(lab, run, pool, prefix, concurrency, on_upload, progress)
    counter = iter(range(max_images))
    counter_lock = threading.Lock()

    def uploads(deadline: float) -> None:
        while not run.stopping and time.monotonic() < deadline:
            with counter_lock:
                i = next(counter, None)
            if i is None:
                return
            uploader(i)

    def loop() -> None:
        deadline = time.monotonic() + max_duration_s
        with ThreadPoolExecutor(max_workers=concurrency, thread_name_prefix="labkit-upload") as executor:
            try:
                futures = [executor.submit(uploads, deadline) for _ in range(concurrency)]
                for future in futures:
                    future.result()
            finally:
                uploader.close()

    return run._start(loop)


def run_open_loop(lab: Lab, rate_per_s: float, max_images: int, max_duration_s: float, **kwargs) -> pd.DataFrame:
    """:func:`start_open_loop`, then wait for it; returns its table (Ctrl-C stops it cleanly)."""
    return _blocking(start_open_loop(lab, rate_per_s, max_images, max_duration_s, **kwargs))


def run_closed_loop(lab: Lab, concurrency: int, max_images: int, max_duration_s: float, **kwargs) -> pd.DataFrame:
    """:func:`start_closed_loop`, then wait for it; returns its table (Ctrl-C stops it cleanly)."""
    return _blocking(start_closed_loop(lab, concurrency, max_images, max_duration_s, **kwargs))


class LoadSwitch:
    """One load at a time, started and stopped on demand (e.g. by the control panel's buttons).

    Each :meth:`start` begins a new open-loop run (or closed-loop, with ``concurrency``) under
    a fresh key prefix; starting while one runs does nothing.

    Args:
        lab: The running lab.
        rate_per_s: Open loop at this rate, unless ``concurrency`` is given.
        concurrency: Closed loop with this many uploaders.
        max_images, max_duration_s: Bounds of each run.
        prefix: Put before each run's own prefix.
        **options: Passed on (``seed``, ``sizes``, ``progress``, ...).
    """

    def __init__(self, lab: Lab, rate_per_s: float = 2.0, concurrency: int | None = None, max_images: int = 1000,
                 max_duration_s: float = 600.0, prefix: str = "panel/", **options):
        self.lab, self.rate_per_s, self.concurrency = lab, rate_per_s, concurrency
        self.max_images, self.max_duration_s, self.prefix, self.options = max_images, max_duration_s, prefix, options
        self.runs: list[LoadRun] = []

    @property
    def running(self) -> bool:
        return bool(self.runs) and not self.runs[-1].done()

    def start(self) -> LoadRun:
        """Start a run unless one is running; return the current run."""
        if self.running:
            return self.runs[-1]
        prefix = f"{self.prefix}{uuid.uuid4().hex[:8]}/"
        if self.concurrency is None:
            run = start_open_loop(self.lab, self.rate_per_s, self.max_images, self.max_duration_s, prefix=prefix,
                                  **self.options)
        else:
            run = start_closed_loop(self.lab, self.concurrency, self.max_images, self.max_duration_s, prefix=prefix,
                                    **self.options)
        self.runs.append(run)
        return run

    def stop(self) -> None:
        """Stop the current run, if any (uploads under way finish in the background)."""
        if self.runs:
            self.runs[-1].stop()

    def results(self) -> pd.DataFrame:
        """Every run's table, one under the other."""
        frames = [r.results() for r in self.runs]
        return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=list(LOAD_COLUMNS))


def _blocking(run: LoadRun) -> pd.DataFrame:
    try:
        return run.wait()
    except KeyboardInterrupt:
        run.stop()
        run.wait(UPLOAD_TIMEOUT_S)
        raise


def in_flight_max(table: pd.DataFrame) -> int:
    """The most uploads of a load table that were in flight at once (from their start and end stamps)."""
    starts = pd.DataFrame({"t": table["t_start_ms"], "d": 1})
    ends = pd.DataFrame({"t": table["t_end_ms"], "d": -1})
    # At equal times an end comes before a start: one upload handing over to the next is not overlap.
    steps = pd.concat([ends, starts]).sort_values(["t", "d"], kind="stable")
    return int(steps["d"].cumsum().max()) if len(steps) else 0
