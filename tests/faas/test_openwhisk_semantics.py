"""OpenWhisk's semantics the runner matches, each taken from OpenWhisk's sources: list counts,
the activation id header, ``response.size``, the ``provide-api-key`` annotation, the transaction
id, resident-memory limits, and binary (zip) actions as OpenWhisk's Python runtime runs them."""

from __future__ import annotations

import base64
import io
import json
import os
import textwrap
import uuid
import zipfile
from pathlib import Path
from typing import Any

import httpx
import pytest

from labkit.stack.clients.openwhisk import OpenWhiskClient

RESIZE = Path(__file__).resolve().parents[2] / "stack" / "actions" / "resize.py"

ENV = textwrap.dedent("""
    import os

    def main(args):
        return {k: os.environ.get(k) for k in ("__OW_TRANSACTION_ID", "__OW_ACTIVATION_ID", "__OW_API_KEY")}
""")

THREADS = textwrap.dedent("""
    import threading

    def main(args):
        stop = threading.Event()
        threads = [threading.Thread(target=stop.wait) for _ in range(args["n"])]
        for t in threads:
            t.start()
        started = sum(t.is_alive() for t in threads)
        stop.set()
        for t in threads:
            t.join()
        return {"started": started}
""")

# What a zip's __main__.py imports from its own virtualenv, and a virtualenv's activation script
# reduced to what OpenWhisk's launcher relies on: it puts the env's site-packages on sys.path.
LIBRARY = "GREETING = 'hello from the virtualenv'\n"
ACTIVATE_THIS = textwrap.dedent("""
    import os
    import sys

    base = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    sys.path.insert(0, os.path.join(base, "lib", "python%d.%d" % sys.version_info[:2], "site-packages"))
    os.environ["VIRTUAL_ENV"] = base
""")
ZIP_MAIN = textwrap.dedent("""
    import os
    import vendored

    def main(args):
        return {"greeting": vendored.GREETING, "venv": os.path.basename(os.environ.get("VIRTUAL_ENV", "")),
                "args": args}
""")


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


