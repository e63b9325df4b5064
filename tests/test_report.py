"""The SLA report from synthetic runs: self-contained, truthful, secret-free, and readable in a browser."""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from click.testing import CliRunner

from labkit.analysis import report, sla, verdicts
from labkit.cli import main
from labkit.errors import LabConfigError
from labkit.pipeline.metrics import STAGES
from labkit.stack.secrets import load_or_create
from tests.claims import report_interval_problems
from tests.test_sla import synth_probes, synth_results

FAKE_SECRETS = ["hunter2-s3-secret", "AKIAFAKEACCESSKEY0001", "wh-token-7f3a9c", "nodered-pw-Zq8!"]
CHROMIUM_ARGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
    "--disable-component-update", "--no-first-run",
]


def synth_run() -> tuple[pd.DataFrame, pd.DataFrame, dict]:
    """Three policies under two faults; "none" loses 20 of its 300 images under kafka-stop."""
    groups = [
        ("none", "none", {}), ("fixed", "none", {}), ("exponential", "none", {"slow": 1}),
        ("none", "kafka-stop", {"lost": 20}), ("fixed", "kafka-stop", {"error": 2, "duplicates": 4}),
        ("exponential", "kafka-stop", {"duplicates": 9}),
    ]
    results = pd.concat(
        [synth_results(300, policy, fault, seed=i, **extra) for i, (policy, fault, extra) in enumerate(groups)],
        ignore_index=True,
    )
    probes = synth_probes({"kafka": 30, "pipeline": 2}, n=1800)
    env = {
        "git_revision": "dff20f1", "python": "3.11.7", "seed": 7,
        "started": "2025-11-29T14:00:00Z", "finished": "2025-11-29T14:30:00Z",
        "machine": {"cores": 2, "memory_gb": 24, "platform": "Linux-x86_64"},
        "versions": {"kafka": "3.9.0", "nodered": "4.1.0"},
        "parameters": {"images": 300, "rate_per_s": 5, "s3_access_key": FAKE_SECRETS[1]},
        "LABKIT_WEBHOOK_TOKEN": FAKE_SECRETS[2],  # secret-named entries are dropped by name...
        "credentials": {"nodered_password": FAKE_SECRETS[3], "faas_auth": "uuid:key"},
    }
    return results, probes, env


@pytest.fixture(scope="module")
def run() -> tuple[pd.DataFrame, pd.DataFrame, dict]:
    return synth_run()


@pytest.fixture(scope="module")
def rendered(run, tmp_path_factory) -> dict[str, Path]:
    return report.render_report(*run, tmp_path_factory.mktemp("report"), secrets=FAKE_SECRETS)


@pytest.fixture(scope="module")
def page(rendered) -> str:
    return rendered["html"].read_text(encoding="utf-8")


def test_html_is_self_contained(page):
    assert "http://" not in page and "https://" not in page
    assert not re.search(r"<(script|link|iframe)\b", page, re.IGNORECASE)
    sources = re.findall(r'\b(?:src|href)\s*=\s*"([^"]*)"', page)
    assert sources and all(s.startswith("data:image/png;base64,") for s in sources)
    assert page.count('<img src="data:') == 2  # the ECDF and the stage breakdown


def test_html_has_the_verdicts_and_the_numbers(run, page):
    results, probes, _ = run
    latency = sla.compliance(results)
    assert latency["status"] == "FAIL"  # 20 lost + 2 dead-lettered + 1 slow of 1800 is more than 1%
    assert 'id="verdict-latency"' in page and ">FAIL</p>" in page
    assert sla.pipeline_availability(probes)["status"] in page
    for word in ("PASS", "FAIL", "INCONCLUSIVE"):
        assert f'class="badge {word.lower()}">{word}<' in page
    assert f"{latency['share']:.2%}" in page and f"{latency['lower_bound']:.2%}" in page
    fixed = results[(results["policy"] == "fixed") & (results["fault"] == "none")]
    p99 = sla.percentiles(sla.latencies_s(fixed)).set_index("q").loc[0.99, "estimate"]
    assert f"<td>{report.fmt_s(p99)}<span" in page
    lossy_row = re.search(r"<td>none / kafka-stop</td><td>300</td><td>280</td>.*?</tr>", page, re.DOTALL).group(0)
    assert "<td>∞<span" in lossy_row  # 6.7% lost: p99 (and p95) are infinite
    assert re.search(r"<td class=\"text\">kafka-stop</td><td>300</td>\s*<td>280</td><td>0</td><td>0</td>\s*<td class=\"warn\">20</td>",
                     page)
    assert "3.9.0" in page and "rate_per_s" in page


