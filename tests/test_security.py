"""Security properties of the running native stack, checked on the real processes."""

from __future__ import annotations

import os
import stat
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
    assert httpx.get(f"{base}/api/v1/namespaces/_/actions", verify=lab.verify).status_code == 401
    user = lab.ctx.secrets.faas_auth.get_secret_value().split(":")[0]
    assert httpx.get(f"{base}/api/v1/namespaces/_/actions", auth=(user, "x" * 64),
                     verify=lab.verify).status_code == 401


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


def test_the_data_dir_is_private_after_a_run(pipe):
    """Objects, metrics, logs, the mail database, Kafka's segments, run files, the TLS key: after
    images went through the pipeline, nothing in the data dir is open to group or others."""
    from labkit.pipeline.verify import verify

    verify(pipe)
    data_dir = pipe.ctx.config.data_dir
    assert stat.S_IMODE(data_dir.stat().st_mode) == 0o700
    loose, seen = [], set()
    for root, dirs, files in os.walk(data_dir):
        for name in dirs + files:
            path = Path(root) / name
            mode = path.lstat().st_mode
            if not stat.S_ISLNK(mode) and stat.S_IMODE(mode) & 0o077:
                loose.append(f"{path.relative_to(data_dir)} {oct(stat.S_IMODE(mode))}")
            seen.add(path.relative_to(data_dir).parts[0])
    assert loose == []
    # the walk saw what each service writes
    assert {"s3", "iam", "metrics", "logs", "run", "mail", "kafka", "nodered", "faas", "tls", "secrets.json"} <= seen
    assert any((data_dir / "s3" / "dit247").rglob("*.*")) and (data_dir / "mail" / "mailpit.db").is_file()


def test_services_get_a_private_umask(lab):
    """What a service creates later is private too: its processes run with umask 077."""
    for proc in lab_processes(lab.ctx.config.data_dir):
        status = Path(f"/proc/{proc.pid}/status").read_text()
        umask = next(line.split()[1] for line in status.splitlines() if line.startswith("Umask:"))
        assert int(umask, 8) == 0o077, (proc.name(), umask)
