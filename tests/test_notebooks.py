"""The notebooks, run headless by papermill against the session stack, judged by what they produced."""

from __future__ import annotations

import json
import re
from pathlib import Path

import nbformat
import papermill as pm
import pytest

from labkit.analysis import verdicts
from tests import claims

NOTEBOOKS = Path(__file__).resolve().parent.parent / "notebooks"


def run_notebook(name: str, lab, out_dir: Path, **params) -> tuple[dict, nbformat.NotebookNode]:
    """Execute one notebook with small parameters; return what it recorded and the executed notebook."""
    executed = out_dir / f"{name}.ipynb"
    pm.execute_notebook(
        NOTEBOOKS / f"{name}.ipynb", executed, cwd=NOTEBOOKS, kernel_name="python3", progress_bar=False,
        parameters={"data_dir": str(lab.ctx.config.data_dir), "port_offset": lab.ctx.config.port_offset,
                    "results_dir": str(out_dir), **params},
    )
    notebook = nbformat.read(executed, as_version=4)
    assert_claims_hold(notebook)
    return json.loads((out_dir / f"{name}.json").read_text()), notebook


def assert_claims_hold(notebook: nbformat.NotebookNode) -> None:
    """No percentile interval beyond what its sample supports, and no PASS beside a weaker verdict."""
    text = claims.notebook_text(notebook)
    assert claims.interval_problems(text) == []
    assert not verdicts.pass_beside_weaker(text), "a PASS beside an INCONCLUSIVE or FAIL verdict"


def assert_no_secrets(lab, notebook: nbformat.NotebookNode) -> None:
    text = json.dumps([cell.get("outputs", []) for cell in notebook.cells])
    for value in lab.ctx.secrets.secret_values():
        assert value not in text


@pytest.fixture(scope="module")
def out_dir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("notebooks")


def test_00_setup_reports_every_service_healthy(lab, out_dir):
    results, notebook = run_notebook("00_setup", lab, out_dir)
    assert results["healthy"] is True
    assert results["services"] == sorted(lab.endpoints)
    assert results["versions"]["kafka"].startswith("3.9")
    # the table has what the exercise asks for: how long each service has been up
    assert set(results["uptime_s"]) == set(results["services"]) and all(u >= 0 for u in results["uptime_s"].values())
    assert_no_secrets(lab, notebook)


def test_01_pubsub_sees_the_upload_event_and_the_lag_grow_and_drain(lab, out_dir):
    results, notebook = run_notebook("01_pubsub", lab, out_dir, seed=11, burst=6, drain_batch=2, work_s=0.05)
    assert results["event_seen"] is True and results["event_name"] == "s3:ObjectCreated:Put"
    lag, phases = results["lag"], results["phases"]
    paused = [n for n, p in zip(lag, phases) if p.startswith("paused")]
    drained = [n for n, p in zip(lag, phases) if p.startswith("resumed")]
    # caught up at 0; one more record of lag per upload while paused ...
    assert lag[0] == 0 and paused == list(range(1, 7))
    # ... then drained to 0, never faster than drain_batch records per poll, in several polls
    assert drained[-1] == 0 and len(drained) >= 3
    assert all(before - after <= 2 for before, after in zip([paused[-1], *drained], drained))
    assert "drained it to **0**" in claims.notebook_text(notebook)
    assert_no_secrets(lab, notebook)


def test_02_faas_shows_a_resize_and_a_cold_start(lab, out_dir):
    results, notebook = run_notebook("02_faas", lab, out_dir, seed=5, warm_calls=3)
    assert results["status"] == "success"
    assert max(results["width_out"], results["height_out"]) <= 640
    assert results["cold_is_first"] is True
    assert results["cold_init_ms"] > 0 and results["warm_init_ms"] == [0.0] * 3
    # OpenWhisk's semantics: duration already includes initTime; the platform's time is wait + duration
    assert results["cold_init_ms"] <= results["cold_duration_ms"]
    assert results["cold_total_ms"] == results["cold_wait_ms"] + results["cold_duration_ms"]
    assert results["cold_total_ms"] > results["warm_median_ms"]
    text = claims.notebook_text(notebook)
    assert f"spent **{results['cold_total_ms']:.0f} ms** in the platform" in text  # rendered from the data
    assert_no_secrets(lab, notebook)


def test_03_pipeline_pushes_images_end_to_end(lab, out_dir):
    results, notebook = run_notebook("03_pipeline", lab, out_dir, seed=7, n_images=6)
    assert results["n_ok"] == results["n_images"] == 6
    assert results["n_outputs"] == 6
    assert results["stages_in_order"] is True
    assert 0 < results["median_duration_ms"] < 10_000
    assert_no_secrets(lab, notebook)


def test_04_load_and_sla_measures_percentiles_and_an_inconclusive_verdict(lab, out_dir):
    results, notebook = run_notebook("04_load_and_sla", lab, out_dir, rate=4.0, n_images=12, seed=4)
    assert results["n_images"] == results["n_ok"] == 12
    assert 0.4 / 4.0 < results["mean_gap_s"] < 2.5 / 4.0  # Poisson arrivals at about the asked rate
    assert 0 < results["p50_s"] <= results["p95_s"] <= results["p99_s"] < 10
    low, high = results["p99_ci_s"]
    assert low <= results["p99_s"] <= high
    assert high == float("inf")  # 12 images cannot bound p99 from above: the notebook says so, not max()
    assert "bounds" in claims.notebook_text(notebook) and "– ∞, n=12)" in claims.notebook_text(notebook)
    # 12 images, none late, still cannot support "99 % within 10 s": 299 are needed
    assert results["verdict"] == "INCONCLUSIVE" and results["min_samples"] == 299
    assert results["lower_bound"] < 0.99
    assert "SLA bound 10 s" in results["ecdf_labels"]
    assert {"upload_ms", "event_ms", "action_ms", "webhook_ms"} <= set(results["stages"])
    assert_no_secrets(lab, notebook)


