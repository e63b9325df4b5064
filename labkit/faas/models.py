"""Request models, limits and OpenWhisk's fixed messages.

The shapes follow OpenWhisk's REST API (``WhiskActionPut``) so that ``wsk``
and the project's client can talk to this runner and to a real OpenWhisk
alike.
"""

from __future__ import annotations

import re
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator

DEFAULT_NAMESPACE = "guest"
# Kinds this runner can execute; ``python:default`` resolves to the first.
SUPPORTED_KINDS = ("python:3.11",)
KIND_ALIASES = {"python:default": "python:3.11"}

# OpenWhisk's ranges and defaults (``whisk.time-limit``, ``memory``, ``log-limit`` and
# ``concurrency-limit`` in its application.conf). OpenWhisk ships a concurrency maximum of 1 and
# deployments that run activations side by side raise it (OpenWhisk's own tests use 500); the
# runner allows up to CONCURRENCY_MAX, as the lab's pipeline runs its action 4 at a time.
TIMEOUT_MS_RANGE = (100, 300_000)
MEMORY_MB_RANGE = (128, 512)
CONCURRENCY_MAX = 500
LOGS_MB_RANGE = (0, 10)
DEFAULT_LIMITS: dict[str, int] = {"timeout": 60_000, "memory": 256, "logs": 10, "concurrency": 1}
# A code string of base64 characters whose length is a multiple of 4 is a binary (zip)
# action, as OpenWhisk's controller decides (``Exec.isBinaryCode``).
BASE64_RE = re.compile(r"\A([A-Za-z0-9+/]{4})*([A-Za-z0-9+/]{4}|[A-Za-z0-9+/]{3}=|[A-Za-z0-9+/]{2}==)\Z")

# OpenWhisk's EntityName rule (``\w`` is ASCII-only on the JVM).
ENTITY_NAME_RE = re.compile(r"\A([\w]|[\w][\w@ .-]*[\w@.-]+)\Z", re.ASCII)
ENTITY_NAME_MAX = 256


class Msg:
    """OpenWhisk's user-facing messages, verbatim where OpenWhisk has one."""

    UNAUTHENTICATED = "The supplied authentication is invalid"
    NOT_FOUND = "The requested resource does not exist."
    CONFLICT = "resource already exists"
    ENTITY_NAME_ILLEGAL = "The name of the entity contains illegal characters."
    MALFORMED = "The request content was malformed:\n"
    TIMEOUT = "The action exceeded its time limits of {ms} milliseconds."
    INIT_TIMEOUT = "The action exceeded its time limits of {ms} milliseconds during initialization."
    MEMORY = "The action exhausted its memory and was aborted."
    ABNORMAL_INIT = "The action did not initialize and exited unexpectedly."
    ABNORMAL_RUN = "The action did not produce a valid response and exited unexpectedly."
    NOT_A_DICT = "The action did not return a dictionary or array."
    INVALID_RESPONSE = "The action did not produce a valid JSON response: {detail}"
    INIT_FAILED = "The action failed during initialization: {detail}"
    LOG_WARNING = "The action did not initialize or run as expected. Log data might be missing."
    TRUNCATED_LOGS = "Logs were truncated because the total bytes size exceeds the limit of {n} bytes."
    TOO_BIG = "{field} larger than allowed: {size} > {limit} bytes."
    REMOVED = "Action could not be found or may have been deleted."
    INTERNAL = "There was an error processing your request."
    SHUTDOWN = "The runner shut down while this activation was running."
    PACKAGE_NOT_EMPTY = "Package not empty (contains {n} {entities}). Set force param or delete package contents."


def is_binary_code(code: str) -> bool:
    """Tell whether ``code`` is a base64 payload (a zip action), by OpenWhisk's rule.

    Args:
        code: The ``exec.code`` string of an action PUT.

    Returns:
        True for non-empty base64 text whose length is a multiple of 4.
    """
    text = code.strip()
    return bool(text) and len(text) % 4 == 0 and BASE64_RE.match(text) is not None


def root_namespace(namespace: str) -> str:
    """The namespace part of an entity path: ``guest`` for ``guest/pkg``."""
    return namespace.partition("/")[0]


