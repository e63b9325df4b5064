"""Point the lab at existing clusters: a Kafka cluster, an S3 service, an OpenWhisk deployment.

There are no processes to control here, only endpoints to reach.
"""

from __future__ import annotations

from labkit.errors import LabConfigError, ServiceError
from labkit.stack.backends.base import Backend, ServiceStatus, check_service_name
from labkit.stack.readiness import Readiness
from labkit.stack.services.catalog import remote_endpoints

# service -> what the user sets to point the lab at it (each service's RemoteEndpoint)
REMOTE_ENDPOINTS = remote_endpoints()
# service -> the config field that holds its endpoint
REMOTE_FIELDS: dict[str, str] = {name: e.setting for name, e in REMOTE_ENDPOINTS.items()}


class RemoteBackend(Backend):
    """Endpoints only; ``up`` checks they answer, process verbs are refused."""

    def endpoints(self) -> dict[str, str]:
        found = {name: getattr(self.ctx.config, field) for name, field in REMOTE_FIELDS.items()}
        return {name: url for name, url in found.items() if url}

    def _probe(self, name: str, url: str) -> Readiness:
        """Raises:
            LabConfigError: ``url`` is not the kind of address the endpoint takes.
        """
        return REMOTE_ENDPOINTS[name].readiness(url)

    def up(self, wipe: bool = False) -> list[ServiceStatus]:
        """Check every configured endpoint answers.

        Raises:
            LabConfigError: no endpoint is configured.
            ServiceError: an endpoint does not answer.
        """
        if not self.endpoints():
            fields = ", ".join(e.variable for e in REMOTE_ENDPOINTS.values())
            raise LabConfigError(f"The remote backend has no endpoints. Fix: set some of {fields}.")
        down = [row.name for row in self.status() if not row.healthy]
        if down:
            raise ServiceError(f"Remote endpoints do not answer: {', '.join(down)}. Hint: check the URLs and the network.")
        return self.status()

    def down(self, wipe: bool = False) -> None:
        """Nothing to stop: the clusters belong to someone else."""

    def status(self) -> list[ServiceStatus]:
        return [ServiceStatus(name, "remote", self._probe(name, url).probe(), None, {}, "remote", url)
                for name, url in self.endpoints().items()]

    def _no_process_control(self, service: str) -> None:
        check_service_name(service)
        raise LabConfigError(
            f"The remote backend has no process control, so {service} cannot be stopped, started or paused "
            "from here. Fix: use network faults (Toxiproxy) instead, or LABKIT_BACKEND=native.")

    def logs(self, service: str, lines: int = 50) -> str:
        self._no_process_control(service)
        return ""

    def stop(self, service: str) -> None:
        self._no_process_control(service)

    def start(self, service: str) -> None:
        self._no_process_control(service)

    def kill(self, service: str) -> None:
        self._no_process_control(service)

    def pause(self, service: str) -> None:
        self._no_process_control(service)

    def resume(self, service: str) -> None:
        self._no_process_control(service)
