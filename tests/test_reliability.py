"""The fault matrix at CI scale, on the real stack: every service killed and restarted, every hop
degraded then blackholed, the whole stack restarted, each during load; nothing may be lost."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from labkit.errors import LabConfigError
from labkit.faults import HOPS
from labkit.lab import Lab
from labkit.reliability import (
    DOC_END,
    DOC_START,
    PROCESS_TARGETS,
    RESTART_CASE,
    SCALES,
    cases,
    run_fault_matrix,
    write_doc,
)


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


def test_an_unknown_case_is_one_clear_error() -> None:
    with pytest.raises(LabConfigError, match="Valid: .*kill-kafka"):
        cases(SCALES["ci"], ["kill-everything"])
    cli = subprocess.run([sys.executable, "-m", "labkit.cli", "reliability", "--case", "kill-everything"],
                         capture_output=True, text=True, timeout=60)
    assert cli.returncode == 2 and "kill-everything" in cli.stderr and "Traceback" not in cli.stderr


@pytest.mark.stack
def test_ci_fault_matrix_loses_nothing_and_records_recovery(lab: Lab, tmp_path: Path) -> None:
    seen: list[str] = []
    run = run_fault_matrix(lab, "ci", tmp_path, progress=False, on_case=lambda case, row: seen.append(case.name))
    summary = run.summary.set_index("case")
    print("\n" + summary[["uploaded", "ok", "error", "lost", "reconciled", "recovery_s", "backlog_s"]].to_string())

    assert seen == [c.name for c in cases(SCALES["ci"])]
    assert (summary["lost"] == 0).all() and (summary["pending"] == 0).all(), summary.to_dict("index")
    assert run.passed
    assert (summary["uploaded"] == summary["ok"] + summary["error"]).all()
    # Transient faults are retried or reconciled, never dead-lettered.
    assert (summary["error"] == 0).all(), run.results.loc[run.results["status"] == "error", ["key", "reason"]]
    # Every case measured its recovery: an image sent after the fault ended came through.
    assert summary["recovery_s"].notna().all() and (summary["recovery_s"] > 0).all()
    assert (summary["fault_s"] > 0).all()

    saved = pd.read_csv(run.run_dir / "summary.csv")
    assert list(saved["case"]) == list(summary.index)
    assert run.plot.stat().st_size > 10_000
    assert set(pd.read_csv(run.run_dir / "results.csv")["fault"]) == set(summary.index)

    doc = tmp_path / "reliability.md"
    doc.write_text(f"# Reliability\n\nbefore\n\n{DOC_START}\nold\n{DOC_END}\n\nafter\n")
    text = write_doc(run, doc).read_text()
    assert "before" in text and "after" in text and "old" not in text
    assert "| kill-kafka | kill -9 kafka, started again after 3 s |" in text and "dead-lettered" in text and (doc.parent / "img" / "fault-matrix-ci.png").exists()
