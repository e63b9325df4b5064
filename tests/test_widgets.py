"""The control panel: rendered by a real JupyterLab in a real (headless) Chromium, driven by clicks.

One test, on purpose: it starts ``jupyter lab`` on a free port with a random token, opens a
small notebook that makes the panel for the session's lab, runs it, and checks that the
"inject" and "clear" buttons really add and remove the toxic on the hop's proxy. Screenshots
go to the test's tmp dir. Jupyter, its kernel and the browser are stopped at the end.
"""

from __future__ import annotations

import functools
import json
import os
import secrets
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import nbformat
import pytest

from labkit.experiments.faults import Fault, FaultInjector
from labkit.stack.lab import Lab
from labkit.teaching.widgets import TextPanel, control_panel, fault_lines
from tests import support
from tests.conftest import lab_processes

# a browser and a kernel are slower to answer than the services
poll = functools.partial(support.poll, timeout_s=30.0, interval_s=0.25)

pytestmark = pytest.mark.stack

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--no-first-run"]
HOP = "nodered-faas"
# The open notebook's kernel is connected and idle (cells run before that are dropped).
KERNEL_IDLE = """(() => {
  const w = window.jupyterapp.shell.currentWidget;
  const k = w && w.sessionContext && w.sessionContext.session && w.sessionContext.session.kernel;
  return Boolean(k && k.status === 'idle' && k.connectionStatus === 'connected');
})()"""



def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def panel_notebook(lab: Lab, marker: Path) -> nbformat.NotebookNode:
    """The notebook the browser runs: the panel for the session's lab, with load callables
    that leave a marker file (so the test can see the load buttons call them)."""
    nb = nbformat.v4.new_notebook(metadata={"kernelspec": {"name": "python3", "display_name": "Python 3",
                                                           "language": "python"}})
    nb.cells = [nbformat.v4.new_code_cell(
        "from pathlib import Path\n"
        "from labkit.stack.lab import Lab\n"
        "from labkit.teaching.widgets import control_panel\n"
        f"lab = Lab.from_env(data_dir={str(lab.ctx.config.data_dir)!r}, port_offset={lab.ctx.config.port_offset})\n"
        f"marker = Path({str(marker)!r})\n"
        "panel = control_panel(lab, load_start=lambda: marker.write_text('started'),\n"
        "                      load_stop=lambda: marker.write_text('stopped'))\n"
        "panel")]
    return nb


@pytest.fixture()
def jupyter(tmp_path: Path) -> Iterator[tuple[str, str, Path]]:
    """``jupyter lab`` from the venv on a free port, its state kept in ``tmp_path``; yields
    (base url, token, root dir); stopped at the end, kernels included."""
    root, state = tmp_path / "root", tmp_path / "jupyter"
    root.mkdir()
    token, port = secrets.token_hex(16), free_port()
    env = {**os.environ, "JUPYTER_CONFIG_DIR": str(state / "config"), "JUPYTER_RUNTIME_DIR": str(state / "runtime"),
           "JUPYTERLAB_SETTINGS_DIR": str(state / "settings"), "JUPYTERLAB_WORKSPACES_DIR": str(state / "workspaces")}
    cmd = [sys.executable, "-m", "jupyterlab", "--no-browser", f"--IdentityProvider.token={token}",
           "--ServerApp.ip=127.0.0.1", f"--port={port}", "--ServerApp.port_retries=0",
           f"--ServerApp.root_dir={root}", "--LabApp.expose_app_in_browser=True", "--LabApp.news_url=None",
           "--LabApp.extension_manager=readonly", *(["--allow-root"] if os.geteuid() == 0 else [])]
    # Start the notebook's kernel without asking, and do not ask about Jupyter's news feed.
    settings = {"notebook-extension/tracker": {"autoStartDefaultKernel": True},
                "apputils-extension/notification": {"fetchNews": "false", "checkForUpdates": False}}
    for name, values in settings.items():
        path = state / "settings" / "@jupyterlab" / f"{name}.jupyterlab-settings"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(values))
    log = (tmp_path / "jupyter.log").open("wb")
    server = subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    base = f"http://127.0.0.1:{port}"
    try:
        def up() -> bool:
            if server.poll() is not None:
                pytest.fail(f"jupyter lab exited with {server.returncode}; see {tmp_path / 'jupyter.log'}")
            try:
                return httpx.get(f"{base}/api/status", params={"token": token}, timeout=2).status_code == 200
            except httpx.HTTPError:
                return False

        poll("jupyter lab's /api/status", up, timeout_s=60, interval_s=0.5)
        yield base, token, root
    finally:
        try:
            httpx.post(f"{base}/api/shutdown", params={"token": token}, timeout=10)  # kernels too
            server.wait(timeout=20)
        except (httpx.HTTPError, subprocess.TimeoutExpired):
            server.terminate()
            try:
                server.wait(timeout=10)
            except subprocess.TimeoutExpired:
                server.kill()
                server.wait()
        log.close()
        poll("jupyter's kernels to exit", lambda: not lab_processes(state), timeout_s=20)


