"""Take a picture of the pipeline flow in the Node-RED editor, in headless Chromium.

    .venv/bin/python stack/nodered/screenshot.py                  # -> docs/img/flow.png
    .venv/bin/python stack/nodered/screenshot.py --out /tmp/flow.png
    .venv/bin/python stack/nodered/screenshot.py --url http://127.0.0.1:1880   # a running lab's editor

By default it starts a Node-RED of its own: the runtime that `labkit install` built into the
cache (`$LABKIT_CACHE_DIR`, default ~/.cache/labkit), with stack/nodered/settings.js, a
throw-away user dir holding stack/nodered/flows.json, a free port and a one-off password. No
other service is needed: the picture is of the flow file as it is in the repository. Node
statuses are hidden (without Kafka the consumer would show its reconnects). The Node-RED it
started is stopped again, whatever happens.

With ``--url`` it logs into that editor instead, as the lab's Node-RED user, with the
password from the lab's secrets file (``--secrets``, default ``$LABKIT_DATA_DIR/secrets.json``);
the flow must be deployed there (``labkit.pipeline.stand_up``). The password is never printed.

Needs Python's playwright and Chromium (Debian: ``apt-get install chromium``).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import secrets
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

from labkit.stack.services.nodered import MAX_BODY_BYTES  # settings.js requires the body limit labkit sets

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
FLOWS = HERE / "flows.json"
SETTINGS = HERE / "settings.js"
TAB = "pl_tab"
USER = "screenshot"
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage"]
VIEWPORT = {"width": 2000, "height": 1300}
MARGIN = 20  # px of canvas kept around the flow's groups


def installed_runtime(cache: Path) -> Path:
    """The newest complete Node-RED install in labkit's cache (its ``node_modules/node-red/red.js``)."""
    found = [p for p in cache.glob("nodered-*/node_modules/node-red/red.js")
             if not p.parents[2].name.endswith(".partial")]
    if not found:
        sys.exit(f"No Node-RED install under {cache}. Fix: run `.venv/bin/labkit install` first.")
    return max(found, key=lambda p: p.stat().st_mtime)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_ready(url: str, proc: subprocess.Popen, log: Path, timeout_s: float = 60.0) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            sys.exit(f"Node-RED exited with {proc.returncode}; its log: {log}")
        with contextlib.suppress(urllib.error.URLError, OSError), \
                urllib.request.urlopen(url + "/auth/login", timeout=2) as answer:
            if answer.status == 200:
                return
        time.sleep(0.3)
    sys.exit(f"Node-RED did not answer at {url} within {timeout_s:.0f} s; its log: {log}")


@contextlib.contextmanager
def private_nodered(cache: Path) -> Iterator[tuple[str, str, str]]:
    """A Node-RED of our own with the repository's flow; yields (url, user, password)."""
    red = installed_runtime(cache)
    password = secrets.token_urlsafe(18)
    port = free_port()
    with tempfile.TemporaryDirectory(prefix="flow-screenshot-") as tmp:
        user_dir = Path(tmp)
        shutil.copyfile(FLOWS, user_dir / "flows.json")
        log = user_dir / "nodered.log"
        env = {**os.environ, "LABKIT_NODERED_USER": USER, "LABKIT_NODERED_PASSWORD": password,
               "LABKIT_NODERED_HOST": "127.0.0.1", "LABKIT_NODERED_MAX_BODY_BYTES": str(MAX_BODY_BYTES),
               "NODE_PATH": str(red.parents[2])}
        with log.open("w") as out:
            proc = subprocess.Popen(["node", str(red), "--userDir", str(user_dir), "--settings", str(SETTINGS),
                                     "--port", str(port)], cwd=user_dir, env=env, stdout=out,
                                    stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        try:
            url = f"http://127.0.0.1:{port}"
            wait_ready(url, proc, log)
            yield url, USER, password
        finally:
            proc.terminate()
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def lab_login(secrets_file: Path) -> tuple[str, str]:
    """The lab's Node-RED user and password, from its secrets file."""
    try:
        data = json.loads(secrets_file.read_text())
        return data["nodered_user"], data["nodered_password"]
    except (OSError, ValueError, KeyError) as err:
        sys.exit(f"Cannot read the Node-RED login from {secrets_file} ({type(err).__name__}). "
                 "Fix: pass --secrets, or run `labkit up` once so that the lab has its secrets.")


def shoot(url: str, user: str, password: str, out: Path, hide_status: bool) -> None:
    """Log into the editor at ``url``, show the pipeline tab alone, and save its picture."""
    from playwright.sync_api import sync_playwright

    chromium = shutil.which("chromium") or "/usr/bin/chromium"
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chromium, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport=VIEWPORT, device_scale_factor=1)
            page.goto(url + "/")
            page.fill("#node-dialog-login-username", user)
            page.fill("#node-dialog-login-password", password)
            page.click("#node-dialog-login-submit")
            page.wait_for_function("(tab) => window.RED && RED.nodes && RED.nodes.workspace(tab)", arg=TAB,
                                   timeout=60_000)
            page.evaluate("""([tab, hideStatus]) => {
                RED.workspaces.show(tab);
                RED.menu.setSelected("menu-item-sidebar", false);
                RED.menu.setSelected("menu-item-palette", false);
                if (hideStatus) { RED.actions.invoke("core:toggle-status", false); }
                RED.view.select({nodes: []});
            }""", [TAB, hide_status])
            page.wait_for_selector("#red-ui-workspace-chart .red-ui-flow-group", timeout=30_000)
            page.wait_for_timeout(1000)  # let the groups take their size around the nodes
            box = page.evaluate("""(tab) => {
                const groups = RED.nodes.groups(tab);
                const chart = document.getElementById("red-ui-workspace-chart");
                chart.scrollTo(0, 0);
                const r = chart.getBoundingClientRect();
                const scale = RED.view.scale();
                return {left: r.left, top: r.top,
                        right: Math.max(...groups.map(g => g.x + g.w)) * scale,
                        bottom: Math.max(...groups.map(g => g.y + g.h)) * scale,
                        x0: Math.min(...groups.map(g => g.x)) * scale,
                        y0: Math.min(...groups.map(g => g.y)) * scale};
            }""", TAB)
            x0, y0 = max(box["x0"] - MARGIN, 0), max(box["y0"] - MARGIN, 0)
            clip = {"x": box["left"] + x0, "y": box["top"] + y0,
                    "width": box["right"] + MARGIN - x0, "height": box["bottom"] + MARGIN - y0}
            out.parent.mkdir(parents=True, exist_ok=True)
            page.screenshot(path=str(out), clip=clip)
        finally:
            browser.close()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=REPO / "docs" / "img" / "flow.png", help="the PNG to write")
    parser.add_argument("--url", help="a running Node-RED's editor (default: start one of our own)")
    data_dir = Path(os.environ.get("LABKIT_DATA_DIR", Path.home() / ".local" / "share" / "labkit"))
    parser.add_argument("--secrets", type=Path, default=data_dir / "secrets.json",
                        help="the lab's secrets file, for --url")
    cache = Path(os.environ.get("LABKIT_CACHE_DIR", Path.home() / ".cache" / "labkit"))
    parser.add_argument("--cache", type=Path, default=cache, help="labkit's install cache (for our own Node-RED)")
    args = parser.parse_args(argv)
    if args.url:
        user, password = lab_login(args.secrets)
        shoot(args.url.rstrip("/"), user, password, args.out, hide_status=False)
    else:
        with private_nodered(args.cache) as (url, user, password):
            shoot(url, user, password, args.out, hide_status=True)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
