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


# ---- the exercises whose code runs in the pipeline (labkit.teaching.hooks): their graders and hooks, fast


def backoff_ref(k):
    import random

    return None if k >= 10 else random.uniform(0, min(2.0, 0.1 * 2**k))


def test_the_backoff_grader_passes_the_reference_and_names_each_mistake() -> None:
    import random

    from labkit.teaching.pipeline_graders import check_backoff_policy, reference_backoff

    assert check_backoff_policy(backoff_ref, 10, 0.1, 2.0).passed
    assert check_backoff_policy(reference_backoff, 10, 0.1, 2.0).passed
    fixed = check_backoff_policy(lambda k: None if k >= 10 else min(2.0, 0.1 * 2**k), 10, 0.1, 2.0)
    assert not fixed.passed and "Draw the sleep at random" in fixed.feedback
    uncapped = check_backoff_policy(lambda k: None if k >= 10 else random.uniform(0, 0.1 * 2**k), 10, 0.1, 2.0)
    assert "(the cap: no sleep beyond CAP_S)" in uncapped.feedback
    early = check_backoff_policy(lambda k: None if k >= 9 else backoff_ref(k), 10, 0.1, 2.0)
    assert "give up only once k reaches MAX_ATTEMPTS (10)" in early.feedback
    forever = check_backoff_policy(lambda k: backoff_ref(min(k, 9)), 10, 0.1, 2.0)
    assert "return None: no attempt beyond the cap" in forever.feedback
    equal = check_backoff_policy(lambda k: None if k >= 10 else (b := min(2.0, 0.1 * 2**k)) / 2
                                 + random.uniform(0, b / 2), 10, 0.1, 2.0)
    assert not equal.passed and "full jitter draws uniformly over all of" in equal.feedback
    crash = check_backoff_policy(lambda k: 1 / 0, 10, 0.1, 2.0)
    assert crash.score == 0 and "ZeroDivisionError" in crash.feedback


def test_the_backoff_run_grader_judges_what_the_pipeline_did() -> None:
    from labkit.teaching.hooks import BackoffRun
    from labkit.teaching.pipeline_graders import check_backoff_run

    def run(sleeps: list[float], last: str = "HTTP 200", status: int | None = 200) -> BackoffRun:
        rows, t = [], 0.0
        for k, s in enumerate([*sleeps, None], start=1):
            rows.append({"key": "a", "attempt": k, "start_s": t, "end_s": t + 0.01,
                         "outcome": last if s is None else "ReadError", "sleep_s": s})
            t += 0.01 + (s or 0)
        attempts = pd.DataFrame(rows)
        uploads = pd.DataFrame([{"key": "a", "status": status, "attempts": len(rows), "gave_up": status is None}])
        metrics = pd.DataFrame([{"key": "a", "outcome": "ok"}]) if status == 200 else pd.DataFrame()
        return BackoffRun(attempts, uploads, metrics, fault_s=1.5)

    assert check_backoff_run(run([0.05, 0.3, 0.1, 1.2, 0.02]), 10, 0.1, 2.0).passed
    lockstep = check_backoff_run(run([0.2, 0.4, 0.8, 1.6]), 10, 0.1, 2.0)
    assert [c.name for c in lockstep.checks if not c.ok] == ["the sleeps show the jitter"]
    lost = check_backoff_run(run([0.01, 0.02], last="ReadError", status=None), 3, 0.1, 2.0)
    assert "nothing lost" in [c.name for c in lost.checks if not c.ok] and "1 of 1 images gave up" in lost.feedback
    untouched = check_backoff_run(run([]), 10, 0.1, 2.0)
    assert "run the cell again" in untouched.feedback


def test_the_size_policy_grader_hints_at_rounding_upscaling_and_types() -> None:
    from labkit.teaching.pipeline_graders import check_size_policy, reference_size

    assert check_size_policy(reference_size).passed
    floor = check_size_policy(lambda w, h: (w, h) if w <= 320 else (320, max(1, h * 320 // w)))
    assert "size_policy(333, 1000)" in [c.name for c in floor.checks if not c.ok] and "(round), do not cut" in floor.feedback
    upscale = check_size_policy(lambda w, h: (320, max(1, round(h * 320 / w))))
    assert "Never upscale" in upscale.feedback
    floats = check_size_policy(lambda w, h: (w, h) if w <= 320 else (320.0, h * 320 / w))
    assert "whole numbers of pixels" in floats.feedback


def test_the_size_policy_runs_inside_the_action_code() -> None:
    """What the hook deploys: the action's own source with the student's function as its fit_size;
    the action's resize then makes exactly the size the policy gives."""
    import io

    from PIL import Image

    from labkit.pipeline import deploy
    from labkit.pipeline.images import generate_pool
    from labkit.teaching.hooks import policy_source

    def square(width, height):
        return 100, 100

    namespace: dict = {}
    exec(compile(deploy.ACTION_FILE.read_text() + policy_source(square), "resize.py", "exec"), namespace)  # noqa: S102
    image = generate_pool(1, seed=3, sizes=[(800, 600)])[0]
    encoded, info = namespace["resize_image"](image.data, 640, "JPEG", 85, 50_000_000)
    assert (info["width_out"], info["height_out"]) == (100, 100) == Image.open(io.BytesIO(encoded)).size


def test_the_hooks_refuse_a_bad_student_answer_in_one_line() -> None:
    import pytest

    from labkit.errors import LabConfigError
    from labkit.pipeline.images import generate_pool
    from labkit.teaching.hooks import _checked_policy, _sleep_for, policy_source

    for bad in (-1, "0.5", float("nan"), 61, True):
        with pytest.raises(LabConfigError, match=r"return the seconds to sleep, a number from 0 to 60, or None"):
            _sleep_for(lambda k, b=bad: b, 1)
    assert _sleep_for(lambda k: None, 3) is None and _sleep_for(lambda k: 2, 1) == 2.0
    with pytest.raises(LabConfigError, match="defined with `def`"):
        policy_source(lambda w, h: (w, h))
    with pytest.raises(LabConfigError, match=r"returned \(320\.0, 240\.0\): return a pair of whole numbers"):
        _checked_policy(lambda w, h: (320.0, 240.0), generate_pool(1, seed=1))
