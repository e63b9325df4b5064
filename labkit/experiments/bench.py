"""Benchmark the pipeline against the bare cost of its work, side by side in one run.

Three measurements, on the same 1080p photo-like JPEGs (:func:`bench_images`):

1. **bare**: the resize action's own ``resize_image`` called in-process (no S3, no
   events), on every core (one process per core), as fast as it goes;
2. **rates**: the whole pipeline under open-loop (Poisson) load at each rate, with
   end-to-end percentiles, the median of each stage (:data:`labkit.pipeline.metrics.STAGES`) and
   the error count;
3. **saturation**: a closed-loop burst: images that came through, divided by the wall
   time from the first upload to the last metrics line.

:func:`run_bench` runs all three and writes ``bench-<stamp>.json`` (with the environment)
and ``bench-<stamp>.png``; :func:`ratio_table` sets the pipeline beside the bare loop.
:func:`scaling_sweep` varies partitions, consumer concurrency and action concurrency.

Example:
    >>> result = run_bench(lab, BenchParams.quick(), "bench/results")  # doctest: +SKIP
    >>> ratio_table(result)                                            # doctest: +SKIP
"""

from __future__ import annotations

import json
import multiprocessing
import os
import platform
import time
import uuid
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import psutil
from tqdm.auto import tqdm

from labkit.analysis.sla import QUANTILE_METHOD
from labkit.core.progress import QUIET, Reporter
from labkit.errors import LabConfigError
from labkit.experiments.load import run_closed_loop, run_open_loop
from labkit.experiments.run import drain, git_revision
from labkit.pipeline import deploy as pipeline
from labkit.pipeline.images import PoolImage, generate_pool
from labkit.pipeline.metrics import STAGES, load_metrics
from labkit.pipeline.upload import metrics_path
from labkit.stack.lab import Lab

DEFAULT_OUT_DIR = Path("bench") / "results"
BENCH_SIZE = (1920, 1080)
MAX_EDGE, QUALITY, MAX_PIXELS = 640, 85, 50_000_000  # the action's defaults
# Longest wait for a phase's last images, beyond the time the load itself took.
DRAIN_TIMEOUT_S, DRAIN_SETTLE_S = 120.0, 10.0
ACTION_PHASES = ("action_download_ms", "action_resize_ms", "action_upload_ms")


# ---------------------------------------------------------------- parameters


def _positive_int(name: str, value: Any, low: int = 1, high: int = 100_000) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise LabConfigError(f"{name} must be an integer in {low}..{high}, got {value!r}. "
                             f"Fix: pass e.g. --{name.replace('_', '-')} {max(low, 10)}.")


@dataclass(frozen=True)
class BenchParams:
    """What one benchmark run does; every bound is checked when it is made.

    Attributes:
        rates: Open-loop arrival rates, images per second (each in (0, 500]).
        images_per_rate: Images sent at each rate.
        saturation_images: Images in the closed-loop burst.
        saturation_concurrency: Uploaders of the burst.
        bare_images: Resize calls of the bare loop.
        processes: Processes of the bare loop; default one per core.
        pool_size: Distinct images generated (runs cycle through them).
        warmup_images: Sent and waited for before anything is measured (0: none).
        max_inflight: The flow's bound on events in flight (``stand_up(max_inflight=)``).
        seed: Seeds the images and the arrival times.
    """

    rates: tuple[float, ...] = (5.0, 10.0, 20.0, 40.0)
    images_per_rate: int = 100
    saturation_images: int = 200
    saturation_concurrency: int = 16
    bare_images: int = 300
    processes: int = field(default_factory=lambda: os.cpu_count() or 1)
    pool_size: int = 20
    warmup_images: int = 8
    max_inflight: int = 8
    seed: int = 0

    def __post_init__(self) -> None:
        object.__setattr__(self, "rates", tuple(self.rates))
        if not self.rates:
            raise LabConfigError("rates is empty. Fix: pass at least one rate, e.g. --rates 5,10.")
        for rate in self.rates:
            if isinstance(rate, bool) or not isinstance(rate, (int, float)) or not 0 < rate <= 500:
                raise LabConfigError(f"each rate must be a number in (0, 500] images/s, got {rate!r}. "
                                     "Fix: pass e.g. --rates 5,10,20,40.")
        for name in ("images_per_rate", "saturation_images", "bare_images", "pool_size"):
            _positive_int(name, getattr(self, name))
        _positive_int("saturation_concurrency", self.saturation_concurrency, high=64)
        _positive_int("processes", self.processes, high=256)
        _positive_int("warmup_images", self.warmup_images, low=0, high=1000)
        _positive_int("max_inflight", self.max_inflight, high=256)
        _positive_int("seed", self.seed, low=0, high=2**31)

    @classmethod
    def quick(cls, **overrides: Any) -> BenchParams:
        """Tiny parameters for CI and smoke tests (about half a minute)."""
        small = dict(rates=(5.0, 10.0), images_per_rate=6, saturation_images=12, saturation_concurrency=4,
                     bare_images=16, pool_size=4, warmup_images=2)
        return cls(**{**small, **overrides})


