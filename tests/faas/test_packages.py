"""Packages on the runner: create, get, list, delete, and the default parameters their actions
inherit (package < action < invocation), with OpenWhisk's statuses and messages."""

from __future__ import annotations

import textwrap
import uuid
from pathlib import Path
from typing import Any

import httpx

ECHO = textwrap.dedent("""
    import os

    def main(args):
        return {"args": args, "name": os.environ["__OW_ACTION_NAME"], "namespace": os.environ["__OW_NAMESPACE"]}
""")


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


def api(runner: Any, method: str, path: str, **kwargs: Any) -> httpx.Response:
    return httpx.request(method, f"{runner.base_url}/api/v1/namespaces/_/{path}",
                         auth=tuple(runner.auth.split(":")), timeout=60, **kwargs)


def kv(**values: Any) -> list[dict[str, Any]]:
    return [{"key": k, "value": v} for k, v in values.items()]


def test_package_create_get_list_update_delete(runner: Any) -> None:
    name = unique("pkg")
    created = api(runner, "PUT", f"packages/{name}", json={"parameters": kv(region="eu")})
    assert created.status_code == 200, created.text
    body = created.json()
    assert (body["namespace"], body["name"], body["version"], body["binding"]) == ("guest", name, "0.0.1", {})
    assert api(runner, "PUT", f"packages/{name}", json={}).status_code == 409
    updated = api(runner, "PUT", f"packages/{name}", params={"overwrite": "true"}, json={"publish": True}).json()
    assert updated["version"] == "0.0.2" and updated["parameters"] == kv(region="eu")

    listed = {p["name"]: p for p in api(runner, "GET", "packages", params={"limit": 200}).json()}
    assert listed[name]["binding"] is False
    assert api(runner, "GET", "packages", params={"count": "true"}).json() == {"packages": len(listed)}
    fetched = api(runner, "GET", f"packages/{name}").json()
    assert fetched["actions"] == [] and fetched["feeds"] == []

    assert api(runner, "DELETE", f"packages/{name}").json()["name"] == name
    gone = api(runner, "GET", f"packages/{name}")
    assert gone.status_code == 404 and gone.json()["error"] == "The requested resource does not exist."


def test_actions_in_a_package_inherit_its_parameters(runner: Any) -> None:
    pkg, action = unique("creds"), unique("echo")
    api(runner, "PUT", f"packages/{pkg}", json={"parameters": kv(user="lab", secret="s3cret", region="eu")})
    put = api(runner, "PUT", f"actions/{pkg}/{action}",
              json={"exec": {"kind": "python:3.11", "code": ECHO}, "parameters": kv(region="us")})
    assert put.status_code == 200 and put.json()["namespace"] == f"guest/{pkg}"

    record = api(runner, "POST", f"actions/{pkg}/{action}", params={"blocking": "true"},
                 json={"user": "caller"}).json()
    result = record["response"]["result"]
    assert result["args"] == {"user": "caller", "secret": "s3cret", "region": "us"}
    assert result["name"] == f"/guest/{pkg}/{action}" and result["namespace"] == "guest"
    assert record["namespace"] == "guest" and record["name"] == action
    assert {"key": "path", "value": f"guest/{pkg}/{action}"} in record["annotations"]

    by_path = api(runner, "GET", "activations", params={"name": f"{pkg}/{action}"}).json()
    assert [a["activationId"] for a in by_path] == [record["activationId"]]
    assert api(runner, "GET", "activations", params={"name": action}).json() == []  # not the packaged one

    shown = api(runner, "GET", f"actions/{pkg}/{action}").json()
    assert {p["key"]: p["value"] for p in shown["parameters"]} == {"user": "lab", "secret": "s3cret", "region": "us"}
    listed = api(runner, "GET", "actions", params={"limit": 200}).json()
    assert any(a["namespace"] == f"guest/{pkg}" and a["name"] == action for a in listed)
    contents = api(runner, "GET", f"packages/{pkg}").json()["actions"]
    assert [a["name"] for a in contents] == [action]

    # the package's parameters change: the next call sees them, without redeploying the action
    api(runner, "PUT", f"packages/{pkg}", params={"overwrite": "true"}, json={"parameters": kv(secret="rotated")})
    again = api(runner, "POST", f"actions/{pkg}/{action}", params={"blocking": "true", "result": "true"}, json={})
    assert again.json()["args"] == {"secret": "rotated", "region": "us"}


def test_a_package_with_actions_is_deleted_only_by_force(runner: Any) -> None:
    pkg, action = unique("full"), unique("inside")
    api(runner, "PUT", f"packages/{pkg}", json={})
    api(runner, "PUT", f"actions/{pkg}/{action}", json={"exec": {"kind": "python:3.11", "code": ECHO}})
    refused = api(runner, "DELETE", f"packages/{pkg}")
    assert refused.status_code == 409
    assert refused.json()["error"] == ("Package not empty (contains 1 entity). "
                                       "Set force param or delete package contents.")
    assert api(runner, "DELETE", f"packages/{pkg}", params={"force": "true"}).status_code == 200
    assert api(runner, "GET", f"actions/{pkg}/{action}").status_code == 404


def test_an_action_in_a_missing_package_is_404(runner: Any) -> None:
    missing = api(runner, "PUT", f"actions/{unique('nopkg')}/x", json={"exec": {"kind": "python:3.11", "code": ECHO}})
    assert missing.status_code == 404


def test_packages_and_their_actions_survive_a_restart(tmp_path: Path, runner_factory: Any) -> None:
    data = tmp_path / "data"
    first = runner_factory.start(data)
    api(first, "PUT", "packages/kept", json={"parameters": kv(bound=1)})
    api(first, "PUT", "actions/kept/echo", json={"exec": {"kind": "python:3.11", "code": ECHO}})
    runner_factory.stop(first)
    second = runner_factory.start(data, auth=first.auth)
    result = api(second, "POST", "actions/kept/echo", params={"blocking": "true", "result": "true"}, json={})
    assert result.json()["args"] == {"bound": 1}
    runner_factory.stop(second)
