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


def _boot_quantiles(x: np.ndarray, qs: np.ndarray, n_boot: int, rng: np.random.Generator) -> np.ndarray:
    """Quantiles of ``n_boot`` resamples, shape (n_boot, len(qs)), in chunks of ~4M values."""
    chunk = max(1, 4_000_000 // x.size)
    parts = []
    for start in range(0, n_boot, chunk):
        idx = rng.integers(0, x.size, size=(min(chunk, n_boot - start), x.size))
        parts.append(np.quantile(x[idx], qs, axis=1, method=QUANTILE_METHOD).T)
    return np.vstack(parts)


def percentiles(
    durations_s: Sequence[float] | np.ndarray,
    qs: Sequence[float] = (0.5, 0.95, 0.99),
    n_boot: int = 2000,
    ci: float = 0.95,
    seed: int = 0,
) -> pd.DataFrame:
    """Latency percentiles with percentile-bootstrap confidence intervals.

    NaN or +inf means the image never finished and counts as slower than any finished one,
    so p99 is inf when more than 1% of the images did not finish. Quantiles use numpy's
    non-interpolating ``inverted_cdf`` method (see ``QUANTILE_METHOD``).

    Returns:
        One row per q: ``q``, ``estimate``, ``low``, ``high`` (seconds; may be inf).

    Raises:
        LabConfigError: no durations were given.
    """
    x = np.asarray(durations_s, dtype=float)
    if x.size == 0:
        raise LabConfigError("No durations to take percentiles of. Fix: pass at least one image.")
    x = np.where(np.isnan(x), np.inf, x)
    q = np.asarray(qs, dtype=float)
    boots = _boot_quantiles(x, q, n_boot, np.random.default_rng(seed))
    alpha = (1 - ci) / 2
    low, high = np.quantile(boots, [alpha, 1 - alpha], axis=0, method=QUANTILE_METHOD)
    estimate = np.quantile(x, q, method=QUANTILE_METHOD)
    return pd.DataFrame({"q": q, "estimate": estimate, "low": low, "high": high})


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
