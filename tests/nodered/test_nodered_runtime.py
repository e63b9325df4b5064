"""Node-RED runtime assets: admin API auth, deploy, installed nodes, body limit, settings checks."""

from __future__ import annotations

import os
import subprocess
import time

import httpx
import pytest
from nodered_flows import dashboard_flow, smoke_flow, steps_flow
from nodered_support import SETTINGS, NodeRedEndpoint

from labkit.errors import LabConfigError
from labkit.stack.clients.nodered import NodeRedAdmin, NodeRedError
from labkit.stack.services.nodered import MAX_BODY_BYTES


def token_request(base_url: str, username: str, password: str) -> httpx.Response:
    return httpx.post(base_url + "/auth/token", data={
        "client_id": "node-red-admin", "grant_type": "password", "scope": "*",
        "username": username, "password": password,
    }, timeout=10)


# ------------------------------------------------------------------ admin
def test_wrong_password_is_refused(nodered: NodeRedEndpoint) -> None:
    assert token_request(nodered.base_url, nodered.username, nodered.password + "x").status_code in (401, 403)
    assert token_request(nodered.base_url, "intruder", nodered.password).status_code in (401, 403)
    wrong = "not-the-password-" + nodered.password[:4]
    client = NodeRedAdmin(nodered.base_url, nodered.username, wrong)
    with pytest.raises(NodeRedError) as info:
        client.flows()
    client.close()
    assert info.value.status in (401, 403)
    assert wrong not in str(info.value) and wrong not in repr(client)


def test_admin_api_needs_a_token(nodered: NodeRedEndpoint) -> None:
    assert httpx.get(nodered.base_url + "/flows", timeout=10).status_code == 401
    assert httpx.get(nodered.base_url + "/nodes", headers={"Accept": "application/json"},
                     timeout=10).status_code == 401
    bogus = {"Authorization": "Bearer not-a-real-token"}
    assert httpx.get(nodered.base_url + "/flows", headers=bogus, timeout=10).status_code == 401
    assert token_request(nodered.base_url, nodered.username, nodered.password).status_code == 200


def test_deploy_and_call_http_endpoint(nodered: NodeRedEndpoint, admin: NodeRedAdmin) -> None:
    flow = smoke_flow()
    rev = admin.deploy(flow)
    assert rev
    deployed = {n["id"]: n for n in admin.flows()}
    assert {n["id"] for n in flow} <= deployed.keys()
    # http-in endpoints need no credentials
    response = httpx.get(nodered.base_url + "/smoke", params={"name": "lab"}, timeout=10)
    assert response.status_code == 200, response.text
    assert response.json() == {"answer": 42, "query": {"name": "lab"}, "from": "labkit-smoke"}
    # a deploy based on the current rev is accepted, one based on a stale rev refused (409)
    changed = [dict(n, label="smoke v2") if n["type"] == "tab" else n for n in flow]
    rev2 = admin.deploy(changed, rev=rev)
    assert rev2 != rev
    with pytest.raises(NodeRedError) as info:
        admin.deploy(flow, rev=rev)
    assert info.value.status == 409
    assert admin.deploy(flow, deployment_type="reload")


def test_settings_as_seen_by_the_editor(admin: NodeRedAdmin) -> None:
    s = admin.settings()
    assert s["httpNodeRoot"] == "/"
    assert s["version"].startswith("4.1.")
    assert s["user"]["permissions"] == "*"
    with pytest.raises(LabConfigError, match="deployment_type"):
        admin.deploy([], deployment_type="everything")


