"""Load generators against the session's real pipeline: open loop, closed loop, bounds and stop."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import uuid

import httpx
import pytest
from click.testing import CliRunner

from labkit.cli import main
from labkit.errors import LabConfigError
from labkit.experiments import load
from labkit.pipeline import upload
from labkit.pipeline.metrics import load_metrics
from labkit.stack.lab import Lab
from labkit.stack.readiness import poll_until
from tests.support import poll

SIZES = [(640, 480)]




@pytest.fixture()
def prefix() -> str:
    return f"load-{uuid.uuid4().hex[:8]}/"


def test_open_loop_arrives_at_the_rate_and_stops_at_max_images(pipe: Lab, prefix: str) -> None:
    rate = 5.0
    table = load.run_open_loop(pipe, rate, max_images=12, max_duration_s=30, seed=3, prefix=prefix, sizes=SIZES,
                               progress=False)
    assert len(table) == 12  # bounded by max_images
    assert list(table.columns[:9]) == ["key", "trace_id", "t_sched_ms", "t_start_ms", "t_end_ms", "status_code",
                                       "attempts", "client_attempts", "error"]
    assert (table["client_attempts"] == 1).all()  # nothing was refused: the client never retried
    assert (table["status_code"] == 200).all(), table[table["status_code"] != 200].to_dict("records")
    assert table["key"].str.startswith(prefix).all() and table["key"].is_unique
    gaps_s = table["t_sched_ms"].sort_values().diff().dropna() / 1000
    assert 0.4 / rate < gaps_s.mean() < 2.5 / rate, gaps_s.describe()
    # the arrival process keeps its own clock: each upload starts close to its scheduled time
    assert (table["t_start_ms"] - table["t_sched_ms"]).max() < 1000
    assert table["t_upload_start"].notna().all()  # the flow's own start stamp, beside the client's


def test_open_loop_is_bounded_by_its_duration(pipe: Lab, prefix: str) -> None:
    started = time.monotonic()
    table = load.run_open_loop(pipe, 5.0, max_images=1000, max_duration_s=1.0, seed=4, prefix=prefix, sizes=SIZES,
                               progress=False)
    assert time.monotonic() - started < 10
    assert 0 < len(table) < 30
    assert (table["t_sched_ms"] - table["t_sched_ms"].min()).max() <= 1000


def test_closed_loop_never_has_more_than_c_in_flight(pipe: Lab, prefix: str) -> None:
    run = load.start_closed_loop(pipe, 3, max_images=15, max_duration_s=60, seed=5, prefix=prefix, sizes=SIZES,
                                 progress=False)
    table = run.wait(60)
    assert len(table) == 15 and (table["status_code"] == 200).all()
    assert run.max_in_flight <= 3
    assert load.in_flight_max(table) <= 3
    assert (table["t_sched_ms"] == table["t_start_ms"]).all()  # nothing is scheduled ahead in a closed loop


def test_stop_ends_a_long_run_early(pipe: Lab, prefix: str) -> None:
    run = load.start_open_loop(pipe, 5.0, max_images=10_000, max_duration_s=3600, seed=6, prefix=prefix, sizes=SIZES,
                               progress=False)
    try:
        assert poll_until(lambda: len(run.results()) >= 2, timeout_s=15, interval_s=0.1) == "ready"
    finally:
        run.stop()
    stopped = time.monotonic()
    table = run.wait(30)
    assert time.monotonic() - stopped < 10
    assert 2 <= len(table) < 100
    assert run.done()


def test_bad_load_parameters_are_config_errors(pipe: Lab) -> None:
    with pytest.raises(LabConfigError, match="rate_per_s"):
        load.start_open_loop(pipe, 0, max_images=5, max_duration_s=5)
    with pytest.raises(LabConfigError, match="max_images"):
        load.start_open_loop(pipe, 5, max_images=0, max_duration_s=5)
    with pytest.raises(LabConfigError, match="concurrency"):
        load.start_closed_loop(pipe, 0, max_images=5, max_duration_s=5)


def test_a_load_switch_runs_one_load_at_a_time(pipe: Lab) -> None:
    switch = load.LoadSwitch(pipe, rate_per_s=10, max_images=500, max_duration_s=60, sizes=SIZES, progress=False)
    first = switch.start()
    try:
        assert switch.start() is first  # already running: no second load
        assert poll_until(lambda: len(first.results()) >= 1, timeout_s=15, interval_s=0.1) == "ready"
    finally:
        switch.stop()
    first.wait(30)
    assert not switch.running
    second = switch.start()
    switch.stop()
    second.wait(30)
    keys = switch.results()["key"]
    assert keys.is_unique and keys.str.startswith("panel/").all()


def test_the_client_retries_an_unreachable_endpoint_then_reports_it() -> None:
    with socket.socket() as s:  # a port nobody listens on: each connection is refused
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=5) as http:
        row = upload.upload_one(http, "k.jpg", b"x", "image/jpeg", retry_deadline_s=1.0)
    assert row["status"] is None and "ConnectError" in row["error"]
    assert row["client_attempts"] > 1


def test_labkit_load_sends_at_the_rate_and_every_image_comes_through(pipe: Lab, tmp_path) -> None:
    prefix = f"cli-{uuid.uuid4().hex[:8]}/"
    env = {**os.environ, "LABKIT_DATA_DIR": str(pipe.ctx.config.data_dir),
           "LABKIT_PORT_OFFSET": str(pipe.ctx.config.port_offset), "LABKIT_BACKEND": "native"}
    done = subprocess.run([sys.executable, "-m", "labkit.cli", "load", "--rate", "4", "--duration", "3",
                           "--prefix", prefix, "--no-progress"], env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    sent = int(done.stdout.split("sent ")[1].split()[0])
    assert sent >= 1 and f"{{200: {sent}}}" in done.stdout, done.stdout

    def finished():
        lines = load_metrics(upload.metrics_path(pipe))
        ok = lines[lines["key"].str.startswith(prefix) & (lines["outcome"] == "ok")]
        return ok["key"].nunique() == sent
    poll(f"{sent} images of `labkit load` through the pipeline", finished, timeout_s=60)


@pytest.mark.parametrize(("args", "message"), [
    (["--rate", "0"], "rate_per_s must be in (0, 500]"),
    (["--duration", "-1"], "max_duration_s must be in"),
    (["--images", "0"], "max_images must be an integer"),
])
def test_labkit_load_refuses_bad_input_before_touching_the_lab(args, message, tmp_path) -> None:
    done = CliRunner().invoke(main, ["load", *args], env={"LABKIT_DATA_DIR": str(tmp_path / "lab")})
    assert done.exit_code == 2 and message in done.stderr and "Traceback" not in done.output
    assert not (tmp_path / "lab").exists()