def check_entity_name(name: str) -> bool:
    """Tell whether ``name`` is a valid OpenWhisk entity name.

    Args:
        name: Candidate action name (no package part).

    Returns:
        True when it matches OpenWhisk's rule and length cap.
    """
    return len(name) <= ENTITY_NAME_MAX and ENTITY_NAME_RE.match(name) is not None


def _check_range(label: str, value: int, bounds: tuple[int, int], unit: str = "") -> int:
    """Raise OpenWhisk's threshold message when ``value`` is outside ``bounds``."""
    low, high = bounds
    suffix = f" {unit}" if unit else ""
    if value < low:
        raise ValueError(f"{label} {value}{suffix} below allowed threshold of {low}{suffix}")
    if value > high:
        raise ValueError(f"{label} {value}{suffix} exceeds allowed threshold of {high}{suffix}")
    return value


class KeyValue(BaseModel):
    """One ``{"key", "value"}`` entry of parameters or annotations."""

    model_config = ConfigDict(extra="forbid")

    key: str = Field(min_length=1)
    value: Any = None
    init: bool | None = None


class ExecIn(BaseModel):
    """The ``exec`` part of an action PUT."""

    model_config = ConfigDict(extra="allow")

    kind: str
    code: str | None = None
    main: str | None = None
    binary: bool = False

    @field_validator("kind")
    @classmethod
    def _known_kind(cls, kind: str) -> str:
        resolved = KIND_ALIASES.get(kind, kind)
        if resolved not in SUPPORTED_KINDS:
            raise ValueError(f"kind '{kind}' not in Set({', '.join(SUPPORTED_KINDS)})")
        return resolved

    @field_validator("main")
    @classmethod
    def _main_identifier(cls, main: str | None) -> str | None:
        if main is not None and not main.isidentifier():
            raise ValueError(f"main '{main}' is not a Python identifier")
        return main


class LimitsIn(BaseModel):
    """Optional limits of an action PUT; OpenWhisk's ranges apply."""

    model_config = ConfigDict(extra="ignore")

    timeout: int | None = None
    memory: int | None = None
    logs: int | None = None
    concurrency: int | None = None

    @field_validator("timeout")
    @classmethod
    def _timeout(cls, v: int | None) -> int | None:
        return None if v is None else _check_range("duration", v, TIMEOUT_MS_RANGE, "milliseconds")

    @field_validator("memory")
    @classmethod
    def _memory(cls, v: int | None) -> int | None:
        return None if v is None else _check_range("memory", v, MEMORY_MB_RANGE, "MB")

    @field_validator("logs")
    @classmethod
    def _logs(cls, v: int | None) -> int | None:
        return None if v is None else _check_range("logs", v, LOGS_MB_RANGE, "MB")

    @field_validator("concurrency")
    @classmethod
    def _concurrency(cls, v: int | None) -> int | None:
        return None if v is None else _check_range("concurrency", v, (1, CONCURRENCY_MAX))


class ActionPut(BaseModel):
    """Body of ``PUT /namespaces/{ns}/actions/{name}`` (``WhiskActionPut``)."""

    model_config = ConfigDict(extra="ignore")

    exec: ExecIn | None = None
    parameters: list[KeyValue] | None = None
    limits: LimitsIn | None = None
    annotations: list[KeyValue] | None = None
    version: str | None = None
    publish: bool | None = None


def merge_limits(old: dict[str, int] | None, new: LimitsIn | None) -> dict[str, int]:
    """Combine stored limits with a PUT's limits, field by field, like OpenWhisk.

    Args:
        old: Limits of the existing action, or None on create.
        new: Limits from the request, or None.

    Returns:
        A complete limits dict.
    """
    merged = dict(DEFAULT_LIMITS if old is None else old)
    if new is not None:
        merged.update(new.model_dump(exclude_none=True))
    return merged


def kv_to_dict(entries: list[dict[str, Any]]) -> dict[str, Any]:
    """Turn OpenWhisk's ``[{"key","value"}]`` list into a dict (later keys win)."""
    return {e["key"]: e.get("value") for e in entries}


def bump_patch(version: str) -> str:
    """Increase the patch part of an OpenWhisk ``major.minor.patch`` version."""
    major, minor, patch = (int(p) for p in version.split("."))
    return f"{major}.{minor}.{patch + 1}"
