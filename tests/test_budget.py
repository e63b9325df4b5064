"""Error budgets and burn rates from a metrics table (labkit.analysis.budget), against values
computed by hand, and the same rules as the flow's burn-rate alert."""

from __future__ import annotations

import pandas as pd
import pytest

from labkit.analysis import budget
from labkit.analysis.budget import BURN_RULES, burn_rate, burn_rates, error_budget, sli

T0 = 1_760_000_000_000


def lines(*groups: tuple[int, str, float, float]) -> pd.DataFrame:
    """Metrics lines: for each (n, outcome, duration_ms, t_first), n lines one second apart."""
    rows = []
    for n, outcome, duration, t_first in groups:
        for i in range(n):
            t = t_first + i * 1000
            ok = outcome == "ok"
            rows.append({"key": f"k{len(rows)}", "outcome": outcome, "duration_ms": duration if ok else None,
                         "t_done": t if ok else None, "t_failed": None if ok else t})
    return pd.DataFrame(rows)


def test_the_budget_of_99_9_percent_over_30_days_is_43_2_minutes() -> None:
    assert error_budget(0.999).minutes == pytest.approx(43.2)
    assert error_budget(0.99, days=30, images=10_000).images == pytest.approx(100)
    assert error_budget(0.99).minutes == pytest.approx(432)
    assert error_budget(0.999, days=1).minutes == pytest.approx(1.44)
    with pytest.raises(ValueError, match="SLO"):
        error_budget(1.0)


def test_burn_rate_is_the_error_rate_over_the_budget_share() -> None:
    assert burn_rate(1, 100, 0.99) == pytest.approx(1)  # spends the budget in exactly the SLO window
    assert burn_rate(144, 1000, 0.99) == pytest.approx(14.4)
    assert burn_rate(3, 1000, 0.999) == pytest.approx(3)
    assert burn_rate(0, 0, 0.99) == 0


def test_the_rules_are_the_workbooks_and_the_flows() -> None:
    assert [(r.severity, r.long_s, r.short_s, r.burn_rate) for r in BURN_RULES] == [
        ("page", 3600, 300, 14.4), ("page", 6 * 3600, 1800, 6), ("ticket", 3 * 86400, 6 * 3600, 1)]
    for rule in BURN_RULES:  # the budget a firing long window spent: 2%, 5%, 10%
        assert rule.burn_rate * rule.long_s / budget.SLO_WINDOW_S == pytest.approx(rule.budget)
    assert budget.DEFAULTS == {"slo": 0.99, "sla_ms": 10000, "scale": 60, "min_bad": 3}
    assert BURN_RULES[0].scaled(60) == budget.BurnRule("page", 60, 5, 14.4, 0.02)


def test_the_sli_counts_slow_failed_and_unfinished_images_as_bad() -> None:
    frame = pd.DataFrame({"outcome": ["ok", "ok", "ok", "error", "no_webhook", "superseded", "malformed"],
                          "duration_ms": [9999, 10000, None, None, None, None, None]})
    assert sli(frame).tolist() == ["good", "bad", "bad", "bad", "bad", None, None]


def test_burn_rates_of_a_fast_burn_fire_the_first_page_rule() -> None:
    # 50 good images, then 10 failed: in the last minute 10 of 60 are bad (burn 16.7 > 14.4),
    # in the last 5 s 5 of 5 (burn 100)
    frame = lines((50, "ok", 800, T0), (10, "error", 0, T0 + 50_000))
    rates = burn_rates(frame).set_index(["severity", "long_s"])
    first = rates.loc[("page", 60)]
    assert (first["long_images"], first["long_bad"], first["short_images"], first["short_bad"]) == (60, 10, 5, 5)
    assert first["long_burn"] == pytest.approx(1000 / 60)
    assert first["short_burn"] == pytest.approx(100)
    assert first["firing"]
    assert rates["firing"].tolist() == [True, True, True]


def test_one_slow_image_fires_no_rule() -> None:
    frame = lines((1, "ok", 12_000, T0))
    rates = burn_rates(frame)
    assert rates.loc[0, "long_burn"] == pytest.approx(100)  # one image, all bad: burn 100 ...
    assert not rates["firing"].any()  # ... but a rule needs BURN_MIN_BAD (3) bad images


def test_windows_end_where_asked_and_scale_with_the_setting() -> None:
    frame = lines((10, "ok", 12_000, T0), (50, "ok", 800, T0 + 10_000))
    now = burn_rates(frame, at_ms=T0 + 59_000)
    assert now.loc[0, "short_bad"] == 0 and not now.loc[0, "firing"]  # the burn stopped 50 s ago
    earlier = burn_rates(frame, at_ms=T0 + 9_000)
    assert earlier.loc[0, "firing"]
    slower = burn_rates(frame, at_ms=T0 + 59_000, scale=1440)  # 1 h -> 2.5 s
    assert slower.loc[0, "long_s"] == 2.5 and slower.loc[0, "long_images"] == 3


def mail(subject: str, t_ms: float) -> dict:
    return {"Subject": subject, "Created": pd.Timestamp(t_ms, unit="ms", tz="UTC").isoformat().replace("+00:00", "Z")}


def test_the_two_policies_side_by_side_on_one_fault() -> None:
    faults = pd.DataFrame([{"start_ms": T0, "end_ms": T0 + 20_000}])
    mails = [
        mail("SLA alert: early.jpg took 10.50 s", T0 - 5_000),  # before the fault: false
        *(mail(f"SLA alert: k{i}.jpg took 21.00 s", T0 + 21_000 + i * 100) for i in range(10)),
        mail("[burn-rate] page: error budget burning 40.0x (over 14.4x in 1 min and 5 s)", T0 + 20_500),
        mail("[burn-rate] resolved: page after 6.5 min", T0 + 410_000),  # a notice, not an alert
        mail("SLA alert: late.jpg took 11.00 s", T0 + 200_000),  # long after the fault and its grace: false
    ]
    table = budget.alert_comparison(mails, faults).set_index("policy")
    assert table.loc["per-image"].to_dict() == {"alerts": 12, "detected": 1, "faults": 1, "detect_s": 21.0,
                                                "redundant": 9, "false": 2}
    assert table.loc["burn-rate"].to_dict() == {"alerts": 1, "detected": 1, "faults": 1, "detect_s": 20.5,
                                                "redundant": 0, "false": 0}


def test_a_fault_nobody_alerted_on_is_undetected() -> None:
    faults = pd.DataFrame([{"start_ms": T0, "end_ms": None}])
    table = budget.alert_comparison([], faults).set_index("policy")
    assert table["alerts"].tolist() == [0, 0] and table["detected"].tolist() == [0, 0]
    assert table["detect_s"].isna().all()
