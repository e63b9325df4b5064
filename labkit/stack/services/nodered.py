"""Orchestration: Node-RED 4.1 with the nodes the flow needs, its admin API behind generated credentials."""

from __future__ import annotations

import hashlib
from pathlib import Path

from labkit.stack.install import InstallStep, NpmPackage
from labkit.stack.readiness import HttpReady, Readiness
from labkit.stack.services.base import Service
from labkit.stack.services.declarations import Hop, RemoteEndpoint, hop_url
from labkit.stack.versions import STACK_DIR, pin

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


class NodeRed(Service):
    name = "nodered"
    start_order = 50
    default_ports = {"nodered": 1880}
    pin_key = "nodered"
    runtime_tools = ("node",)
    on_image_path = True
    hops = (Hop("store-webhook", 8485, upstream="nodered", description="the store's webhook to Node-RED"),)
    remote = RemoteEndpoint("remote_nodered_url", "Node-RED's editor and admin API")

    def install_step(self) -> InstallStep:
        return NpmPackage("nodered", f"{pin('nodered')['version']}-{_sources_digest()}", source=NODERED_DIR,
                          entry="node_modules/node-red/red.js")

    def environment(self) -> dict[str, str]:
        """The runtime's settings, and what the pipeline flow reads with ``env.get``/``${...}``.

        Secrets reach the flow only this way, never through the flow JSON.
        """
        s, host, port = self.ctx.secrets, self.host, self.config.port
        metrics_file = self.config.data_dir / METRICS_FILE
        metrics_file.parent.mkdir(parents=True, exist_ok=True)
        return {
            "LABKIT_NODERED_HOST": host,
            "LABKIT_NODERED_USER": s.nodered_user,
            "LABKIT_NODERED_PASSWORD": s.nodered_password.get_secret_value(),
            "LABKIT_NODERED_CREDENTIAL_SECRET": s.nodered_credential_secret.get_secret_value(),
            "LABKIT_NODERED_MAX_BODY_BYTES": str(MAX_BODY_BYTES),
            "NODE_OPTIONS": "--max-old-space-size=512",
            # settings.js requires minio (for function nodes) through this path
            "NODE_PATH": str(self.install_step().target(self.config.cache_dir) / "node_modules"),
            "LABKIT_KAFKA_BOOTSTRAP": f"{host}:{port('kafka')}",
            "LABKIT_S3_URL": hop_url(self.config, "client-store"),
            "LABKIT_S3_OUT_URL": f"http://{host}:{port('storage-out')}",
            "LABKIT_S3_ACCESS_KEY": s.s3_access_key.get_secret_value(),
            "LABKIT_S3_SECRET_KEY": s.s3_secret_key.get_secret_value(),
            "LABKIT_FAAS_URL": hop_url(self.config, "nodered-faas"),
            "LABKIT_FAAS_AUTH": s.faas_auth.get_secret_value(),
            "LABKIT_WEBHOOK_TOKEN": s.webhook_token.get_secret_value(),
            "LABKIT_METRICS_FILE": str(metrics_file),
            "LABKIT_SMTP_HOST": host,
            "LABKIT_SMTP_PORT": str(port("mail-smtp")),
        }

    def command(self) -> list[str]:
        red = self.install_step().target(self.config.cache_dir) / "node_modules" / "node-red" / "red.js"
        return ["node", str(red), "--userDir", str(self.workdir), "--settings", str(NODERED_DIR / "settings.js"),
                "--port", str(self.ports["nodered"])]

    def readiness(self) -> Readiness:
        return HttpReady(f"{self.endpoint()}/auth/login")

    def endpoint(self) -> str:
        return f"http://{self.host}:{self.ports['nodered']}"