def test_installed_nodes_are_discovered(admin: NodeRedAdmin) -> None:
    node_sets = admin.nodes()
    by_type = {t: ns for ns in node_sets for t in ns.get("types", [])}
    for node_type, module in [
        ("labkit-kafka-in", "node-red-contrib-labkit-kafka"),
        ("labkit-kafka-out", "node-red-contrib-labkit-kafka"),
        ("labkit-kafka-broker", "node-red-contrib-labkit-kafka"),
        ("ui-chart", "@flowfuse/node-red-dashboard"),
        ("ui-base", "@flowfuse/node-red-dashboard"),
        ("e-mail", "node-red-node-email"),
    ]:
        assert node_type in by_type, f"{node_type} not installed; have {sorted(by_type)}"
        assert by_type[node_type]["module"] == module
        assert by_type[node_type]["enabled"] is True
        assert not by_type[node_type].get("err"), by_type[node_type].get("err")
    assert by_type["labkit-kafka-in"]["version"] == "1.0.0"


def test_function_nodes_get_the_pipeline_steps(nodered: NodeRedEndpoint, admin: NodeRedAdmin) -> None:
    # settings.js hands the flow's module (nodes/labkit-pipeline-steps, installed beside Node-RED) and
    # minio to function nodes as global.get("steps") and global.get("minio")
    admin.deploy(steps_flow())
    answer = httpx.get(nodered.base_url + "/smoke/steps", timeout=10)
    assert answer.status_code == 200, answer.text
    body = answer.json()
    assert {"parseEvent", "classifyInvoke", "join", "metricsLine", "nextAttempt", "s3client"} <= set(body["steps"])
    assert body["ok"] is True and body["minio"] == "object"


def test_dashboard_is_served_at_dashboard(nodered: NodeRedEndpoint, admin: NodeRedAdmin) -> None:
    admin.deploy(dashboard_flow())
    page = httpx.get(nodered.base_url + "/dashboard/pipeline", timeout=10)  # no credentials needed
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    setup = httpx.get(nodered.base_url + "/dashboard/_setup", timeout=10)
    assert setup.status_code == 200
    assert setup.json()["socketio"]["path"] == "/dashboard/socket.io"


# --------------------------------------------------------------- body size
def test_oversized_body_is_rejected_with_413(nodered: NodeRedEndpoint, admin: NodeRedAdmin) -> None:
    admin.deploy(smoke_flow())
    url = nodered.base_url + "/smoke/upload"
    with httpx.Client(timeout=30) as client:
        small = client.post(url, content=b"x" * 1024 * 1024, headers={"Content-Type": "application/octet-stream"})
        assert small.status_code == 200 and small.json() == {"bytes": 1024 * 1024}
        big = client.post(url, content=b"x" * (MAX_BODY_BYTES + 1), headers={"Content-Type": "application/octet-stream"})
        assert big.status_code == 413
        big_json = client.post(url, content=b'{"a":"' + b"y" * 6 * 1024 * 1024 + b'"}',
                               headers={"Content-Type": "application/json"})
        assert big_json.status_code == 413
        # the connection is still usable afterwards
        again = client.post(url, json={"ok": True})
        assert again.status_code == 200 and again.json() == {"bytes": len('{"ok":true}')}

        def chunks():
            yield b"abc"
            yield b"def"

        chunked = client.post(url, content=chunks(), headers={"Content-Type": "text/plain"})
        assert chunked.status_code == 411


# ------------------------------------------------------ settings.js refusal
@pytest.mark.parametrize("missing", ["LABKIT_NODERED_PASSWORD", "LABKIT_NODERED_USER"])
def test_settings_refuse_to_start_without_credentials(red_js, tmp_path, missing: str) -> None:
    password = "pw-that-must-not-leak-0xC0FFEE"
    env = {k: v for k, v in os.environ.items() if not k.startswith("LABKIT_NODERED_")}
    env.update({"LABKIT_NODERED_USER": "someone", "LABKIT_NODERED_PASSWORD": password})
    del env[missing]
    started = time.monotonic()
    proc = subprocess.run(
        ["node", str(red_js), "--userDir", str(tmp_path), "--settings", str(SETTINGS),
         "--port", "0"],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=60,
    )
    output = proc.stdout + proc.stderr
    assert proc.returncode != 0, output
    assert missing in output
    assert password not in output
    assert time.monotonic() - started < 30
    assert not (tmp_path / "flows.json").exists()