def zip_b64(files: dict[str, str]) -> str:
    """A zip of ``files`` (path -> text), base64-encoded as OpenWhisk clients send it."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        for path, text in files.items():
            archive.writestr(path, text)
    return base64.b64encode(buffer.getvalue()).decode("ascii")


def venv_zip(main: str = ZIP_MAIN) -> str:
    site = "virtualenv/lib/python3.11/site-packages"
    return zip_b64({"__main__.py": main, "virtualenv/bin/activate_this.py": ACTIVATE_THIS,
                    f"{site}/vendored.py": LIBRARY})


def api(runner: Any, method: str, path: str, **kwargs: Any) -> httpx.Response:
    return httpx.request(method, f"{runner.base_url}/api/v1/namespaces/_/{path}",
                         auth=tuple(runner.auth.split(":")), timeout=60, **kwargs)


# --- the API's shapes -----------------------------------------------------------------------


def test_count_true_answers_the_number_of_actions(runner: Any, ow: OpenWhiskClient) -> None:
    ow.put_action(unique("counted"), ENV)
    listed = ow.list_actions(limit=200)
    counted = api(runner, "GET", "actions", params={"count": "true"}).json()
    assert counted == {"actions": len(listed)}


def test_non_blocking_invoke_carries_the_activation_id_header(runner: Any, ow: OpenWhiskClient) -> None:
    name = unique("nonblocking")
    ow.put_action(name, ENV)
    resp = api(runner, "POST", f"actions/{name}", json={})
    assert resp.status_code == 202
    assert resp.headers["x-openwhisk-activation-id"] == resp.json()["activationId"]
    done = ow.wait_activation(resp.json()["activationId"], timeout_s=30)
    assert done["response"]["success"] is True


def test_response_size_transaction_id_and_no_api_key_by_default(runner: Any, ow: OpenWhiskClient) -> None:
    name = unique("env")
    ow.put_action(name, ENV)
    record = api(runner, "POST", f"actions/{name}", params={"blocking": "true"}, json={},
                 headers={"X-Request-ID": "lab-transaction-1"}).json()
    result = record["response"]["result"]
    assert result["__OW_TRANSACTION_ID"] == "lab-transaction-1"
    assert result["__OW_API_KEY"] is None  # created with provide-api-key false, as OpenWhisk does
    assert record["response"]["size"] == len(json.dumps(result, ensure_ascii=False))
    generated = ow.invoke(name, {}, result=True)["__OW_TRANSACTION_ID"]
    assert generated and generated != "lab-transaction-1"


# --- memory -------------------------------------------------------------------------------------------


def test_forty_idle_threads_start_at_128_mb(ow: OpenWhiskClient) -> None:
    # Thread stacks reserve address space but stay out of resident memory, which is what counts.
    name = unique("threads")
    ow.put_action(name, THREADS, limits={"memory": 128})
    assert ow.invoke(name, {"n": 40}, result=True) == {"started": 40}


# --- binary (zip) actions --------------------------------------------------------------------------


def test_zip_action_with_a_virtualenv_runs(runner: Any, ow: OpenWhiskClient) -> None:
    name = unique("zip")
    code = venv_zip()
    created = api(runner, "PUT", f"actions/{name}", json={"exec": {"kind": "python:3.11", "code": code}}).json()
    assert created["exec"]["binary"] is True
    listed = {a["name"]: a for a in ow.list_actions(limit=200)}
    assert listed[name]["exec"]["binary"] is True
    record = ow.invoke(name, {"x": 1})
    assert record["response"]["result"] == {"greeting": "hello from the virtualenv", "venv": "virtualenv",
                                            "args": {"x": 1}}
    assert not any(code[:64] in line for line in record["logs"])


@pytest.mark.parametrize(
    ("files", "message"),
    [
        ({"lib.py": "x = 1\n"}, "Zip file does not include mandatory files."),
        ({"__main__.py": "def main(a):\n    return a\n", "virtualenv/lib/x.py": ""},
         "Invalid virtualenv. Zip file does not include /virtualenv/bin/activate_this.py"),
    ],
    ids=["no-main", "virtualenv-without-activate-this"],
)
def test_broken_zip_fails_init(ow: OpenWhiskClient, runner: Any, files: dict[str, str], message: str) -> None:
    name = unique("badzip")
    api(runner, "PUT", f"actions/{name}", json={"exec": {"kind": "python:3.11", "code": zip_b64(files)}})
    record = ow.invoke(name, {})
    assert record["response"]["status"] == "action developer error"
    assert message in record["response"]["result"]["error"]


def test_resize_action_as_a_zip_answers_like_its_source(runner: Any, ow: OpenWhiskClient) -> None:
    source, packed = unique("resize-src"), unique("resize-zip")
    ow.put_action(source, RESIZE.read_text())
    api(runner, "PUT", f"actions/{packed}",
        json={"exec": {"kind": "python:3.11", "code": zip_b64({"__main__.py": RESIZE.read_text()})}})
    bad = {"bucket": "dit247", "key": "cat.png", "max_edge": 1}
    from_source = ow.invoke(source, bad)["response"]
    from_zip = ow.invoke(packed, bad)["response"]
    assert from_zip["status"] == from_source["status"] == "application error"
    assert from_zip["result"]["error"] == from_source["result"]["error"]


def test_an_update_that_drops_provide_api_key_passes_no_key(runner: Any, ow: OpenWhiskClient) -> None:
    name = unique("nokey")
    ow.put_action(name, ENV, annotations={"provide-api-key": True})
    assert ow.invoke(name, {}, result=True)["__OW_API_KEY"] == runner.auth
    updated = ow.put_action(name, ENV, annotations={"prewarm": False})
    assert not any(a["key"] == "provide-api-key" for a in updated["annotations"])  # kept as sent
    assert ow.invoke(name, {}, result=True)["__OW_API_KEY"] is None


def test_a_large_zip_loads_within_128_mb(runner: Any, ow: OpenWhiskClient) -> None:
    # 30 MB that does not compress: the zip reaches the worker as a file, so loading it costs
    # disk, not the action's resident memory (as when OpenWhisk's proxy unzips it)
    name = unique("bigzip")
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_STORED) as archive:
        archive.writestr("__main__.py", "import os\n\ndef main(args):\n    return {'size': os.path.getsize('blob')}\n")
        archive.writestr("blob", os.urandom(30 * 1024 * 1024))
    code = base64.b64encode(buffer.getvalue()).decode("ascii")
    resp = api(runner, "PUT", f"actions/{name}", json={"exec": {"kind": "python:3.11", "code": code},
                                                       "limits": {"memory": 128}})
    assert resp.status_code == 200, resp.text[:500]
    record = ow.invoke(name, {})
    assert record["response"]["result"] == {"size": 30 * 1024 * 1024}, record["response"]
