"""The lab's UIs through a Jupyter server with a non-root base URL, as on JupyterHub.

A real JupyterLab is started with ``base_url=/user/student/`` (what JupyterHub's spawner
gives a single-user server) and the lab's jupyter-server-proxy entries
(labkit.teaching.proxy); headless Chromium then loads each UI through it, with no console
errors: the Node-RED editor shows the pipeline flow, the dashboard its chart, and Mailpit an
SLA alert the pipeline mailed. Any console error fails the test, the dashboard's icon included.
The screenshots are kept as the run's artifacts in ``build/test-artifacts/`` (or
``$LABKIT_TEST_ARTIFACTS``), their paths printed.
"""

from __future__ import annotations

import os
import secrets
import shutil
import socket
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from labkit.experiments.faults import Fault, FaultInjector
from labkit.pipeline import upload
from labkit.pipeline.images import generate_pool
from labkit.stack.lab import Lab
from labkit.teaching.nb import ui_links
from tests.support import poll
from tests.test_report import CHROMIUM_ARGS

pytestmark = pytest.mark.stack

PREFIX = "/user/student/"
SLOW_MS = 10_500  # latency on the invoke hop that puts an image over the 10 s SLA
TAB = "pl_tab"  # the pipeline flow's tab
# Where the screenshots stay after the run (a CI job uploads this directory as its artifacts).
ARTIFACTS = Path(os.environ.get("LABKIT_TEST_ARTIFACTS", Path(__file__).resolve().parent.parent / "build" / "test-artifacts"))


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def hub_lab(pipe: Lab) -> Iterator[Lab]:
    """The session's lab as a JupyterHub single-user server runs it: Mailpit under the prefix
    (``LABKIT_WEB_PREFIX``); put back at the root afterwards."""
    _move_mail(pipe, PREFIX)
    try:
        yield pipe
    finally:
        _move_mail(pipe, "")


def _move_mail(lab: Lab, prefix: str) -> None:
    lab.ctx.config.web_prefix = prefix
    lab.__dict__.pop("endpoints", None)  # Lab caches its endpoints; Mailpit's moves with the prefix
    lab.backend.restart("mail")


@pytest.fixture(scope="module")
def jupyter(hub_lab: Lab, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, str]]:
    """A real JupyterLab at ``PREFIX``, seeing the lab's config; yields its URL with the token."""
    port, token, root = _free_port(), secrets.token_hex(16), tmp_path_factory.mktemp("jupyter")
    config = hub_lab.ctx.config
    env = {**os.environ, "LABKIT_DATA_DIR": str(config.data_dir), "LABKIT_CACHE_DIR": str(config.cache_dir),
           "LABKIT_PORT_OFFSET": str(config.port_offset), "LABKIT_WEB_PREFIX": PREFIX,
           "JUPYTER_RUNTIME_DIR": str(root / "runtime")}
    log = (root / "jupyter.log").open("w")
    proc = subprocess.Popen(
        [str(Path(sys.executable).with_name("jupyter")), "lab", "--no-browser", "--allow-root", "--ip=127.0.0.1",
         f"--port={port}", f"--ServerApp.base_url={PREFIX}", f"--IdentityProvider.token={token}",
         f"--ServerApp.root_dir={root}"], env=env, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
    base = f"http://127.0.0.1:{port}{PREFIX}"
    try:
        poll("JupyterLab's API", lambda: _answers(f"{base}api/status?token={token}"), timeout_s=60)
        yield base, token
    finally:
        proc.terminate()
        proc.wait(timeout=20)
        log.close()


def _answers(url: str) -> bool:
    try:
        return httpx.get(url, timeout=2).status_code == 200
    except httpx.HTTPError:
        return False


@pytest.fixture(scope="module")
def alert_subject(hub_lab: Lab) -> str:
    """One image slowed past the SLA: the pipeline mails its alert."""
    with FaultInjector(hub_lab) as faults:
        fault = faults.inject(Fault("latency", "nodered-faas", params={"latency_ms": SLOW_MS}))
        try:
            sent = upload.push(hub_lab, generate_pool(1, seed=77), progress=False, prefix=f"hub-{uuid.uuid4().hex[:6]}/")
            upload.wait_for(hub_lab, sent["key"], timeout_s=90)
        finally:
            faults.clear(fault)
    key = sent["key"].iloc[0]
    mailbox = hub_lab.mailbox()
    mail = poll("the SLA alert mail", lambda: [m for m in mailbox.messages() if key in m["Subject"]], timeout_s=30)
    return mail[0]["Subject"]


@pytest.fixture()
def browser_page(jupyter):
    """A Chromium page logged into the Jupyter server, and the console errors it collects."""
    from playwright.sync_api import sync_playwright

    base, token = jupyter
    chromium = shutil.which("chromium") or "/usr/bin/chromium"
    errors: list[str] = []
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chromium, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1600, "height": 1000})
            page.on("console", lambda m: errors.append(f"{m.text} ({m.location.get('url')})")
                    if m.type == "error" else None)
            page.on("pageerror", lambda e: errors.append(str(e)))
            page.goto(f"{base}lab?token={token}")  # the token login sets the server's cookie
            page.wait_for_selector(".jp-Launcher, .jp-LabShell", timeout=60_000)
            errors.clear()  # JupyterLab's own start-up is not under test
            yield page, base, errors
        finally:
            browser.close()


