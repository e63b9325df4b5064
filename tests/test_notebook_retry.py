"""Notebooks 05 and 06 run headless against the session stack, judged by what they measured and
by whether their text says what their data say.

- 05: a latency fault on the nodered-faas hop, image by image: the invoke stage grows by the
  latency (twice on a new TLS connection), and images beyond the flow's ``MAX_INFLIGHT`` cap
  wait in the event stage (back-pressure);
- 06: retries where they help (resets on the invoke hop: attempts > 1, images saved) and where
  they only add load (amplification), with repetitions; and the store's silent event drop,
  which only reconciliation repairs.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from labkit.experiments.retries import compare, plural, spread
from tests import claims
from tests.test_notebooks import assert_no_secrets, run_notebook


@pytest.fixture(scope="module")
def out_dir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("notebooks-05-06")


def test_05_failure_injection_shows_the_latency_fault_and_its_back_pressure(lab, out_dir):
    n, fault_s = 12, 1.5
    results, notebook = run_notebook("05_failure_injection", lab, out_dir, seed=7, n_images=n, fault_s=fault_s)
    assert results["baseline_ok"] == results["faulted_ok"] == n
    # the invoke stage grows by the latency, twice for an invoke on a new connection (the hop is
    # TLS: the handshake's first message pays it too); end to end, the median grows by as much
    added_invoke_ms = results["faulted_invoke_median_ms"] - results["baseline_invoke_median_ms"]
    assert 1500 - 300 <= added_invoke_ms <= 2 * 1500 + 300, results
    added_s = results["faulted_median_s"] - results["baseline_median_s"]
    assert 0.75 * fault_s <= added_s <= 2 * fault_s + 1.0, results
    assert results["active_faults_at_end"] == 0 and results["toxics_at_end"] == 0
    # back-pressure: 12 images, at most MAX_INFLIGHT = 8 events in flight; the later ones waited
    # in the event stage about as long as an invoke under the fault took
    assert results["max_inflight"] == 8
    assert 1 <= results["event_waited"] <= n - results["max_inflight"], results
    assert results["event_waited_max_s"] >= 0.5 * fault_s > results["baseline_event_max_ms"] / 1000, results
    # the text is the data's: no fixed claim about the stages, the computed ones instead
    text = claims.notebook_text(notebook)
    assert "Only one stage should have grown" not in "\n".join(c.source for c in notebook.cells)
    assert "invoke" in results["grown_stages"]
    assert f"of the fault** ({0.25 * fault_s:g} s): {', '.join(results['grown_stages'])}." in text
    assert f"{results['event_waited']} of {n} images also waited" in text and "`MAX_INFLIGHT` = 8" in text
    assert f"{results['invoke_twice']} of {n} faulted invokes grew by more than 1.5 times" in text
    assert results["findings"] in text
    assert_no_secrets(lab, notebook)


def test_06_retry_patterns_shows_retries_saving_images_amplifying_load_and_missing_silent_drops(lab, out_dir):
    reps = 2
    results, notebook = run_notebook("06_retry_patterns", lab, out_dir, repetitions=reps, drop_repetitions=reps)
    runs = pd.DataFrame(results["runs"])
    assert results["repetitions"] == reps >= 2
    assert runs.groupby("policy").size().to_dict() == {"none": reps, "fixed": reps, "exponential": reps}
    by = {p: runs[runs["policy"] == p] for p in ("none", "fixed", "exponential")}
    n = results["n_images"]
    assert (runs["images"] == n).all() and (runs["lost"] == 0).all()

    # no retry: one request per image, and the resets dead-letter images
    assert (by["none"]["max_invoke_attempts"] == 1).all() and (by["none"]["amplification"] == 1).all()
    assert by["none"]["dead_lettered"].sum() >= 1
    # exponential backoff: retries fire (attempts > 1) and save every image the resets caught
    assert (by["exponential"]["max_invoke_attempts"] > 1).all() and (by["exponential"]["retried"] >= 1).all()
    assert (by["exponential"]["resized"] == n).all()
    assert by["exponential"]["resized"].sum() > by["none"]["resized"].sum()
    # both retrying policies amplify the load; fixed delay also gives up within its 1.5 s
    assert (by["fixed"]["amplification"] > 1).all() and (by["exponential"]["amplification"] > 1).all()
    assert (by["fixed"]["max_invoke_attempts"] <= 4).all()

    # the silent drop: retries never fired for the dropped images, reconciliation found them all
    drops = pd.DataFrame(results["drop_runs"])
    assert len(drops) == results["drop_repetitions"] == reps
    assert drops["republished"].sum() >= 1 and (drops["lost"] == 0).all() and (drops["resized"] == n).all()
    assert results["republished_attempts"] and all(
        a == {"upload_attempts": 1, "invoke_attempts": 1} for a in results["republished_attempts"])

    # what the text says is what the data say
    text = claims.notebook_text(notebook)
    assert results["findings"] in text and results["drop_findings"] in text
    assert f"Over **{reps} repetitions** of {n} images" in text
    assert f"resized {spread(by['none']['resized'])} of {n} and dead-lettered {spread(by['none']['dead_lettered'])}" in text
    assert f"resized {spread(by['exponential']['resized'])} of {n} (every image, in every run)" in text
    amplification = compare(runs, "amplification", "exponential", "fixed")
    assert f"{spread(by['exponential']['amplification'], '{:.2f}')} requests per image: {amplification}" in text
    assert f"({plural(int(drops['republished'].sum()), 'event')} in all)" in text
    assert "no retry ever fired for them" in text
    assert f"After reconciliation {int(drops['lost'].sum())} images were lost" in text
    assert_no_secrets(lab, notebook)
