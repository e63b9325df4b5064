"""SLA verdicts on synthetic results: no services needed."""

from __future__ import annotations

import math

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import pytest
from scipy.stats import chi2

from labkit.analysis import sla, verdicts
from labkit.errors import LabConfigError, SLAViolation
from labkit.pipeline.metrics import STAGES

# Share of the end-to-end time each stage takes, on average (upload … webhook).
STAGE_SHARES = np.array([0.10, 0.05, 0.05, 0.15, 0.55, 0.10])


def synth_results(
    n: int = 300, policy: str = "fixed", fault: str = "none", *, lost: int = 0, error: int = 0,
    pending: int = 0, slow: int = 0, duplicates: int = 0, median_s: float = 2.0, seed: int = 0,
    experiment: str = "retry-policies",
) -> pd.DataFrame:
    """One group of the runner's results table: ``slow`` images take 12-40 s, the rest are
    lognormal around ``median_s``; the last ``lost + error + pending`` images never finish."""
    rng = np.random.default_rng(seed)
    duration_ms = rng.lognormal(math.log(median_s * 1000), 0.35, n)
    duration_ms[:slow] = rng.uniform(12_000, 40_000, slow)
    status = np.array(["resized"] * (n - lost - error - pending) + ["lost"] * lost + ["dead_lettered"] * error
                      + ["pending"] * pending)
    stages = duration_ms[:, None] * rng.dirichlet(STAGE_SHARES * 50, n)
    stages[status != "resized", 1:] = np.nan  # unfinished images: only the upload is known
    frame = pd.DataFrame(stages, columns=list(STAGES))
    dup = np.zeros(n, dtype=int)
    dup[rng.choice(n, duplicates, replace=False)] = 1
    return frame.assign(
        experiment=experiment, policy=policy, fault=fault, repetition=0, seed=seed,
        key=[f"{policy}-{fault}-{i:05d}.jpg" for i in range(n)], status=status, duplicates=dup,
        duration_ms=np.where(status == "resized", duration_ms, np.nan),
        t_upload_start=1_700_000_000_000 + np.arange(n) * 200,
    )


def synth_probes(failures: dict[str, int], n: int = 2000, services=("storage", "kafka", "nodered", "faas", "pipeline")):
    """``n`` probes per service, 2 s apart; ``failures[service]`` of them fail."""
    rows = []
    for service in services:
        ok = np.ones(n, dtype=bool)
        ok[: failures.get(service, 0)] = False
        rows.append(pd.DataFrame({"t_ms": 1_700_000_000_000 + np.arange(n) * 2000, "service": service, "ok": ok}))
    return pd.concat(rows, ignore_index=True)


# --- compliance ------------------------------------------------------------------------------


def test_299_images_without_violation_are_the_fewest_that_support_99_percent():
    assert sla.min_samples_zero_violations(0.99, 0.95) == 299
    assert sla.compliance(synth_results(299))["supports_claim"]
    assert not sla.compliance(synth_results(298))["supports_claim"]


def test_compliance_passes_with_400_fast_images():
    c = sla.compliance(synth_results(400), threshold_s=10)
    assert (c["n"], c["violations"], c["share"]) == (400, 0, 1.0)
    assert c["lower_bound"] == pytest.approx(0.05 ** (1 / 400))  # Clopper–Pearson with zero failures
    assert c["status"] == "PASS" and c["verdict"].startswith("PASS: ")


def test_compliance_fails_with_5_percent_slow():
    c = sla.compliance(synth_results(400, slow=20), threshold_s=10)
    assert c["violations"] == 20 and c["share"] == pytest.approx(0.95)
    assert c["status"] == "FAIL" and c["verdict"].startswith("FAIL: ")
    assert c["upper_bound"] < 0.99 and not c["supports_claim"]


def test_compliance_is_inconclusive_with_50_images():
    c = sla.compliance(synth_results(50))
    assert c["status"] == "INCONCLUSIVE"
    assert c["verdict"].startswith("INCONCLUSIVE: n=50 < 299")