def accept_kernel_dialog(page) -> None:
    """Should JupyterLab still ask which kernel to start, take the one it proposes."""
    select = page.locator(".jp-Dialog button:has-text('Select')")
    try:
        select.wait_for(timeout=3_000)
    except Exception:  # noqa: BLE001 - no dialog: the kernel started by itself
        return
    select.click()


def test_text_panel_without_a_frontend(lab: Lab):
    panel = control_panel(lab)  # pytest has no kernel: text
    assert isinstance(panel, TextPanel)
    text = repr(panel)
    assert all(name in text for name in lab.endpoints) and "active faults: none" in text


def test_panel_renders_in_jupyterlab_and_its_buttons_inject_and_clear(lab: Lab, jupyter, tmp_path: Path):
    from playwright.sync_api import sync_playwright

    base, token, root = jupyter
    marker = tmp_path / "load-marker"
    nbformat.write(panel_notebook(lab, marker), root / "panel.ipynb")
    shots = tmp_path / "screenshots"
    shots.mkdir()
    toxiproxy = lab.toxiproxy()
    try:
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
            page = browser.new_page(viewport={"width": 1280, "height": 1000})
            page.set_default_timeout(30_000)
            try:
                page.goto(f"{base}/lab/tree/panel.ipynb?token={token}")
                page.wait_for_function("window.jupyterapp && document.querySelector('.jp-Notebook')", timeout=60_000)
                page.wait_for_function(KERNEL_IDLE, timeout=60_000)
                # not awaited: the command's promise settles only when every cell has run
                page.evaluate("() => { window.jupyterapp.commands.execute('notebook:run-all-cells'); }")
                accept_kernel_dialog(page)
                page.wait_for_function("document.querySelectorAll('.labkit-light').length === 7", timeout=90_000)
                page.wait_for_selector('.labkit-light[data-service="kafka"][data-state="up"]', timeout=30_000)
                page.screenshot(path=shots / "1-rendered.png", full_page=True)

                page.select_option(".labkit-kind select", "latency")
                page.select_option(".labkit-target select", HOP)
                readout = page.locator(".labkit-latency .widget-readout")
                readout.click()
                page.keyboard.press("Control+A")
                page.keyboard.type("500")
                page.keyboard.press("Enter")
                page.wait_for_function(
                    "document.querySelector('.labkit-latency .widget-readout').textContent.trim() === '500'")
                page.locator("button.labkit-inject").click()
                toxic = poll("the latency toxic on the hop", lambda: [
                    t for t in toxiproxy.toxics(HOP) if t["name"].startswith("labkit-latency")], timeout_s=20)
                assert toxic[0]["attributes"]["latency"] == 500
                page.wait_for_selector(".labkit-active-faults li:has-text('latency@nodered-faas latency_ms=500')",
                                       timeout=15_000)
                page.screenshot(path=shots / "2-injected.png", full_page=True)

                page.locator("button.labkit-clear").click()
                poll("the toxic to be removed", lambda: not toxiproxy.toxics(HOP), timeout_s=20)
                page.wait_for_selector(".labkit-active-faults li:has-text('none')", timeout=15_000)

                # the lights follow the services: a paused one turns amber within a refresh or two
                injector = FaultInjector(lab)
                injector.inject(Fault("pause", "mail"))
                page.wait_for_selector('.labkit-light[data-service="mail"][data-state="paused"]', timeout=15_000)
                page.screenshot(path=shots / "3-paused.png", full_page=True)
                injector.clear(Fault("pause", "mail"))
                page.wait_for_selector('.labkit-light[data-service="mail"][data-state="up"]', timeout=15_000)

                page.locator("button.labkit-start-load").click()
                poll("the load_start callable", lambda: marker.exists() and marker.read_text() == "started", timeout_s=15)
                page.screenshot(path=shots / "4-cleared.png", full_page=True)
            except Exception:
                page.screenshot(path=shots / "failed.png", full_page=True)
                raise
            finally:
                browser.close()
    finally:
        FaultInjector(lab).clear_all()
    assert fault_lines(FaultInjector(lab).active()) == []
