"""The fault matrix at CI scale, on the real stack: every service killed and restarted, every hop
degraded then blackholed, the whole stack restarted, each during load; nothing may be lost."""

from __future__ import annotations

import math
from pathlib import Path

import pandas as pd
import pytest
from click.testing import CliRunner

from labkit.cli import main
from labkit.errors import LabConfigError
from labkit.experiments.faults import HOPS
from labkit.experiments.matrix import (
    DOC_END,
    DOC_START,
    PROCESS_TARGETS,
    RESTART_CASE,
    SCALES,
    case_label,
    case_spec,
    cases,
    markdown_table,
    run_fault_matrix,
    summarize,
    write_doc,
)
from labkit.stack.lab import Lab


def test_the_matrix_covers_every_service_every_hop_and_a_restart() -> None:
    names = {c.name for c in cases(SCALES["ci"])}
    assert names == ({f"kill-{s}" for s in PROCESS_TARGETS} | {f"{h}-latency-blackhole" for h in HOPS}
                     | {RESTART_CASE})
    network = next(c for c in cases(SCALES["full"]) if c.kind == "network")
    latency, blackhole = network.faults
    assert latency["params"] == {"latency_ms": 2000} and blackhole["params"] == {"timeout_ms": 0}
    assert blackhole["duration_s"] == 10 and blackhole["at_s"] > latency["at_s"] + latency["duration_s"]
    kill = next(c for c in cases(SCALES["full"]) if c.kind == "process")
    assert kill.faults[0]["kind"] == "kill"


def test_the_stack_restart_is_a_fault_like_the_others() -> None:
    restart = next(c for c in cases(SCALES["ci"]) if c.name == RESTART_CASE)
    assert (restart.kind, restart.target, restart.description) == ("restart", "stack", "labkit down, then up (data kept)")
    spec = case_spec(restart, SCALES["ci"], seed=0)
    assert [(f.kind, f.target, f.at_s) for f in spec.faults] == [("restart", "stack", SCALES["ci"].fault_at_s)]
    assert spec.fault_name == RESTART_CASE and spec.until_recovered is not None


def test_an_unknown_case_is_one_clear_error() -> None:
    with pytest.raises(LabConfigError, match="Valid: .*kill-kafka"):
        cases(SCALES["ci"], ["kill-everything"])
    cli = CliRunner().invoke(main, ["reliability", "--case", "kill-everything"])
    assert cli.exit_code == 2 and "kill-everything" in cli.stderr and "Traceback" not in cli.output


def failing_rows(summary: pd.DataFrame, holds: pd.Series, what: str) -> str:
    """An assertion message naming every case where ``holds`` is false, with its row."""
    bad = summary.loc[~holds.astype(bool)]
    return f"{what} fails for {', '.join(bad.index)}:\n{bad.to_string()}"


def test_a_case_that_did_not_recover_says_how_long_it_waited() -> None:
    case = next(c for c in cases(SCALES["ci"]) if c.name == "kill-kafka")
    results = pd.DataFrame({"status": ["resized", "resized"], "t_upload_start": [1000.0, 9000.0], "t_done": [2000.0, 9500.0],
                            "duplicates": [0, 0], "reconciled": [False, False]})
    window = [{"start_ms": 500.0, "end_ms": 9800.0}]
    stuck = summarize(case, results, window, {"recovered": False, "waited_s": 120.0})
    assert not stuck["recovered"] and not stuck["passed"] and stuck["waited_s"] == 120.0
    assert math.isnan(stuck["recovery_s"])
    fine = summarize(case, results, [{"start_ms": 500.0, "end_ms": 8000.0}], {"recovered": True, "waited_s": 2.5})
    assert fine["passed"] and fine["recovery_s"] == 1.5
    summary = pd.DataFrame([stuck, fine])
    table = markdown_table(summary)
    assert "| not recovered after 120 s |" in table and "| 1.5 |" in table
    assert [case_label(r) for r in summary.itertuples(index=False)] == ["kill-kafka  ✗ not recovered in 120 s",
                                                                          "kill-kafka"]


def test_the_ci_scale_waits_for_recovery_rather_than_a_fixed_window() -> None:
    spec = case_spec(next(c for c in cases(SCALES["ci"]) if c.kind == "process"), SCALES["ci"], seed=0)
    assert spec.until_recovered is not None and spec.until_recovered.timeout_s >= 60
    # the load may run as long as the wait, and has images for it
    assert spec.load.max_duration_s >= spec.until_recovered.timeout_s
    assert spec.load.images >= spec.load.rate_per_s * spec.load.max_duration_s


@pytest.mark.stack
def test_ci_fault_matrix_loses_nothing_and_records_recovery(lab: Lab, tmp_path: Path) -> None:
    seen: list[str] = []
    run = run_fault_matrix(lab, "ci", tmp_path, progress=False, on_case=lambda case, row: seen.append(case.name))
    summary = run.summary.set_index("case")
    print("\n" + summary[["uploaded", "resized", "dead_lettered", "refused", "lost", "reconciled", "recovered", "recovery_s", "waited_s",
                          "backlog_s"]].to_string())

    assert seen == [c.name for c in cases(SCALES["ci"])]
    assert (summary["lost"] == 0).all(), failing_rows(summary, summary["lost"] == 0, "nothing lost")
    assert (summary["pending"] == 0).all(), failing_rows(summary, summary["pending"] == 0, "nothing pending")
    accounted = summary["uploaded"] == summary["resized"] + summary["dead_lettered"]
    assert accounted.all(), failing_rows(summary, accounted, "every upload resized or dead-lettered")
    # Transient faults are retried or reconciled, never dead-lettered.
    failed = run.results["status"].isin(["dead_lettered", "refused"])
    assert not failed.any(), run.results.loc[failed, ["fault", "key", "status", "reason"]]
    # Every case measured its recovery: an image sent after the fault ended came through.
    assert summary["recovered"].all(), failing_rows(summary, summary["recovered"], "recovery within the wait")
    measured = summary["recovery_s"].notna() & (summary["recovery_s"] > 0)
    assert measured.all(), failing_rows(summary, measured, "a measured recovery time")
    assert (summary["fault_s"] > 0).all(), failing_rows(summary, summary["fault_s"] > 0, "a fault window")
    assert run.passed

    saved = pd.read_csv(run.run_dir / "summary.csv")
    assert list(saved["case"]) == list(summary.index)
    assert run.plot.stat().st_size > 10_000
    assert set(pd.read_csv(run.run_dir / "results.csv")["fault"]) == set(summary.index)

    doc = tmp_path / "reliability.md"
    doc.write_text(f"# Reliability\n\nbefore\n\n{DOC_START}\nold\n{DOC_END}\n\nafter\n")
    text = write_doc(run, doc).read_text()
    assert "before" in text and "after" in text and "old" not in text
    assert "| kill-kafka | kill -9 kafka, started again after 3 s |" in text and "dead-lettered" in text
    assert (doc.parent / "img" / "fault-matrix-ci.png").exists()
