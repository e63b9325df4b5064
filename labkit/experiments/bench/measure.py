"""The benchmark's measurements: the bare resize loop, and the pipeline at a rate or saturated.

1. :func:`bare_resize`: the resize action's own ``resize_image`` called in-process (no S3, no
   events), on every core (one process per core), as fast as it goes;
2. :func:`open_loop_point`: the whole pipeline under open-loop (Poisson) load at one rate,
   with end-to-end percentiles, the median of each stage and the error count;
3. :func:`saturation_point`: a closed-loop burst: images that came through, divided by the
   wall time from the first upload to the last metrics line.
"""

from __future__ import annotations

import multiprocessing
import time
from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd

from labkit.analysis.stats import QUANTILE_METHOD, percentiles
from labkit.core.progress import bar
from labkit.experiments.bench.params import MAX_EDGE, MAX_PIXELS, QUALITY
from labkit.experiments.load import run_closed_loop, run_open_loop
from labkit.experiments.settle import drain
from labkit.pipeline import deploy as pipeline
from labkit.pipeline.images import PoolImage
from labkit.pipeline.metrics import STAGES, lab_metrics
from labkit.stack.lab import Lab

# Longest wait for a phase's last images, beyond the time the load itself took.
DRAIN_TIMEOUT_S, DRAIN_SETTLE_S = 120.0, 10.0
PERCENTILES = (0.5, 0.95, 0.99)
ACTION_PHASES = ("action_download_ms", "action_resize_ms", "action_upload_ms")


# ---------------------------------------------------------------- 1. bare


_BARE_IMAGES: list[bytes] = []


def _bare_init(images: list[bytes]) -> None:
    """Load the action in a bare-loop process and resize once, so no import lands in the timings."""
    _BARE_IMAGES[:] = images
    _bare_one(0)


def _bare_one(index: int) -> float:
    """Resize image ``index`` (mod the pool) with the action's code; the time it took in ms."""
    resize = pipeline.action_module().resize_image
    started = time.perf_counter()
    resize(_BARE_IMAGES[index % len(_BARE_IMAGES)], MAX_EDGE, "JPEG", QUALITY, MAX_PIXELS)
    return (time.perf_counter() - started) * 1000


def _noop(_: int) -> None:
    time.sleep(0.05)  # long enough that every process takes a share


def bare_resize(images: Sequence[PoolImage], n: int, processes: int, progress: bool = True) -> dict[str, Any]:
    """The bare loop: ``n`` resizes of ``images`` spread over ``processes`` processes.

    Returns:
        ``processes, images, wall_s, throughput_img_s`` (resizes / wall time, after
        every process has warmed up) and ``ms_per_image_median``/``_p95`` (one call each).
    """
    data = [image.data for image in images]
    context = multiprocessing.get_context("spawn")  # safe beside the load's threads and in a kernel
    with context.Pool(processes, initializer=_bare_init, initargs=(data,)) as pool:
        pool.map(_noop, range(processes * 4))  # every process started and warm before the clock starts
        started = time.perf_counter()
        times_ms = []
        with bar(n, "bare resize", disable=not progress) as done:
            for ms in pool.imap_unordered(_bare_one, range(n), chunksize=4):
                times_ms.append(ms)
                done.update(1)
        wall_s = time.perf_counter() - started
    return {"processes": processes, "images": n, "wall_s": round(wall_s, 3),
            "throughput_img_s": round(n / wall_s, 2),
            "ms_per_image_median": round(float(np.median(times_ms)), 2),
            "ms_per_image_p95": round(quantile(times_ms, 0.95), 2)}


# ---------------------------------------------------------------- 2. and 3. the pipeline


def quantile(values: Sequence[float], q: float) -> float:
    """The ``q`` quantile, by the method every latency figure of the lab uses."""
    return float(np.quantile(np.asarray(values, dtype=float), q, method=QUANTILE_METHOD))


def percentile_bounds(durations_ms: Sequence[float], confidence: float = 0.95) -> dict[str, float | None]:
    """Each percentile's distribution-free bounds at ``confidence``, from order statistics
    (:func:`labkit.analysis.stats.percentiles`): ``p99_low_ms`` and ``p99_high_ms``, and so on.

    A bound the sample cannot give is None (JSON null): a p99 from fewer than 299 images has no
    upper bound, and the benchmark says so rather than showing the sample's maximum.
    """
    if not len(durations_ms):
        return {f"p{round(q * 100)}_{side}_ms": None for q in PERCENTILES for side in ("low", "high")}
    table = percentiles(np.asarray(durations_ms, dtype=float) / 1000, PERCENTILES, confidence)
    bounds: dict[str, float | None] = {}
    for row in table.itertuples():
        name = f"p{round(row.q * 100)}"
        for side, value in (("low", row.low), ("high", row.high)):
            bounds[f"{name}_{side}_ms"] = round(float(value) * 1000, 1) if np.isfinite(value) else None
    return bounds


