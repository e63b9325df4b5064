"""The conformance suite: the official ``openwhisk`` npm client (pinned in
``tests/faas/conformance/package.json``) against a real runner, under ``node --test``.

The client is installed with ``npm ci`` from the lock file when ``node_modules`` does not hold
the pinned version yet. The zips the suite deploys are built here: a ``__main__.py`` with a
``virtualenv/`` beside it, and the resize action as ``__main__.py``.
"""

from __future__ import annotations

import base64
import json
import os
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest

from tests.faas.test_openwhisk_semantics import RESIZE, venv_zip, zip_b64

SUITE = Path(__file__).resolve().parent / "conformance"
NPM_TIMEOUT_S = 300
SUITE_TIMEOUT_S = 600


def _pinned() -> str:
    return json.loads((SUITE / "package.json").read_text())["dependencies"]["openwhisk"]


def _installed() -> str | None:
    manifest = SUITE / "node_modules" / "openwhisk" / "package.json"
    return json.loads(manifest.read_text())["version"] if manifest.exists() else None


def _install() -> None:
    """``npm ci`` from the lock file, unless the pinned client is already there."""
    if _installed() == _pinned():
        return
    done = subprocess.run(["npm", "ci", "--ignore-scripts", "--no-audit", "--no-fund", "--loglevel=error"],
                          cwd=SUITE, capture_output=True, text=True, timeout=NPM_TIMEOUT_S)
    assert done.returncode == 0, f"npm ci failed in {SUITE}:\n{done.stdout}\n{done.stderr}"


def _fixtures(into: Path) -> Path:
    into.mkdir(parents=True, exist_ok=True)
    (into / "venv-action.zip").write_bytes(base64.b64decode(venv_zip()))
    (into / "resize.zip").write_bytes(base64.b64decode(zip_b64({"__main__.py": RESIZE.read_text()})))
    shutil.copyfile(RESIZE, into / "resize.py")
    return into


def test_the_openwhisk_npm_client_conforms(runner: Any, tmp_path: Path) -> None:
    missing = [tool for tool in ("node", "npm") if shutil.which(tool) is None]
    assert not missing, f"the conformance suite needs {missing} on PATH. Hint: install Node.js 18 or newer."
    _install()
    env = {**os.environ, "OW_APIHOST": runner.base_url, "OW_AUTH": runner.auth,
           "FIXTURES": str(_fixtures(tmp_path / "fixtures"))}
    done = subprocess.run(["node", "--test", "--test-reporter=spec", "conformance.test.js"], cwd=SUITE, env=env,
                          capture_output=True, text=True, timeout=SUITE_TIMEOUT_S)
    assert done.returncode == 0, f"conformance suite failed:\n{done.stdout[-20000:]}\n{done.stderr[-5000:]}"
    passed = re.search(r"^\S+ pass (\d+)$", done.stdout, re.MULTILINE)
    assert passed and int(passed.group(1)) >= 12, f"the suite ran fewer tests than it holds:\n{done.stdout}"
