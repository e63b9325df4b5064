"""End-to-end tests of labkit's OpenWhisk-compatible runner: real process, real HTTP."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import textwrap
import time
import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import psutil
import pytest
from tenacity import Retrying, stop_after_delay, wait_fixed

from labkit.stack.clients.openwhisk import FaasError, OpenWhiskClient

ECHO = textwrap.dedent("""
    import os

    def main(args):
        print("echo", args.get("marker", ""))
        return {
            "args": args,
            "pid": os.getpid(),
            "activation": os.environ["__OW_ACTIVATION_ID"],
            "action": os.environ["__OW_ACTION_NAME"],
            "namespace": os.environ["__OW_NAMESPACE"],
            "deadline": os.environ["__OW_DEADLINE"],
            "api_host": os.environ["__OW_API_HOST"],
            "api_key": os.environ.get("__OW_API_KEY"),
            "sees_runner_env_key": "LABKIT_FAAS_AUTH" in os.environ,
        }
""")

SLEEPER = textwrap.dedent("""
    import os
    import time

    def main(args):
        time.sleep(float(args.get("seconds", 1)))
        return {"pid": os.getpid()}
""")

HOG = textwrap.dedent("""
    import time

    def main(args):
        if args.get("reserve_mb"):
            # One huge reservation: breaks the address-space cap before pages are touched.
            return {"len": len(bytearray(args["reserve_mb"] * 1024 * 1024))}
        hoard = []
        while True:  # touched pages, slowly: resident memory crosses the limit first
            hoard.append(b"x" * (8 * 1024 * 1024))
            time.sleep(0.02)
""")

MISBEHAVING = textwrap.dedent("""
    import os

    def main(args):
        mode = args.get("mode")
        if mode == "error":
            return {"error": "bad input"}
        if mode == "raise":
            raise ValueError("boom")
        if mode == "exit":
            os._exit(3)
        if mode == "list":
            return [1, 2]
        if mode == "string":
            return "not an object"
        return {"ok": True, "pid": os.getpid()}
""")

LOG_LINE = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z (stdout|stderr): ")
ACTIVATION_FIELDS = {
    "activationId", "namespace", "name", "version", "subject", "start", "end",
    "duration", "response", "logs", "annotations",
}


def unique(prefix: str) -> str:
    """A fresh action name, so tests sharing the runner do not collide."""
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


def notes(record: dict[str, Any]) -> dict[str, Any]:
    """An activation's annotations as a dict."""
    return {a["key"]: a["value"] for a in record["annotations"]}


def eventually(predicate: Callable[[], bool], timeout_s: float, what: str) -> None:
    """Poll ``predicate`` until true (bounded) instead of sleeping a guessed time."""
    for attempt in Retrying(stop=stop_after_delay(timeout_s), wait=wait_fixed(0.05), reraise=True):
        with attempt:
            assert predicate(), f"timed out waiting for: {what}"


