"""The notebooks, run headless by papermill against the session stack, judged by what they produced."""

from __future__ import annotations

import json
from pathlib import Path

import nbformat
import papermill as pm
import pytest

NOTEBOOKS = Path(__file__).resolve().parent.parent / "notebooks"


def run_notebook(name: str, lab, out_dir: Path, **params) -> tuple[dict, nbformat.NotebookNode]:
    """Execute one notebook with small parameters; return what it recorded and the executed notebook."""
    executed = out_dir / f"{name}.ipynb"
    pm.execute_notebook(
        NOTEBOOKS / f"{name}.ipynb", executed, cwd=NOTEBOOKS, kernel_name="python3", progress_bar=False,
        parameters={"data_dir": str(lab.ctx.config.data_dir), "port_offset": lab.ctx.config.port_offset,
                    "results_dir": str(out_dir), **params},
    )
    return json.loads((out_dir / f"{name}.json").read_text()), nbformat.read(executed, as_version=4)


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
    assert_no_secrets(lab, notebook)


def test_01_pubsub_sees_the_upload_event_and_the_lag(lab, out_dir):
    results, notebook = run_notebook("01_pubsub", lab, out_dir, seed=11)
    assert results["event_seen"] is True and results["event_name"] == "s3:ObjectCreated:Put"
    assert results["read"] >= 1
    # a new group has committed nothing: its lag is the whole log, and reading shrinks it by what it read
    assert results["lag_before"] >= results["read"]
    assert results["lag_after"] == results["lag_before"] - results["read"]
    assert_no_secrets(lab, notebook)


def test_02_faas_shows_a_resize_and_a_cold_start(lab, out_dir):
    results, notebook = run_notebook("02_faas", lab, out_dir, seed=5, warm_calls=3)
    assert results["status"] == "success"
    assert max(results["width_out"], results["height_out"]) <= 640
    assert results["cold_is_first"] is True
    assert results["cold_init_ms"] > 0
    assert results["cold_total_ms"] > results["warm_median_ms"]
    assert_no_secrets(lab, notebook)


def test_03_pipeline_pushes_images_end_to_end(lab, out_dir):
    results, notebook = run_notebook("03_pipeline", lab, out_dir, seed=7, n_images=6)
    assert results["n_ok"] == results["n_images"] == 6
    assert results["n_outputs"] == 6
    assert results["stages_in_order"] is True
    assert 0 < results["median_duration_ms"] < 10_000
    assert_no_secrets(lab, notebook)
