"""The availability experiment and notebook 10.

Fast: the uptime clause judged on time (outages as the events, a Poisson bound), the quorum rule,
the attribution of outages to kills, the budget per fault. On the real stack: notebook 10 under
papermill, on the session lab (one broker) and a short-lived lab with three brokers at the
session's spare port offset, judged by what it measured.
"""

from __future__ import annotations

import math
import os
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from scipy.stats import poisson

from labkit.analysis import verdicts
from labkit.analysis.uptime_clause import judge, judge_probes, poisson_upper
from labkit.errors import LabConfigError
from labkit.experiments import availability as av
from tests import claims
from tests.test_notebooks import assert_no_secrets, run_notebook

# ---------------------------------------------------------------- the clause on time


@pytest.mark.parametrize("k", [0, 1, 2, 5, 20])
def test_the_poisson_bound_leaves_five_percent_below_the_outages_seen(k: int) -> None:
    upper = poisson_upper(k)
    assert poisson.cdf(k, upper) == pytest.approx(0.05, abs=1e-9)  # the exact (Garwood) one-sided limit
    assert upper > k


def test_no_outage_bounds_the_rate_by_minus_log_alpha() -> None:
    assert poisson_upper(0) == pytest.approx(-math.log(0.05))  # 2.996: "the rule of three"


def test_more_downtime_than_the_clause_allows_fails_on_what_was_seen() -> None:
    row = judge(downtime_s=10, outages=2, longest_s=6, window_s=200, spacing_s=0.5)
    assert row["status"] == verdicts.FAIL and row["availability"] == pytest.approx(0.95)
    assert "n=2 outage events over 200 s" in row["verdict"] and "95% confidence" in row["verdict"]


def test_a_short_clean_window_is_inconclusive_and_names_the_window_that_would_decide() -> None:
    row = judge(downtime_s=0, outages=0, longest_s=0, window_s=600, spacing_s=0.5)
    assert row["status"] == verdicts.INCONCLUSIVE
    # 3.0 outages at most, each at most one probe spacing, must fit in 0.1% of the window
    assert row["needed_s"] == math.ceil(poisson_upper(0) * 0.5 / 0.001) == 1498
    assert judge(0, 0, 0, row["needed_s"], 0.5)["status"] == verdicts.PASS
    assert judge(0, 0, 0, row["needed_s"] - 2, 0.5)["status"] == verdicts.INCONCLUSIVE


def test_a_pass_carries_its_facts_and_never_reads_as_a_pass_beside_a_fail() -> None:
    passed = judge(0, 0, 0, 3000, 0.5)
    failed = judge(10, 1, 10, 100, 0.5)
    assert passed["status"] == verdicts.PASS and failed["status"] == verdicts.FAIL
    assert not verdicts.pass_beside_weaker(passed["verdict"] + "\n" + failed["verdict"])


def test_an_outage_seen_raises_the_window_needed_by_its_length() -> None:
    short, long = judge(0.5, 1, 0.5, 2000, 0.5), judge(5, 1, 5, 20000, 0.5)
    # 0.025% down in each, but up to 4.74 outages as long as the longest seen may come: 0.119%
    assert short["status"] == long["status"] == verdicts.INCONCLUSIVE
    assert short["share_bound"] == pytest.approx(poisson_upper(1) * 0.5 / 2000)
    assert short["needed_s"] == math.ceil(poisson_upper(1) * 0.5 / 0.001) and long["needed_s"] > short["needed_s"]
    assert judge(0.5, 1, 0.5, 3000, 0.5)["share_bound"] > judge(0, 0, 0, 3000, 0.5)["share_bound"]


@pytest.mark.parametrize("args", [{"window_s": 0}, {"outages": -1}, {"downtime_s": -1}, {"target": 1.0}])
def test_bad_input_is_one_clear_error(args: dict) -> None:
    given = {"downtime_s": 0, "outages": 0, "longest_s": 0, "window_s": 100, "spacing_s": 0.5} | args
    with pytest.raises(LabConfigError, match="need window_s > 0"):
        judge(**given)


def probes(pattern: str, spacing_ms: int = 500, service: str = "pipeline", t0: int = 1_000_000) -> pd.DataFrame:
    """One probe per character: ``.`` up, ``x`` down."""
    return pd.DataFrame({"t_ms": [t0 + i * spacing_ms for i in range(len(pattern))], "service": service,
                         "ok": [c == "." for c in pattern]})


