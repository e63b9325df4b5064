"""Orchestration: Node-RED 4.1 with the nodes the flow needs, its admin API behind generated credentials."""

from __future__ import annotations

import hashlib

from labkit.install import InstallStep, NpmPackage
from labkit.readiness import HttpReady, Readiness
from labkit.services.base import Service
from labkit.versions import STACK_DIR, pin

NODERED_DIR = STACK_DIR / "nodered"


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
    pin_key = "nodered"
    port_names = ("nodered",)

    def install_step(self) -> InstallStep:
        return NpmPackage("nodered", f"{pin('nodered')['version']}-{_sources_digest()}", source=NODERED_DIR,
                          entry="node_modules/node-red/red.js")

    def environment(self) -> dict[str, str]:
        s = self.ctx.secrets
        return {
            "LABKIT_NODERED_HOST": self.host,
            "LABKIT_NODERED_USER": s.nodered_user,
            "LABKIT_NODERED_PASSWORD": s.nodered_password.get_secret_value(),
            "LABKIT_NODERED_CREDENTIAL_SECRET": s.nodered_credential_secret.get_secret_value(),
            "NODE_OPTIONS": "--max-old-space-size=512",
        }

    def command(self) -> list[str]:
        red = self.install_step().target(self.config.cache_dir) / "node_modules" / "node-red" / "red.js"
        return ["node", str(red), "--userDir", str(self.workdir), "--settings", str(NODERED_DIR / "settings.js"),
                "--port", str(self.ports["nodered"])]

    def readiness(self) -> Readiness:
        return HttpReady(f"{self.endpoint()}/auth/login")

    def endpoint(self) -> str:
        return f"http://{self.host}:{self.ports['nodered']}"
