"""Install and run a real Node-RED for the tests in this folder (used by conftest.py).

Install: ``stack/nodered/{package.json,package-lock.json,nodes/}`` is copied into
``$LABKIT_NODERED_TEST_CACHE/nodered`` (default ``/tmp/labkit-nodered-test-cache``)
and ``npm ci`` runs there, exactly as labkit does it. The install is reused while
the hash of those inputs is unchanged, so only the first run pays for npm.

Run: ``node <cache>/nodered/node_modules/node-red/red.js --userDir <tmp>
--settings stack/nodered/settings.js --port <free port>`` with cwd = userDir and
freshly generated credentials.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import os
import secrets
import shutil
import signal
import socket
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest

from labkit.nodered import NodeRedAdmin

REPO = Path(__file__).resolve().parents[2]
STACK = REPO / "stack" / "nodered"
SETTINGS = STACK / "settings.js"
INSTALL_INPUTS = ("package.json", "package-lock.json", "nodes")
STAMP = ".labkit-install-hash"
DEFAULT_KAFKA = "127.0.0.1:29092"


# ------------------------------------------------------------------ helpers
def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def install_hash() -> str:
    h = hashlib.sha256()
    for name in INSTALL_INPUTS:
        root = STACK / name
        files = [root] if root.is_file() else sorted(p for p in root.rglob("*") if p.is_file() and "node_modules" not in p.parts)
        for f in files:
            h.update(str(f.relative_to(STACK)).encode())
            h.update(b"\0")
            h.update(f.read_bytes())
            h.update(b"\0")
    return h.hexdigest()


def install_nodered(cache: Path) -> tuple[Path, float | None]:
    """Install into ``cache/nodered`` unless an identical install is there.

    Returns the install dir and the ``npm ci`` duration (None when reused).
    """
    cache.mkdir(parents=True, exist_ok=True)
    target = cache / "nodered"
    wanted = install_hash()
    with open(cache / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # serialise concurrent test runs
        stamp = target / STAMP
        if stamp.is_file() and stamp.read_text() == wanted and (target / "node_modules/node-red/red.js").is_file():
            return target, None
        staging = cache / f"nodered.staging-{os.getpid()}"
        shutil.rmtree(staging, ignore_errors=True)
        staging.mkdir()
        for name in INSTALL_INPUTS:
            src = STACK / name
            if src.is_dir():
                shutil.copytree(src, staging / name, ignore=shutil.ignore_patterns("node_modules"))
            else:
                shutil.copy2(src, staging / name)
        log = cache / "npm-ci.log"
        started = time.monotonic()
        with open(log, "wb") as out:
            proc = subprocess.run(
                ["npm", "ci", "--omit=dev", "--no-audit", "--no-fund"],
                cwd=staging, stdout=out, stderr=subprocess.STDOUT, timeout=600,
            )
        elapsed = time.monotonic() - started
        if proc.returncode != 0:
            tail = log.read_text(errors="replace")[-3000:]
            shutil.rmtree(staging, ignore_errors=True)
            pytest.fail(f"npm ci failed with exit code {proc.returncode}; log {log}:\n{tail}")
        (staging / STAMP).write_text(wanted)
        shutil.rmtree(target, ignore_errors=True)
        staging.rename(target)  # node_modules' link to nodes/ is relative: survives the move
        return target, elapsed


@dataclass
class NodeRedProcess:
    base_url: str
    username: str
    password: str
    user_dir: Path
    log_path: Path
    proc: subprocess.Popen
    env: dict[str, str] = field(repr=False, default_factory=dict)

    def log_tail(self, chars: int = 4000) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-chars:]
        except OSError:
            return "<no log>"

    def admin(self) -> NodeRedAdmin:
        return NodeRedAdmin(self.base_url, self.username, self.password)


def red_js(install_dir: Path) -> Path:
    return install_dir / "node_modules" / "node-red" / "red.js"


def start_nodered(install_dir: Path, user_dir: Path, extra_env: dict[str, str] | None = None,
                  ready_timeout_s: float = 60.0) -> NodeRedProcess:
    port = free_port()
    user_dir.mkdir(parents=True, exist_ok=True)
    username = "labkit-test"
    password = secrets.token_urlsafe(18)
    env = {
        **os.environ,
        "LABKIT_NODERED_USER": username,
        "LABKIT_NODERED_PASSWORD": password,
        "LABKIT_NODERED_CREDENTIAL_SECRET": secrets.token_urlsafe(24),
        "LABKIT_NODERED_HOST": "127.0.0.1",
        **(extra_env or {}),
    }
    log_path = user_dir / "nodered.log"
    with open(log_path, "wb") as out:
        proc = subprocess.Popen(
            ["node", str(red_js(install_dir)), "--userDir", str(user_dir),
             "--settings", str(SETTINGS), "--port", str(port)],
            cwd=user_dir, env=env, stdout=out, stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL, start_new_session=True,
        )
    nr = NodeRedProcess(f"http://127.0.0.1:{port}", username, password, user_dir, log_path, proc, env)
    deadline = time.monotonic() + ready_timeout_s
    with httpx.Client(timeout=2.0) as client:
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"Node-RED exited with {proc.returncode} before it was ready:\n{nr.log_tail()}")
            with contextlib.suppress(httpx.HTTPError):
                if client.get(nr.base_url + "/").status_code == 200:
                    return nr
            if time.monotonic() > deadline:
                stop_nodered(nr)
                raise RuntimeError(f"Node-RED not ready after {ready_timeout_s} s:\n{nr.log_tail()}")
            time.sleep(0.2)


def _group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def stop_nodered(nr: NodeRedProcess, timeout_s: float = 20.0) -> None:
    """SIGTERM, wait, SIGKILL if needed; then make sure nothing of its process group is left."""
    pgid = nr.proc.pid  # start_new_session: the process leads its own group
    if nr.proc.poll() is None:
        nr.proc.terminate()
        try:
            nr.proc.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            nr.proc.kill()
            nr.proc.wait(timeout=10)
    deadline = time.monotonic() + 10
    while _group_alive(pgid) and time.monotonic() < deadline:
        time.sleep(0.1)
    if _group_alive(pgid):
        with contextlib.suppress(ProcessLookupError):
            os.killpg(pgid, signal.SIGKILL)
        raise AssertionError(f"processes of Node-RED's group {pgid} survived its shutdown")
