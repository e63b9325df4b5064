"""An invocation on its way to a worker, and the per-action pool of warm workers it may use."""

from __future__ import annotations

import asyncio
import contextlib
import os
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psutil

from labkit.faas.models import kv_to_dict, root_namespace
from labkit.faas.worker import Worker

MB = 1024 * 1024
PREWARM_SLOT_WAIT_S = 10.0
STRAY_WAIT_S = 5.0  # how long pre-warming waits for a free slot under the global cap


class ShuttingDown(RuntimeError):
    """The runner is stopping; no new worker may start."""


def now_ms() -> int:
    """Wall-clock epoch milliseconds, as OpenWhisk records start and end."""
    return time.time_ns() // 1_000_000


@dataclass
class Invocation:
    """One request to run an action.

    Attributes:
        action: The stored action record, read when the request arrived.
        params: Invocation parameters (merged over the bound ones when run).
        activation_id: The id announced to the caller.
        arrived_ms: Epoch ms when the request arrived (for ``waitTime``).
        api_key: Passed to the action only if it asks (``provide-api-key``).
        transaction_id: The request's transaction id (``__OW_TRANSACTION_ID``).
    """

    action: dict[str, Any]
    params: dict[str, Any]
    activation_id: str
    arrived_ms: int
    api_key: str | None = None
    transaction_id: str = ""


class ActionPool:
    """Warm workers and the concurrency gate of one action version."""

    def __init__(self, identity: tuple[str, int], concurrency: int) -> None:
        """Create an empty pool.

        Args:
            identity: ``(version, updated)`` of the action these workers run.
            concurrency: Workers (so activations) allowed at once.
        """
        self.identity = identity
        self.gate = asyncio.Semaphore(concurrency)
        self.idle: list[Worker] = []
        self.retired = False
        self.keep_warm = 0  # idle workers the reaper leaves alone (pre-warmed actions)


def _identity(action: Mapping[str, Any]) -> tuple[str, int]:
    return action["version"], action["updated"]


def _fq_name(action: Mapping[str, Any]) -> str:
    return f"/{action['namespace']}/{action['name']}"


def _wants_api_key(action: Mapping[str, Any]) -> bool:
    """Only a truthy ``provide-api-key`` gets the key. OpenWhisk also gives it to an action with
    no such annotation (one older than the annotation, or updated with annotations that leave it
    out); the lab's action is redeployed that way, so here no annotation means no key."""
    return bool(kv_to_dict(action.get("annotations", [])).get("provide-api-key"))


def prewarm_count(action: Mapping[str, Any]) -> int:
    """Workers to keep warm for ``action``: its ``prewarm`` annotation (``true`` means its
    concurrency; a number is capped by it), else 0."""
    value = kv_to_dict(action.get("annotations", [])).get("prewarm")
    concurrency = int(action["limits"]["concurrency"])
    if value is True:
        return concurrency
    if isinstance(value, (int, float)) and not isinstance(value, bool) and value > 0:
        return min(int(value), concurrency)
    return 0


def init_message(action: Mapping[str, Any], api_host: str) -> dict[str, Any]:
    """The ``/init`` message that loads ``action``'s code into a fresh worker."""
    exec_ = action["exec"]
    return {
        "name": action["name"],
        "main": exec_.get("main") or "main",
        "code": exec_.get("code") or "",
        "binary": bool(exec_.get("binary")),
        "env": {
            "__OW_API_HOST": api_host,
            "__OW_NAMESPACE": root_namespace(action["namespace"]),
            "__OW_ACTION_NAME": _fq_name(action),
            "__OW_ACTION_VERSION": action["version"],
        },
    }


def run_message(inv: Invocation) -> dict[str, Any]:
    """The ``/run`` message; its keys become ``__OW_*`` variables in the worker."""
    action = inv.action
    params = {**kv_to_dict(action.get("parameters", [])), **inv.params}
    message: dict[str, Any] = {
        "value": params,
        "namespace": root_namespace(action["namespace"]),
        "action_name": _fq_name(action),
        "action_version": action["version"],
        "activation_id": inv.activation_id,
        "deadline": str(now_ms() + action["limits"]["timeout"]),
        "transaction_id": inv.transaction_id,
    }
    if inv.api_key and _wants_api_key(action):
        message["api_key"] = inv.api_key
    return message


def _kill_strays(workdirs: Path) -> None:
    """Kill processes still running inside old worker directories.

    Workers die with the runner (PDEATHSIG), but processes an action started
    survive a runner that was SIGKILLed; their working directory gives them away.
    """
    root = str(workdirs.resolve()) + os.sep
    killed = []
    for proc in psutil.process_iter(["cwd"]):
        cwd = proc.info.get("cwd")
        if cwd and (cwd + os.sep).startswith(root):
            with contextlib.suppress(psutil.Error):
                proc.kill()
                killed.append(proc)
    psutil.wait_procs(killed, timeout=STRAY_WAIT_S)  # gone before their cgroups are swept