def test_twenty_failed_probes_in_a_row_are_one_event_not_twenty() -> None:
    table = probes("." * 200 + "x" * 20 + "." * 200)
    row = judge_probes(table)
    assert row["outages"] == 1 and row["downtime_s"] == pytest.approx(10.0) and row["window_s"] == pytest.approx(210)
    assert row["status"] == verdicts.FAIL
    # the same downtime in twenty separate blips is twenty events: the bound grows with them
    blips = judge_probes(probes(("." * 10 + "x") * 20 + "." * 200))
    assert blips["outages"] == 20 and blips["downtime_s"] == pytest.approx(row["downtime_s"])


def test_the_probe_count_bound_claims_more_than_the_time_bound_on_a_clean_run() -> None:
    from labkit.analysis import sla

    table = probes("." * 4000)  # 2000 s without an outage, 4000 probes
    by_count = sla.pipeline_availability(table.drop(columns="t_ms"))  # without times, only the count is left
    on_time = judge_probes(table)
    assert by_count["status"] == verdicts.PASS  # 4000 "independent" probes: lower bound 99.925%
    assert on_time["status"] == verdicts.PASS or on_time["share_bound"] > 1 - by_count["lower_bound"]
    twice_as_often = sla.pipeline_availability(probes("." * 8000, spacing_ms=250).drop(columns="t_ms"))
    assert twice_as_often["lower_bound"] > by_count["lower_bound"]  # more probes, same evidence, tighter bound
    # with times, the report's clause is this module's verdict, not the count's
    report = sla.pipeline_availability(table)
    assert (report["status"], report["share_bound"], report["verdict"]) == (
        on_time["status"], on_time["share_bound"], on_time["verdict"])
    assert judge_probes(probes("." * 8000, spacing_ms=250))["share_bound"] < on_time["share_bound"]


def test_judge_probes_wants_the_service() -> None:
    with pytest.raises(LabConfigError, match="no probes of 'pipeline'"):
        judge_probes(probes("...", service="kafka"))


# ---------------------------------------------------------------- the experiment's pieces


@pytest.mark.parametrize(("brokers", "answers", "up"), [
    ({"kafka": True}, True, True),
    ({"kafka": False}, True, False),
    ({"kafka": True, "kafka-2": False, "kafka-3": True}, True, True),  # 2 of 3: min.insync.replicas 2
    ({"kafka": False, "kafka-2": False, "kafka-3": True}, True, False),
    ({"kafka": True, "kafka-2": True, "kafka-3": True}, False, False),  # the upload endpoint does not answer
])
def test_the_quorum_probe_needs_a_majority_of_the_brokers(brokers: dict, answers: bool, up: bool) -> None:
    others = {s: True for s in av.PATH_SERVICES if not av.BROKER.match(s)}
    assert av.quorum_up(others | brokers, answers) is up
    if others:
        assert av.quorum_up(others | brokers | {next(iter(others)): False}, answers) is False


def test_the_kills_go_round_the_brokers() -> None:
    assert av.kill_order(["kafka"], 2, 0) == ["kafka", "kafka"]
    three = ["kafka", "kafka-2", "kafka-3"]
    assert av.kill_order(three, 2, 0) == ["kafka", "kafka-2"] and av.kill_order(three, 2, 1) == ["kafka-3", "kafka"]
    assert av.brokers_of(["mail", "kafka-3", "kafka", "kafka-2", "kafka-proxied"]) == three


def test_the_longest_gap_counts_a_gap_still_open_at_the_end() -> None:
    done = [0, 1000, 2000, 9000, 10000]
    assert av.longest_gap_s(done, 1500, 9500) == 7.0
    assert av.longest_gap_s([0, 1000], 1500, 6000) == 5.0  # nothing since: open until the span's end
    assert av.longest_gap_s([0, 500, 1000, np.nan], 0, 1000) == 0.5


def test_an_outage_seen_just_before_its_kill_is_the_kills() -> None:
    t0 = 1_000_000
    table = pd.concat([probes("." * 20 + "x" * 10 + "." * 20 + "x" * 4 + "." * 20, service=s, t0=t0)
                       for s in ("pipeline", av.QUORUM_PROBE)])
    faults = pd.DataFrame({"fault": [0, 1], "target": ["kafka", "kafka"],
                           "start_ms": [t0 + 20 * 500 + 300, t0 + 50 * 500 + 100],  # each kill a moment after its first failed probe
                           "end_ms": [t0 + 30 * 500, t0 + 54 * 500], "recovered_ms": [t0 + 31 * 500, np.nan],
                           "recovered": [True, False]})
    results = pd.DataFrame({"status": "resized", "t_done": [t0 + 9000.0, t0 + 16000, t0 + 30000]})
    run = av.TopologyRun("single", 0, results, table, faults, {}, (t0, t0 + 37000))
    rows = av.per_fault(run)
    assert rows["outages"].tolist() == [1, 1] and rows["downtime_s"].tolist() == pytest.approx([5.0, 2.0])
    # up to the recovery (here no completion marks it) and, never recovered, up to the probes' end
    assert rows["longest_gap_s"].tolist() == [6.5, 14.0]
    assert rows["budget_share"].tolist() == pytest.approx([5 / 2592, 2 / 2592])
    assert rows["faults_per_month"].tolist() == [518, 1296]


