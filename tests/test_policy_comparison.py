"""The policy comparison's tables and words, on hand-made rows (no services): attempts joined by
trace id, per-run counts and amplification, medians with ranges, and overlap as no detectable difference."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from labkit.experiments.retries import (
    PolicyComparison,
    compare,
    plural,
    span,
    spread,
    wasted_requests,
    with_attempts,
)


def image(policy: str, repetition: int, trace: str, status: str, reconciled: bool = False) -> dict:
    return {"policy": policy, "repetition": repetition, "trace_id": trace, "status": status, "reconciled": reconciled}


RESULTS = pd.DataFrame([
    image("none", 0, "a", "dead_lettered"), image("none", 0, "b", "resized"),
    image("fixed", 0, "c", "dead_lettered"), image("fixed", 0, "d", "resized"),
    image("none", 1, "e", "dead_lettered"), image("none", 1, "f", "dead_lettered"),
    image("fixed", 1, "g", "resized"), image("fixed", 1, "h", "lost"),
])
METRICS = pd.DataFrame({
    "trace_id": ["a", "b", "c", "d", "e", "f", "g", "g", None],
    "upload_attempts": [1, 1, 1, 1, 1, 1, 1, 2, 1],
    "invoke_attempts": [1, 1, 4, 3, 1, 1, 2, 1, 7],
    "t_invoke_start": [10, 11, 12, 13, 14, 15, 17, 16, 0],
})


def comparison() -> PolicyComparison:
    windows = pd.DataFrame({"policy": ["none", "fixed", "none", "fixed"], "repetition": [0, 0, 1, 1],
                            "start_ms": [0, 0, 0, 0], "end_ms": [1000, 2000, 1000, 2000]})
    return PolicyComparison(with_attempts(RESULTS, METRICS), windows, ["none", "fixed"], 2, Path("."))


def test_attempts_come_from_the_lines_of_each_trace_id_the_most_of_each_kind():
    joined = with_attempts(RESULTS, METRICS).set_index("trace_id")
    assert joined.loc["g", "upload_attempts"] == 2 and joined.loc["g", "invoke_attempts"] == 2
    assert joined.loc["g", "t_invoke_start"] == 16  # the first invoke
    assert np.isnan(joined.loc["h", "invoke_attempts"])  # no line: its event never reached the flow


def test_per_run_counts_fates_retries_and_requests_per_image():
    runs = comparison().per_run().set_index(["policy", "repetition"])
    assert list(runs.index) == [("none", 0), ("none", 1), ("fixed", 0), ("fixed", 1)]  # the policies' order
    assert runs.loc[("none", 0), "amplification"] == 1.0 and runs.loc[("none", 0), "retried"] == 0
    fixed = runs.loc[("fixed", 0)]
    assert (fixed["requests"], fixed["amplification"], fixed["retried"], fixed["max_invoke_attempts"]) == (7, 3.5, 2, 4)
    lost = runs.loc[("fixed", 1)]
    assert (lost["lost"], lost["requests"], lost["amplification"]) == (1, 2, 1.0)  # a lost image sent no invoke


def test_summary_has_a_median_and_a_range_per_policy():
    summary = comparison().summary()
    assert list(summary.index) == ["none", "fixed"] and (summary["runs"] == 2).all()
    assert summary.loc["fixed", "amplification"] == 2.25
    assert (summary.loc["fixed", "amplification_min"], summary.loc["fixed", "amplification_max"]) == (1.0, 3.5)


def test_time_before_the_fault_ended_per_image():
    lead = comparison().before_fault_end_s()
    assert lead.iloc[0] == (1000 - 10) / 1000 and lead.iloc[2] == (2000 - 12) / 1000


def test_words_say_the_median_the_range_and_no_detectable_difference_when_ranges_overlap():
    assert spread(pd.Series([3, 4, 5])) == "4 (3–5)" and spread(pd.Series([2, 2])) == "2"
    assert span(pd.Series([1.44, 1.46])) == "1.4–1.5" and span(pd.Series([1.41, 1.43])) == "1.4"
    assert plural(1, "event") == "1 event" and plural(2, "event") == "2 events"
    runs = pd.DataFrame({"policy": ["a", "a", "b", "b", "c", "c"], "x": [1, 2, 3, 4, 2, 3]})
    assert compare(runs, "x", "b", "a") == "higher" and compare(runs, "x", "a", "b") == "lower"
    assert compare(runs, "x", "c", "a") == "no detectable difference"


def test_wasted_requests_are_those_sent_for_dead_lettered_images():
    assert wasted_requests(comparison().results, "fixed") == 4 and wasted_requests(comparison().results, "none") == 3
