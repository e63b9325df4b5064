"""The docker compose backend: the same services as containers, from ``stack/compose.yaml``.

The containers run images labkit builds from ``stack/images`` out of the native backend's
install cache (:func:`labkit.stack.docker.ensure_images`, at each ``up``: a no-op while
nothing changed), so both backends run the same code; FaaS is labkit's runner here too.

Every command is ``docker compose -f stack/compose.yaml -p labkit --env-file
DATA_DIR/compose.env ...``. The env file (mode 0600) carries the lab's secrets,
host ports and the host directory Node-RED writes its metrics to; secrets never
appear on a command line, and whatever compose prints is scrubbed of them before
labkit shows it.

As natively, every hop of the pipeline (:mod:`labkit.stack.hops`) runs through a
Toxiproxy proxy; in compose, Toxiproxy creates them from
``stack/toxiproxy/compose-proxies.json`` (:func:`compose_proxies` is what that
file must hold), and the hops' clients, all inside the network, reach them at
:meth:`ComposeBackend.hop_url`.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

from pydantic import SecretStr

from labkit import __version__
from labkit.core.files import atomic_write
from labkit.core.progress import QUIET, Reporter
from labkit.errors import LabConfigError, ServiceError
from labkit.stack.backends.base import Backend, ServiceStatus, check_service_name
from labkit.stack.config import DEFAULT_PORTS
from labkit.stack.context import LabContext
from labkit.stack.hops import HOPS, hop
from labkit.stack.images import ensure_images
from labkit.stack.services import SERVICE_TYPES, Service
from labkit.stack.services.catalog import port_owner, service_type
from labkit.stack.services.nodered import METRICS_FILE
from labkit.stack.versions import STACK_DIR, pin

COMPOSE_FILE = STACK_DIR / "compose.yaml"
PROJECT = "labkit"
ENV_FILE_NAME = "compose.env"
NETWORK = "labkit-lab"  # fixed in compose.yaml; OpenWhisk puts its action containers on it
KAFKA_UI_PORT = 8080  # --profile kafka-ui
OPENWHISK_PORT = 3234  # --profile openwhisk: real OpenWhisk standalone, beside the runner
# Listeners that stay inside their container, or the network (each service's ComposeEntry).
UNPUBLISHED_PORTS = frozenset(p for t in SERVICE_TYPES for p in t.compose.unpublished)
# The docker CLI inside openwhisk/standalone is 18.06, which speaks Docker API 1.38.
OPENWHISK_DOCKER_API = "1.38"
MIN_WAIT_S = 300  # with --profile openwhisk, the first `up` pulls OpenWhisk's runtimes
FIX = "install Docker Engine with the compose plugin, or use LABKIT_BACKEND=native"

# service -> its image's entry in stack/versions.toml (None: labkit's own, the FaaS runner)
PIN_KEYS: dict[str, str | None] = {t.name: t.compose_pin() for t in SERVICE_TYPES}

# Where containers (Node-RED flows, OpenWhisk actions) reach each service inside the network.
NETWORK_ENDPOINTS: dict[str, str] = {t.name: t.network_endpoint() for t in SERVICE_TYPES}

# env-file variable -> the LabSecrets field it carries; compose.yaml gives none of them a default.
SECRET_FIELDS: dict[str, str] = {
    "ROOT_ACCESS_KEY": "s3_access_key", "ROOT_SECRET_KEY": "s3_secret_key",
    "LABKIT_NODERED_USER": "nodered_user", "LABKIT_NODERED_PASSWORD": "nodered_password",
    "LABKIT_NODERED_CREDENTIAL_SECRET": "nodered_credential_secret",
    "LABKIT_WEBHOOK_TOKEN": "webhook_token", "LABKIT_FAAS_AUTH": "faas_auth",
}
SECRET_VARS: tuple[str, ...] = tuple(SECRET_FIELDS)

# Toxiproxy's proxies for the hops, created at its start (its -config file).
PROXIES_FILE = STACK_DIR / "toxiproxy" / "compose-proxies.json"
# Node-RED appends its metrics to METRICS_FILE's name in this directory of its
# container, a bind mount of DATA_DIR/metrics (the env file's METRICS_DIR_VAR).
METRICS_MOUNT = "/labkit/metrics"
METRICS_DIR_VAR = "LABKIT_METRICS_DIR"

ENV_HEADER = "# Written by labkit for docker compose (stack/compose.yaml). Holds the lab's secrets: keep it 0600.\n"


def port_var(name: str) -> str:
    """The env-file variable of a host port, e.g. ``storage-out`` -> ``LABKIT_PORT_STORAGE_OUT``."""
    return "LABKIT_PORT_" + name.upper().replace("-", "_")


def container_address(port_name: str) -> str:
    """``service:port`` where a listener named in ``DEFAULT_PORTS`` is reached inside the network.

    Containers listen on the default ports (only host ports move with the offset),
    e.g. ``kafka-proxied`` -> ``kafka:9094``, ``hop-action-store`` -> ``toxiproxy:8484``.
    Kafka's ``kafka`` port is its HOST listener, which containers must not use
    (they use ``NETWORK_ENDPOINTS["kafka"]``).
    """
    return f"{port_owner(port_name).compose_name()}:{DEFAULT_PORTS[port_name]}"


def compose_service(name: str) -> str:
    """The compose service of one of the lab's services.

    Raises:
        LabConfigError: ``name`` is not one of the lab's services.
    """
    return service_type(check_service_name(name)).compose_name()


def compose_proxies() -> list[dict]:
    """What ``stack/toxiproxy/compose-proxies.json`` holds: one proxy per hop, in ``HOPS`` order,
    listening on all of the toxiproxy container's interfaces and forwarding to the service by name."""
    return [{"name": h.name, "listen": f"0.0.0.0:{DEFAULT_PORTS[h.listen]}",
             "upstream": container_address(h.upstream), "enabled": True} for h in HOPS]


