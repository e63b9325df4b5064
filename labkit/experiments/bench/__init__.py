"""Benchmark the pipeline against the bare cost of its work, side by side in one run.

Three measurements, on the same 1080p photo-like JPEGs (:func:`bench_images`), in
:mod:`.measure`:

1. **bare**: the resize action's own ``resize_image`` called in-process (no S3, no
   events), on every core (one process per core), as fast as it goes;
2. **rates**: the whole pipeline under open-loop (Poisson) load at each rate, with
   end-to-end percentiles, the median of each stage (:data:`labkit.pipeline.metrics.STAGES`) and
   the error count;
3. **saturation**: a closed-loop burst: images that came through, divided by the wall
   time from the first upload to the last metrics line.

:func:`run_bench` (:mod:`.runner`) runs all three and writes ``bench-<run id>.json`` (with the
environment) and ``bench-<run id>.png`` (:mod:`.plots`); :func:`ratio_table` sets the pipeline
beside the bare loop (:mod:`.result`); :func:`cpu_table` says where the CPU went at saturation,
per process and per image (:mod:`.cpu`). :func:`scaling_sweep` (:mod:`.sweep`) varies partitions, consumer
concurrency and action concurrency.

Example:
    >>> result = run_bench(lab, BenchParams.quick(), "bench/results")  # doctest: +SKIP
    >>> ratio_table(result)                                            # doctest: +SKIP
"""

from __future__ import annotations

from labkit.experiments.bench.cpu import cpu_table, where_the_cpu_goes, with_cpu
from labkit.experiments.bench.measure import (
    ACTION_PHASES,
    DRAIN_SETTLE_S,
    DRAIN_TIMEOUT_S,
    bare_resize,
    open_loop_point,
    saturation_point,
    summarise,
    warm_up,
)
from labkit.experiments.bench.params import (
    BENCH_SIZE,
    MAX_EDGE,
    MAX_PIXELS,
    QUALITY,
    BenchParams,
    bench_images,
    parse_rates,
)
from labkit.experiments.bench.plots import cpu_plot, plot, sweep_plot
from labkit.experiments.bench.result import BenchResult, ratio_table, ratios
from labkit.experiments.bench.runner import DEFAULT_OUT_DIR, run_bench, write
from labkit.experiments.bench.sweep import (
    SWEEP_AXES,
    SWEEP_COLUMNS,
    scaling_sweep,
    set_partitions,
    sweep_points,
)

__all__ = [
    "ACTION_PHASES", "BENCH_SIZE", "DEFAULT_OUT_DIR", "DRAIN_SETTLE_S", "DRAIN_TIMEOUT_S", "MAX_EDGE", "MAX_PIXELS",
    "QUALITY", "SWEEP_AXES", "SWEEP_COLUMNS", "BenchParams", "BenchResult", "bare_resize", "bench_images",
    "cpu_plot", "cpu_table", "where_the_cpu_goes", "with_cpu",
    "open_loop_point", "parse_rates", "plot", "ratio_table", "ratios", "run_bench", "saturation_point",
    "scaling_sweep", "set_partitions", "summarise", "sweep_plot", "sweep_points", "warm_up", "write",
]