def test_compliance_is_inconclusive_with_enough_images_but_a_near_miss():
    c = sla.compliance(synth_results(400, slow=1))
    assert c["share"] >= 0.99 and c["lower_bound"] < 0.99
    assert c["status"] == "INCONCLUSIVE" and "with 1 violation(s), at least 473 images are needed" in c["verdict"]


@pytest.mark.parametrize("violations", [0, 1, 2, 5, 20])
def test_n_needed_matches_the_clopper_pearson_bound_from_scipy(violations):
    from scipy.stats import beta

    def supports(n):  # the one-sided 95% lower bound of (n - v) / n, straight from the beta quantile
        return beta.ppf(0.05, n - violations, violations + 1) >= 0.99

    needed = next(n for n in range(violations + 1, 20_000) if supports(n))
    assert verdicts.n_needed(violations, 0.99, 0.95) == needed
    assert needed == 299 if violations == 0 else needed > verdicts.n_needed(violations - 1, 0.99, 0.95)


def test_lost_and_dead_lettered_images_count_as_violations():
    c = sla.compliance(synth_results(400, lost=6, error=2, pending=1))
    assert c["violations"] == 9 and c["within"] == 391


def test_numpy_bounds_agree_with_scipy_and_closed_form(monkeypatch):
    expected = {(400, 400): (0.05 ** (1 / 400), 1.0), (0, 10): (0.0, 1 - 0.05 ** (1 / 10))}
    scipy_bounds = {}
    try:
        import scipy  # noqa: F401

        scipy_bounds = {(k, n): sla.clopper_pearson(k, n) for k, n in [(380, 400), (49, 50), (1, 7)]}
    except ImportError:
        pass
    monkeypatch.setitem(__import__("sys").modules, "scipy.stats", None)  # force the numpy path
    for (k, n), bounds in {**expected, **scipy_bounds}.items():
        assert sla.clopper_pearson(k, n) == pytest.approx(bounds, abs=1e-9)


# --- percentiles -------------------------------------------------------------------------------


def test_p99_is_inf_when_more_than_1_percent_are_lost():
    results = synth_results(300, lost=6)
    table = sla.percentiles(sla.latencies_s(results)).set_index("q")
    assert np.isinf(table.loc[0.99, "estimate"])
    assert np.isfinite(table.loc[0.5, "estimate"])


def test_p99_stays_finite_when_under_1_percent_are_lost():
    table = sla.percentiles(sla.latencies_s(synth_results(300, lost=2))).set_index("q")
    assert np.isfinite(table.loc[0.99, "estimate"])


def test_percentile_bounds_come_from_the_sample_and_narrow_with_n():
    widths = []
    for n in (400, 4000):
        durations = np.random.default_rng(1).lognormal(0.7, 0.4, n)
        table = sla.percentiles(durations)
        assert list(table.columns) == ["q", "n", "estimate", "low", "high", "bounded", "n_needed"]
        assert table["bounded"].all()
        assert (table["low"] <= table["estimate"]).all() and (table["estimate"] <= table["high"]).all()
        assert set(table["low"]) | set(table["high"]) <= set(durations)  # order statistics, not resamples
        widths.append((table["high"] - table["low"]).to_numpy())
    assert (widths[1] < widths[0]).all()


def test_a_p99_from_20_images_has_no_upper_bound():
    table = sla.percentiles(np.random.default_rng(2).lognormal(0.7, 0.4, 20)).set_index("q")
    assert np.isinf(table.loc[0.99, "high"]) and not table.loc[0.99, "bounded"]
    assert table.loc[0.99, "n_needed"] == 299
    assert table.loc[0.5, "bounded"]  # the median of 20 is bounded on both sides


# --- availability ------------------------------------------------------------------------------


def test_availability_and_error_budget_burn():
    table = sla.availability(synth_probes({"kafka": 10, "pipeline": 4}), target=0.999).set_index("service")
    assert table.index[0] == "pipeline"
    kafka, pipeline, storage = table.loc["kafka"], table.loc["pipeline"], table.loc["storage"]
    assert (kafka["probes"], kafka["ok"]) == (2000, 1990)
    assert kafka["availability"] == pytest.approx(0.995)
    assert kafka["error_budget_burn"] == pytest.approx(5.0)  # 0.5 % down against 0.1 % allowed
    assert pipeline["error_budget_burn"] == pytest.approx(2.0) and not pipeline["met"]
    assert storage["met"] and storage["error_budget_burn"] == 0


