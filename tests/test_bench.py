"""``labkit bench``: a tiny smoke run on the session stack (valid JSON, sane fields, a plot), and bad input."""

from __future__ import annotations

import json
import os

import pytest
from click.testing import CliRunner

from labkit.cli import main
from labkit.errors import LabConfigError
from labkit.experiments.bench import (
    BenchParams,
    cpu_table,
    ratio_table,
    run_bench,
    where_the_cpu_goes,
)
from labkit.pipeline.metrics import STAGES


@pytest.fixture(scope="module")
def result(pipe, tmp_path_factory):
    params = BenchParams.quick(rates=(4.0, 8.0), images_per_rate=5, saturation_images=8, bare_images=8)
    return run_bench(pipe, params, tmp_path_factory.mktemp("bench"), progress=False)


def test_bench_writes_valid_json_with_the_expected_fields(result):
    data = json.loads(result.json_path.read_text())
    assert data["bare"]["throughput_img_s"] > 0 and data["bare"]["ms_per_image_median"] > 0
    assert data["bare"]["processes"] == os.cpu_count()
    assert [p["rate_per_s"] for p in data["rates"]] == [4.0, 8.0]
    for point in data["rates"]:
        assert point["images"] == 5 and point["ok"] + point["errors"] == 5
        assert 0 < point["p50_ms"] <= point["p95_ms"] <= point["p99_ms"]
        # Five images bound no tail percentile from above: the JSON says null, never the maximum.
        assert point["p95_high_ms"] is None and point["p99_high_ms"] is None
        assert point["p50_low_ms"] <= point["p50_ms"]
        assert set(point["stages_median_ms"]) == set(STAGES)
    assert data["saturation"]["throughput_img_s"] > 0 and data["saturation"]["images"] == 8
    assert data["ratios"]["saturation_over_bare_throughput"] > 0
    assert set(data["ratios"]["p50_over_bare_ms"]) == {"4", "8"}
    env = data["environment"]
    assert env["machine"]["cores"] == os.cpu_count() and env["git_revision"] and env["versions"]
    assert data["parameters"]["images_per_rate"] == 5


def test_bench_writes_the_cpu_per_image_of_each_process(result):
    per_image = json.loads(result.json_path.read_text())["saturation"]["cpu_ms_per_image"]
    expected = {"nodered", "faas", "storage", "storage-out", "toxiproxy", "kafka", "mail", "load client", "all"}
    assert expected <= set(per_image) and all(ms >= 0 for ms in per_image.values())
    assert per_image["all"] == pytest.approx(sum(v for k, v in per_image.items() if k != "all"), abs=0.1)
    table = cpu_table(result.data)
    assert list(table.columns) == ["cpu_ms_per_image", "share"] and table.index[-1] == "all"
    assert {"Node-RED", "FaaS runner", "Kafka", "Toxiproxy", "load client"} <= set(table.index)
    assert "ms of CPU" in where_the_cpu_goes(result.data)


def test_the_cli_prints_the_cpu_table(result):
    from labkit.cli import bench_report

    table = bench_report(result).split("CPU per image at saturation:")[1].strip().splitlines()
    assert table[0].split() == ["cpu_ms_per_image", "share"] and table[1].split() == ["process"]
    assert table[-1].split()[0] == "all" and any(line.startswith("Node-RED") for line in table)


def test_bench_writes_a_plot_and_a_ratio_table(result):
    assert result.plot_path.is_file() and result.plot_path.read_bytes().startswith(b"\x89PNG")
    table = ratio_table(result)
    assert len(table) == 1 + 2 and table["ratio"].notna().all()


