"""The run skeleton (labkit.core.runs, labkit.experiments.runs), the fates of the results table, the
progress bar: no stack needed."""

from __future__ import annotations

import json
import os
import re
import stat
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from labkit.analysis import report, sla
from labkit.core.progress import bar
from labkit.core.runs import new_run_dir, run_id, run_metadata, save_tables, write_json
from labkit.errors import LabConfigError
from labkit.experiments import bench
from labkit.experiments.settle import RESULT_COLUMNS, classify
from labkit.pipeline.fate import KEY_STATES, Fate

STARTED = datetime(2025, 3, 1, 12, 0, 5, tzinfo=UTC)


def test_a_run_id_is_its_start_and_four_random_hex_digits() -> None:
    ids = {run_id(STARTED) for _ in range(20)}
    assert all(re.fullmatch(r"20250301T120005-[0-9a-f]{4}", i) for i in ids)
    assert len(ids) > 1  # two runs started in one second get two names


def test_a_new_run_dir_never_reuses_a_name(tmp_path: Path) -> None:
    made = [new_run_dir(tmp_path / "runs", "smoke") for _ in range(3)]
    assert [p.name for p in made] == ["smoke", "smoke-2", "smoke-3"]
    assert all(p.is_dir() and not any(p.iterdir()) for p in made)


def test_run_metadata_says_what_a_run_needs_to_be_repeated() -> None:
    env = run_metadata(STARTED, STARTED, versions={"kafka": "3.9.1"}, backend="native", seed=7,
                       labels={"experiment": "smoke"}, parameters={"a": 1})
    assert list(env)[:2] == ["experiment", "seed"] and list(env)[-1] == "parameters"
    assert env["started"] == "2025-03-01T12:00:05+00:00" and env["versions"] == {"kafka": "3.9.1"}
    assert env["machine"]["cores"] == os.cpu_count() and env["python"] and env["pillow"]
    assert re.fullmatch(r"[0-9a-f]{40}|unknown", env["git_revision"])


def test_saved_tables_are_whole_readable_and_free_of_secret_names(tmp_path: Path) -> None:
    results = pd.DataFrame({"key": ["a", "b"], "duration_ms": [1.5, np.nan]})
    env = {"seed": 1, "LABKIT_WEBHOOK_TOKEN": "t0ken", "machine": {"api_key": "k", "cores": 2}}
    run_dir = save_tables(tmp_path / "run", {"results": results, "probes": results.head(1)}, env)
    assert sorted(p.name for p in run_dir.iterdir()) == ["env.json", "probes.csv", "results.csv"]  # no temp files
    assert json.loads((run_dir / "env.json").read_text()) == {"seed": 1, "machine": {"cores": 2}}
    assert stat.S_IMODE((run_dir / "results.csv").stat().st_mode) == 0o644
    pd.testing.assert_frame_equal(pd.read_csv(run_dir / "results.csv"), results)


def test_report_save_run_is_the_skeletons_writer(tmp_path: Path) -> None:
    results = pd.DataFrame({"key": ["a"]})
    run_dir = report.save_run(results, results, {"seed": 3}, tmp_path / "run")
    assert sorted(p.name for p in run_dir.iterdir()) == sorted(report.RUN_FILES)


def test_strict_json_refuses_nan_and_writes_nothing(tmp_path: Path) -> None:
    with pytest.raises(ValueError):
        write_json(tmp_path / "bench.json", {"p50_ms": float("nan")}, allow_nan=False)
    assert list(tmp_path.iterdir()) == []


# ---------------------------------------------------------------- fates


def test_the_results_speak_the_fates_words() -> None:
    assert set(sla.STATUSES) == {fate.value for fate in Fate} - {fate.value for fate in KEY_STATES}
    # (a results row is one upload: unrecorded and stale are states of a key in the store, never of one upload)


def test_classify_writes_the_statuses_of_the_results_contract() -> None:
    upload = {"key": "k", "trace_id": "t", "t_sched_ms": 1.0, "t_start_ms": 1.0, "t_end_ms": 2.0,
              "status_code": 503, "attempts": 1, "error": "busy", "t_upload_start": 1.0}
    frame = classify(pd.DataFrame([upload]), pd.DataFrame(), moving=False)
    assert list(frame.columns) == list(RESULT_COLUMNS[5:])
    assert frame.loc[0, "status"] == "refused" and type(frame.loc[0, "status"]) is str


# ---------------------------------------------------------------- progress and bench input


def test_a_progress_bar_counts_to_its_total(capsys: pytest.CaptureFixture[str]) -> None:
    with bar(3, "bare resize") as done:
        for _ in range(3):
            done.update(1)
    shown = capsys.readouterr().err
    assert "bare resize" in shown and "3/3" in shown
    with bar(3, "quiet", disable=True) as done:
        done.update(3)
    assert capsys.readouterr().err == ""


@pytest.mark.parametrize(("grid", "message"), [
    ({"speed": [1]}, "unknown sweep axes"),
    ({"partitions": [0]}, "partitions needs integers in 1..64"),
])
def test_bad_sweep_axes_are_one_line_naming_the_fix(grid: dict, message: str) -> None:
    with pytest.raises(LabConfigError, match=message) as caught:
        bench.sweep_points(grid)
    assert "Fix:" in str(caught.value) and "\n" not in str(caught.value)


def test_an_experiment_raises_its_first_error_when_the_clean_up_fails_too(tmp_path: Path, monkeypatch) -> None:
    """A restart whose `up` fails leaves the services down, so the clean-up's stand-up fails as
    well; the error raised must be the cause, not the clean-up's."""
    from types import SimpleNamespace

    from labkit.errors import ServiceError
    from labkit.experiments import run as experiment

    calls = []

    def stand_up(lab, *args, **kwargs) -> None:
        calls.append(args)
        if len(calls) == 1:
            raise LabConfigError("Not installed yet: the cause")
        raise ServiceError("storage is unreachable: the clean-up")

    monkeypatch.setattr(experiment.pipeline, "stand_up", stand_up)
    lab = SimpleNamespace(ctx=SimpleNamespace(config=SimpleNamespace(data_dir=tmp_path)))
    spec = {"name": "t", "load": {"kind": "open", "rate_per_s": 1, "images": 1}}
    with pytest.raises(LabConfigError, match="the cause"):
        experiment.run_experiment(lab, spec, tmp_path / "runs")
    assert len(calls) == 2  # the clean-up was tried
