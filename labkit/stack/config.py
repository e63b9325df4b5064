"""One config object for the whole lab, read from ``LABKIT_*`` variables or ``.env``."""

from __future__ import annotations

import os

from pathlib import Path
from typing import Any

from pydantic import Field, ValidationError, ValidationInfo, create_model, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from labkit.errors import LabConfigError
from labkit.stack.services.catalog import default_ports, remote_endpoints

# Default ports of the native stack, as each service declares them (labkit.stack.services).
# LABKIT_PORT_OFFSET shifts them all, so two labs (a student's and the test suite's) can
# run side by side.
DEFAULT_PORTS: dict[str, int] = default_ports()


# Where the kernel reads the ports it hands out to outgoing connections.
EPHEMERAL_RANGE_FILE = Path("/proc/sys/net/ipv4/ip_local_port_range")
# Linux's default, for systems that do not expose the file.
DEFAULT_EPHEMERAL_RANGE = (32768, 60999)


def ephemeral_range(path: Path = EPHEMERAL_RANGE_FILE) -> tuple[int, int]:
    """The kernel's ephemeral port range (``low``, ``high``), inclusive.

    A listener inside it can find its port taken by any outgoing connection, or by one
    lingering in TIME-WAIT, so the lab keeps its ports out of it.
    """
    try:
        low, high = (int(v) for v in path.read_text().split())
    except (OSError, ValueError):
        return DEFAULT_EPHEMERAL_RANGE
    return low, high


def safe_offsets(ephemeral: tuple[int, int] | None = None) -> range:
    """The offsets that keep every lab port in 1024..65535 and below the ephemeral range.

    (Above it there is no room: the range ends near 61000 and the lab's ports span about 8000.)
    """
    low, _ = ephemeral or ephemeral_range()
    return range(1024 - min(DEFAULT_PORTS.values()), low - max(DEFAULT_PORTS.values()))


class _LabSettings(BaseSettings):
    """The settings every lab has; :data:`LabConfig` adds the remote backend's."""

    model_config = SettingsConfigDict(env_prefix="LABKIT_", env_file=".env", extra="ignore")

    backend: str = "native"
    data_dir: Path = Field(default_factory=lambda: Path.home() / ".local" / "share" / "labkit")
    cache_dir: Path = Field(default_factory=lambda: Path.home() / ".cache" / "labkit")
    host: str = "127.0.0.1"
    port_offset: int = 0
    ready_timeout_s: float = 60.0
    poll_interval_s: float = 0.2
    stop_timeout_s: float = 10.0
    sla_threshold_s: float = 10.0
    # Kafka's topology (labkit.stack.services.kafka): 1 broker, or a replicated cluster of 3
    # (brokers kafka, kafka-2, kafka-3 and three controllers beside them; topics at replication
    # factor 3, min.insync.replicas 2).
    kafka_brokers: int = 1
    # The URL path a Jupyter server proxies the lab's UIs under (jupyter-server-proxy,
    # labkit.teaching.proxy): JupyterHub's user prefix (``/user/NAME/``) when the lab runs in a
    # single-user server; empty when the UIs are opened on loopback. Mailpit serves under it.
    web_prefix: str = Field(default_factory=lambda: os.environ.get("JUPYTERHUB_SERVICE_PREFIX", ""))

    @field_validator("host")
    @classmethod
    def _loopback_only(cls, host: str) -> str:
        if host not in ("127.0.0.1", "localhost", "::1"):
            raise ValueError("listeners bind to loopback only; set LABKIT_HOST=127.0.0.1")
        return host

    @field_validator("kafka_brokers")
    @classmethod
    def _one_or_three(cls, brokers: int, info: ValidationInfo) -> int:
        if brokers not in (1, 3):
            raise ValueError(f"{brokers} brokers is not a topology the lab runs; set LABKIT_KAFKA_BROKERS=1 "
                             "(one broker) or LABKIT_KAFKA_BROKERS=3 (a replicated cluster)")
        if brokers > 1 and info.data.get("backend") == "compose":
            raise ValueError("the replicated Kafka runs on the native backend only; set LABKIT_KAFKA_BROKERS=1 "
                             "or LABKIT_BACKEND=native")
        return brokers

    @field_validator("web_prefix")
    @classmethod
    def _slashed(cls, prefix: str) -> str:
        return f"/{prefix.strip('/')}/".replace("//", "/") if prefix.strip("/") else ""

    @field_validator("port_offset")
    @classmethod
    def _ports_in_range(cls, offset: int) -> int:
        low, high = min(DEFAULT_PORTS.values()) + offset, max(DEFAULT_PORTS.values()) + offset
        if low < 1024 or high > 65535:
            raise ValueError(f"shifts ports to {low}..{high}; pick an offset that keeps them in 1024..65535")
        eph_low, eph_high = ephemeral_range()
        inside = sorted(p + offset for p in DEFAULT_PORTS.values() if eph_low <= p + offset <= eph_high)
        if inside:
            safe = safe_offsets((eph_low, eph_high))
            raise ValueError(
                f"puts port(s) {inside[0]}..{inside[-1]} inside the kernel's ephemeral port range "
                f"{eph_low}-{eph_high} ({EPHEMERAL_RANGE_FILE}), where outgoing connections can take them; "
                f"pick an offset in {safe.start}..{safe.stop - 1}, for example 10000")
        return offset

    def port(self, name: str) -> int:
        """Return the port of a listener named in ``DEFAULT_PORTS``."""
        return DEFAULT_PORTS[name] + self.port_offset

    @property
    def logs_dir(self) -> Path:
        return self.data_dir / "logs"

    @property
    def run_dir(self) -> Path:
        return self.data_dir / "run"


def _remote_settings() -> dict[str, Any]:
    """One optional field per declared remote endpoint (``remote_s3_url``, ...): existing
    endpoints the remote backend points the lab at."""
    endpoints = {e.setting: (str | None, Field(default=None, description=e.description))
                 for e in remote_endpoints().values()}
    return {**endpoints, "remote_ca_bundle": (Path | None, Field(
        default=None, description="PEM file of the CA(s) the remote endpoints' certificates chain to "
                                  "(default: the system's roots)"))}


LabConfig = create_model(
    "LabConfig", __base__=_LabSettings, __module__=__name__, **_remote_settings(),
    __doc__="""Settings of one lab instance.

    Every field can be set as ``LABKIT_<FIELD>`` in the environment or in a
    ``.env`` file in the working directory.
    """)


def load_config(**overrides: object) -> LabConfig:
    """Build the config, turning validation errors into one clear message.

    Raises:
        LabConfigError: a ``LABKIT_*`` value is invalid.
    """
    try:
        return LabConfig(**overrides)
    except ValidationError as e:
        problems = "; ".join(
            f"LABKIT_{'_'.join(str(p) for p in err['loc']).upper()}: {err['msg'].removeprefix('Value error, ')}"
            for err in e.errors()
        )
        raise LabConfigError(f"Invalid lab configuration: {problems}") from e