class ComposeBackend(Backend):
    """Runs the lab's services as containers with ``docker compose``."""

    def __init__(self, ctx: LabContext, reporter: Reporter = QUIET):
        super().__init__(ctx, reporter)
        self._docker_ok = False

    @property
    def env_file(self) -> Path:
        return self.ctx.config.data_dir / ENV_FILE_NAME

    # -- whole stack ---------------------------------------------------------
    def up(self, wipe: bool = False) -> list[ServiceStatus]:
        """Build, start and wait for every service to be healthy; idempotent.

        Raises:
            LabConfigError: Docker, its compose plugin or its engine is not usable.
            ServiceError: a service did not become healthy; the stack is stopped again
                (containers and their logs are kept).
        """
        self._require_docker()
        self._require_engine()
        if wipe:
            self.down(wipe=True)
        with self.reporter.session():
            ensure_images(self.ctx, self.reporter)
            with self.reporter.step("docker compose up (wait until healthy)"):
                self._start_or_stop_again()
        return self.status()

    def down(self, wipe: bool = False) -> None:
        """Stop and remove the containers; with ``wipe`` also their named volumes (the lab's data)."""
        self._require_docker()
        self._remove_action_containers()
        self._compose("down", "--remove-orphans", *(["--volumes"] if wipe else []))

    def status(self) -> list[ServiceStatus]:
        rows = {row.get("Service"): row for row in _json_rows(self._compose("ps", "--all", "--format", "json"))}
        return [self._status(t, rows.get(t.compose_name())) for t in SERVICE_TYPES]

    def endpoints(self) -> dict[str, str]:
        """The host's URLs: the same as the native backend's, from the config's ports."""
        return {t.name: t(self.ctx).endpoint() for t in SERVICE_TYPES}

    def network_endpoints(self) -> dict[str, str]:
        """Where code inside the network (flows, actions) reaches each service."""
        return dict(NETWORK_ENDPOINTS)

    def hop_address(self, name: str) -> str:
        """``host:port`` where the upstream side of hop ``name`` connects: its proxy, by name in
        the network, because every hop's client (storage, storage-out, Node-RED, the action
        in OpenWhisk's containers) runs inside it. The native counterpart is
        :func:`labkit.stack.hops.hop_address`.

        Raises:
            LabConfigError: ``name`` is not one of the hops.
        """
        return container_address(hop(name).listen)

    def hop_url(self, name: str) -> str:
        """``http://`` + :meth:`hop_address`, e.g. ``http://toxiproxy:8484`` for ``action-store``."""
        return f"http://{self.hop_address(name)}"

    # -- one service ---------------------------------------------------------
    def logs(self, service: str, lines: int = 50) -> str:
        return self._compose("logs", "--no-color", "--no-log-prefix", "--tail", str(lines), compose_service(service))

    def start(self, service: str) -> None:
        """Start one service and wait until it is healthy.

        Compose's ``start`` neither creates a missing container nor waits; ``up
        --no-deps --wait`` does both and leaves the other services alone.
        """
        self._compose("up", "--detach", "--no-deps", "--wait", *self._wait_timeout(), compose_service(service))

    def stop(self, service: str) -> None:
        self._compose("stop", compose_service(service))

    def restart(self, service: str) -> None:
        self._compose("restart", compose_service(service))
        self.start(service)  # waits until it is healthy again

    def kill(self, service: str) -> None:
        """SIGKILL the container, the way a crash would."""
        self._compose("kill", compose_service(service))

    def pause(self, service: str) -> None:
        self._compose("pause", compose_service(service))

    def resume(self, service: str) -> None:
        self._compose("unpause", compose_service(service))

    # -- the env file --------------------------------------------------------
    def compose_env(self) -> dict[str, str]:
        """Every variable compose.yaml reads: the secrets, the host ports, the metrics directory,
        then the user (and group) Node-RED and the runner run as: labkit's own."""
        plain = self.ctx.secrets.as_plain_dict()
        return {**{var: plain[field] for var, field in SECRET_FIELDS.items()}, **self._port_env(),
                METRICS_DIR_VAR: str(self.metrics_dir), "LABKIT_UID": str(os.getuid()), "LABKIT_GID": str(os.getgid())}

    @property
    def metrics_dir(self) -> Path:
        """The host directory mounted at ``METRICS_MOUNT`` in Node-RED's container (absolute:
        compose would take a relative one as relative to stack/)."""
        return (self.ctx.config.data_dir / METRICS_FILE).parent.absolute()

    def _port_env(self) -> dict[str, str]:
        config = self.ctx.config
        ports = {port_var(name): str(config.port(name)) for name in DEFAULT_PORTS if name not in UNPUBLISHED_PORTS}
        return {**ports, port_var("kafka-ui"): str(KAFKA_UI_PORT + config.port_offset),
                port_var("openwhisk"): str(OPENWHISK_PORT + config.port_offset)}

    def write_env_file(self) -> Path:
        """Write ``compose.env`` atomically, readable by its owner only (0600)."""
        path = self.env_file
        body = ENV_HEADER + "".join(f"{key}={_quote(value)}\n" for key, value in self.compose_env().items())
        return atomic_write(path, body)

    # -- internals -----------------------------------------------------------
    def _start_or_stop_again(self) -> None:
        """``up --wait``; when a service fails, stop the stack (keeping containers and logs) and re-raise."""
        try:
            self._compose("up", "--detach", "--remove-orphans", "--wait", *self._wait_timeout())
        except ServiceError as e:
            try:
                self._compose("stop")
            except ServiceError:
                pass  # the original failure is the one to report
            raise ServiceError(f"{e}\nThe stack was stopped again; `labkit logs SERVICE` shows why a "
                               "service did not become healthy.") from e

    def _wait_timeout(self) -> list[str]:
        return ["--wait-timeout", str(max(MIN_WAIT_S, int(self.ctx.config.ready_timeout_s)))]

    def _compose(self, *args: str) -> str:
        """Run one compose command with the env file; return its (scrubbed) stdout.

        Raises:
            LabConfigError: docker or its compose plugin is not usable.
            ServiceError: the command failed.
        """
        self._require_docker()
        self.write_env_file()
        # compose.yaml's long-syntax bind refuses a missing directory (rather than make it root's).
        self.metrics_dir.mkdir(parents=True, exist_ok=True)
        cmd = ["docker", "compose", "-f", str(COMPOSE_FILE), "-p", PROJECT, "--env-file", str(self.env_file), *args]
        result = subprocess.run(cmd, capture_output=True, text=True, env=self._child_env(), check=False)
        if result.returncode != 0:
            tail = "\n".join((result.stderr or result.stdout).strip().splitlines()[-15:])
            raise ServiceError(f"`docker compose {' '.join(args)}` failed (exit {result.returncode}):\n"
                               f"{self._scrub(tail)}\nHint: `docker compose -p {PROJECT} ps` shows each "
                               "container's state; `labkit logs SERVICE` its log.")
        return self._scrub(result.stdout)

    def _child_env(self) -> dict[str, str]:
        """The caller's environment without the env file's variables: compose would let them win."""
        written = set(self.compose_env())
        return {k: v for k, v in os.environ.items() if k not in written}

    def _scrub(self, text: str) -> str:
        """Replace every secret value in ``text`` (compose output, logs) by ``***``."""
        for _, value in self.ctx.secrets:
            if isinstance(value, SecretStr) and value.get_secret_value():
                text = text.replace(value.get_secret_value(), "***")
        return text

    def _require_docker(self) -> None:
        """Raises:
            LabConfigError: ``docker`` is not on PATH or ``docker compose version`` fails.
        """
        if self._docker_ok:
            return
        if shutil.which("docker") is None:
            raise LabConfigError(f"The compose backend needs Docker, but `docker` is not on PATH. Fix: {FIX}.")
        probe = _docker("compose", "version")
        if probe.returncode != 0:
            raise LabConfigError(f"`docker compose version` failed ({_first_line(probe)}), so Docker's compose "
                                 f"plugin is missing or broken. Fix: {FIX}.")
        self._docker_ok = True

    def _require_engine(self) -> None:
        """Raises:
            LabConfigError: the engine does not answer, or refuses the API version
                of the docker CLI inside the OpenWhisk image.
        """
        probe = _docker("version", "--format", "{{.Server.MinAPIVersion}}")
        if probe.returncode != 0:
            raise LabConfigError(
                f"Docker Engine does not answer (`docker version`: {_first_line(probe)}). Fix: start it "
                "(`sudo systemctl start docker`) and let your user use it (`sudo usermod -aG docker $USER`, "
                "then log in again), or use LABKIT_BACKEND=native.")
        minimum = probe.stdout.strip()
        if minimum and _api(minimum) > _api(OPENWHISK_DOCKER_API):
            raise LabConfigError(
                f"Docker Engine refuses clients older than API {minimum}, but OpenWhisk's image drives it with a "
                f"docker CLI that speaks API {OPENWHISK_DOCKER_API}. Fix: add \"min-api-version\": "
                f"\"{OPENWHISK_DOCKER_API}\" to /etc/docker/daemon.json and restart Docker (the lab's Vagrant VM "
                "does this), or use LABKIT_BACKEND=native.")

    def _remove_action_containers(self) -> None:
        """OpenWhisk's action containers are not compose's: remove them, or the network cannot go."""
        found = _docker("ps", "--all", "--quiet", "--filter", f"network={NETWORK}", "--filter", "name=wsk")
        ids = found.stdout.split() if found.returncode == 0 else []
        if ids:
            _docker("rm", "--force", *ids)

    def _status(self, service: type[Service], row: dict | None) -> ServiceStatus:
        state, healthy = _state(row)
        ports = {p: self.ctx.config.port(p) for p in service.published_ports()}
        key = PIN_KEYS[service.name]
        version = pin(key)["version"] if key else f"labkit-{__version__}"
        return ServiceStatus(service.name, state, healthy, None, ports, version, service(self.ctx).endpoint())


