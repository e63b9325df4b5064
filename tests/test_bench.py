"""``labkit bench``: a tiny smoke run on the session stack (valid JSON, sane fields, a plot), and bad input."""

from __future__ import annotations

import json
import os

import pytest
from click.testing import CliRunner

from labkit.cli import main
from labkit.errors import LabConfigError
from labkit.experiments.bench import BenchParams, ratio_table, run_bench
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
        assert set(point["stages_median_ms"]) == set(STAGES)
    assert data["saturation"]["throughput_img_s"] > 0 and data["saturation"]["images"] == 8
    assert data["ratios"]["saturation_over_bare_throughput"] > 0
    assert set(data["ratios"]["p50_over_bare_ms"]) == {"4", "8"}
    env = data["environment"]
    assert env["machine"]["cores"] == os.cpu_count() and env["git_revision"] and env["versions"]
    assert data["parameters"]["images_per_rate"] == 5


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
