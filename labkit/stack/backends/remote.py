"""Point the lab at existing clusters: a Kafka cluster, an S3 service, an OpenWhisk deployment.

There are no processes to control here, only endpoints to reach. What the lab's own code
needs of them it gets from the endpoints too:

- a hop's address (:meth:`RemoteBackend.hop_url`) is the endpoint of the service at its far
  end, so the action deployed there reads and writes through ``LABKIT_REMOTE_S3_OUT_URL``;
- the remote Node-RED's environment is written by ``labkit remote nodered-env`` to an env file
  (0600) that its operator loads (a Kubernetes Secret, say): :meth:`RemoteBackend.nodered_environment`;
- the metrics lines come from the flow's ``GET /pipeline/metrics`` (the Node-RED admin login),
  mirrored into the lab's own metrics file before each read (:meth:`RemoteBackend.pull_metrics`);
- the endpoints' certificates are checked against ``LABKIT_REMOTE_CA_BUNDLE`` when it is set.
"""

from __future__ import annotations

import os
from pathlib import Path

import httpx

from labkit.core.files import atomic_write, locked
from labkit.errors import LabConfigError, ServiceError
from labkit.stack import hops
from labkit.stack.backends.base import Backend, ServiceStatus, check_service_name
from labkit.stack.readiness import Readiness
from labkit.stack.services.catalog import port_owner, remote_endpoints
from labkit.stack.services.nodered import pipeline_environment

# service -> what the user sets to point the lab at it (each service's RemoteEndpoint)
REMOTE_ENDPOINTS = remote_endpoints()
# service -> the config field that holds its endpoint
REMOTE_FIELDS: dict[str, str] = {name: e.setting for name, e in REMOTE_ENDPOINTS.items()}
# The flow's metrics endpoint (stack/nodered/flows.json, "GET /pipeline/metrics").
METRICS_ROUTE = "/pipeline/metrics"
# Where a remote Node-RED appends its metrics by default: under the userDir of the official
# Node-RED image (/data), on its persistent volume.
REMOTE_METRICS_FILE = "/data/metrics/metrics.jsonl"
# What the remote Node-RED's env file needs: the services its flow talks to.
NODERED_NEEDS = ("kafka", "storage", "storage-out", "faas")
METRICS_TIMEOUT_S = 15.0