def _settled(page, drawn: str) -> str | None:
    """The canvas's picture when it stayed the same over half a second (no animation running)."""
    first = page.evaluate(drawn)
    page.wait_for_timeout(500)
    return first if page.evaluate(drawn) == first else None


def _shot(page, name: str) -> None:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    path = ARTIFACTS / f"jupyter-proxy-{name}.png"
    page.screenshot(path=str(path))
    print(f"screenshot: {path}")


def test_links_go_through_the_jupyter_server_under_its_prefix(hub_lab: Lab) -> None:
    links = ui_links(hub_lab.endpoints, PREFIX, mail_proxied=True)
    assert links["Node-RED editor"] == f"{PREFIX}nodered/"
    assert links["Pipeline dashboard"] == f"{PREFIX}nodered/dashboard/pipeline"
    assert links["Mailpit (alert e-mails)"] == f"{PREFIX}mailpit/"
    assert ui_links(hub_lab.endpoints, None)["Node-RED editor"] == hub_lab.endpoints["nodered"]


def test_nodered_editor_through_the_proxy_shows_the_pipeline_flow(hub_lab: Lab, browser_page) -> None:
    page, base, errors = browser_page
    # Logged in through the proxy first, as a returning student is: the login dialog's own
    # first request is a 401 by design, which would hide any real error.
    login = page.request.post(f"{base}nodered/auth/token", form={
        "client_id": "node-red-editor", "grant_type": "password", "scope": "",
        "username": hub_lab.ctx.secrets.nodered_user,
        "password": hub_lab.ctx.secrets.nodered_password.get_secret_value()})
    assert login.ok, login.status
    page.goto(f"{base}nodered/?access_token={login.json()['access_token']}")
    page.wait_for_function("(tab) => window.RED && RED.nodes && RED.nodes.workspace(tab)", arg=TAB, timeout=60_000)
    page.evaluate("(tab) => RED.workspaces.show(tab)", TAB)
    page.wait_for_selector("#red-ui-workspace-chart .red-ui-flow-group", timeout=30_000)
    _shot(page, "nodered-editor")
    assert page.evaluate("(tab) => RED.nodes.filterNodes({z: tab}).length", TAB) > 10
    assert errors == []


def test_dashboard_through_the_proxy_shows_the_chart(hub_lab: Lab, browser_page) -> None:
    page, base, errors = browser_page
    page.goto(f"{base}nodered/dashboard/pipeline")
    page.get_by_text("End-to-end latency").wait_for(timeout=60_000)  # the chart's card, sent over socket.io
    page.wait_for_selector("canvas", timeout=30_000)
    drawn = "() => document.querySelector('canvas').toDataURL()"
    empty = poll("the chart at rest", lambda: _settled(page, drawn), timeout_s=30)
    # an image through the pipeline reaches the open page over the proxied socket and is drawn
    sent = upload.push(hub_lab, generate_pool(1, seed=78), progress=False, prefix=f"dash-{uuid.uuid4().hex[:6]}/")
    upload.wait_for(hub_lab, sent["key"], timeout_s=90)
    poll("the image's point on the chart", lambda: page.evaluate(drawn) != empty, timeout_s=30)
    _shot(page, "dashboard")
    # the page's icon is fetched under the prefix (ui-base's appIcon), not at the server's root
    icon = page.evaluate("() => document.querySelector('link[rel=\"icon\"]').href")
    assert icon.startswith(f"{base}nodered/dashboard/"), icon
    assert page.request.get(icon).ok, icon
    assert errors == []


def test_mailpit_through_the_proxy_shows_the_pipelines_alert(alert_subject: str, browser_page) -> None:
    page, base, errors = browser_page
    page.goto(f"{base}mailpit/")
    page.get_by_text(alert_subject).first.wait_for(timeout=30_000)
    _shot(page, "mailpit")
    assert errors == []
