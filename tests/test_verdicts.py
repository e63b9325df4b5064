"""The verdict vocabulary and the availability estimate, without services."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from labkit.analysis import sla, uptime, verdicts
from labkit.errors import LabConfigError
from tests.test_sla import synth_probes, synth_results


@pytest.mark.parametrize(("statuses", "headline"), [
    (["PASS", "PASS"], "PASS"), (["PASS", "INCONCLUSIVE"], "INCONCLUSIVE"),
    (["INCONCLUSIVE", "FAIL", "PASS"], "FAIL"), (["FAIL"], "FAIL"),
])
def test_the_headline_is_the_weakest_clause(statuses, headline):
    assert verdicts.weakest(statuses) == headline


def test_a_check_word_is_not_a_clause_verdict():
    assert (verdicts.check_word(True), verdicts.check_word(False)) == ("met", "not met")
    with pytest.raises(LabConfigError, match="clause verdicts"):
        verdicts.weakest(["PASS", "met"])
    with pytest.raises(LabConfigError):
        verdicts.weakest([])


def test_per_service_availability_says_met_or_not_met():
    table = sla.availability(synth_probes({"kafka": 10}), target=0.999).set_index("service")
    assert set(table["check"]) == {"met", "not met"} and table.loc["kafka", "check"] == "not met"
    assert not table["check"].isin(["PASS", "FAIL"]).any()


def test_every_clause_verdict_carries_n_confidence_and_n_needed():
    for results in (sla.compliance(synth_results(20)), sla.compliance(synth_results(400)),
                    sla.compliance(synth_results(400, slow=40))):
        assert f"n={results['n']} images, 95% confidence, n needed {results['n_needed']}" in results["verdict"]
    probes = sla.pipeline_availability(synth_probes({"pipeline": 3}, n=500))  # judged on time: n is the outages
    assert (f"n={probes['outages']} outage events over {probes['window_s']:.0f} s, 95% confidence, "
            f"n needed {probes['needed_s']} s") in probes["verdict"]
    untimed = sla.pipeline_availability(synth_probes({"pipeline": 3}, n=500).drop(columns="t_ms"))
    assert f"n=500 probes, 95% confidence, n needed {untimed['n_needed']}" in untimed["verdict"]


@pytest.mark.parametrize(("text", "flagged"), [
    ("latency: INCONCLUSIVE ...\nkafka PASS", True),
    ("latency: INCONCLUSIVE ...\nkafka met", False),
    ("PASS: 100% of 300 images (n=300 images, 95% confidence, n needed 299)\nFAIL: only 90%", False),
    ("all PASS", False),
    ("<dfn>PASS</dfn>: the bound reaches the target. <p>INCONCLUSIVE</p>", False),
])
def test_pass_beside_a_weaker_verdict_is_found(text, flagged):
    assert verdicts.pass_beside_weaker(text) is flagged


def test_probes_inside_one_outage_are_one_outage():
    ok = np.ones(40, dtype=bool)
    ok[5:11] = False  # one outage of 6 probes
    ok[30] = False    # and a blip
    probes = pd.DataFrame({"t_ms": 1_000_000 + np.arange(40) * 500, "service": "pipeline", "ok": ok})
    cut = uptime.outages(probes)
    assert list(cut["failed_probes"]) == [6, 1]
    assert list(cut["downtime_s"]) == [3.0, 0.5]  # each failed probe stands for one 0.5 s interval
    row = uptime.downtime(probes).iloc[0]
    assert (row["outages"], row["downtime_s"], row["window_s"]) == (2, 3.5, 20.0)
    text = uptime.method_text(probes)
    assert "one every 0.5 s over a 20 s window" in text and "2 outage(s), 3.5 s down, 17.5% of the window" in text

