"""FaaS: labkit's runner, which speaks OpenWhisk's REST API and action protocol."""

from __future__ import annotations

import sys

from labkit.stack.install import InstallStep
from labkit.stack.readiness import HttpReady, Readiness
from labkit.stack.services.base import Service
from labkit.stack.services.declarations import ComposeEntry, Hop, RemoteEndpoint


class Faas(Service):
    name = "faas"
    start_order = 40
    default_ports = {"faas": 3233}
    pin_key = None  # labkit's own runner natively; real OpenWhisk in compose
    on_image_path = True
    hops = (Hop("nodered-faas", 8483, upstream="faas", description="Node-RED's invocations of the action"),)
    remote = RemoteEndpoint("remote_faas_url", "an OpenWhisk API host")
    compose = ComposeEntry(pin="openwhisk")

    @property
    def version(self) -> str:
        from labkit import __version__

        return f"labkit-{__version__}"

    def install_step(self) -> InstallStep | None:
        return None  # part of labkit itself

    def environment(self) -> dict[str, str]:
        return {"LABKIT_FAAS_AUTH": self.ctx.secrets.faas_auth.get_secret_value()}

    def command(self) -> list[str]:
        return [sys.executable, "-m", "labkit.faas", "--host", self.host, "--port", str(self.ports["faas"]),
                "--data-dir", str(self.workdir)]

    def readiness(self) -> Readiness:
        return HttpReady(f"{self.endpoint()}/ping")

    def endpoint(self) -> str:
        return f"http://{self.host}:{self.ports['faas']}"
