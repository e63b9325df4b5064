"""Experiments on the real stack: declarations, the Kafka-outage cases, matrices, and cleanup."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path

import pandas as pd
import pytest
import yaml
from click.testing import CliRunner

from labkit.analysis.report import RUN_FILES
from labkit.cli import main
from labkit.errors import LabConfigError
from labkit.experiments import run as experiment
from labkit.experiments.faults import FaultInjector
from labkit.experiments.run import EXPERIMENTS_DIR, load_spec, run_experiment, run_matrix
from labkit.pipeline import deploy as pipeline
from labkit.stack.lab import Lab
from labkit.stack.readiness import poll_until

TINY = {"name": "tiny", "load": {"kind": "open", "rate_per_s": 4, "images": 4, "max_duration_s": 10,
                                 "sizes": [[640, 480]]}, "seed": 2, "settle_s": 3}




@pytest.fixture(autouse=True)
def kafka_running_afterwards(request: pytest.FixtureRequest) -> Iterator[None]:
    """Whatever a stack test did, Kafka runs again after it (run_experiment should see to it, too)."""
    yield
    if "pipe" in request.fixturenames:
        request.getfixturevalue("pipe").backend.start("kafka")  # a no-op when it runs


@pytest.fixture(scope="module")
def runs_dir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("runs")


def deployed_retry_env(lab: Lab) -> dict[str, str]:
    with lab.nodered() as admin:
        tab = next(n for n in admin.flows() if n["id"] == pipeline.TAB_ID)
    return {e["name"]: e["value"] for e in tab["env"] if "_RETRY_" in e["name"]}


def default_retry_env() -> dict[str, str]:
    return {k: str(v) for k, v in pipeline.RetryHops().tab_env().items()}


# ---------------------------------------------------------------- declarations


def test_every_declared_experiment_is_valid() -> None:
    names = sorted(p.stem for p in EXPERIMENTS_DIR.glob("*.yaml"))
    assert {"smoke", "kafka-outage", "kafka-outage-bare"} <= set(names)
    for name in names:
        assert load_spec(name).name == name


@pytest.mark.parametrize(("change", "field", "fix"), [
    ({"load": {"kind": "open", "images": 5}}, "load", "rate_per_s"),
    ({"load": {"kind": "open", "rate_per_s": -1, "images": 5}}, "load.rate_per_s", "uploads per second"),
    ({"retry": "sometimes"}, "retry", "presets: none, fixed, exponential"),
    ({"retry": {"upload": {"policy": "fixed", "max_attempts": 0}}}, "retry.upload.max_attempts", "1..20"),
    ({"faults": [{"kind": "stop", "target": "kafak"}]}, r"faults\[0\]", "Valid services"),
    ({"faults": [{"kind": "latency", "target": "kafka"}]}, r"faults\[0\]", "needs a hop"),
    ({"repetitions": 0}, "repetitions", "1..20"),
    ({"colour": "blue"}, "colour", "remove it; the valid fields here are name"),
])
def test_invalid_experiments_name_the_field_and_the_fix(change: dict, field: str, fix: str) -> None:
    with pytest.raises(LabConfigError) as error:
        load_spec({**TINY, **change})
    assert re.search(rf"- {field}: ", str(error.value)), str(error.value)
    assert fix in str(error.value)


def test_bad_yaml_files_are_config_errors(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: x\nload: [unclosed\n")
    with pytest.raises(LabConfigError, match="not valid YAML"):
        load_spec(bad)
    with pytest.raises(LabConfigError, match="No experiment file .* one of: .*smoke"):
        load_spec(tmp_path / "missing.yaml")


def test_classify_gives_every_upload_a_fate() -> None:
    def upload(key: str, status: int | None = 200) -> dict:
        return {"key": key, "trace_id": key, "t_sched_ms": 1000.0, "t_start_ms": 1001.0, "t_end_ms": 1010.0,
                "status_code": status, "attempts": 1, "error": None if status == 200 else "refused",
                "t_upload_start": 1001, "t_uploaded": 1009, "bytes": 10}

    def line(key: str, outcome: str, t_webhook: float | None = None, code: str | None = None) -> dict:
        return {"key": key, "outcome": outcome, "code": code, "attempts": 1, "t_upload_start": 1001,
                "t_webhook": t_webhook, "t_done": t_webhook, "duration_ms": None if t_webhook is None else t_webhook - 1001,
                **dict.fromkeys(experiment.STAGES, 1.0)}

    load = pd.DataFrame([upload("ok"), upload("twice"), upload("bad"), upload("gone"), upload("refused", 503)])
    metrics = pd.DataFrame([line("ok", "ok", 3001), line("twice", "ok", 2001), line("twice", "ok", 9001),
                            line("bad", "error", code="truncated")])
    fates = experiment.classify(load, metrics, moving=False).set_index("key")
    assert fates["status"].to_dict() == {"ok": "resized", "twice": "resized", "bad": "dead_lettered", "gone": "lost",
                                         "refused": "refused"}
    assert fates.loc["twice", "duplicates"] == 1 and fates.loc["twice", "duration_ms"] == 1000  # the first delivery
    assert fates.loc["bad", "reason"] == "truncated" and "503" in fates.loc["refused", "reason"]
    assert pd.isna(fates.loc["gone", "duration_ms"])
    still_moving = experiment.classify(load, metrics, moving=True).set_index("key")
    assert still_moving.loc["gone", "status"] == "pending"


# ---------------------------------------------------------------- an outage, end to end
# (with retry and reconciliation it loses nothing: notebook 06's test and the fault matrix)


def test_kafka_outage_without_retry_or_reconciliation_reports_the_lost(pipe: Lab, runs_dir: Path,
                                                                      tmp_path: Path) -> None:
    run = run_experiment(pipe, "kafka-outage-bare", runs_dir, progress=False)
    results = run.results
    lost = int((results["status"] == "lost").sum())
    print("\n" + run.accounting().to_string(index=False))
    print(f"lost {lost}; max duration {results['duration_ms'].max():.0f} ms")

    assert lost > 0
    assert (results.loc[results["status"] == "lost", "reason"] == "no output and no dead-letter record").all()
    assert (results["policy"] == "none").all() and (results["fault"] == "kafka-stop").all()
    probes = run.probes
    assert not probes[probes["service"] == "kafka"]["ok"].all()  # the probes saw the outage
    assert not probes[probes["service"] == "pipeline"]["ok"].all()
    assert run.env["fault_windows"] and run.env["fault_windows"][0]["target"] == "kafka"
    assert run.accounting().loc[0, "lost"] == lost
    html = run.report(pipe, tmp_path, formats=("html",))["html"].read_text()
    row = re.search(r"<td class=\"text\">none</td><td class=\"text\">kafka-stop</td><td>12</td>\s*"
                    r"<td>(\d+)</td><td>(\d+)</td><td>(\d+)</td>\s*<td class=\"warn\">(\d+)</td>", html)
    assert row and int(row.group(4)) == lost, "the report's accounting table must show the lost images"

    # the run directory: tidy tables and the environment
    assert sorted(p.name for p in run.run_dir.iterdir()) == sorted(RUN_FILES)
    assert run.run_dir.name.startswith("kafka-outage-bare-")
    saved = pd.read_csv(run.run_dir / "results.csv")
    assert (saved["status"] == "lost").sum() == lost
    env = json.loads((run.run_dir / "env.json").read_text())
    assert env["versions"]["kafka"].startswith("3.9") and set(env["versions"]) >= {"storage", "nodered", "faas"}
    assert re.fullmatch(r"[0-9a-f]{40}", env["git_revision"])
    assert env["seed"] == 7 and env["parameters"]["retry"]["upload"]["policy"] == "none"
    assert env["python"] and env["machine"]["cores"] >= 1 and env["started"] <= env["finished"]
    assert deployed_retry_env(pipe) == default_retry_env()  # the default policy is back


# ---------------------------------------------------------------- matrices and cleanup


def test_run_matrix_runs_every_combination(pipe: Lab, runs_dir: Path) -> None:
    run = run_matrix(pipe, TINY, {"policy": ["none", "exponential"], "fault": ["none"]}, runs_dir, progress=False)
    assert sorted(run.results["policy"].unique()) == ["exponential", "none"]
    assert set(run.results["fault"]) == {"none"} and len(run.results) == 8
    assert len(run.parts) == 2 and all((p.run_dir / "results.csv").exists() for p in run.parts)
    assert (run.run_dir / "results.csv").exists()
    assert set(run.probes["service"]) >= {"pipeline", "kafka"}
    assert (run.results["status"] == "resized").all()


def test_an_interrupted_experiment_clears_its_faults_and_restores_the_policy(pipe: Lab, runs_dir: Path) -> None:
    spec = {**TINY, "name": "interrupted", "retry": "none",
            "faults": [{"kind": "stop", "target": "kafka", "at_s": 0, "duration_s": 60}]}
    injector = FaultInjector(pipe)

    def interrupt(row: dict) -> None:
        poll_until(lambda: bool(injector.active()), timeout_s=10, interval_s=0.1)  # the fault is in force
        raise KeyboardInterrupt

    try:
        with pytest.raises(KeyboardInterrupt):
            run_experiment(pipe, spec, runs_dir, progress=False, on_upload=interrupt)
        assert injector.active() == []
        assert pipe.backend.service("kafka").healthy()
        assert deployed_retry_env(pipe) == default_retry_env()
        assert not list(runs_dir.glob("interrupted-*"))  # nothing half-saved
    finally:
        injector.clear_all()
        pipe.backend.start("kafka")


def test_vary_validates_matrix_axes() -> None:
    base = load_spec(TINY)
    assert experiment.vary(base, {"load.rate_per_s": 2}).load.rate_per_s == 2
    assert experiment.vary(base, {"policy": "fixed", "reconcile": True}).policy_name == "fixed + reconcile"
    with pytest.raises(LabConfigError, match="names no field"):
        experiment.vary(base, {"load.speed": 2})


# ---------------------------------------------------------------- the command line


def test_labkit_run_writes_the_run_and_its_report(pipe: Lab, tmp_path: Path) -> None:
    spec = tmp_path / "cli.yaml"
    spec.write_text(yaml.safe_dump({**TINY, "name": "cli", "load": {**TINY["load"], "images": 3}}))
    env = {"LABKIT_DATA_DIR": str(pipe.ctx.config.data_dir), "LABKIT_PORT_OFFSET": str(pipe.ctx.config.port_offset),
           "LABKIT_BACKEND": "native"}
    result = CliRunner().invoke(main, ["run", str(spec), "--out", str(tmp_path / "runs"), "--report",
                                       "--reports-dir", str(tmp_path / "reports")], env=env)
    assert result.exit_code == 0, result.output
    run_dir = Path(re.search(r"run: (\S+)", result.output).group(1))
    assert run_dir.parent == tmp_path / "runs" and (run_dir / "results.csv").is_file()
    assert (tmp_path / "reports" / f"{run_dir.name}.html").is_file()
    assert (tmp_path / "reports" / f"{run_dir.name}.pdf").is_file()


def test_labkit_run_refuses_an_invalid_spec_with_the_fix(tmp_path: Path) -> None:
    spec = tmp_path / "bad.yaml"
    spec.write_text("name: Bad Name\nload: {kind: closed, images: 3}\n")
    result = CliRunner().invoke(main, ["run", str(spec)])
    assert result.exit_code == 2
    assert "name:" in result.output and "concurrency" in result.output and "Traceback" not in result.output