def summarise(load: pd.DataFrame, metrics: pd.DataFrame) -> dict[str, Any]:
    """One phase's figures from its load table and its metrics lines.

    Errors are uploads that failed, images whose line says so, and images with no line.
    Percentiles are over the images that came through (``outcome == "ok"``).
    """
    sent = load.loc[load["status_code"] == 200, "key"]
    lines = metrics[metrics["key"].isin(sent)].drop_duplicates("key", keep="last")
    ok = lines[lines["outcome"] == "ok"]
    durations = ok["duration_ms"].dropna().to_numpy()
    row: dict[str, Any] = {"images": int(len(load)), "ok": int(len(ok)), "errors": int(len(load) - len(ok))}
    for q in PERCENTILES:
        row[f"p{round(q * 100)}_ms"] = round(quantile(durations, q), 1) if len(durations) else None
    row.update(percentile_bounds(durations))
    row["stages_median_ms"] = {s: _median(ok, s) for s in STAGES}
    row["action_phases_median_ms"] = {p: _median(ok, p) for p in ACTION_PHASES if p in ok}
    return row


def _median(frame: pd.DataFrame, column: str) -> float | None:
    values = pd.to_numeric(frame[column], errors="coerce").dropna() if column in frame else pd.Series([])
    return round(float(values.median()), 1) if len(values) else None


def _collect(lab: Lab, load: pd.DataFrame, timeout_s: float) -> pd.DataFrame:
    """Wait (bounded) for the metrics lines of the load's uploaded images; return them."""
    keys = load.loc[load["status_code"] == 200, "key"].tolist()
    if not keys:
        return lab_metrics(lab).iloc[0:0]
    lines, _ = drain(lab, keys, timeout_s, DRAIN_SETTLE_S)
    return lines


def open_loop_point(lab: Lab, rate: float, n: int, images: Sequence[PoolImage], prefix: str, seed: int = 0,
                    progress: bool = True) -> dict[str, Any]:
    """The pipeline under Poisson arrivals at ``rate``: percentiles, stage medians, errors."""
    load = run_open_loop(lab, rate, n, max_duration_s=n / rate * 4 + 30, seed=seed, prefix=prefix,
                         images=images, progress=progress)
    lines = _collect(lab, load, DRAIN_TIMEOUT_S)
    gaps_s = load["t_sched_ms"].sort_values().diff().dropna() / 1000
    point = {"rate_per_s": rate, **summarise(load, lines)}
    point["offered_rate_per_s"] = round(1 / gaps_s.mean(), 2) if len(gaps_s) and gaps_s.mean() > 0 else None
    point["max_start_delay_ms"] = round(float((load["t_start_ms"] - load["t_sched_ms"]).max()), 1)
    return point


def saturation_point(lab: Lab, n: int, concurrency: int, images: Sequence[PoolImage], prefix: str,
                     progress: bool = True) -> dict[str, Any]:
    """A closed-loop burst; throughput = images through / (last metrics line - first upload start)."""
    load = run_closed_loop(lab, concurrency, n, max_duration_s=600, prefix=prefix, images=images,
                           progress=progress)
    lines = _collect(lab, load, DRAIN_TIMEOUT_S)
    point = {"concurrency": concurrency, **summarise(load, lines)}
    ok = lines[lines["outcome"] == "ok"].drop_duplicates("key", keep="last")
    # t_done: when each record completed (by the webhook, or by the flow's own output check when
    # the hook was lost). None (JSON null) when no image came through: no wall time to speak of.
    wall_s = (ok["t_done"].max() - load["t_upload_start"].min()) / 1000 if len(ok) else float("nan")
    wall_s = round(float(wall_s), 3) if np.isfinite(wall_s) else None
    point["wall_s"] = wall_s
    point["throughput_img_s"] = round(len(ok) / wall_s, 2) if wall_s else 0.0
    return point


def warm_up(lab: Lab, images: Sequence[PoolImage], n: int, prefix: str) -> None:
    """Send ``n`` images at once and wait for them, so warm-up costs stay out of the measurements."""
    if n:
        load = run_closed_loop(lab, min(n, 8), n, max_duration_s=120, prefix=prefix, images=images,
                               progress=False)
        _collect(lab, load, DRAIN_TIMEOUT_S)