@pytest.mark.parametrize(("args", "message"), [
    (["--rates", "5,-1"], "each rate must be a number in (0, 500]"),
    (["--rates", "five"], "--rates must be numbers"),
    (["--images-per-rate", "0"], "images_per_rate must be an integer in 1..100000"),
    (["--saturation-images", "-3"], "saturation_images must be an integer"),
])
def test_cli_refuses_bad_input_with_one_clear_message(args, message, tmp_path, ports):
    env = {"LABKIT_DATA_DIR": str(tmp_path), "LABKIT_PORT_OFFSET": str(ports.offset("bench"))}
    done = CliRunner().invoke(main, ["bench", "--quick", *args, "--out", str(tmp_path)], env=env)
    assert done.exit_code == 2, done.output
    assert message in done.stderr and "Traceback" not in done.output
    assert done.stderr.count("error:") == 1
    assert not list(tmp_path.glob("bench-*.json"))  # refused before any work


def test_params_refuse_an_empty_rate_list():
    with pytest.raises(LabConfigError, match="rates is empty"):
        BenchParams(rates=())


def test_percentile_bounds_are_order_statistics_and_a_missing_bound_is_null() -> None:
    from labkit.analysis.stats import order_stat_bounds
    from labkit.experiments.bench.measure import percentile_bounds

    sample = [float(v) for v in range(1, 301)]  # ms; the k-th smallest is k
    bounds = percentile_bounds(sample)
    low, high = order_stat_bounds(300, 0.99)
    assert bounds["p99_low_ms"] == low and bounds["p99_high_ms"] == high
    assert percentile_bounds(sample[:20])["p99_high_ms"] is None
    assert percentile_bounds([]) == {f"p{q}_{side}_ms": None for q in (50, 95, 99) for side in ("low", "high")}


def test_the_bench_plot_marks_a_percentile_without_an_upper_bound() -> None:
    from labkit.experiments.bench.plots import plot
    from labkit.experiments.bench.result import BenchResult

    def point(rate: float) -> dict:
        return {"rate_per_s": rate, "images": 20, "ok": 20, "errors": 0, "p50_ms": 50.0, "p95_ms": 90.0,
                "p99_ms": 99.0, "p50_low_ms": 40.0, "p50_high_ms": 60.0, "p95_low_ms": 80.0,
                "p95_high_ms": None, "p99_low_ms": 95.0, "p99_high_ms": None,
                "stages_median_ms": {s: 1.0 for s in STAGES}}

    data = {"rates": [point(4.0), point(8.0)], "bare": {"ms_per_image_median": 10.0, "throughput_img_s": 90.0},
            "saturation": {"throughput_img_s": 30.0}, "environment": {"machine": {"cores": 2}}}
    result = BenchResult(data)
    assert result.rates["p99_high_ms"].tolist() == [float("inf")] * 2
    figure = plot(result)
    labels = [t.get_text() for t in figure.axes[0].get_legend().get_texts()]
    assert "p99: no upper bound at this n" in labels and "p50 (95% bounds)" in labels
    assert len(figure.axes) == 2  # no CPU sampled, no CPU panel


def test_the_bench_plot_draws_the_cpu_per_process_when_sampled() -> None:
    from labkit.experiments.bench.plots import cpu_plot, plot
    from labkit.experiments.bench.result import BenchResult

    point = {"rate_per_s": 4.0, "images": 20, "ok": 20, "errors": 0, "p50_ms": 50.0, "p95_ms": 90.0,
             "p99_ms": 99.0, "stages_median_ms": {s: 1.0 for s in STAGES}}
    cpu = {"nodered": 12.0, "faas": 3.0, "faas workers": 16.0, "kafka": 1.5, "load client": 2.5, "all": 35.0}
    data = {"rates": [point], "bare": {"ms_per_image_median": 10.0, "throughput_img_s": 90.0},
            "saturation": {"throughput_img_s": 30.0, "cpu_ms_per_image": cpu},
            "environment": {"machine": {"cores": 2}}}
    result = BenchResult(data)
    assert len(plot(result).axes) == 3
    bars = [t.get_text() for t in cpu_plot(result).axes[0].get_yticklabels()]
    assert bars[-1] == "action workers" and "Node-RED" in bars and "all" not in bars
    assert cpu_table(data).loc["all", "share"] == 1.0
    assert "35.0 ms of CPU" in where_the_cpu_goes(data) and "action workers" in where_the_cpu_goes(data)