def test_pipeline_availability_verdicts_are_judged_on_time_with_outages_as_the_events():
    clean = sla.pipeline_availability(synth_probes({}, n=3000))  # 6000 s without an outage, probes 2 s apart
    assert (clean["status"], clean["judged_on"]) == ("PASS", "time")
    assert clean["share_bound"] == pytest.approx(chi2.ppf(0.95, 2) / 2 * 2 / 6000)  # 3.0 outages of 2 s at most
    few = sla.pipeline_availability(synth_probes({}, n=2000))  # 4000 s: too short to bound 0.1 %
    assert few["status"] == "INCONCLUSIVE" and few["needed_s"] == 5992
    assert "n=0 outage events over 4000 s, 95% confidence, n needed 5992 s of observation" in few["verdict"]
    failed = sla.pipeline_availability(synth_probes({"pipeline": 3, "kafka": 50}, n=2000))
    assert failed["status"] == "FAIL" and failed["verdict"].startswith("FAIL: up 99.850% of the time (6.0 s down")
    # three failed probes in a row are one outage, not three independent failures
    assert failed["outages"] == 1 and "1 outage(s)" in failed["verdict"]


def test_pipeline_availability_without_probe_times_counts_probes_and_says_so():
    untimed = synth_probes({}, n=3000).drop(columns="t_ms")
    judged = sla.pipeline_availability(untimed)
    assert (judged["status"], judged["judged_on"]) == ("PASS", "probe count") and "optimistic" in judged["method"]
    few = sla.pipeline_availability(synth_probes({}, n=2000).drop(columns="t_ms"))
    assert few["status"] == "INCONCLUSIVE" and "at least 2995 probes with 0 failed" in few["verdict"]
    assert "n=2000 probes, 95% confidence, n needed 2995" in few["verdict"]


def test_pipeline_availability_needs_pipeline_probes():
    with pytest.raises(LabConfigError, match="pipeline"):
        sla.pipeline_availability(synth_probes({}, services=("kafka",)))


# --- breakdown and accounting --------------------------------------------------------------------


def test_accounting_counts_every_image_once():
    results = pd.concat([
        synth_results(300, "none", lost=12, error=3, duplicates=0),
        synth_results(300, "exponential", pending=2, duplicates=7),
    ])
    table = sla.accounting(results).set_index("policy")
    columns = ["uploaded", "resized", "dead_lettered", "refused", "lost", "pending", "duplicates"]
    assert table.loc["none", columns].tolist() == [300, 285, 3, 0, 12, 0, 0]
    assert table.loc["exponential", ["uploaded", "resized", "pending", "duplicates"]].tolist() == [300, 298, 2, 7]


def test_unknown_status_is_refused():
    results = synth_results(10).assign(status="done")
    with pytest.raises(LabConfigError, match="Unknown status"):
        sla.accounting(results)


def test_breakdown_has_every_stage_in_pipeline_order():
    table = sla.breakdown(synth_results(300, lost=10), by="policy")
    assert table["stage"].astype(str).tolist() == list(STAGES)
    upload = table.set_index("stage").loc["upload_ms"]
    assert upload["n"] == 300 and upload["median_ms"] <= upload["p95_ms"] <= upload["p99_ms"]
    assert table.set_index("stage").loc["action_ms", "n"] == 290


# --- plots -------------------------------------------------------------------------------------


def _ecdf_lines(ax):
    return [line for line in ax.get_lines() if "(n=" in line.get_label()]


def test_ecdf_plot_draws_one_line_per_group_and_the_sla_lines():
    results = pd.concat([synth_results(300, p, lost=6 * i, seed=i) for i, p in enumerate(["none", "fixed", "exponential"])])
    ax = sla.ecdf_plot(results, threshold_s=10, by="policy")
    lines = _ecdf_lines(ax)
    assert len(lines) == 3
    assert any(line.get_label() == "retry: fixed delay (n=300, lost 6, dead-lettered 0)" for line in lines)
    assert any(line.get_label().startswith("retry: exponential backoff (n=300") for line in lines)
    vertical = [line for line in ax.get_lines() if np.allclose(line.get_xdata(), 10)]
    horizontal = [line for line in ax.get_lines() if np.allclose(line.get_ydata(), 0.99)]
    assert vertical and horizontal
    plt.close(ax.figure)


