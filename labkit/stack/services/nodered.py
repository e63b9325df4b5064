"""Orchestration: Node-RED 4.1 with the nodes the flow needs, its admin API behind generated credentials."""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import TYPE_CHECKING

from labkit.stack.install import InstallStep, NpmPackage
from labkit.stack.readiness import AllReady, HttpReady, Readiness
from labkit.stack.services.base import Service
from labkit.stack.services.catalog import hop_url
from labkit.stack.services.declarations import ComposeEntry, Hop, RemoteEndpoint
from labkit.stack.services.kafka import kafka_bootstrap
from labkit.stack.versions import STACK_DIR, pin

if TYPE_CHECKING:
    from labkit.stack.secrets import LabSecrets

NODERED_DIR = STACK_DIR / "nodered"
# Uploads through the flow's /upload endpoint may be large (a 50 MB photo); the
# webhook and the other endpoints stay small anyway.
MAX_BODY_BYTES = 64 * 1024 * 1024
# The pipeline's metrics file (one JSON line per image), relative to the lab's data dir.
METRICS_FILE = Path("metrics") / "metrics.jsonl"


def _sources_digest() -> str:
    """A digest of the lock file and the local nodes, so editing either reinstalls."""
    h = hashlib.sha256()
    files = [NODERED_DIR / "package-lock.json", *sorted((NODERED_DIR / "nodes").rglob("*"))]
    for f in files:
        if f.is_file() and "node_modules" not in f.parts:
            h.update(str(f.relative_to(NODERED_DIR)).encode() + f.read_bytes())
    return h.hexdigest()[:10]


def pipeline_environment(s: LabSecrets, *, kafka_bootstrap: str, s3_url: str, s3_out_url: str, faas_url: str,
                         metrics_file: str) -> dict[str, str]:
    """What Node-RED's settings and the pipeline flow read from its environment, wherever it runs:
    the native backend starts Node-RED with it, and a remote lab writes it to an env file for the
    remote Node-RED's operator (``labkit remote nodered-env``, :mod:`labkit.stack.backends.remote`).

    The admin login also guards the flow's metrics endpoint (``GET /pipeline/metrics``).
    """
    return {
        "LABKIT_NODERED_USER": s.nodered_user,
        "LABKIT_NODERED_PASSWORD": s.nodered_password.get_secret_value(),
        "LABKIT_NODERED_CREDENTIAL_SECRET": s.nodered_credential_secret.get_secret_value(),
        "LABKIT_NODERED_MAX_BODY_BYTES": str(MAX_BODY_BYTES),
        "LABKIT_KAFKA_BOOTSTRAP": kafka_bootstrap,
        "LABKIT_S3_URL": s3_url,
        "LABKIT_S3_OUT_URL": s3_out_url,
        "LABKIT_S3_ACCESS_KEY": s.s3_access_key.get_secret_value(),
        "LABKIT_S3_SECRET_KEY": s.s3_secret_key.get_secret_value(),
        "LABKIT_FAAS_URL": faas_url,
        "LABKIT_FAAS_AUTH": s.faas_auth.get_secret_value(),
        "LABKIT_WEBHOOK_TOKEN": s.webhook_token.get_secret_value(),
        "LABKIT_METRICS_FILE": metrics_file,
    }


class NodeRed(Service):
    name = "nodered"
    start_order = 50
    # nodered: the editor, admin API, dashboard and /upload, for browsers and labkit (plain HTTP
    # on loopback); nodered-tls: the same app over TLS, where the store's webhook (its token in
    # the URL) comes in through its hop (stack/nodered/tls-listener.js).
    default_ports = {"nodered": 1880, "nodered-tls": 1881}
    pin_key = "nodered"
    runtime_tools = ("node",)
    on_image_path = True
    hops = (Hop("store-webhook", 8485, upstream="nodered", description="the store's webhook to Node-RED",
                tls=True, tls_upstream="nodered-tls"),)
    remote = RemoteEndpoint("remote_nodered_url", "Node-RED's editor and admin API")
    compose = ComposeEntry(unpublished=("nodered-tls",))  # compose's hops stay plain (docs/security.md)

    def install_step(self) -> InstallStep:
        return NpmPackage("nodered", f"{pin('nodered')['version']}-{_sources_digest()}", source=NODERED_DIR,
                          entry="node_modules/node-red/red.js")

    def environment(self) -> dict[str, str]:
        """The runtime's settings, and what the pipeline flow reads with ``env.get``/``${...}``.

        Secrets reach the flow only this way, never through the flow JSON.
        """
        s, host, port = self.ctx.secrets, self.host, self.config.port
        metrics_file = self.config.data_dir / METRICS_FILE
        metrics_file.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        return {
            "LABKIT_NODERED_HOST": host,
            **pipeline_environment(s, kafka_bootstrap=kafka_bootstrap(self.config),
                                   s3_url=hop_url(self.config, "client-store"),
                                   s3_out_url=f"{'https' if self.tls else 'http'}://{host}:{port('storage-out')}",
                                   faas_url=hop_url(self.config, "nodered-faas"), metrics_file=str(metrics_file)),
            "NODE_OPTIONS": "--max-old-space-size=512",
            # settings.js requires minio (for function nodes) through this path
            "NODE_PATH": str(self.install_step().target(self.config.cache_dir) / "node_modules"),
            "LABKIT_SMTP_HOST": host,
            "LABKIT_SMTP_PORT": str(port("mail-smtp")),
            **self._tls_environment(),
        }

    def _tls_environment(self) -> dict[str, str]:
        """Its TLS listener for the webhook, and the lab's CA for its own clients (the store, the
        FaaS runner): every ``https`` request Node.js makes trusts it (NODE_EXTRA_CA_CERTS)."""
        if not self.tls:
            return {}
        return {"LABKIT_NODERED_TLS_PORT": str(self.ports["nodered-tls"]),
                "LABKIT_NODERED_PORT": str(self.ports["nodered"]),
                "LABKIT_TLS_CERT": str(self.tls.cert_file), "LABKIT_TLS_KEY": str(self.tls.key_file),
                "NODE_EXTRA_CA_CERTS": str(self.tls.ca_file)}

    def command(self) -> list[str]:
        red = self.install_step().target(self.config.cache_dir) / "node_modules" / "node-red" / "red.js"
        return ["node", str(red), "--userDir", str(self.workdir), "--settings", str(NODERED_DIR / "settings.js"),
                "--port", str(self.ports["nodered"])]

    def readiness(self) -> Readiness:
        plain = HttpReady(f"{self.endpoint()}/auth/login")
        if not self.tls:
            return plain
        # storage-out starts after this, and stops at once when its first webhook fails
        return AllReady((plain, HttpReady(f"{self.tls_endpoint()}/auth/login", verify=self.ctx.verify)))

    def tls_endpoint(self) -> str:
        """Node-RED's TLS listener (the far end of the ``store-webhook`` hop)."""
        return f"https://{self.host}:{self.ports['nodered-tls']}"

    def endpoint(self) -> str:
        return f"http://{self.host}:{self.ports['nodered']}"
