"""The small interface every backend implements."""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import asdict, dataclass
from pathlib import Path

from labkit.core.progress import QUIET, Reporter
from labkit.errors import LabConfigError
from labkit.stack import hops
from labkit.stack.context import LabContext
from labkit.stack.services import SERVICE_NAMES


@dataclass
class ServiceStatus:
    """One row of ``labkit status``."""

    name: str
    state: str  # up, down, paused, unhealthy, remote
    healthy: bool
    pid: int | None
    ports: dict[str, int]
    version: str
    endpoint: str
    uptime_s: float | None = None
    rss_mb: float | None = None  # the service's process tree, filled in by labkit.stack.usage
    cpu_pct: float | None = None  # % of one core over a short sample, likewise

    def as_dict(self) -> dict:
        return asdict(self)


class Backend(ABC):
    """Runs the lab's services somewhere: native processes, docker compose, or remote clusters."""

    def __init__(self, ctx: LabContext, reporter: Reporter = QUIET):
        self.ctx = ctx
        self.reporter = reporter

    @abstractmethod
    def up(self, wipe: bool = False) -> list[ServiceStatus]: ...

    @abstractmethod
    def down(self, wipe: bool = False) -> None: ...

    @abstractmethod
    def status(self) -> list[ServiceStatus]: ...

    @abstractmethod
    def logs(self, service: str, lines: int = 50) -> str: ...

    @abstractmethod
    def stop(self, service: str) -> None: ...

    @abstractmethod
    def start(self, service: str) -> None: ...

    def restart(self, service: str) -> None:
        self.stop(service)
        self.start(service)

    @abstractmethod
    def kill(self, service: str) -> None: ...

    @abstractmethod
    def pause(self, service: str) -> None: ...

    @abstractmethod
    def resume(self, service: str) -> None: ...

    @abstractmethod
    def endpoints(self) -> dict[str, str]:
        """Where clients reach each service (no secrets in it)."""

    def hop_url(self, name: str) -> str:
        """Where a service connects to reach hop ``name`` (its Toxiproxy proxy; a remote lab: the
        endpoint of the service at the hop's far end)."""
        return hops.hop_url(self.ctx.config, name)

    def pull_metrics(self, path: Path) -> None:
        """Bring the metrics file at ``path`` up to date before it is read: a backend whose Node-RED
        writes it elsewhere copies the new lines here (nothing to do where Node-RED writes ``path``)."""

    def bucket_made(self, bucket: str) -> None:
        """Called by ``Lab.s3()``'s client once it made ``bucket``: a backend that keeps the
        store's files itself readies the bucket's files there (nothing to do elsewhere)."""


def check_service_name(name: str) -> str:
    """Raises:
        LabConfigError: ``name`` is not one of the lab's services.
    """
    if name not in SERVICE_NAMES:
        raise LabConfigError(f"Unknown service {name!r}. Valid services: {', '.join(SERVICE_NAMES)}.")
    return name