def test_ecdf_of_a_lossy_group_tops_out_at_the_finished_share():
    ax = sla.ecdf_plot(synth_results(300, lost=30), by=None, log=False)
    (line,) = _ecdf_lines(ax)
    assert line.get_ydata().max() == pytest.approx(0.9)
    assert ax.get_xscale() == "linear"
    plt.close(ax.figure)


@pytest.mark.parametrize(("fastest_s", "slowest_s", "scale"), [
    (0.5, 4.9, "linear"), (0.5, 5.1, "log"), (0.2, 11.5, "log"), (2.0, 3.0, "linear")])
def test_ecdf_uses_a_log_time_axis_when_the_data_span_more_than_a_decade(fastest_s, slowest_s, scale):
    results = pd_results_between(fastest_s, slowest_s)
    ax = sla.ecdf_plot(results, threshold_s=10, log="auto")
    assert ax.get_xscale() == scale
    assert ax.get_xlim()[0] < 10 < ax.get_xlim()[1]  # the SLA bound is on the axis ...
    assert any(line.get_label() == "SLA bound 10 s" and np.allclose(line.get_xdata(), 10) for line in ax.get_lines())
    assert ("log scale" in ax.get_xlabel()) is (scale == "log")
    plt.close(ax.figure)


def test_ecdf_log_axis_can_be_forced_either_way():
    spread = pd_results_between(0.1, 30.0)
    assert sla.ecdf_plot(spread, log=False).get_xscale() == "linear"
    assert sla.ecdf_plot(pd_results_between(1.0, 2.0), log=True).get_xscale() == "log"
    plt.close("all")


@pytest.mark.parametrize(("column", "value", "name"), [
    ("policy", "exponential", "retry: exponential backoff"), ("policy", "none", "retry: no retry"),
    ("policy", "exponential + reconcile", "retry: exponential backoff + reconcile"),
    ("fault", "kafka-stop", "fault: kafka-stop"), ("experiment", "smoke", "smoke")])
def test_legend_names_cannot_be_read_as_a_distribution(column, value, name):
    from labkit.analysis.plots import group_name
    assert group_name(column, value) == name


def pd_results_between(fastest_s: float, slowest_s: float) -> pd.DataFrame:
    results = synth_results(50)
    return results.assign(duration_ms=np.linspace(fastest_s, slowest_s, 50) * 1000)


def test_stage_plot_has_one_bar_per_group_and_stage():
    results = pd.concat([synth_results(100, p) for p in ["none", "fixed"]])
    ax = sla.stage_plot(results, by="policy")
    assert len(ax.patches) == 2 * len(STAGES)
    plt.close(ax.figure)


# --- check ---------------------------------------------------------------------------------------


def test_check_raises_on_a_failed_clause():
    good_probes = synth_probes({})
    sla.check(synth_results(400), good_probes)  # both clauses hold
    with pytest.raises(SLAViolation, match="latency: FAIL"):
        sla.check(synth_results(400, lost=20), good_probes)
    with pytest.raises(SLAViolation, match=r"availability: FAIL: up 99\.000% of the time \(40\.0 s down"):
        sla.check(synth_results(400), synth_probes({"pipeline": 20}))


def test_check_raises_on_inconclusive_only_when_asked():
    sla.check(synth_results(50), synth_probes({}))
    with pytest.raises(SLAViolation, match="INCONCLUSIVE: n=50 < 299"):
        sla.check(synth_results(50), synth_probes({}), require_conclusive=True)


def test_stage_plot_of_a_run_where_no_image_finished_says_so():
    results = synth_results(8, lost=8)
    results[list(STAGES)] = np.nan  # not even the upload's time is known
    ax = sla.stage_plot(results, by="policy")
    assert not ax.patches and "no image finished" in ax.texts[0].get_text()
    plt.close(ax.figure)