def test_07_sla_report_writes_the_report_without_secrets(lab, out_dir, tmp_path):
    reports = tmp_path / "reports"
    results, notebook = run_notebook("07_sla_report", lab, out_dir, experiment="smoke", n_images=6,
                                     reports_dir=str(reports))
    html, pdf = Path(results["reports"]["html"]), Path(results["reports"]["pdf"])
    assert html.parent == reports and html.is_file() and pdf.is_file() and pdf.read_bytes().startswith(b"%PDF")
    assert results["n_images"] == 6
    assert results["latency_status"] == "INCONCLUSIVE"  # 6 images cannot support 99 %
    assert results["headline"] == verdicts.weakest([results["latency_status"], results["availability_status"]])
    assert set(results["checks"].values()) <= {"met", "not met"}  # probes are checks, never PASS badges
    text = html.read_text()
    assert results["run"] in text and "Where the images went" in text
    assert f'<p class="status">{results["headline"]}</p>' in text
    assert claims.report_interval_problems(text) == [] and not verdicts.pass_beside_weaker(text)
    assert "consecutive failed probes count as one outage" in text
    # the availability clause is judged on time, the outages as the events: a smoke run's minute cannot PASS it
    assert results["availability_status"] in ("INCONCLUSIVE", "FAIL") and "bound on the time down" in text
    assert re.search(r"n=\d+ outage events over \d+ s, 95% confidence, n needed \d+ s of observation", text)
    shown = claims.notebook_text(notebook)
    assert f"Headline: {results['headline']}" in shown and re.search(r"probes of the pipeline, one every [\d.]+ s", shown)
    for value in lab.ctx.secrets.secret_values():
        assert value not in text
    assert_no_secrets(lab, notebook)


def test_labkit_notebooks_names_unknown_notebooks_and_runs_known_ones(lab, tmp_path):
    import os
    import subprocess
    import sys

    env = {**os.environ, "LABKIT_DATA_DIR": str(lab.ctx.config.data_dir),
           "LABKIT_PORT_OFFSET": str(lab.ctx.config.port_offset)}
    command = [sys.executable, "-m", "labkit.cli", "notebooks", "--out", str(tmp_path)]
    wrong = subprocess.run([*command, "99_nothing"], env=env, capture_output=True, text=True)
    assert wrong.returncode == 2 and "00_setup" in wrong.stderr and "Traceback" not in wrong.stderr
    done = subprocess.run([*command, "00_setup"], env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert "notebook 00_setup: done in" in done.stderr
    assert json.loads((tmp_path / "00_setup.json").read_text())["healthy"] is True


def test_08_scaling_benchmarks_the_pipeline_beside_the_bare_loop_and_sweeps_with_repetitions(lab, out_dir):
    results, notebook = run_notebook("08_scaling", lab, out_dir, bench_rates=[5], bench_images=6,
                                     saturation_images=8, concurrency=4, sweep_images=6, max_inflight=[2, 8],
                                     action_concurrency=[2], partitions=[1], consumer_concurrency=[1, 2],
                                     repetitions=2)
    bench = json.loads(Path(results["bench_json"]).read_text())
    assert bench["bare"]["throughput_img_s"] > 0 and Path(results["bench_plot"]).is_file()
    assert [r["rate_per_s"] for r in results["rates"]] == [5]
    assert results["saturation_over_bare"] == bench["ratios"]["saturation_over_bare_throughput"] > 0
    # where the CPU goes: the burst's CPU per image of each process, drawn and said in a sentence from the data
    assert results["cpu_ms_per_image"] == bench["saturation"]["cpu_ms_per_image"]
    assert {"nodered", "faas", "kafka", "load client", "all"} <= set(results["cpu_ms_per_image"])
    assert results["where_the_cpu_goes"] in claims.notebook_text(notebook)
    # every point of each sweep twice (repetitions interleaved), every image through
    points = [(p["max_inflight"], p["consumer_concurrency"], p["repetition"]) for p in results["sweep"]]
    assert points == [(2, 1, 0), (8, 1, 0), (2, 1, 1), (8, 1, 1), (8, 1, 0), (8, 2, 0), (8, 1, 1), (8, 2, 1)]
    assert all(p["ok"] == 6 and p["errors"] == 0 and p["throughput_img_s"] > 0 for p in results["sweep"])
    assert Path(results["sweep_csv"]).is_file()
    # each comparison is judged on its paired repetitions, and says so in words the data support
    for comparison in results["comparisons"].values():
        assert comparison["detectable"] == (comparison["low"] > 0 or comparison["high"] < 0)
        verdict = "a detectable difference" if comparison["detectable"] else "no detectable difference at this n"
        assert verdict in comparison["text"] and comparison["text"] in claims.notebook_text(notebook)
    assert set(results["comparisons"]) == {"max_inflight", "consumer_concurrency"}
    assert "no upper bound (∞)" in claims.notebook_text(notebook)  # p99 of 6 images is not a tail
    assert_no_secrets(lab, notebook)
