"""The statistics under the SLA verdicts: bootstrap percentiles, exact binomial intervals, sample sizes."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Final

import numpy as np
import pandas as pd

from labkit.errors import LabConfigError

# A non-interpolating quantile: it always returns a sample value, so +inf survives
# (linear interpolation between two infinities gives NaN), and "p99 <= threshold" means
# exactly "at least 99% of the images within the threshold".
QUANTILE_METHOD: Final = "inverted_cdf"


def order_stat_bounds(n: int, q: float, confidence: float = 0.95) -> tuple[int | None, int | None]:
    """1-based ranks of the sorted sample that bound its true ``q``-quantile, each at ``confidence``.

    The number of samples below the true quantile is Binomial(n, q), so the sample's u-th
    smallest value is an upper bound whenever P(Binomial(n, q) <= u - 1) >= confidence, and the
    l-th smallest a lower bound whenever P(Binomial(n, q) >= l) >= confidence. These hold for any
    continuous distribution (they are distribution-free) and for any n.

    Returns:
        ``(lower, upper)``: the largest valid lower rank and the smallest valid upper rank, or
        None where the sample is too small to bound that side at all (for p99 at 95%, the upper
        bound needs n >= 299: below that it is unbounded).
    """
    if n < 1 or not 0 < q < 1:
        raise LabConfigError(f"need n >= 1 and 0 < q < 1, got n={n}, q={q}")
    ranks = np.arange(1, n + 1)
    below = _binom_cdfs(n, q)[:-1]  # for rank u: P(Bin <= u - 1)
    upper = ranks[below >= confidence]
    lower = ranks[1 - below >= confidence]  # P(Bin >= l) = 1 - P(Bin <= l - 1)
    return (int(lower[-1]) if lower.size else None, int(upper[0]) if upper.size else None)


def percentiles(
    durations_s: Sequence[float] | np.ndarray,
    qs: Sequence[float] = (0.5, 0.95, 0.99),
    confidence: float = 0.95,
) -> pd.DataFrame:
    """Latency percentiles, each with distribution-free bounds from order statistics.

    NaN or +inf means the image never finished and counts as slower than any finished one,
    so p99 is inf when more than 1% of the images did not finish. The estimate is the
    non-interpolating ``inverted_cdf`` sample quantile (see ``QUANTILE_METHOD``); ``low`` and
    ``high`` each hold on their own at ``confidence`` (:func:`order_stat_bounds`). Where the
    sample cannot bound a side, that side is -inf or +inf: a p99 from 20 images has no upper
    bound, and the table says so instead of showing the sample maximum.

    Returns:
        One row per q: ``q``, ``n``, ``estimate``, ``low``, ``high`` (seconds; may be inf),
        ``bounded`` (False when ``high`` is unbounded for want of samples), and
        ``n_needed``: the fewest images whose maximum bounds this percentile from above.

    Raises:
        LabConfigError: no durations were given.
    """
    x = np.asarray(durations_s, dtype=float)
    if x.size == 0:
        raise LabConfigError("No durations to take percentiles of. Fix: pass at least one image.")
    x = np.sort(np.where(np.isnan(x), np.inf, x))
    rows = []
    for q in qs:
        lower, upper = order_stat_bounds(x.size, q, confidence)
        rows.append({"q": q, "n": x.size, "estimate": float(np.quantile(x, q, method=QUANTILE_METHOD)),
                     "low": x[lower - 1] if lower else -np.inf, "high": x[upper - 1] if upper else np.inf,
                     "bounded": upper is not None, "n_needed": min_samples_zero_violations(q, confidence)})
    return pd.DataFrame(rows)


def bootstrap_median(durations_s: Sequence[float] | np.ndarray, n_boot: int = 2000, confidence: float = 0.95,
                     seed: int = 0) -> tuple[float, float]:
    """A percentile-bootstrap interval for the median: valid for a median of a large sample.

    Not for tail percentiles: a resample can never go beyond the sample's maximum, so a
    bootstrap p99 interval from a small sample claims far more than the sample supports.
    Use :func:`percentiles` for those.
    """
    x = np.asarray(durations_s, dtype=float)
    rng = np.random.default_rng(seed)
    medians = np.median(x[rng.integers(0, x.size, size=(n_boot, x.size))], axis=1)
    alpha = (1 - confidence) / 2
    low, high = np.quantile(medians, [alpha, 1 - alpha])
    return float(low), float(high)


def min_samples_zero_violations(target: float = 0.99, confidence: float = 0.95) -> int:
    """The fewest images that can support "share >= target" at this confidence, and only when
    none of them is late: the smallest n with target**n <= 1 - confidence (299 for 99%/95%)."""
    return math.ceil(math.log(1 - confidence) / math.log(target))


def _binom_cdf(k: int, n: int, p: float) -> float:
    """P(X <= k) for X ~ Binomial(n, p), 0 < p < 1, summed in log space."""
    if k < 0:
        return 0.0
    log_fact = np.concatenate([[0.0], np.cumsum(np.log(np.arange(1, n + 1)))])
    ks = np.arange(k + 1)
    log_pmf = log_fact[n] - log_fact[ks] - log_fact[n - ks] + ks * math.log(p) + (n - ks) * math.log1p(-p)
    return float(np.exp(log_pmf).sum())


def _binom_cdfs(n: int, p: float) -> np.ndarray:
    """P(X <= k) for k = 0..n, X ~ Binomial(n, p), 0 < p < 1, from the pmf in log space."""
    ks = np.arange(n + 1)
    log_fact = np.concatenate([[0.0], np.cumsum(np.log(np.arange(1, n + 1)))])
    log_pmf = log_fact[n] - log_fact - log_fact[::-1] + ks * math.log(p) + (n - ks) * math.log1p(-p)
    return np.minimum(np.cumsum(np.exp(log_pmf)), 1.0)


def _bisect_increasing(f, iterations: int = 60) -> float:
    """The root in (0, 1) of an increasing function, to ~1e-18."""
    lo, hi = 0.0, 1.0
    for _ in range(iterations):
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if f(mid) < 0 else (lo, mid)
    return (lo + hi) / 2


def clopper_pearson(successes: int, n: int, confidence: float = 0.95) -> tuple[float, float]:
    """One-sided Clopper–Pearson bounds (lower, upper) on a binomial proportion.

    Each bound holds on its own at ``confidence``. Uses scipy's beta quantiles when scipy is
    installed, else inverts the binomial CDF by bisection (numpy only), which agrees to ~1e-12.
    """
    alpha = 1 - confidence
    try:
        from scipy.stats import beta
    except ImportError:
        lower = 0.0 if successes == 0 else _bisect_increasing(lambda p: 1 - _binom_cdf(successes - 1, n, p) - alpha)
        upper = 1.0 if successes == n else _bisect_increasing(lambda p: alpha - _binom_cdf(successes, n, p))
        return lower, upper
    lower = 0.0 if successes == 0 else float(beta.ppf(alpha, successes, n - successes + 1))
    upper = 1.0 if successes == n else float(beta.ppf(confidence, successes + 1, n - successes))
    return lower, upper
