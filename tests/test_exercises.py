"""The graded exercise of notebook 09: the page rule, checked against the flow's rule with hints."""

from __future__ import annotations

import pandas as pd

from labkit.experiments.alerting import epoch_ms, policy_of
from labkit.teaching.exercises import check_page_rule, made_up_cases, measured_cases


def reference(long_bad, long_images, short_bad, short_images, slo=0.99, threshold=14.4, min_bad=3):
    def burn(bad, images):
        return (bad / images if images else 0.0) / (1 - slo)

    return burn(long_bad, long_images) > threshold and burn(short_bad, short_images) > threshold and long_bad >= min_bad


def test_the_reference_rule_scores_full_marks() -> None:
    grade = check_page_rule(reference)
    assert grade.passed and grade.score == grade.out_of == len(made_up_cases())
    assert "exactly when the flow's does" in grade.feedback


def test_each_usual_mistake_gets_its_own_hint() -> None:
    no_min_bad = check_page_rule(lambda lb, li, sb, si: reference(lb, li, sb, si, min_bad=0))
    assert not no_min_bad.passed and "BURN_MIN_BAD = 3" in no_min_bad.feedback
    long_only = check_page_rule(lambda lb, li, sb, si: reference(lb, li, lb, li))
    assert "short window is there" in long_only.feedback
    divides = check_page_rule(lambda lb, li, sb, si: (lb / li) / 0.01 > 14.4 and (sb / si) / 0.01 > 14.4 and lb >= 3)
    assert "ZeroDivisionError" in divides.feedback and "no division by zero" in divides.feedback
    at_least = check_page_rule(lambda lb, li, sb, si: reference(lb, li, sb, si, threshold=13.9))
    assert at_least.score == at_least.out_of - 1 and "just under 14.4" in at_least.feedback


def test_measured_windows_replay_the_flow_rule() -> None:
    t0 = 1_800_000_000_000
    rows = [{"key": f"k{i}", "outcome": "ok", "duration_ms": d, "t_done": t0 + i * 100}
            for i, d in enumerate([200, 200, 12_000, 12_100, 12_200])]
    cases = measured_cases([("burst", pd.DataFrame(rows))])
    assert [c.expected for c in cases] == [False, False, False, False, True]  # the third bad image pages
    assert (cases[-1].long_bad, cases[-1].long_images) == (3, 5)
    assert check_page_rule(reference, [("burst", pd.DataFrame(rows))]).passed


def test_mails_are_told_apart_by_subject() -> None:
    assert policy_of({"Subject": "SLA alert: a/b.jpg took 12.34 s"}) == "per-image"
    assert policy_of({"Subject": "[burn-rate] page: error budget burning 50.0x"}) == "burn-rate"
    assert policy_of({"Subject": "[burn-rate] resolved: page after 1 min"}) is None
    assert epoch_ms("2026-12-02T14:56:31.347Z") == pd.Timestamp("2026-12-02T14:56:31.347Z").timestamp() * 1000
