"""Actions and activations as the OpenWhisk API shows them: full records, list summaries, and an action built from a PUT."""

from __future__ import annotations

from typing import Any

from starlette.exceptions import HTTPException

from labkit.faas.models import (
    ActionPut,
    KeyValue,
    Msg,
    bump_patch,
    is_binary_code,
    merge_limits,
)
from labkit.faas.pool import now_ms
from labkit.faas.store import Record

API_KEY_ANNOTATION = "provide-api-key"


def _kv_list(entries: list[KeyValue]) -> list[dict[str, Any]]:
    out = []
    for kv in entries:
        item: dict[str, Any] = {"key": kv.key, "value": kv.value}
        if kv.init:
            item["init"] = True
        out.append(item)
    return out


def _summary(action: Record) -> Record:
    """An action as OpenWhisk lists it: exec without code."""
    exec_ = {"kind": action["exec"]["kind"], "binary": bool(action["exec"].get("binary"))}
    return {**action, "exec": exec_}


def _activation_summary(record: Record) -> Record:
    """An activation as OpenWhisk lists it without ``docs=true``: no logs, no response."""
    return {k: v for k, v in record.items() if k not in ("logs", "response")}


def build_action(namespace: str, name: str, put: ActionPut, existing: Record | None) -> Record:
    """Create or update an action record the way OpenWhisk merges a PUT.

    Args:
        namespace: Resolved namespace.
        name: Action name.
        put: The validated request.
        existing: The stored record when updating.

    Returns:
        The new record (version bumped on update).
    """
    if put.exec is None and existing is None:
        raise HTTPException(400, f"{Msg.MALFORMED}requirement failed: exec undefined")
    if put.exec is not None:
        code = put.exec.code or ""
        exec_: Record = {"kind": put.exec.kind, "code": code, "binary": is_binary_code(code)}
        if put.exec.main:
            exec_["main"] = put.exec.main
    else:
        exec_ = dict(existing["exec"])  # type: ignore[index]
    old = existing or {}
    # Fields left out of an update keep their stored value, as in OpenWhisk.
    annotations = _kv_list(put.annotations) if put.annotations is not None else old.get("annotations", [])
    annotations = [a for a in annotations if a["key"] != "exec"] + [{"key": "exec", "value": exec_["kind"]}]
    if existing is None and not any(a["key"] == API_KEY_ANNOTATION for a in annotations):
        # OpenWhisk adds it on create only: a new action gets no API key unless it asks for one
        annotations.append({"key": API_KEY_ANNOTATION, "value": False})
    parameters = _kv_list(put.parameters) if put.parameters is not None else old.get("parameters", [])
    return {
        "namespace": namespace,
        "name": name,
        "version": bump_patch(existing["version"]) if existing else "0.0.1",
        "exec": exec_,
        "parameters": parameters,
        "limits": merge_limits(existing["limits"] if existing else None, put.limits),
        "annotations": annotations,
        "publish": False,
        "updated": now_ms(),
    }
