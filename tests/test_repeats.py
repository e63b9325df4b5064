"""Comparisons across repetitions, without services: spread per arm and the paired difference."""

from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import pytest
from scipy import stats

from labkit.analysis import repeats
from labkit.errors import LabConfigError


def test_spread_is_median_and_range_per_arm():
    table = pd.DataFrame({"max_inflight": [2, 8, 2, 8, 2, 8], "throughput_img_s": [10, 12, 11, 15, 13, 14]})
    summary = repeats.spread(table, ["max_inflight"], "throughput_img_s").set_index("max_inflight")
    assert summary.loc[2].tolist() == [3, 11, 10, 13] and summary.loc[8].tolist() == [3, 14, 12, 15]


def test_the_paired_interval_matches_scipys_t_interval():
    a, b = [10.0, 11.0, 13.0], [12.0, 13.5, 15.0]
    result = repeats.paired_difference(a, b, " img/s")
    low, high = stats.t.interval(0.95, 2, loc=np.mean([2, 2.5, 2]), scale=stats.sem([2, 2.5, 2]))
    assert (result["low"], result["high"]) == pytest.approx((low, high))
    assert result["detectable"] is True and "a detectable difference" in result["text"]


def test_a_difference_within_the_noise_is_not_detected():
    result = repeats.paired_difference([39.4, 43.1, 41.0], [36.0, 44.0, 40.5], " img/s")
    assert result["low"] < 0 < result["high"] and result["detectable"] is False
    assert result["text"].endswith("no detectable difference at this n.")


def test_one_repetition_supports_no_difference():
    result = repeats.paired_difference([39.4], [43.1])
    assert np.isinf(result["high"]) and result["detectable"] is False and "no interval" in result["text"]
    with pytest.raises(LabConfigError, match="as many repetitions"):
        repeats.paired_difference([1.0, 2.0], [1.0])


def test_errorbar_plot_draws_each_arms_range_and_every_repetition():
    table = pd.DataFrame({"p": [1, 2, 1, 2, 1, 2], "x": [1.0, 5.0, 2.0, 6.0, 4.0, 9.0]})
    _, ax = plt.subplots()
    repeats.errorbar_plot(repeats.spread(table, ["p"], "x"), ["p"], ax, "x", table, "x")
    bars = ax.containers[0]
    (line,) = bars.lines[2]  # the vertical error segments
    assert [tuple(seg[:, 1]) for seg in line.get_segments()] == [(1.0, 4.0), (5.0, 9.0)]
    dots = [line for line in ax.get_lines() if line.get_marker() == "."]
    assert sum(len(line.get_ydata()) for line in dots) == 6
    assert [t.get_text() for t in ax.get_xticklabels()] == ["p=1", "p=2"]
    plt.close(ax.figure)
