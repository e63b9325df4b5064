"""The SLA statistics against values computed independently, with scipy's binomial and beta."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy.stats import binom

from labkit.analysis import sla
from labkit.analysis.stats import min_samples_zero_violations, order_stat_bounds


def reference_bounds(n: int, q: float, confidence: float) -> tuple[int | None, int | None]:
    """The same ranks, straight from the definition with scipy's binomial CDF."""
    upper = next((u for u in range(1, n + 1) if binom.cdf(u - 1, n, q) >= confidence), None)
    lower = next((lo for lo in range(n, 0, -1) if binom.sf(lo - 1, n, q) >= confidence), None)
    return lower, upper


@settings(max_examples=120, deadline=None)
@given(n=st.integers(1, 700), q=st.sampled_from([0.5, 0.9, 0.95, 0.99, 0.999]),
       confidence=st.sampled_from([0.9, 0.95, 0.99]))
def test_order_statistic_ranks_match_scipy(n: int, q: float, confidence: float) -> None:
    assert order_stat_bounds(n, q, confidence) == reference_bounds(n, q, confidence)


@pytest.mark.parametrize(("n", "upper"), [(20, None), (298, None), (299, 299), (300, 300), (400, 400)])
def test_the_p99_upper_bound_starts_at_299_images(n: int, upper: int | None) -> None:
    assert order_stat_bounds(n, 0.99, 0.95)[1] == upper


def test_the_299_rule_is_the_same_number_both_ways() -> None:
    assert min_samples_zero_violations(0.99, 0.95) == 299
    assert 0.05 ** (1 / 298) < 0.99 <= 0.05 ** (1 / 299)


@pytest.mark.parametrize(("n", "status"), [(299, "PASS"), (298, "INCONCLUSIVE"), (20, "INCONCLUSIVE")])
def test_zero_violations_pass_from_299_images(n: int, status: str) -> None:
    results = pd_results(np.full(n, 0.5))
    verdict = sla.compliance(results, threshold_s=10, target=0.99, confidence=0.95)
    assert verdict["status"] == status and verdict["n"] == n


def test_percentile_bounds_cover_the_true_quantile_as_often_as_they_claim() -> None:
    """Coverage by simulation: the one-sided 95% upper bound of p90 lies above the true p90
    in at least 95% of 2000 samples of 60 (exponential, true p90 = ln 10)."""
    rng = np.random.default_rng(7)
    truth = np.log(10)
    covered = [sla.percentiles(rng.exponential(1.0, 60), qs=(0.9,)).loc[0, "high"] >= truth for _ in range(2000)]
    assert np.mean(covered) >= 0.94  # 0.95 nominal, minus simulation noise


def pd_results(durations_s: np.ndarray):
    import pandas as pd

    from labkit.analysis.results import STAGE_COLUMNS
    n = durations_s.size
    return pd.DataFrame({"status": ["resized"] * n, "duration_ms": durations_s * 1000, "t_upload_start": np.arange(n),
                         **{c: np.full(n, 1.0) for c in STAGE_COLUMNS}})