def parse_rates(text: str) -> tuple[float, ...]:
    """``"5,10,20"`` -> ``(5.0, 10.0, 20.0)``.

    Raises:
        LabConfigError: A part is not a number.
    """
    try:
        return tuple(float(part) for part in text.split(",") if part.strip())
    except ValueError:
        raise LabConfigError(f"--rates must be numbers separated by commas, got {text!r}. "
                             "Fix: e.g. --rates 5,10,20,40.") from None


def bench_images(n: int, seed: int = 0) -> list[PoolImage]:
    """``n`` photo-like 1080p JPEGs (a fifth of them portrait), the same for the bare loop and the pipeline."""
    return generate_pool(n, seed=seed, sizes=[BENCH_SIZE], mix={"jpeg": 1.0})


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
        with tqdm(total=n, desc="bare resize", unit="img", disable=not progress) as bar:
            times_ms = []
            for ms in pool.imap_unordered(_bare_one, range(n), chunksize=4):
                times_ms.append(ms)
                bar.update(1)
        wall_s = time.perf_counter() - started
    return {"processes": processes, "images": n, "wall_s": round(wall_s, 3),
            "throughput_img_s": round(n / wall_s, 2),
            "ms_per_image_median": round(float(np.median(times_ms)), 2),
            "ms_per_image_p95": round(_quantile(times_ms, 0.95), 2)}


def _noop(_: int) -> None:
    time.sleep(0.05)  # long enough that every process takes a share


# ---------------------------------------------------------------- 2. and 3. the pipeline


def _quantile(values: Sequence[float], q: float) -> float:
    return float(np.quantile(np.asarray(values, dtype=float), q, method=QUANTILE_METHOD))


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
    for q in (0.5, 0.95, 0.99):
        row[f"p{round(q * 100)}_ms"] = round(_quantile(durations, q), 1) if len(durations) else None
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
        return load_metrics(metrics_path(lab)).iloc[0:0]
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


# ---------------------------------------------------------------- the whole run


@dataclass
class BenchResult:
    """One benchmark run: its figures (as written to JSON) and where its files are."""

    data: dict[str, Any]
    json_path: Path | None = None
    plot_path: Path | None = None

    @property
    def rates(self) -> pd.DataFrame:
        """One row per rate: percentiles, errors and the stage medians as ``<stage>`` columns."""
        rows = [{**{k: v for k, v in p.items() if not isinstance(v, dict)}, **p["stages_median_ms"]}
                for p in self.data["rates"]]
        return pd.DataFrame(rows).set_index("rate_per_s")