def test_html_has_no_secrets_and_no_secret_named_entries(page, rendered):
    for secret in FAKE_SECRETS:
        assert secret not in page
    for name in ("s3_access_key", "LABKIT_WEBHOOK_TOKEN", "nodered_password", "faas_auth", "uuid:key"):
        assert name not in page
    pdf = rendered["pdf"].read_bytes()
    assert not any(secret.encode() in pdf for secret in FAKE_SECRETS)


def test_a_secret_in_the_output_is_refused_and_nothing_is_written(run, tmp_path):
    results, probes, env = run
    leaky = {**env, "parameters": {"note": FAKE_SECRETS[0]}}  # an innocent name hides a secret value
    with pytest.raises(LabConfigError, match="Refusing to write the report: 1 of the 4") as caught:
        report.render_report(results, probes, leaky, tmp_path / "out", secrets=FAKE_SECRETS)
    assert FAKE_SECRETS[0] not in str(caught.value)
    assert not (tmp_path / "out").exists()


def test_pdf_is_a_real_multi_page_document(rendered):
    pdf = rendered["pdf"].read_bytes()
    assert pdf.startswith(b"%PDF-") and pdf.rstrip().endswith(b"%%EOF")
    assert len(pdf) > 100_000  # two embedded plots and six tables: several pages


def test_unknown_format_is_refused(run, tmp_path):
    with pytest.raises(LabConfigError, match="Unknown report format"):
        report.render_report(*run, tmp_path, formats=("docx",))


def test_save_and_load_run_round_trip(run, tmp_path):
    results, probes, env = run
    report.save_run(results.assign(fault=results["fault"].replace("none", "None")), probes, env, tmp_path)
    loaded, loaded_probes, loaded_env = report.load_run(tmp_path)
    assert set(loaded["fault"]) == {"None", "kafka-stop"}  # "None" stays a string
    pd.testing.assert_frame_equal(loaded.drop(columns="fault"), results.drop(columns="fault"), check_dtype=False)
    pd.testing.assert_frame_equal(loaded_probes, probes, check_dtype=False)
    assert loaded_env["machine"] == env["machine"] and "LABKIT_WEBHOOK_TOKEN" not in loaded_env


@pytest.fixture
def lab_env(tmp_path) -> dict[str, str]:
    """A private lab data dir for the CLI, so the user's own lab is never read."""
    return {"LABKIT_DATA_DIR": str(tmp_path / "lab"), "LABKIT_SLA_THRESHOLD_S": "10"}


def test_cli_report_renders_a_saved_run(run, tmp_path, lab_env):
    run_dir = report.save_run(*run, tmp_path / "run-42")
    out = tmp_path / "reports"
    result = CliRunner().invoke(main, ["report", str(run_dir), "--out", str(out)], env=lab_env)
    assert result.exit_code == 0, result.output
    assert (out / "run-42.html").is_file() and (out / "run-42.pdf").is_file()
    assert "html: " in result.output and "SLA report: run-42" in (out / "run-42.html").read_text()


def test_cli_report_threshold_changes_the_verdict(run, tmp_path, lab_env):
    results, probes, env = run
    run_dir = report.save_run(results[results["fault"] == "none"], probes, env, tmp_path / "calm")
    args = ["report", str(run_dir), "--out", str(tmp_path / "out"), "--threshold-s", "1"]
    assert CliRunner().invoke(main, args, env=lab_env).exit_code == 0
    assert "within 1 s" in (tmp_path / "out" / "calm.html").read_text()


def test_cli_report_on_a_missing_dir_exits_2_and_names_the_fix(tmp_path, lab_env):
    result = CliRunner().invoke(main, ["report", str(tmp_path / "nope")], env=lab_env)
    assert result.exit_code == 2
    assert "does not exist" in result.output and "Fix: pass a directory written by" in result.output
    assert "Traceback" not in result.output


def test_cli_report_refuses_to_show_the_labs_own_secrets(run, tmp_path, lab_env):
    lab_secret = load_or_create(Path(lab_env["LABKIT_DATA_DIR"])).secret_values()[0]
    results, probes, env = run
    run_dir = report.save_run(results, probes, {**env, "parameters": {"bucket": lab_secret}}, tmp_path / "leaky")
    result = CliRunner().invoke(main, ["report", str(run_dir), "--out", str(tmp_path / "out")], env=lab_env)
    assert result.exit_code == 2 and "Refusing to write the report" in result.output
    assert lab_secret not in result.output and not (tmp_path / "out").exists()