def invoke_in_parallel(base_url: str, auth: str, name: str, params: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Blocking invokes sent at the same time, one client per thread."""
    def call(p: dict[str, Any]) -> dict[str, Any]:
        with OpenWhiskClient(base_url, auth) as client:
            return client.invoke(name, p)

    with ThreadPoolExecutor(max_workers=len(params)) as pool:
        return list(pool.map(call, params))


# --- service basics -------------------------------------------------------------


def test_ping_and_api_info(runner: Any) -> None:
    assert httpx.get(f"{runner.base_url}/ping").status_code == 200
    info = httpx.get(f"{runner.base_url}/api/v1")
    assert info.status_code == 200
    assert info.json()["api_paths"] == ["/api/v1"]


@pytest.mark.parametrize("auth", [None, "wrong", "user-only"])
def test_unauthenticated_calls_get_401(runner: Any, auth: str | None) -> None:
    uid, key = runner.auth.split(":")
    wrong = key[:-1] + ("y" if key.endswith("x") else "x")  # one character off, never the key itself
    credentials = {None: None, "wrong": (uid, wrong), "user-only": (uid, "")}[auth]
    resp = httpx.get(f"{runner.base_url}/api/v1/namespaces/_/actions", auth=credentials)
    assert resp.status_code == 401
    body = resp.json()
    assert body["error"] == "The supplied authentication is invalid"
    assert body["code"]


def test_client_raises_faas_error_with_status_and_message(runner: Any, ow: OpenWhiskClient) -> None:
    with pytest.raises(FaasError) as missing:
        ow.get_action(unique("missing"))
    assert missing.value.status == 404
    assert missing.value.message == "The requested resource does not exist."
    uid, _ = runner.auth.split(":")
    with OpenWhiskClient(runner.base_url, f"{uid}:{'x' * 64}") as bad, pytest.raises(FaasError) as denied:
        bad.list_actions()
    assert denied.value.status == 401
    assert "authentication is invalid" in str(denied.value)


# --- actions --------------------------------------------------------------------------


def test_action_create_get_list_update_delete(ow: OpenWhiskClient) -> None:
    name = unique("crud")
    created = ow.put_action(name, ECHO, params={"a": 1}, limits={"timeout": 3000})
    assert created["namespace"] == "guest" and created["name"] == name
    assert created["version"] == "0.0.1" and created["publish"] is False
    assert created["limits"] == {"timeout": 3000, "memory": 256, "logs": 10, "concurrency": 1}
    assert created["parameters"] == [{"key": "a", "value": 1}]
    assert {"key": "exec", "value": "python:3.11"} in created["annotations"]
    assert {"key": "provide-api-key", "value": False} in created["annotations"]
    assert isinstance(created["updated"], int)

    fetched = ow.get_action(name)
    assert fetched["exec"]["code"] == ECHO and fetched["exec"]["kind"] == "python:3.11"
    listed = {a["name"]: a for a in ow.list_actions(limit=200)}
    assert name in listed and "code" not in listed[name]["exec"]

    with pytest.raises(FaasError) as conflict:
        ow.put_action(name, ECHO, overwrite=False)
    assert conflict.value.status == 409

    updated = ow.put_action(name, ECHO, limits={"memory": 512})
    assert updated["version"] == "0.0.2"
    assert updated["limits"]["memory"] == 512 and updated["limits"]["timeout"] == 3000

    assert ow.delete_action(name)["name"] == name
    with pytest.raises(FaasError) as gone:
        ow.delete_action(name)
    assert gone.value.status == 404
    with pytest.raises(FaasError) as unknown:
        ow.invoke(name, {})
    assert unknown.value.status == 404


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        ({"exec": {"kind": "nodejs:20", "code": "x"}}, "kind 'nodejs:20'"),
        ({"exec": {"kind": "python:3.11", "code": "x"}, "limits": {"timeout": 50}}, "below allowed threshold of 100"),
        ({"exec": {"kind": "python:3.11", "code": "x"}, "limits": {"timeout": 300001}}, "exceeds allowed threshold"),
        ({"exec": {"kind": "python:3.11", "code": "x"}, "limits": {"memory": 64}}, "memory 64 MB below"),
        ({"exec": {"kind": "python:3.11", "code": "x"}, "limits": {"memory": 1024}},
         "memory 1024 MB exceeds allowed threshold of 512 MB"),
        ({"exec": {"kind": "python:3.11", "code": "x"}, "limits": {"concurrency": 0}}, "concurrency 0 below"),
        ({"exec": {"kind": "python:3.11", "code": "x"}, "limits": {"concurrency": 501}}, "concurrency 501 exceeds"),
        ({"parameters": []}, "exec undefined"),
    ],
)
def test_invalid_action_is_rejected_with_400(runner: Any, body: dict[str, Any], expected: str) -> None:
    resp = httpx.put(
        f"{runner.base_url}/api/v1/namespaces/_/actions/{unique('bad')}",
        json=body,
        auth=tuple(runner.auth.split(":")),
    )
    assert resp.status_code == 400, resp.text
    assert expected in resp.json()["error"]


def test_illegal_name_and_oversized_payload(runner: Any, ow: OpenWhiskClient) -> None:
    auth = tuple(runner.auth.split(":"))
    resp = httpx.put(f"{runner.base_url}/api/v1/namespaces/_/actions/-bad", json={}, auth=auth)
    assert resp.status_code == 400
    name = unique("big")
    ow.put_action(name, ECHO)
    resp = httpx.post(
        f"{runner.base_url}/api/v1/namespaces/_/actions/{name}",
        json={"blob": "x" * (1024 * 1024 + 1)},
        auth=auth,
    )
    assert resp.status_code == 413
    assert "larger than allowed" in resp.json()["error"]


# --- invocation ---------------------------------------------------------------------------


def test_blocking_invoke_returns_full_activation_record(runner: Any, ow: OpenWhiskClient) -> None:
    name = unique("echo")
    ow.put_action(name, ECHO)
    record = ow.invoke(name, {"marker": "m1"})
    assert record.keys() >= ACTIVATION_FIELDS
    assert re.fullmatch(r"[0-9a-f]{32}", record["activationId"])
    assert (record["namespace"], record["name"], record["version"], record["subject"]) == (
        "guest", name, "0.0.1", "guest")
    assert record["end"] >= record["start"] > 1_600_000_000_000
    assert record["duration"] == record["end"] - record["start"]
    response = record["response"]
    assert response["status"] == "success" and response["statusCode"] == 0 and response["success"] is True
    result = response["result"]
    assert result["args"] == {"marker": "m1"}
    assert result["activation"] == record["activationId"]
    assert result["action"] == f"/guest/{name}" and result["namespace"] == "guest"
    assert result["api_host"] == runner.base_url
    assert int(result["deadline"]) > record["start"]
    assert result["api_key"] is None and result["sees_runner_env_key"] is False
    meta = notes(record)
    assert meta["path"] == f"guest/{name}" and meta["kind"] == "python:3.11"
    assert meta["timeout"] is False and meta["waitTime"] >= 0 and meta["initTime"] >= 0
    assert meta["limits"] == {"timeout": 60000, "memory": 256, "logs": 10, "concurrency": 1}
    assert any("stdout: echo m1" in line for line in record["logs"])
    assert all(LOG_LINE.match(line) for line in record["logs"])
    assert ow.get_activation(record["activationId"]) == record


def test_non_blocking_invoke_and_activation_endpoints(ow: OpenWhiskClient) -> None:
    name = unique("async")
    ow.put_action(name, ECHO)
    accepted = ow.invoke(name, {"marker": "later"}, blocking=False)
    assert set(accepted) == {"activationId"}
    record = ow.wait_activation(accepted["activationId"], timeout_s=15)
    assert record["response"]["success"] is True
    assert ow.get_activation_result(record["activationId"])["result"]["args"] == {"marker": "later"}
    assert any("echo later" in line for line in ow.get_activation_logs(record["activationId"]))
    listed = ow.list_activations(name=name)
    assert [a["activationId"] for a in listed] == [record["activationId"]]
    assert "logs" not in listed[0]


def test_result_only_and_parameter_merge(ow: OpenWhiskClient) -> None:
    name = unique("merge")
    ow.put_action(name, ECHO, params={"bound": "b", "both": "bound"})
    result = ow.invoke(name, {"both": "invocation", "extra": 1}, result=True)
    assert result["args"] == {"bound": "b", "both": "invocation", "extra": 1}


def test_activations_are_listed_newest_first(ow: OpenWhiskClient) -> None:
    name = unique("order")
    ow.put_action(name, ECHO)
    ids = [ow.invoke(name, {"i": i})["activationId"] for i in range(3)]
    listed = ow.list_activations(name=name, limit=2)
    assert [a["activationId"] for a in listed] == ids[::-1][:2]
    assert [a["activationId"] for a in ow.list_activations(name=name, limit=2, skip=2)] == ids[:1]


def test_logs_belong_to_their_activation(ow: OpenWhiskClient) -> None:
    name = unique("logs")
    ow.put_action(name, ECHO)
    first = ow.invoke(name, {"marker": "first-run"})
    second = ow.invoke(name, {"marker": "second-run"})
    first_logs = "\n".join(ow.get_activation(first["activationId"])["logs"])
    second_logs = "\n".join(second["logs"])
    assert "first-run" in first_logs and "second-run" not in first_logs
    assert "second-run" in second_logs and "first-run" not in second_logs


# --- warm workers -----------------------------------------------------------------------------


def test_cold_then_warm_start(ow: OpenWhiskClient) -> None:
    name = unique("warm")
    ow.put_action(name, ECHO)
    cold = ow.invoke(name, {})
    warm = ow.invoke(name, {})
    assert "initTime" in notes(cold)
    assert "initTime" not in notes(warm)
    assert warm["response"]["result"]["pid"] == cold["response"]["result"]["pid"]

    def latency(record: dict[str, Any]) -> int:
        # A cold start's interpreter start-up is in waitTime, code loading in duration.
        return int(notes(record)["waitTime"] + record["duration"])

    assert latency(warm) < latency(cold)


def test_provide_api_key_annotation_passes_the_key(runner: Any, ow: OpenWhiskClient) -> None:
    name = unique("apikey")
    ow.put_action(name, ECHO, annotations={"provide-api-key": True})
    assert ow.invoke(name, {}, result=True)["api_key"] == runner.auth


def test_idle_timeout_forces_a_new_cold_start(runner: Any, ow: OpenWhiskClient) -> None:
    name = unique("idle")
    ow.put_action(name, ECHO)
    pid = ow.invoke(name, {})["response"]["result"]["pid"]
    eventually(lambda: pid not in runner.worker_pids(), timeout_s=10, what="idle worker to be stopped")
    again = ow.invoke(name, {})
    assert "initTime" in notes(again)
    assert again["response"]["result"]["pid"] != pid


def test_update_retires_warm_workers(ow: OpenWhiskClient) -> None:
    name = unique("update")
    ow.put_action(name, "def main(args):\n    return {'v': 1}\n")
    assert ow.invoke(name, {}, result=True) == {"v": 1}
    ow.put_action(name, "def main(args):\n    return {'v': 2}\n")
    record = ow.invoke(name, {})
    assert record["response"]["result"] == {"v": 2}
    assert record["version"] == "0.0.2" and "initTime" in notes(record)


def test_concurrency_one_serialises_invocations(runner: Any, ow: OpenWhiskClient) -> None:
    name = unique("serial")
    ow.put_action(name, SLEEPER, limits={"concurrency": 1})
    records = invoke_in_parallel(runner.base_url, runner.auth, name, [{"seconds": 1}] * 2)
    waits = sorted(notes(r)["waitTime"] for r in records)
    assert waits[1] >= 800, waits
    assert len({r["response"]["result"]["pid"] for r in records}) == 1


def test_concurrency_two_runs_in_parallel(runner: Any, ow: OpenWhiskClient) -> None:
    name = unique("parallel")
    ow.put_action(name, SLEEPER, limits={"concurrency": 2})
    records = invoke_in_parallel(runner.base_url, runner.auth, name, [{"seconds": 1}] * 2)
    waits = [notes(r)["waitTime"] for r in records]
    assert max(waits) < 500, waits
    assert len({r["response"]["result"]["pid"] for r in records}) == 2


def test_global_worker_cap_queues_the_excess(runner: Any, ow: OpenWhiskClient) -> None:
    # The module's runner allows 4 workers; 6 parallel calls mean 2 must wait for one.
    name = unique("cap")
    ow.put_action(name, SLEEPER, limits={"concurrency": 6})
    records = invoke_in_parallel(runner.base_url, runner.auth, name, [{"seconds": 0.8}] * 6)
    assert all(r["response"]["success"] for r in records)
    # The two that found no free worker ran only once another call had ended (arrival order on a
    # busy machine varies, so judge by when each ran, not by how long each waited).
    by_start = sorted(records, key=lambda r: r["start"])
    first_end = min(r["end"] for r in by_start[:4])
    assert all(r["start"] >= first_end - 5 for r in by_start[4:]), [(r["start"], r["end"]) for r in by_start]
    assert len({r["response"]["result"]["pid"] for r in records}) == 4  # freed workers were reused


# --- failures -------------------------------------------------------------------------------------


def test_timeout_is_a_developer_error_and_worker_is_replaced(ow: OpenWhiskClient) -> None:
    name = unique("slow")
    ow.put_action(name, SLEEPER, limits={"timeout": 500})
    record = ow.invoke(name, {"seconds": 5})
    assert record["response"]["status"] == "action developer error"
    assert record["response"]["statusCode"] == 2 and record["response"]["success"] is False
    assert record["response"]["result"] == {"error": "The action exceeded its time limits of 500 milliseconds."}
    assert notes(record)["timeout"] is True
    assert 500 <= record["duration"] < 3000
    after = ow.invoke(name, {"seconds": 0})
    assert after["response"]["success"] is True and "initTime" in notes(after)


@pytest.mark.parametrize("params", [{"reserve_mb": 1024}, {}], ids=["one-big-allocation", "gradual"])
def test_memory_hog_is_a_developer_error(ow: OpenWhiskClient, params: dict[str, Any]) -> None:
    # The limit counts resident memory, as OpenWhisk's container cgroup does: both are killed.
    name = unique("hog")
    ow.put_action(name, HOG, limits={"memory": 128, "timeout": 20000})
    record = ow.invoke(name, params)
    assert record["response"]["status"] == "action developer error"
    assert record["response"]["result"] == {"error": "The action exhausted its memory and was aborted."}
    after = ow.invoke(name, {"reserve_mb": 16})  # the worker was replaced and works
    assert after["response"]["result"] == {"len": 16 * 1024 * 1024}
    assert "initTime" in notes(after)


def test_returned_error_is_an_application_error_with_502(runner: Any, ow: OpenWhiskClient) -> None:
    name = unique("apperr")
    ow.put_action(name, MISBEHAVING)
    resp = httpx.post(
        f"{runner.base_url}/api/v1/namespaces/_/actions/{name}",
        params={"blocking": "true"},
        json={"mode": "error"},
        auth=tuple(runner.auth.split(":")),
    )
    assert resp.status_code == 502
    record = resp.json()
    assert record["response"]["status"] == "application error"
    assert record["response"]["statusCode"] == 1
    assert record["response"]["result"] == {"error": "bad input"}
    assert ow.invoke(name, {"mode": "error"}, result=True) == {"error": "bad input"}


def test_raising_is_an_application_error_with_traceback_in_logs(runner: Any, ow: OpenWhiskClient) -> None:
    # OpenWhisk's Python launcher answers {"error": str(exception)}: an application error
    name = unique("raise")
    ow.put_action(name, MISBEHAVING)
    resp = httpx.post(f"{runner.base_url}/api/v1/namespaces/_/actions/{name}", params={"blocking": "true"},
                      json={"mode": "raise"}, auth=tuple(runner.auth.split(":")))
    assert resp.status_code == 502
    record = resp.json()
    assert record["response"]["status"] == "application error" and record["response"]["statusCode"] == 1
    assert record["response"]["result"] == {"error": "boom"}
    assert any("stderr: ValueError: boom" in line for line in record["logs"])
    assert ow.invoke(name, {})["response"]["success"] is True  # same warm worker still serves


def test_list_result_is_a_success(ow: OpenWhiskClient) -> None:
    name = unique("list")
    ow.put_action(name, MISBEHAVING)
    record = ow.invoke(name, {"mode": "list"})
    assert record["response"]["status"] == "success"
    assert record["response"]["result"] == [1, 2] and record["response"]["size"] == len("[1, 2]")


def test_neither_object_nor_list_is_a_developer_error(ow: OpenWhiskClient) -> None:
    name = unique("string")
    ow.put_action(name, MISBEHAVING)
    record = ow.invoke(name, {"mode": "string"})
    assert record["response"]["status"] == "action developer error"
    assert record["response"]["result"] == {"error": "The action did not return a dictionary or array."}


def test_dying_worker_is_a_developer_error_and_runner_keeps_serving(ow: OpenWhiskClient) -> None:
    name = unique("die")
    ow.put_action(name, MISBEHAVING)
    record = ow.invoke(name, {"mode": "exit"})
    assert record["response"]["status"] == "action developer error"
    assert record["response"]["result"] == {
        "error": "The action did not produce a valid response and exited unexpectedly."}
    after = ow.invoke(name, {})
    assert after["response"]["success"] is True and "initTime" in notes(after)


def test_broken_code_fails_init_as_developer_error(ow: OpenWhiskClient) -> None:
    name = unique("syntax")
    ow.put_action(name, "def main(args)\n    return {}\n")
    record = ow.invoke(name, {})
    assert record["response"]["status"] == "action developer error"
    assert "SyntaxError" in record["response"]["result"]["error"]
    assert "initTime" in notes(record)


# --- process lifecycle ------------------------------------------------------------------------------


def test_restart_keeps_actions_and_blocking_wait_falls_back_to_202(tmp_path: Path, runner_factory: Any) -> None:
    data = tmp_path / "data"
    first = runner_factory.start(data, "--blocking-timeout-s", "1")
    with first.client() as ow:
        ow.put_action("kept", SLEEPER, params={"seconds": 0})
        accepted = ow.invoke("kept", {"seconds": 2})  # outlives the 1 s blocking wait
        assert set(accepted) == {"activationId"}
        done = ow.wait_activation(accepted["activationId"], timeout_s=15)
        assert done["response"]["success"] is True
    assert runner_factory.stop(first) in (0, -signal.SIGTERM)

    second = runner_factory.start(data, auth=first.auth)
    with second.client() as ow:
        assert ow.get_action("kept")["exec"]["code"] == SLEEPER
        assert ow.invoke("kept", {}, result=True)["pid"] > 0
        assert ow.get_activation(accepted["activationId"])["response"]["success"] is True
    assert runner_factory.stop(second) in (0, -signal.SIGTERM)


def test_sigterm_with_activations_in_flight_stops_promptly(tmp_path: Path, runner_factory: Any) -> None:
    r = runner_factory.start(tmp_path / "data", "--max-workers", "2")
    with r.client() as ow:
        ow.put_action("long", SLEEPER, limits={"concurrency": 2})
        ow.invoke("long", {"seconds": 60}, blocking=False)
        with ThreadPoolExecutor(max_workers=1) as pool:
            blocked = pool.submit(ow.invoke, "long", {"seconds": 60})
            eventually(lambda: len(r.worker_pids()) == 2, timeout_s=10, what="both activations running")
            started = time.monotonic()
            assert runner_factory.stop(r) in (0, -signal.SIGTERM)  # also asserts no worker is left
            assert time.monotonic() - started < 5
            record = blocked.result(timeout=10)
    assert record["response"]["status"] == "whisk internal error"
    assert record["response"]["result"] == {"error": "The runner shut down while this activation was running."}


SPAWNER = textwrap.dedent("""
    import os
    import subprocess

    def main(args):
        child = subprocess.Popen(["sleep", "300"])
        return {"worker": os.getpid(), "child": child.pid}
""")


def test_killed_runner_leaves_no_processes_after_restart(tmp_path: Path, runner_factory: Any) -> None:
    data = tmp_path / "data"
    first = runner_factory.start(data)
    with first.client() as ow:
        ow.put_action("spawner", SPAWNER)
        pids = ow.invoke("spawner", {}, result=True)
    first.proc.kill()  # no chance to clean up
    first.proc.wait()
    eventually(lambda: not psutil.pid_exists(pids["worker"]), timeout_s=10, what="worker to die with its runner")
    second = runner_factory.start(data, auth=first.auth)
    eventually(lambda: not _running(pids["child"]), timeout_s=10, what="stray child to be killed on restart")
    runner_factory.stop(second)


def _running(pid: int) -> bool:
    try:
        return bool(psutil.Process(pid).status() != psutil.STATUS_ZOMBIE)
    except psutil.NoSuchProcess:
        return False


@pytest.mark.parametrize(
    "value",
    [None, "no-colon-here", "not-a-uuid:SuperSecretKeyValue0123456789", f"{uuid.uuid4()}:short"],
    ids=["missing", "no-colon", "bad-uuid", "short-key"],
)
def test_bad_or_missing_auth_exits_2_without_printing_key(tmp_path: Path, value: str | None) -> None:
    env = {k: v for k, v in os.environ.items() if k != "LABKIT_FAAS_AUTH"}
    if value is not None:
        env["LABKIT_FAAS_AUTH"] = value
    done = subprocess.run(
        [sys.executable, "-m", "labkit.faas", "--data-dir", str(tmp_path), "--port", "1"],
        env=env, capture_output=True, text=True, timeout=30,
    )
    assert done.returncode == 2
    assert "LABKIT_FAAS_AUTH" in done.stderr
    if value is not None and ":" in value:
        secret = value.split(":", 1)[1]
        assert secret not in done.stdout + done.stderr


# --- pre-warmed workers -------------------------------------------------------------------------


def test_prewarm_annotation_starts_loaded_workers_and_keeps_them(tmp_path: Path, runner_factory: Any) -> None:
    # a runner of its own that logs at info: it says when each pre-warmed worker has loaded the code
    runner = runner_factory.start(tmp_path / "faas", "--idle-timeout-s", "2", "--max-workers", "4",
                                  "--log-level", "info")
    name = unique("prewarm")
    with runner.client() as ow:
        ow.put_action(name, ECHO, limits={"concurrency": 2}, annotations={"prewarm": True})
        eventually(lambda: len(runner.worker_pids()) == 2, timeout_s=20, what="two pre-warmed workers")
        warmed = runner.worker_pids()
        # spawned is not loaded yet (a busy machine takes a while): wait for each worker's init
        eventually(lambda: all(f"pre-warmed worker {pid} of " in runner.output() for pid in warmed), timeout_s=30,
                   what="both pre-warmed workers to load the code")
        first = ow.invoke(name, {})
        assert "initTime" not in notes(first)  # the code was loaded before the first call
        assert first["response"]["result"]["pid"] in warmed
        # the idle reaper (2 s idle timeout here) leaves a pre-warmed action's workers alone
        with pytest.raises(AssertionError):
            eventually(lambda: not warmed <= runner.worker_pids(), timeout_s=4, what="a pre-warmed worker reaped")
        ow.delete_action(name)
    eventually(lambda: not runner.worker_pids() & warmed, timeout_s=10, what="workers stopped with the action")


def test_prewarmed_action_is_warm_again_after_a_runner_restart(tmp_path: Path, runner_factory: Any) -> None:
    data = tmp_path / "faas"
    first = runner_factory.start(data)
    first.client().put_action("resident", ECHO, limits={"concurrency": 1}, annotations={"prewarm": 1})
    assert runner_factory.stop(first) in (0, -signal.SIGTERM)
    second = runner_factory.start(data, "--log-level", "info", auth=first.auth)
    eventually(lambda: len(second.worker_pids()) == 1, timeout_s=20, what="a worker started with the runner")
    eventually(lambda: "pre-warmed worker" in second.output(), timeout_s=30, what="the worker to load the code")
    with second.client() as ow:
        assert "initTime" not in notes(ow.invoke("resident", {}))
