"""Security properties of the running native stack, checked on the real processes."""

from __future__ import annotations

import subprocess
from pathlib import Path

import httpx
import psutil

from tests.conftest import lab_processes

REPO = Path(__file__).resolve().parent.parent
LOOPBACK = {"127.0.0.1", "::1", "::ffff:127.0.0.1"}


def test_every_listener_binds_loopback(lab):
    listening = []
    for proc in lab_processes(lab.ctx.config.data_dir):
        for conn in proc.net_connections(kind="inet"):
            if conn.status == psutil.CONN_LISTEN:
                listening.append((proc.name(), conn.laddr.ip, conn.laddr.port))
    assert {port for _, _, port in listening} >= set(lab.backend.service("kafka").ports.values())
    assert [entry for entry in listening if entry[1] not in LOOPBACK] == []


def test_nodered_editor_and_admin_api_need_credentials(lab):
    base = lab.endpoints["nodered"]
    assert httpx.get(f"{base}/flows").status_code == 401
    assert httpx.get(f"{base}/settings").status_code == 401
    token = httpx.post(f"{base}/auth/token", data={"client_id": "node-red-admin", "grant_type": "password",
                                                  "scope": "*", "username": "admin", "password": "password"})
    assert token.status_code in (401, 403)  # no shipped default credentials


def test_faas_api_refuses_missing_or_wrong_keys(lab):
    base = lab.endpoints["faas"]
    assert httpx.get(f"{base}/api/v1/namespaces/_/actions").status_code == 401
    user = lab.ctx.secrets.faas_auth.get_secret_value().split(":")[0]
    assert httpx.get(f"{base}/api/v1/namespaces/_/actions", auth=(user, "x" * 64)).status_code == 401


def test_secrets_file_is_private_and_ignored_by_git(lab):
    path = lab.ctx.config.data_dir / "secrets.json"
    assert path.stat().st_mode & 0o777 == 0o600
    for name in ("secrets.json", "compose.env", ".env"):
        ignored = subprocess.run(["git", "check-ignore", "-q", name], cwd=REPO)
        assert ignored.returncode == 0, f"{name} is not git-ignored"


def test_committed_notebooks_carry_no_outputs():
    """Outputs are made by running a notebook, never committed: nothing a run printed can leak."""
    import nbformat

    tracked = subprocess.run(["git", "ls-files", "notebooks"], cwd=REPO, capture_output=True, text=True).stdout
    notebooks = [REPO / n for n in tracked.split() if n.endswith(".ipynb")]
    assert notebooks
    for path in notebooks:
        cells = nbformat.read(path, as_version=4).cells
        assert all(not c.get("outputs") for c in cells if c.cell_type == "code"), path.name
