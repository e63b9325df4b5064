"""One benchmark run, start to end: stand up, warm up, measure, and save.

:func:`run_bench` writes ``bench-<run id>.json`` (the figures, the parameters and the run's
metadata, :func:`labkit.experiments.runs.lab_metadata`) and ``bench-<run id>.png`` (see
:func:`labkit.experiments.bench.plots.plot`), each file atomically.
"""

from __future__ import annotations

import io
import json
import os
from dataclasses import asdict
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from labkit.core.files import atomic_write
from labkit.core.progress import QUIET, Reporter
from labkit.core.runs import RUN_FILE_MODE, run_id, write_json
from labkit.experiments.bench.cpu import with_cpu
from labkit.experiments.bench.measure import (
    bare_resize,
    open_loop_point,
    saturation_point,
    warm_up,
)
from labkit.experiments.bench.params import BenchParams, bench_images
from labkit.experiments.bench.plots import plot
from labkit.experiments.bench.result import BenchResult, ratios
from labkit.experiments.runs import lab_metadata
from labkit.pipeline import deploy as pipeline
from labkit.stack.lab import Lab

DEFAULT_OUT_DIR = Path("bench") / "results"


def run_bench(lab: Lab, params: BenchParams = BenchParams(), out_dir: str | os.PathLike = DEFAULT_OUT_DIR,
              reporter: Reporter = QUIET, progress: bool = True) -> BenchResult:
    """Stand the pipeline up, measure bare, rates and saturation, and write JSON and a plot.

    Args:
        lab: A lab whose services are up.
        params: What to run.
        out_dir: Where ``bench-<run id>.json`` and ``.png`` go (created).
        reporter: Reports each phase.
        progress: Show progress bars.

    Raises:
        LabConfigError: Bad parameters.
        ServiceError: The pipeline could not be stood up.
    """
    started = datetime.now(UTC)
    stamp = run_id(started)
    images = bench_images(params.pool_size, params.seed)
    with reporter.step("stand the pipeline up"):
        pipeline.stand_up(lab, max_inflight=params.max_inflight)
    with reporter.step(f"warm up ({params.warmup_images} images)"):
        warm_up(lab, images, params.warmup_images, f"bench/{stamp}/warmup/")
    with reporter.step(f"bare resize loop ({params.bare_images} images, {params.processes} processes)"):
        bare = bare_resize(images, params.bare_images, params.processes, progress)
    points = []
    for rate in params.rates:
        with reporter.step(f"pipeline at {rate:g} img/s ({params.images_per_rate} images)"):
            points.append(open_loop_point(lab, rate, params.images_per_rate, images,
                                          f"bench/{stamp}/rate-{rate:g}/", params.seed, progress))
    with reporter.step(f"saturation ({params.saturation_images} images, "
                       f"{params.saturation_concurrency} uploaders)"):
        saturation = with_cpu(lab, lambda: saturation_point(
            lab, params.saturation_images, params.saturation_concurrency, images, f"bench/{stamp}/saturation/",
            progress))
    data = {"run_id": stamp, "parameters": _jsonable(asdict(params)),
            "environment": lab_metadata(lab, started, datetime.now(UTC), seed=params.seed),
            "bare": bare, "rates": points, "saturation": saturation}
    data["ratios"] = ratios(data)
    return write(BenchResult(data), Path(out_dir), f"bench-{stamp}")


def _jsonable(value: Any) -> Any:
    return json.loads(json.dumps(value, default=str))


def write(result: BenchResult, out_dir: Path, stem: str) -> BenchResult:
    """Write the JSON (strict: no NaN) and the plot, each atomically; fill in their paths."""
    result.json_path = write_json(out_dir / f"{stem}.json", result.data, allow_nan=False)
    figure = plot(result)
    png = io.BytesIO()
    figure.savefig(png, format="png", dpi=110)
    import matplotlib.pyplot as plt

    plt.close(figure)
    result.plot_path = atomic_write(out_dir / f"{stem}.png", png.getvalue(), RUN_FILE_MODE)
    return result
