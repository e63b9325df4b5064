"""Notebook 09 runs headless against the session stack, judged by what it measured and by the mails
Mailpit holds afterwards:

- the error budget: 99.9% of 30 days is 43.2 min, 99% of 10 000 images is 100 images;
- a fast burn (repeated): the burn-rate policy pages once, the per-image policy mails every slow
  image, so the burn-rate policy sends fewer mails, none of them redundant or false;
- a single slow image: one per-image mail, no burn-rate page;
- the graded exercise's solution scores full marks on the windows the flow really saw.
"""

from __future__ import annotations

import time
from pathlib import Path

import pandas as pd
import pytest

from labkit.analysis.budget import error_budget
from tests import claims
from tests.test_alerting import burn_mails, epoch_ms, new_mails
from tests.test_notebooks import assert_no_secrets, run_notebook


@pytest.fixture(scope="module")
def out_dir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("notebook-09")


def test_09_error_budgets_pages_once_per_fast_burn_and_never_for_one_slow_image(lab, out_dir):
    mailbox = lab.mailbox()
    seen = {m["ID"] for m in mailbox.messages()}
    started = time.monotonic()
    results, notebook = run_notebook("09_error_budgets", lab, out_dir)  # the defaults: what `labkit notebooks` runs
    print(f"\nnotebook 09 under papermill: {time.monotonic() - started:.1f} s")
    text = claims.notebook_text(notebook)

    # the budget, computed independently
    assert results["budget_minutes"] == 43.2 == round(0.001 * 30 * 24 * 60, 9)
    assert results["images_per_30_days"] == 10_000 and results["budget_images"] == 100.0
    assert error_budget(0.99, images=10_000).images == results["budget_images"]
    assert "**43.2 min**" in text and "**100 slow images**" in text
    page = pd.DataFrame(results["rules"]).iloc[0]
    assert page["burn rate over"] == 14.4 and page["budget spent by a firing long window"] == "2%"
    assert page["whole budget gone in (days)"] == round(30 / 14.4, 1)

    table = pd.DataFrame(results["comparison"])
    fast = table[table["scenario"] == "fast burn"].set_index(["repetition", "policy"])
    assert results["repetitions"] >= 2 and fast.index.get_level_values(0).nunique() == results["repetitions"]
    for rep in range(results["repetitions"]):
        per, burn = fast.loc[(rep, "per-image")], fast.loc[(rep, "burn-rate")]
        assert per["bad"] >= 3, per.to_dict()  # enough slow images for the page rule's BURN_MIN_BAD
        assert burn["alerts"] < per["alerts"] == per["bad"], (rep, per.to_dict(), burn.to_dict())
        assert [burn[c] for c in ("alerts", "detected", "redundant", "false")] == [1, 1, 0, 0], burn.to_dict()
        assert per["redundant"] == per["alerts"] - 1 and per["false"] == 0
        # no image is bad before 10 s; the page needs the third bad image, the per-image mail the first
        assert 10 <= per["detect_s"] and per["detect_s"] - 1 <= burn["detect_s"] < per["detect_s"] + 30

    single = results["single"]
    assert single["duration_s"] >= 10
    assert single["per_image_alerts"] == 1 and single["burn_rate_alerts"] == 0, single
    assert single["long_bad"] == 1 and single["long_burn"] > 14.4  # quiet only because of BURN_MIN_BAD

    # Mailpit itself, read here: one page per fast burn, no other burn-rate alert since the
    # notebook's first fault (an episode an earlier test left open may still mail before the
    # notebook's first deploy empties the windows); one per-image mail per slow image of its runs
    burns = [m for m in burn_mails(mailbox, seen) if epoch_ms(m["Created"]) >= results["first_fault_ms"]]
    assert [m["Subject"].split(":")[0] for m in burns] == ["[burn-rate] page"] * results["repetitions"]
    per_image = [m for m in new_mails(mailbox, seen) if m["Subject"].startswith("SLA alert: alerting-")]
    assert len(per_image) == single["per_image_alerts"] + int(fast.xs("per-image", level="policy")["bad"].sum())
    assert sorted(m["Subject"] for m in burns) == sorted(
        m["subject"] for m in results["mails"] if m["policy"] == "burn-rate")

    assert results["grade"]["score"] == results["grade"]["out_of"] > 8  # made-up corners plus measured windows
    assert results["answer_minutes"] == pytest.approx(20.16)
    assert results["findings"] in text and results["detect_difference"]["text"] in results["findings"]
    toxics = sum(len(p["toxics"]) for p in lab.toxiproxy().proxies().values())
    assert toxics == 0
    assert_no_secrets(lab, notebook)
