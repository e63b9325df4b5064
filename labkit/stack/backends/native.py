"""The default backend: every service as a real process on 127.0.0.1."""

from __future__ import annotations

import shutil
import time

from labkit.core.progress import QUIET, Reporter
from labkit.errors import LabConfigError
from labkit.stack.backends.base import Backend, ServiceStatus, check_service_name
from labkit.stack.context import LabContext
from labkit.stack.faultstate import repair_state
from labkit.stack.install import InstallStep, install, require_tools, verify_cache
from labkit.stack.process import port_owner, terminate_process
from labkit.stack.readiness import poll_until
from labkit.stack.secrets import make_private
from labkit.stack.services import SERVICE_TYPES, Service
from labkit.stack.services.kafka import REPLICAS
from labkit.stack.services.storage import keep_bucket_private

# How long a port held by a service just stopped may take to be free again.
PORT_RELEASE_S = 5.0


class NativeBackend(Backend):
    """Starts, watches and stops the services as detached local processes."""

    def __init__(self, ctx: LabContext, reporter: Reporter = QUIET):
        super().__init__(ctx, reporter)
        self.services: dict[str, Service] = {s.name: s for t in SERVICE_TYPES for s in t.instances(ctx)}

    # -- install -------------------------------------------------------------
    def install_steps(self) -> list[InstallStep]:
        steps = [step for s in self.services.values() if (step := s.install_step()) is not None]
        return list(dict.fromkeys(steps))  # both gateways share one versitygw build

    def install(self, force: bool = False) -> None:
        install(self.install_steps(), self.ctx.config.cache_dir, self.reporter, force=force)

    # -- whole stack ---------------------------------------------------------
    def up(self, wipe: bool = False) -> list[ServiceStatus]:
        """Start every service that is not already up and healthy; idempotent.

        Raises:
            LabConfigError: something the user must fix; nothing was started.
            ServiceError: a service failed to start; everything this call started is stopped again.
        """
        if wipe:
            self.down(wipe=True)
        self._repair()
        todo = [s for s in self.services.values() if s.record() is None]
        self._preflight(todo)
        self.ctx.secrets  # generated (0600) before any service needs them
        self.ctx.tls  # the lab's CA and server certificate, likewise
        if loosened := make_private(self.ctx.config.data_dir):
            self.reporter.note(f"{len(loosened)} paths of {self.ctx.config.data_dir} were open to other users; "
                               "now they are yours alone")
        with self.reporter.session():
            self._start_all(todo)
        return self.status()

    def down(self, wipe: bool = False) -> None:
        """Stop every service (in reverse start order); with ``wipe`` also delete their data."""
        for service in reversed(list(self.services.values())):
            if service.record() is not None:
                with self.reporter.step(f"stop {service.name}"):
                    service.stop()
        if wipe:
            for path in {p for service in self.services.values() for p in service.data_paths()}:
                shutil.rmtree(path, ignore_errors=True)
            shutil.rmtree(self.ctx.config.logs_dir, ignore_errors=True)

    def status(self) -> list[ServiceStatus]:
        return [self._status(s) for s in self.services.values()]

    def endpoints(self) -> dict[str, str]:
        return {name: s.endpoint() for name, s in self.services.items()}

    def bucket_made(self, bucket: str) -> None:
        keep_bucket_private(self.services["storage"].root, bucket)

    # -- one service ---------------------------------------------------------
    def service(self, name: str) -> Service:
        if name in REPLICAS and name not in self.services:
            raise LabConfigError(f"{name} is a node of the replicated Kafka, and this lab runs one broker. "
                                 "Fix: LABKIT_KAFKA_BROKERS=3, on a new lab or after `labkit down --wipe`.")
        return self.services[name if name in REPLICAS else check_service_name(name)]

    def logs(self, service: str, lines: int = 50) -> str:
        return self.service(service).log_tail(lines)

    def start(self, service: str) -> None:
        target = self.service(service)
        if target.record() is None:
            self._preflight([target])
            self._start_all([target])

    def stop(self, service: str) -> None:
        self.service(service).stop()

    def kill(self, service: str) -> None:
        self.service(service).kill()

    def pause(self, service: str) -> None:
        self.service(service).pause()

    def resume(self, service: str) -> None:
        self.service(service).resume()

    # -- internals -----------------------------------------------------------
    def _repair(self) -> None:
        """Make a crashed or interrupted lab startable: stop processes no state file
        accounts for, resume paused services, stop running-but-unhealthy ones so they
        start afresh, and redo the provisioning of the survivors. Stale state files
        are cleared by ``ProcessTable.load`` itself."""
        for service in self.services.values():
            for orphan in service.orphans():
                self.reporter.note(f"{service.name}: stopping pid {orphan.pid}, left by an interrupted start")
                terminate_process(orphan, self.ctx.config.stop_timeout_s)
        for service in self.services.values():
            if service.paused():
                self.reporter.note(f"{service.name} was left paused; resuming it")
                service.resume()
            if service.record() is not None and not _settles(service):
                self.reporter.note(f"{service.name} runs but is not healthy; restarting it")
                service.stop()
        # A start interrupted between "ready" and "provisioned" (hop proxies, topics)
        # leaves a healthy service without what the next ones need; provisioning is idempotent.
        for service in self.services.values():
            if service.record() is not None:
                service.on_ready()
        # Faults a dead kernel left in force (toxics, faults.json).
        toxiproxy = self.services["toxiproxy"]
        url = toxiproxy.endpoint() if toxiproxy.record() is not None else None
        for repaired in repair_state(self.ctx.config.data_dir, url):
            self.reporter.note(f"fault repair: {repaired}")

    def _preflight(self, todo: list[Service]) -> None:
        """Check everything the user must fix before starting anything.

        Raises:
            LabConfigError: a missing runtime, a damaged cache, or a port in use.
        """
        if not todo:
            return
        require_tools({t for s in todo for t in s.runtime_tools}, "`labkit up`")
        verify_cache([step for s in todo if (step := s.install_step()) is not None], self.ctx.config.cache_dir)
        def busy_ports() -> list[str]:
            return [f"{port} ({s.name}) is used by {owner}"
                    for s in todo for port in s.ports.values() if (owner := port_owner(port))]

        # A service stopped a moment ago may still be letting go of its port (a restart).
        busy = busy_ports()
        if busy and poll_until(lambda: not busy_ports(), PORT_RELEASE_S, 0.2) == "ready":
            busy = []
        if busy:
            raise LabConfigError(
                f"Port in use: {'; '.join(busy)}. Fix: stop that process, or move the lab's ports "
                "with LABKIT_PORT_OFFSET (for example LABKIT_PORT_OFFSET=100).")

    def _start_all(self, todo: list[Service]) -> None:
        """Start ``todo`` in waves (a service waits for the ones it sends events to);
        on any failure stop what this call started, then re-raise."""
        started: list[Service] = []
        try:
            for wave in _waves(todo):
                for service in wave:
                    service.start()
                    started.append(service)
                for service in wave:
                    with self.reporter.step(f"start {service.name}"):
                        service.wait_ready()
                        service.on_ready()
        except BaseException:
            for service in reversed(started):
                service.stop()
            raise

    def _status(self, service: Service) -> ServiceStatus:
        record = service.record()
        if record is None:
            return ServiceStatus(service.name, "down", False, None, service.ports, service.version, service.endpoint())
        healthy = service.healthy()
        state = "paused" if service.paused() else ("up" if healthy else "unhealthy")
        version = service.running_version(record.version) if healthy else record.version
        return ServiceStatus(service.name, state, healthy, record.pid, record.ports, version,
                             service.endpoint(), round(time.time() - record.started_at, 1))


def _settles(service: Service) -> bool:
    """A running service that is still starting gets a short grace before it counts as unhealthy."""
    try:
        service.wait_ready(timeout_s=5)
        return True
    except Exception:
        return False


def _waves(todo: list[Service]) -> list[list[Service]]:
    """Group services so each comes after the services named in its ``after``."""
    pending, waves, placed = list(todo), [], set()
    names = {s.name for s in todo}
    while pending:
        wave = [s for s in pending if all(d in placed or d not in names for d in s.after)]
        waves.append(wave)
        placed |= {s.name for s in wave}
        pending = [s for s in pending if s not in wave]
    return waves