def test_report_renders_in_headless_chromium(rendered, tmp_path):
    """What a person sees: the page loads with no console or page errors, verdicts visible."""
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        pytest.fail("needs the PyPI package `playwright` (its browser download is never used)")
    chromium = shutil.which("chromium") or "/usr/bin/chromium"
    if not Path(chromium).exists():
        pytest.fail("needs Debian's chromium: apt-get update && apt-get install -y chromium")
    errors: list[str] = []
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chromium, args=CHROMIUM_ARGS)
        try:
            view = browser.new_page(viewport={"width": 1280, "height": 900})
            view.on("console", lambda m: errors.append(f"console {m.type}: {m.text}") if m.type == "error" else None)
            view.on("pageerror", lambda e: errors.append(f"page error: {e}"))
            view.on("requestfailed", lambda r: errors.append(f"request failed: {r.url}"))
            view.goto(rendered["html"].resolve().as_uri(), wait_until="load")
            verdict = view.locator("#verdict-latency .status")
            assert verdict.is_visible() and verdict.inner_text() == "FAIL"
            assert view.locator("#verdict-availability .status").is_visible()
            widths = view.eval_on_selector_all("img", "imgs => imgs.map(i => i.naturalWidth)")
            assert len(widths) == 2 and min(widths) > 500  # both plots decoded
            view.screenshot(path=tmp_path / "report.png", full_page=True)
        finally:
            browser.close()
    assert errors == []
    assert (tmp_path / "report.png").stat().st_size > 50_000


def test_a_run_where_every_image_was_lost_still_renders(tmp_path):
    results, probes, env = synth_run()
    results = results.assign(status="lost", duration_ms=np.nan)
    results[list(STAGES)] = np.nan
    html = report.render_report(results, probes, env, tmp_path, formats=("html",))["html"].read_text()
    assert "Where the images went" in html and "FAIL" in html


def test_a_run_saved_with_the_old_status_words_still_loads(tmp_path) -> None:
    """Run directories written before the results spoke the fates' words ("ok", "error") are read as fates."""
    results, probes, env = synth_run()
    old = results.assign(status=results["status"].replace({"resized": "ok", "dead_lettered": "error"}))
    run_dir = report.save_run(old, probes, env, tmp_path / "old")
    loaded, _, _ = report.load_run(run_dir)
    assert set(loaded["status"]) <= set(sla.STATUSES)
    pd.testing.assert_series_equal(loaded["status"], results["status"].reset_index(drop=True), check_names=False)


# --- what the report claims ------------------------------------------------------------------


def test_no_percentile_interval_claims_more_than_its_sample_supports(page):
    assert report_interval_problems(page) == []


def test_a_p99_of_ten_images_is_shown_unbounded(tmp_path):
    results, probes, env = synth_run()
    few = results.groupby(["policy", "fault"]).head(10)
    page = report.render_report(few, probes, env, tmp_path, formats=("html",))["html"].read_text()
    assert report_interval_problems(page) == []
    assert re.search(r"<td>fixed / none</td><td>10</td><td>10</td>.*?– ∞</span>", page, re.DOTALL)
    assert report_interval_problems(page.replace("– ∞</span>", "– 3.00</span>"))  # the check would catch it


def test_the_headline_is_the_weakest_clause_and_checks_are_met_or_not(run, page):
    results, probes, _ = run
    clauses = [sla.compliance(results)["status"], sla.pipeline_availability(probes)["status"]]
    assert re.search(r'id="verdict-headline".*?<p class="status">FAIL</p>', page, re.DOTALL)
    assert "FAIL" in clauses
    availability = page[page.index("<h2>Availability per service</h2>"):]
    availability = availability[:availability.index("</table>")]
    assert "PASS" not in availability and "badge" not in availability
    assert availability.count('<td class="check">met</td>') == 3  # storage, nodered, faas
    assert availability.count('<td class="check">not met</td>') == 2  # kafka and the pipeline
    assert not verdicts.pass_beside_weaker(page)  # every PASS is a per-group clause with its own facts


def test_an_inconclusive_run_shows_no_pass_at_all(tmp_path):
    results, probes, env = synth_run()
    calm = results[results["fault"] == "none"].groupby("policy").head(20)
    page = report.render_report(calm, synth_probes({}, n=200), env, tmp_path, formats=("html",))["html"].read_text()
    assert re.search(r'id="verdict-headline".*?<p class="status">INCONCLUSIVE</p>', page, re.DOTALL)
    assert not verdicts.pass_beside_weaker(page)
    assert "n=60 images, 95% confidence, n needed 473" in page  # one slow image: 473, not 299
    assert verdicts.pass_beside_weaker(page.replace('<td class="check">met</td>', '<td class="check">PASS</td>'))


def test_the_report_says_how_availability_was_estimated(run, page):
    _, probes, _ = run
    method = re.search(r'<p class="note" id="availability-method">(.*?)</p>', page, re.DOTALL).group(1)
    assert "one every 2 s" in method and "consecutive failed probes count as one outage" in method
    assert "1 outage(s), 4.0 s down" in method  # the pipeline's 2 failed probes in a row, 2 s apart