class RemoteBackend(Backend):
    """Endpoints only; ``up`` checks they answer, process verbs are refused."""

    def endpoints(self) -> dict[str, str]:
        found = {name: getattr(self.ctx.config, field) for name, field in REMOTE_FIELDS.items()}
        return {name: url for name, url in found.items() if url}

    def _probe(self, name: str, url: str) -> Readiness:
        """Raises:
            LabConfigError: ``url`` is not the kind of address the endpoint takes.
        """
        return REMOTE_ENDPOINTS[name].readiness(url, verify=self.ctx.verify)

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
            trust = (" and LABKIT_REMOTE_CA_BUNDLE (the CA their certificates chain to)"
                     if any(self.endpoints()[n].startswith("https:") for n in down) else "")
            raise ServiceError(f"Remote endpoints do not answer: {', '.join(down)}. "
                               f"Hint: check the URLs{trust} and the network.")
        return self.status()

    def down(self, wipe: bool = False) -> None:
        """Nothing to stop: the clusters belong to someone else."""

    def status(self) -> list[ServiceStatus]:
        return [ServiceStatus(name, "remote", self._probe(name, url).probe(), None, {}, "remote", url)
                for name, url in self.endpoints().items()]

    # -- what the lab's code needs of the endpoints -----------------------------
    def hop_url(self, name: str) -> str:
        """The endpoint of the service at hop ``name``'s far end: there is no proxy of this lab's
        between remote services (``action-store``: ``LABKIT_REMOTE_S3_OUT_URL``; ``store-kafka``:
        the bootstrap list as set). Point an endpoint at a proxy of the remote's own Toxiproxy
        to have faults act on its hop (docs/scaling.md).

        Raises:
            LabConfigError: no such hop, or the far end's endpoint is not set.
        """
        service = port_owner(hops.hop(name).upstream).name
        url = self.endpoints().get(service)
        if not url:
            raise LabConfigError(f"Hop {name} leads to {service}, which this remote lab has no endpoint for. "
                                 f"Fix: set {REMOTE_ENDPOINTS[service].variable}.")
        return url

    def nodered_environment(self, metrics_file: str = REMOTE_METRICS_FILE) -> dict[str, str]:
        """The environment the remote Node-RED runs the flow with (the native backend's
        :func:`~labkit.stack.services.nodered.pipeline_environment`, from this lab's endpoints
        and ``secrets.json``). Its SMTP server and ``NODE_EXTRA_CA_CERTS`` are the operator's.

        Raises:
            LabConfigError: an endpoint the flow needs is not set.
        """
        found = self.endpoints()
        missing = [REMOTE_ENDPOINTS[s].variable for s in NODERED_NEEDS if s not in found]
        if missing:
            raise LabConfigError(f"The remote Node-RED's environment needs {', '.join(missing)}. Fix: set "
                                 f"{'it' if len(missing) == 1 else 'them'} to the endpoints the remote Node-RED reaches.")
        return pipeline_environment(self.ctx.secrets, kafka_bootstrap=found["kafka"], s3_url=found["storage"],
                                    s3_out_url=found["storage-out"], faas_url=found["faas"], metrics_file=metrics_file)

    def write_nodered_env(self, out: Path, metrics_file: str = REMOTE_METRICS_FILE) -> int:
        """Write :meth:`nodered_environment` to ``out`` as an env file (``KEY=value`` lines, the
        form ``kubectl create secret generic --from-env-file`` and ``docker --env-file`` read),
        mode 0600 from its first byte. Returns the number of settings written.

        Raises:
            LabConfigError: an endpoint the flow needs is not set, or a value spans lines.
        """
        env = self.nodered_environment(metrics_file)
        if bad := [k for k, v in env.items() if "\n" in v or "\r" in v]:
            raise LabConfigError(f"{', '.join(bad)} span lines and cannot go into an env file. Fix: set them on one line.")
        header = ["# The labkit pipeline flow's environment for a remote Node-RED (labkit remote nodered-env).",
                  "# It holds the lab's secrets: keep it 0600 and never commit it. Add NODE_EXTRA_CA_CERTS=<the CA",
                  "# bundle's path in the container> when the services present a private CA's certificates, and",
                  "# LABKIT_SMTP_HOST / LABKIT_SMTP_PORT for the alert e-mails."]
        atomic_write(Path(out), "\n".join([*header, *(f"{k}={v}" for k, v in env.items())]) + "\n")
        return len(env)

    def pull_metrics(self, path: Path) -> None:
        """Mirror the remote Node-RED's metrics file into ``path``: fetch the bytes past what
        ``path`` holds from the flow's ``GET /pipeline/metrics`` and append them (start over when
        the remote file is shorter than the mirror: it was wiped).

        Raises:
            LabConfigError: no Node-RED endpoint, or it refused the lab's Node-RED login.
            ServiceError: the endpoint did not answer, or the flow has no metrics endpoint.
        """
        url = self.endpoints().get("nodered")
        if not url:
            raise LabConfigError("A remote lab reads its metrics from the remote Node-RED. "
                                 f"Fix: set {REMOTE_ENDPOINTS['nodered'].variable}.")
        path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        with locked(path.with_name(path.name + ".lock")):
            held = path.stat().st_size if path.exists() else 0
            while True:  # an answer carries at most a few MB: ask on until the copy is whole
                chunk, size = self._metrics_from(url, held)
                if size < held:  # the remote file was wiped or replaced: start over
                    atomic_write(path, b"")
                    held = 0
                    continue
                if not chunk:
                    return
                fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
                with os.fdopen(fd, "ab") as f:
                    f.write(chunk)
                held += len(chunk)
                if held >= size:
                    return

    def _metrics_from(self, url: str, offset: int) -> tuple[bytes, int]:
        s = self.ctx.secrets
        where = f"{url.rstrip('/')}{METRICS_ROUTE}"
        try:
            r = httpx.get(where, params={"offset": offset}, auth=(s.nodered_user, s.nodered_password.get_secret_value()),
                          verify=self.ctx.verify, timeout=METRICS_TIMEOUT_S)
        except httpx.HTTPError as e:
            raise ServiceError(f"The remote Node-RED's metrics ({where}) did not answer: {type(e).__name__}. "
                               "Hint: check LABKIT_REMOTE_NODERED_URL and the network.") from e
        if r.status_code == 401:
            raise LabConfigError(f"The remote Node-RED refused the lab's login for {where}. Fix: secrets.json's "
                                 "nodered_user and nodered_password must be its LABKIT_NODERED_USER and "
                                 "LABKIT_NODERED_PASSWORD.")
        if r.status_code != 200 or "x-metrics-size" not in r.headers:
            raise ServiceError(f"The remote Node-RED has no metrics endpoint at {where} (HTTP {r.status_code}). "
                               "Hint: deploy the pipeline flow first (labkit.pipeline.deploy.stand_up).")
        return r.content, int(r.headers["x-metrics-size"])

    # -- no process control -------------------------------------------------------
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