def _docker(*args: str) -> subprocess.CompletedProcess:
    """Run a plain docker command (no secrets in it); never raises for a non-zero exit."""
    try:
        return subprocess.run(["docker", *args], capture_output=True, text=True, timeout=60, check=False)
    except (OSError, subprocess.TimeoutExpired) as e:
        return subprocess.CompletedProcess(["docker", *args], 1, "", str(e))


def _first_line(result: subprocess.CompletedProcess) -> str:
    lines = (result.stderr or result.stdout or "").strip().splitlines()
    return lines[0] if lines else f"exit {result.returncode}"


def _api(version: str) -> tuple[int, ...]:
    return tuple(int(part) for part in version.split(".") if part.isdigit())


def _quote(value: str) -> str:
    """Single-quote an env-file value: compose reads it literally (no ``$`` interpolation).

    Raises:
        LabConfigError: the value holds a quote or a line break (it is not shown).
    """
    if "'" in value or "\n" in value or "\r" in value:
        raise LabConfigError("A lab secret holds a quote or a line break, which an env file cannot carry. "
                             "Fix: `labkit down --wipe` generates new secrets (this deletes the lab's data).")
    return f"'{value}'"


def _json_rows(text: str) -> list[dict]:
    """Parse ``compose ps --format json``: one JSON object per line (compose >= 2.21) or one array.

    Raises:
        ServiceError: compose printed something else.
    """
    text = text.strip()
    try:
        if text.startswith("["):
            return json.loads(text)
        return [json.loads(line) for line in text.splitlines() if line.strip()]
    except ValueError as e:
        raise ServiceError(f"`docker compose ps` printed no JSON ({e}). Hint: docker compose v2.21 or newer.") from e


def _state(row: dict | None) -> tuple[str, bool]:
    """Map a compose ps row to labkit's (state, healthy)."""
    if row is None or row.get("State") not in ("running", "paused"):
        return "down", False
    if row["State"] == "paused":
        return "paused", False
    if row.get("Health", "") in ("healthy", ""):  # "" only for a service without a healthcheck
        return "up", True
    return "unhealthy", False  # starting or unhealthy