def run_bench(lab: Lab, params: BenchParams = BenchParams(), out_dir: str | os.PathLike = DEFAULT_OUT_DIR,
              reporter: Reporter = QUIET, progress: bool = True) -> BenchResult:
    """Stand the pipeline up, measure bare, rates and saturation, and write JSON and a plot.

    Args:
        lab: A lab whose services are up.
        params: What to run.
        out_dir: Where ``bench-<stamp>.json`` and ``.png`` go (created).
        reporter: Reports each phase.
        progress: Show progress bars.

    Raises:
        LabConfigError: Bad parameters.
        ServiceError: The pipeline could not be stood up.
    """
    started = datetime.now(UTC)
    run_id = started.strftime("%Y%m%dT%H%M%SZ") + "-" + uuid.uuid4().hex[:6]
    images = bench_images(params.pool_size, params.seed)
    with reporter.step("stand the pipeline up"):
        pipeline.stand_up(lab, max_inflight=params.max_inflight)
    with reporter.step(f"warm up ({params.warmup_images} images)"):
        warm_up(lab, images, params.warmup_images, f"bench/{run_id}/warmup/")
    with reporter.step(f"bare resize loop ({params.bare_images} images, {params.processes} processes)"):
        bare = bare_resize(images, params.bare_images, params.processes, progress)
    points = []
    for rate in params.rates:
        with reporter.step(f"pipeline at {rate:g} img/s ({params.images_per_rate} images)"):
            points.append(open_loop_point(lab, rate, params.images_per_rate, images,
                                          f"bench/{run_id}/rate-{rate:g}/", params.seed, progress))
    with reporter.step(f"saturation ({params.saturation_images} images, "
                       f"{params.saturation_concurrency} uploaders)"):
        saturation = saturation_point(lab, params.saturation_images, params.saturation_concurrency, images,
                                      f"bench/{run_id}/saturation/", progress)
    data = {"run_id": run_id, "parameters": _jsonable(asdict(params)),
            "environment": environment(lab, started), "bare": bare, "rates": points, "saturation": saturation}
    data["ratios"] = ratios(data)
    return write(BenchResult(data), Path(out_dir), f"bench-{run_id}")


def ratios(data: dict[str, Any]) -> dict[str, Any]:
    """Pipeline over bare: saturation throughput, and each rate's p50 over the bare ms per image."""
    bare = data["bare"]
    return {"saturation_over_bare_throughput": _ratio(data["saturation"]["throughput_img_s"],
                                                      bare["throughput_img_s"]),
            "p50_over_bare_ms": {f"{p['rate_per_s']:g}": _ratio(p["p50_ms"], bare["ms_per_image_median"])
                                 for p in data["rates"]}}


def _ratio(numerator: float | None, denominator: float) -> float | None:
    return round(numerator / denominator, 3) if numerator is not None and denominator else None


def environment(lab: Lab, started: datetime) -> dict[str, Any]:
    """Versions, machine, code revision and times of a run."""
    try:
        versions = lab.status()["version"].to_dict()
    except Exception:  # noqa: BLE001 - a status failure must not lose the measurements
        versions = {}
    import PIL

    return {"started": started.isoformat(timespec="seconds"),
            "finished": datetime.now(UTC).isoformat(timespec="seconds"),
            "backend": lab.ctx.config.backend, "versions": versions, "pillow": PIL.__version__,
            "machine": {"platform": platform.platform(), "arch": platform.machine(), "cores": os.cpu_count(),
                        "memory_gb": round(psutil.virtual_memory().total / 2**30, 1),
                        "load_avg_1m": round(os.getloadavg()[0], 2)},
            "python": platform.python_version(), **git_revision()}


def _jsonable(value: Any) -> Any:
    return json.loads(json.dumps(value, default=str))


# ---------------------------------------------------------------- output


def ratio_table(result: BenchResult) -> pd.DataFrame:
    """The pipeline beside the bare loop: throughput, and each rate's p50 against ms per image."""
    data, bare = result.data, result.data["bare"]
    rows = [{"metric": "throughput (img/s): saturation vs bare", "pipeline": data["saturation"]["throughput_img_s"],
             "bare": bare["throughput_img_s"], "ratio": data["ratios"]["saturation_over_bare_throughput"]}]
    for point in data["rates"]:
        rows.append({"metric": f"p50 (ms) at {point['rate_per_s']:g} img/s vs bare ms/image",
                     "pipeline": point["p50_ms"], "bare": bare["ms_per_image_median"],
                     "ratio": data["ratios"]["p50_over_bare_ms"][f"{point['rate_per_s']:g}"]})
    return pd.DataFrame(rows).set_index("metric")


