"""The scaling sweep: saturation throughput and latency as partitions and concurrencies change.

Example:
    >>> table = scaling_sweep(lab, {"partitions": [1, 2], "consumer_concurrency": [1, 2]})  # doctest: +SKIP
    >>> sweep_plot(table)                                                                   # doctest: +SKIP
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

import pandas as pd

from labkit.core.progress import QUIET, Reporter
from labkit.core.runs import run_id
from labkit.errors import LabConfigError
from labkit.experiments.bench.measure import saturation_point, warm_up
from labkit.experiments.bench.params import bench_images, positive_int
from labkit.pipeline import deploy as pipeline
from labkit.pipeline import partitions
from labkit.pipeline.images import PoolImage
from labkit.stack.lab import Lab

# Each axis and its value when the sweep does not vary it.
SWEEP_AXES = {"partitions": 1, "consumer_concurrency": 1, "max_inflight": 8, "action_concurrency": 4}
PERCENTILE_COLUMNS = ("p50_ms", "p95_ms", "p99_ms", "p50_high_ms", "p95_high_ms", "p99_high_ms")
SWEEP_COLUMNS = (*SWEEP_AXES, "images", "ok", "errors", "throughput_img_s", *PERCENTILE_COLUMNS,
                 "events_per_partition")


def sweep_points(grid: dict[str, Sequence[int]]) -> list[dict[str, int]]:
    """Every combination of ``grid``'s axes (the others at :data:`SWEEP_AXES`' values), fewest partitions first.

    Raises:
        LabConfigError: An unknown axis, or a value outside 1..64.
    """
    unknown = sorted(set(grid) - set(SWEEP_AXES))
    if unknown:
        raise LabConfigError(f"unknown sweep axes {unknown}. Fix: use only {', '.join(SWEEP_AXES)}.")
    for axis, values in grid.items():
        if not values or any(isinstance(v, bool) or not isinstance(v, int) or not 1 <= v <= 64 for v in values):
            raise LabConfigError(f"{axis} needs integers in 1..64, got {list(values)!r}. Fix: e.g. {axis}: [1, 2].")
    points = [dict(SWEEP_AXES)]
    for axis, values in grid.items():
        points = [{**p, axis: v} for p in points for v in values]
    return sorted(points, key=lambda p: p["partitions"])  # partitions only ever grow


def set_partitions(lab: Lab, count: int) -> int:
    """Grow the lab's topic ``dit247`` to ``count`` partitions (see :func:`labkit.pipeline.partitions.set_partitions`)."""
    return partitions.set_partitions(lab.kafka_bootstrap, count)


def scaling_sweep(lab: Lab, grid: dict[str, Sequence[int]], images: int = 100, concurrency: int = 16,
                  warmup_images: int = 8, seed: int = 0, reporter: Reporter = QUIET,
                  progress: bool = True) -> pd.DataFrame:
    """Saturation throughput and latency for each combination of ``grid``.

    Axes: ``partitions`` (of topic ``dit247``; they only grow, so a lab keeps the largest
    count it was given), ``consumer_concurrency`` (partitions the flow's consumer hands
    over at once), ``max_inflight`` (the flow's bound on events being invoked) and
    ``action_concurrency`` (the action's warm workers). At each point the pipeline is
    stood up with those settings, warmed up, then given a closed-loop burst
    (:func:`labkit.experiments.bench.measure.saturation_point`). The flow is left at the
    last point's settings.

    Returns:
        One row per point (:data:`SWEEP_COLUMNS`); ``partitions`` is the count the topic had.

    Raises:
        LabConfigError: Bad axes or bounds.
    """
    positive_int("images", images)
    positive_int("concurrency", concurrency, high=64)
    points = sweep_points(grid)
    pool = bench_images(20, seed)
    stamp = run_id(datetime.now(UTC))
    rows = []
    for i, point in enumerate(points):
        label = ", ".join(f"{k}={v}" for k, v in point.items())
        with reporter.step(f"sweep point {i + 1}/{len(points)}: {label}"):
            rows.append(_sweep_point(lab, point, pool, images, concurrency, warmup_images,
                                     f"sweep/{stamp}/{i:02d}/", progress))
    return pd.DataFrame(rows, columns=list(SWEEP_COLUMNS))


def _sweep_point(lab: Lab, point: dict[str, int], pool: Sequence[PoolImage], images: int, concurrency: int,
                 warmup_images: int, prefix: str, progress: bool) -> dict[str, Any]:
    count = set_partitions(lab, point["partitions"])
    pipeline.stand_up(lab, max_inflight=point["max_inflight"], action_concurrency=point["action_concurrency"],
                      consumer_concurrency=point["consumer_concurrency"])
    warm_up(lab, pool, warmup_images, prefix + "warmup/")
    before = partitions.end_offsets(lab.kafka_bootstrap)
    burst = saturation_point(lab, images, concurrency, pool, prefix, progress)
    row = {**point, "partitions": count,
           **{k: burst[k] for k in ("images", "ok", "errors", "throughput_img_s", *PERCENTILE_COLUMNS)}}
    # A bound the point's images cannot give (None) is unbounded.
    row.update({k: float("inf") for k in PERCENTILE_COLUMNS if k.endswith("_high_ms") and row[k] is None})
    row["events_per_partition"] = partitions.records_since(lab.kafka_bootstrap, before)
    return row
