"""Runner settings and the OpenWhisk-style auth key."""

from __future__ import annotations

import os
import re
import uuid
from dataclasses import dataclass, field
from pathlib import Path

AUTH_ENV = "LABKIT_FAAS_AUTH"
_KEY_RE = re.compile(r"\A[A-Za-z0-9]{16,256}\Z")


@dataclass(frozen=True)
class Credentials:
    """An OpenWhisk ``uuid:key`` pair.

    ``repr`` hides the key so it never lands in a log or traceback.
    """

    uuid: str
    key: str = field(repr=False)

    @property
    def basic(self) -> str:
        """The ``uuid:key`` form, as ``wsk`` and OpenWhisk expect it."""
        return f"{self.uuid}:{self.key}"


def parse_auth(raw: str | None) -> Credentials:
    """Validate an OpenWhisk auth string.

    Args:
        raw: Value of ``LABKIT_FAAS_AUTH`` (``uuid:key``), or None.

    Returns:
        The parsed credentials.

    Raises:
        ValueError: When missing or malformed; the message never echoes the key.
    """
    if not raw:
        raise ValueError(f"{AUTH_ENV} is not set; export it as 'uuid:key' (OpenWhisk auth form)")
    user, sep, key = raw.strip().partition(":")
    if not sep:
        raise ValueError(f"{AUTH_ENV} is malformed: expected 'uuid:key'")
    try:
        uuid.UUID(user)
    except ValueError:
        raise ValueError(f"{AUTH_ENV} is malformed: the part before ':' must be a UUID") from None
    if not _KEY_RE.match(key):
        raise ValueError(f"{AUTH_ENV} is malformed: the key after ':' must be 16-256 letters or digits")
    return Credentials(uuid=user, key=key)


def default_max_workers() -> int:
    """Global worker cap: twice the CPU count, like the brief's default."""
    return 2 * (os.cpu_count() or 1)


@dataclass(frozen=True)
class RunnerSettings:
    """Everything the runner needs; built from the CLI.

    Attributes:
        auth: Credentials that every ``/api/v1`` call must present.
        data_dir: Where actions and the activation journal live.
        host: Address to bind.
        port: TCP port to bind.
        idle_timeout_s: Warm workers idle this long are stopped.
        max_workers: Cap on worker processes across all actions.
        blocking_timeout_s: How long a blocking invoke waits before answering 202.
        max_action_bytes: Largest action PUT body.
        max_payload_bytes: Largest invocation body.
        activation_ring: Activations kept in memory.
        api_host: Value given to actions as ``__OW_API_HOST``.
        tls: Whether the runner serves HTTPS (``--tls-cert``/``--tls-key``).
    """

    auth: Credentials
    data_dir: Path
    host: str = "127.0.0.1"
    port: int = 3233
    idle_timeout_s: float = 600.0
    max_workers: int = field(default_factory=default_max_workers)
    blocking_timeout_s: float = 60.0
    max_action_bytes: int = 48 * 1024 * 1024
    max_payload_bytes: int = 1024 * 1024
    activation_ring: int = 10_000
    api_host: str = ""
    tls: bool = False

    @property
    def effective_api_host(self) -> str:
        """``__OW_API_HOST`` for actions: explicit, else this runner's URL."""
        return self.api_host or f"{'https' if self.tls else 'http'}://{self.host}:{self.port}"