def write(result: BenchResult, out_dir: Path, stem: str) -> BenchResult:
    """Write the JSON and the plot; fill in their paths."""
    out_dir.mkdir(parents=True, exist_ok=True)
    result.json_path = out_dir / f"{stem}.json"
    result.json_path.write_text(json.dumps(result.data, indent=2, allow_nan=False))
    result.plot_path = out_dir / f"{stem}.png"
    figure = plot(result)
    figure.savefig(result.plot_path, dpi=110)
    import matplotlib.pyplot as plt

    plt.close(figure)
    return result


def plot(result: BenchResult):
    """Left: p50/p95/p99 against the rate, with the bare ms per image; right: stage medians per rate."""
    import matplotlib

    if matplotlib.get_backend().lower() not in ("module://matplotlib_inline.backend_inline", "inline"):
        matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    table = result.rates
    figure, (left, right) = plt.subplots(1, 2, figsize=(12, 4.5))
    for column, style in (("p50_ms", "o-"), ("p95_ms", "s--"), ("p99_ms", "^:")):
        left.plot(table.index, table[column], style, label=column.removesuffix("_ms"))
    left.axhline(result.data["bare"]["ms_per_image_median"], color="grey", linestyle="-.",
                 label="bare resize, ms/image")
    left.set(xlabel="offered rate (images/s)", ylabel="end to end (ms)", yscale="log",
             title="Latency against rate")
    left.legend(fontsize=8)
    stages = table[list(STAGES)].clip(lower=0).rename(columns=lambda s: s.removesuffix("_ms"))
    stages.plot.bar(stacked=True, ax=right, colormap="tab10", rot=0)
    right.set(xlabel="offered rate (images/s)", ylabel="median per stage (ms)", title="Where the time goes")
    right.legend(fontsize=8, ncols=3)
    saturation = result.data["saturation"]["throughput_img_s"]
    figure.suptitle(f"saturation {saturation:g} img/s vs bare {result.data['bare']['throughput_img_s']:g} img/s "
                    f"({result.data['environment']['machine']['cores']} cores)")
    figure.tight_layout()
    return figure


# ---------------------------------------------------------------- scaling


SWEEP_AXES = {"partitions": 1, "consumer_concurrency": 1, "max_inflight": 8, "action_concurrency": 4}
SWEEP_COLUMNS = (*SWEEP_AXES, "images", "ok", "errors", "throughput_img_s", "p50_ms", "p95_ms", "p99_ms",
                 "events_per_partition")


def sweep_points(grid: dict[str, Sequence[int]]) -> list[dict[str, int]]:
    """Every combination of ``grid``'s axes (the others at :data:`SWEEP_AXES`' values), fewest partitions first.

    Raises:
        LabConfigError: An unknown axis, or a value outside 1..64.
    """
    unknown = sorted(set(grid) - set(SWEEP_AXES))
    if unknown:
        raise LabConfigError(f"unknown sweep axes {unknown}; valid: {', '.join(SWEEP_AXES)}")
    for axis, values in grid.items():
        if not values or any(isinstance(v, bool) or not isinstance(v, int) or not 1 <= v <= 64 for v in values):
            raise LabConfigError(f"{axis} needs integers in 1..64, got {list(values)!r}")
    points = [dict(SWEEP_AXES)]
    for axis, values in grid.items():
        points = [{**p, axis: v} for p in points for v in values]
    return sorted(points, key=lambda p: p["partitions"])  # partitions only ever grow


def set_partitions(lab: Lab, count: int) -> int:
    """Grow topic ``dit247`` to ``count`` partitions (Kafka cannot shrink a topic); the count it has now."""
    from kafka import KafkaAdminClient
    from kafka.admin import NewPartitions

    from labkit.stack.services.storage import TOPIC

    admin = KafkaAdminClient(bootstrap_servers=lab.kafka_bootstrap, client_id="labkit-bench")
    try:
        current = len(admin.describe_topics([TOPIC])[0]["partitions"])
        if count > current:
            admin.create_partitions({TOPIC: NewPartitions(total_count=count)})
            return count
        return current
    finally:
        admin.close()


def _events_per_partition(lab: Lab, before: dict[int, int]) -> dict[int, int]:
    """Records written to each partition of the topic since ``before`` (end offsets)."""
    after = _end_offsets(lab)
    return {p: end - before.get(p, 0) for p, end in sorted(after.items())}


