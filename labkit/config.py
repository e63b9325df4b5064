"""One config object for the whole lab, read from ``LABKIT_*`` variables or ``.env``."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field, ValidationError, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from labkit.errors import LabConfigError

# Default ports of the native stack. LABKIT_PORT_OFFSET shifts them all, so two
# labs (a student's and the test suite's) can run side by side.
DEFAULT_PORTS: dict[str, int] = {
    "storage": 7070,
    "storage-out": 7071,
    "kafka": 9092,
    "kafka-controller": 9093,
    "faas": 3233,
    "nodered": 1880,
    "mail-smtp": 1025,
    "mail-http": 8025,
    "toxiproxy": 8474,
    # Kafka's second listener, for clients that go through the store-kafka hop.
    "kafka-proxied": 9094,
    # Toxiproxy's listeners, one per hop of the pipeline (labkit.hops).
    "hop-client-store": 8481,
    "hop-store-kafka": 8482,
    "hop-nodered-faas": 8483,
    "hop-action-store": 8484,
    "hop-store-webhook": 8485,
}


class LabConfig(BaseSettings):
    """Settings of one lab instance.

    Every field can be set as ``LABKIT_<FIELD>`` in the environment or in a
    ``.env`` file in the working directory.
    """

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
    # Remote backend: existing endpoints to point the lab at.
    remote_s3_url: str | None = None
    remote_s3_out_url: str | None = None
    remote_kafka_bootstrap: str | None = None
    remote_faas_url: str | None = None
    remote_nodered_url: str | None = None
    remote_mail_url: str | None = None

    @field_validator("host")
    @classmethod
    def _loopback_only(cls, host: str) -> str:
        if host not in ("127.0.0.1", "localhost", "::1"):
            raise ValueError("listeners bind to loopback only; set LABKIT_HOST=127.0.0.1")
        return host

    @field_validator("port_offset")
    @classmethod
    def _ports_in_range(cls, offset: int) -> int:
        low, high = min(DEFAULT_PORTS.values()) + offset, max(DEFAULT_PORTS.values()) + offset
        if low < 1024 or high > 65535:
            raise ValueError(f"shifts ports to {low}..{high}; pick an offset that keeps them in 1024..65535")
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


def load_config(**overrides: object) -> LabConfig:
    """Build the config, turning validation errors into one clear message.

    Raises:
        LabConfigError: a ``LABKIT_*`` value is invalid.
    """
    try:
        return LabConfig(**overrides)
    except ValidationError as e:
        problems = "; ".join(
            f"LABKIT_{'_'.join(str(p) for p in err['loc']).upper()}: {err['msg']}" for err in e.errors()
        )
        raise LabConfigError(f"Invalid lab configuration: {problems}") from e
