"""Turning worker outcomes into OpenWhisk activation records."""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass, field
from typing import Any

from labkit.faas.models import DEFAULT_NAMESPACE, Msg, root_namespace
from labkit.faas.worker import Outcome

SUCCESS, APPLICATION_ERROR, DEVELOPER_ERROR, WHISK_ERROR = 0, 1, 2, 3
STATUS_TEXT = {
    SUCCESS: "success",
    APPLICATION_ERROR: "application error",
    DEVELOPER_ERROR: "action developer error",
    WHISK_ERROR: "whisk internal error",
}
# HTTP status of a blocking invoke per activation status, as OpenWhisk answers.
HTTP_STATUS = {SUCCESS: 200, APPLICATION_ERROR: 502, DEVELOPER_ERROR: 502, WHISK_ERROR: 500}


def new_activation_id() -> str:
    """OpenWhisk activation ids are 32 lowercase hex characters."""
    return uuid.uuid4().hex


@dataclass
class Verdict:
    """Status and result of one activation.

    Attributes:
        status_code: 0 success, 1 application error, 2 developer error, 3 internal error.
        result: The ``response.result``: an object, or a list an action returned.
        timed_out: Whether the time limit was hit.
        size: Length in characters of the action's JSON answer (``response.size``), when it gave one.
    """

    status_code: int
    result: dict[str, Any] | list[Any]
    timed_out: bool = False
    size: int | None = None


@dataclass
class Execution:
    """Timing, verdict and logs of one finished activation (epoch ms times)."""

    start_ms: int
    end_ms: int
    wait_ms: int
    verdict: Verdict
    logs: list[str] = field(default_factory=list)
    init_ms: int | None = None


def _developer(message: str, timed_out: bool = False) -> Verdict:
    return Verdict(DEVELOPER_ERROR, {"error": message}, timed_out)


def judge_init(outcome: Outcome, timeout_ms: int) -> Verdict | None:
    """Classify an init; None means the action loaded and may run.

    Args:
        outcome: What the init exchange produced.
        timeout_ms: The action's time limit.

    Returns:
        A developer-error verdict, or None on success.
    """
    if outcome.failure == "timeout":
        return _developer(Msg.INIT_TIMEOUT.format(ms=timeout_ms), timed_out=True)
    if outcome.failure == "memory":
        return _developer(Msg.MEMORY)
    if outcome.failure is not None or outcome.reply is None:
        return _developer(Msg.ABNORMAL_INIT)
    if not outcome.reply.get("ok"):
        return _developer(Msg.INIT_FAILED.format(detail=outcome.reply.get("error", "unknown error")))
    return None


def judge_run(outcome: Outcome, timeout_ms: int, max_result_bytes: int) -> Verdict:
    """Classify a run the way OpenWhisk's invoker does.

    Args:
        outcome: What the run exchange produced.
        timeout_ms: The action's time limit.
        max_result_bytes: Largest result accepted.

    Returns:
        The verdict for the activation record.
    """
    if outcome.failure == "timeout":
        return _developer(Msg.TIMEOUT.format(ms=timeout_ms), timed_out=True)
    if outcome.failure == "memory":
        return _developer(Msg.MEMORY)
    if outcome.failure == "too_big":
        return _developer(
            f"The action produced a response that exceeded the allowed length: > {max_result_bytes} bytes."
        )
    if outcome.failure is not None or outcome.reply is None:
        return _developer(Msg.ABNORMAL_RUN)
    return _judge_reply(outcome.reply, max_result_bytes)


def _judge_reply(reply: dict[str, Any], max_result_bytes: int) -> Verdict:
    """Classify a reply envelope from the launcher (an object with ``error`` is an application error)."""
    if not reply.get("ok"):
        kind, detail = reply.get("kind"), str(reply.get("error", ""))
        if kind == "not_dict":
            return _developer(Msg.NOT_A_DICT)
        if kind == "invalid":
            return _developer(Msg.INVALID_RESPONSE.format(detail=detail))
        return _developer(detail or Msg.ABNORMAL_RUN)
    result = reply.get("result")
    if not isinstance(result, (dict, list)):
        return _developer(Msg.NOT_A_DICT)
    text = json.dumps(result, ensure_ascii=False)  # what OpenWhisk's launcher writes
    size = len(text.encode("utf-8"))
    if size > max_result_bytes:
        return _developer(
            f"The action produced a response that exceeded the allowed length: {size} > {max_result_bytes} bytes."
        )
    # response.size is the length of that text, as the invoker measures the runtime's answer
    if isinstance(result, dict) and "error" in result:
        return Verdict(APPLICATION_ERROR, result, size=len(text))
    return Verdict(SUCCESS, result, size=len(text))


def build_record(action: dict[str, Any], activation_id: str, execution: Execution) -> dict[str, Any]:
    """Assemble the activation record with OpenWhisk's field names.

    Args:
        action: The stored action record that ran.
        activation_id: The activation's id.
        execution: Timing, verdict and logs.

    Returns:
        The activation record.
    """
    verdict = execution.verdict
    annotations: list[dict[str, Any]] = [
        {"key": "path", "value": f"{action['namespace']}/{action['name']}"},
        {"key": "waitTime", "value": execution.wait_ms},
        {"key": "kind", "value": action["exec"]["kind"]},
        {"key": "timeout", "value": verdict.timed_out},
        {"key": "limits", "value": dict(action["limits"])},
    ]
    if execution.init_ms is not None:
        annotations.append({"key": "initTime", "value": execution.init_ms})
    return {
        "activationId": activation_id,
        "namespace": root_namespace(action["namespace"]),
        "name": action["name"],
        "version": action["version"],
        "subject": DEFAULT_NAMESPACE,
        "publish": False,
        "start": execution.start_ms,
        "end": execution.end_ms,
        "duration": execution.end_ms - execution.start_ms,
        "statusCode": verdict.status_code,
        "response": {
            "status": STATUS_TEXT[verdict.status_code],
            "statusCode": verdict.status_code,
            "success": verdict.status_code == SUCCESS,
            "result": verdict.result,
            **({"size": verdict.size} if verdict.size is not None else {}),
        },
        "logs": execution.logs,
        "annotations": annotations,
    }