def _end_offsets(lab: Lab) -> dict[int, int]:
    from kafka import KafkaConsumer, TopicPartition

    from labkit.stack.services.storage import TOPIC

    consumer = KafkaConsumer(bootstrap_servers=lab.kafka_bootstrap, client_id="labkit-bench")
    try:
        partitions = [TopicPartition(TOPIC, p) for p in consumer.partitions_for_topic(TOPIC) or ()]
        return {tp.partition: end for tp, end in consumer.end_offsets(partitions).items()}
    finally:
        consumer.close()


def scaling_sweep(lab: Lab, grid: dict[str, Sequence[int]], images: int = 100, concurrency: int = 16,
                  warmup_images: int = 8, seed: int = 0, reporter: Reporter = QUIET,
                  progress: bool = True) -> pd.DataFrame:
    """Saturation throughput and latency for each combination of ``grid``.

    Axes: ``partitions`` (of topic ``dit247``; they only grow, so a lab keeps the largest
    count it was given), ``consumer_concurrency`` (partitions the flow's consumer hands
    over at once), ``max_inflight`` (the flow's bound on events being invoked) and
    ``action_concurrency`` (the action's warm workers). At each point the pipeline is
    stood up with those settings, warmed up, then given a closed-loop burst
    (:func:`saturation_point`). The flow is left at the last point's settings.

    Returns:
        One row per point (:data:`SWEEP_COLUMNS`); ``partitions`` is the count the topic had.

    Raises:
        LabConfigError: Bad axes or bounds.
    """
    _positive_int("images", images)
    _positive_int("concurrency", concurrency, high=64)
    points = sweep_points(grid)
    pool = bench_images(20, seed)
    run_id = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ") + "-" + uuid.uuid4().hex[:6]
    rows = []
    for i, point in enumerate(points):
        label = ", ".join(f"{k}={v}" for k, v in point.items())
        with reporter.step(f"sweep point {i + 1}/{len(points)}: {label}"):
            rows.append(_sweep_point(lab, point, pool, images, concurrency, warmup_images,
                                     f"sweep/{run_id}/{i:02d}/", progress))
    return pd.DataFrame(rows, columns=list(SWEEP_COLUMNS))


def _sweep_point(lab: Lab, point: dict[str, int], pool: Sequence[PoolImage], images: int, concurrency: int,
                 warmup_images: int, prefix: str, progress: bool) -> dict[str, Any]:
    partitions = set_partitions(lab, point["partitions"])
    pipeline.stand_up(lab, max_inflight=point["max_inflight"], action_concurrency=point["action_concurrency"],
                      consumer_concurrency=point["consumer_concurrency"])
    warm_up(lab, pool, warmup_images, prefix + "warmup/")
    before = _end_offsets(lab)
    burst = saturation_point(lab, images, concurrency, pool, prefix, progress)
    row = {**point, "partitions": partitions, **{k: burst[k] for k in ("images", "ok", "errors", "throughput_img_s",
                                                                          "p50_ms", "p95_ms", "p99_ms")}}
    row["events_per_partition"] = _events_per_partition(lab, before)
    return row


def sweep_plot(table: pd.DataFrame, varied: Sequence[str] | None = None):
    """Throughput (left) and p50/p99 (right) for each point of a sweep, labelled by the axes that vary."""
    import matplotlib.pyplot as plt

    varied = list(varied or [a for a in SWEEP_AXES if table[a].nunique() > 1] or ["partitions"])
    labels = table[varied].astype(str).agg(lambda r: " ".join(f"{a[0].upper()}{v}" for a, v in r.items()), axis=1)
    figure, (left, right) = plt.subplots(1, 2, figsize=(12, 4))
    left.bar(labels, table["throughput_img_s"], color="tab:blue")
    left.set(ylabel="images/s", title="Saturation throughput")
    right.plot(labels, table["p50_ms"], "o-", label="p50")
    right.plot(labels, table["p99_ms"], "^:", label="p99")
    right.set(ylabel="end to end (ms)", title="Latency under the burst")
    right.legend()
    for ax in (left, right):
        ax.tick_params(axis="x", rotation=30)
        ax.set_xlabel(" ".join(f"{a[0].upper()}={a}" for a in varied))
    figure.tight_layout()
    return figure
