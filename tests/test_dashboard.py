"""The pipeline's dashboard chart, watched from a real browser: every image of a slow stream
gets a point, and a burst is thinned to at most 10 points a second."""

from __future__ import annotations

import shutil
import time
import uuid
from pathlib import Path

import pytest

from labkit.pipeline import upload
from labkit.pipeline.images import generate_pool
from labkit.stack.lab import Lab
from tests.test_report import CHROMIUM_ARGS

pytestmark = pytest.mark.stack

CHART_RATE_PER_S = 10  # the flow's "chart: 10 points/s" node


def chart_points(frames: list[str], topic: str) -> int:
    return sum(1 for f in frames if "msg-input:pl_chart" in f and topic in f)


def poll(page, what: str, check, timeout_s: float = 30.0):
    """Wait for ``check()``, letting the browser's events in meanwhile (they arrive only while
    playwright is called)."""
    deadline = time.monotonic() + timeout_s
    while not (value := check()):
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout_s:.0f} s waiting for {what}")
        page.wait_for_timeout(200)
    return value


def test_the_chart_gets_each_image_of_a_slow_stream_and_thins_a_burst(pipe: Lab) -> None:
    from playwright.sync_api import sync_playwright

    chromium = shutil.which("chromium") or "/usr/bin/chromium"
    assert Path(chromium).exists(), "needs Debian's chromium: apt-get update && apt-get install -y chromium"
    prefix = f"dash-{uuid.uuid4().hex[:8]}/"
    frames: list[str] = []
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chromium, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page()
            page.on("websocket", lambda ws: ws.on("framereceived", lambda payload: frames.append(str(payload))))
            page.goto(pipe.endpoints["nodered"] + "/dashboard/pipeline")
            poll(page, "the dashboard's socket", lambda: frames)

            # A slow stream: one image at a time, each gets its point.
            for image in generate_pool(3, seed=51, sizes=[(640, 480)]):
                sent = upload.push(pipe, [image], progress=False, prefix=prefix + "slow/")
                upload.wait_for(pipe, sent["key"], timeout_s=30)
                page.wait_for_timeout(1000 / CHART_RATE_PER_S)  # a pace slower than the chart's limit
            poll(page, "3 chart points", lambda: chart_points(frames, "end-to-end") >= 3, timeout_s=10)
            assert chart_points(frames, "SLA threshold") >= 1

            # A burst: the metrics file gets every image, the chart at most 10 points a second.
            before = chart_points(frames, "end-to-end")
            sent = upload.push(pipe, generate_pool(60, seed=52, sizes=[(640, 480)]), concurrency=8,
                               progress=False, prefix=prefix + "burst/")
            rows = upload.wait_for(pipe, sent["key"], timeout_s=120)
            page.wait_for_timeout(500)  # let the last frames arrive
        finally:
            browser.close()
    burst_points = chart_points(frames, "end-to-end") - before
    span_s = (rows["t_done"].max() - rows["t_done"].min()) / 1000
    assert len(rows) == 60 and (rows["outcome"] == "ok").all()
    assert 1 <= burst_points <= CHART_RATE_PER_S * span_s + 2, (burst_points, span_s)