def test_a_fault_with_no_downtime_fits_the_budget_any_number_of_times() -> None:
    assert av.faults_per_budget(2.592) == 1000 and av.faults_per_budget(0) == math.inf
    assert av.faults_per_budget(60, slo=0.9995, days=28) == 20


def test_an_unknown_scale_or_topology_is_one_clear_error() -> None:
    with pytest.raises(LabConfigError, match="Valid: ci, full"):
        av.scale_of("huge")
    with pytest.raises(LabConfigError, match="use the fields"):
        av.scale_of({"rate": 3})
    assert av.scale_of({**av.SCALES["ci"].__dict__, "kills": 3}).kills == 3


# ---------------------------------------------------------------- notebook 10 on the real stack


@pytest.fixture(scope="module")
def out_dir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("notebook-10")


@pytest.mark.stack
def test_10_availability_kills_brokers_on_both_topologies_and_judges_uptime_on_time(lab, ports, out_dir):
    started = time.monotonic()
    results, notebook = run_notebook("10_availability", lab, out_dir, replicated_offset=ports.offset("bench"))
    text = claims.notebook_text(notebook)
    faults = pd.DataFrame(results["faults"])
    print(f"\nnotebook 10 under papermill: {time.monotonic() - started:.1f} s; load average {os.getloadavg()[0]:.1f}")
    print(faults[["topology", "target", "broker_back_s", "outages", "downtime_s", "longest_gap_s", "recovery_s"]].to_string())
    print("\n".join(f"{r['topology']}: {r['verdict']}" for r in results["verdicts"]))

    # the schedule ran on both topologies, each kill recovered, and every kill has its downtime
    assert results["topologies"] == ["single", "replicated"]
    kills = av.SCALES["ci"].kills
    assert faults.groupby("topology").size().to_dict() == {"single": kills, "replicated": kills}
    assert faults.loc[faults["topology"] == "single", "target"].tolist() == ["kafka"] * kills
    assert faults.loc[faults["topology"] == "replicated", "target"].tolist() == av.kill_order(
        ["kafka", "kafka-2", "kafka-3"], kills, 0)
    assert faults["recovered"].all() and faults["downtime_s"].notna().all()
    # one broker: every kill is downtime, as long as the broker was gone at least
    single = faults[faults["topology"] == "single"]
    assert (single["downtime_s"] > 0).all() and (single["longest_gap_s"] >= av.SCALES["ci"].down_s).all()

    # nothing lost, by the fates and by the audit
    assert results["lost"] == 0
    for row in results["accounting"]:
        assert row["uploaded"] > 0 and row["lost"] == row["audit lost"] == row["audit stale"] == 0
        assert row["resized"] + row["dead_lettered"] == row["uploaded"]

    # each verdict is the rule applied to its own numbers, with n, confidence and the window needed
    for row in results["verdicts"]:
        again = judge(row["downtime_s"], row["outages"], 0, row["window_s"], 0.5)
        if row["status"] == verdicts.FAIL:
            assert row["availability"] < 0.999 and again["status"] == verdicts.FAIL
        else:
            assert row["availability"] >= 0.999 and (row["status"] == verdicts.PASS) == (row["share_bound"] <= 0.001)
        assert row["verdict"].startswith(row["status"]) and row["verdict"] in text
        assert f"n={row['outages']} outage events" in row["verdict"] and f"n needed {row['needed_s']} s" in row["verdict"]
    single_verdict = next(r for r in results["verdicts"] if r["topology"] == "single")
    assert single_verdict["status"] == verdicts.FAIL  # a broker down for seconds in a window of minutes

    # the p99 effect is shown with bounds the sample supports (run_notebook checks every interval)
    assert {(r["topology"], r["phase"]) for r in results["latency"]} >= {("single", "during a fault")}
    assert results["budget_minutes"] == 43.2 and results["findings"] in text
    assert "Images lost: 0" in results["findings"]
    assert results["exercise_cases"] == 5 + len(faults)
    assert_no_secrets(lab, notebook)
    # the replicated lab is gone: none of its ports still answers
    from labkit.stack.config import DEFAULT_PORTS
    from labkit.stack.process import port_owner

    assert [p for p in DEFAULT_PORTS.values() if port_owner(p + ports.offset("bench"))] == []
