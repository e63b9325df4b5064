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
    pin_key = None  # labkit's own runner, in both backends (compose's openwhisk profile adds real OpenWhisk)
    on_image_path = True
    serves_tls = True  # every API call carries the lab's FaaS key
    hops = (Hop("nodered-faas", 8483, upstream="faas", description="Node-RED's invocations of the action", tls=True),)
    remote = RemoteEndpoint("remote_faas_url", "an OpenWhisk API host")
    compose = ComposeEntry()

    @property
    def version(self) -> str:
        from labkit import __version__

        return f"labkit-{__version__}"

    def install_step(self) -> InstallStep | None:
        return None  # part of labkit itself

    def environment(self) -> dict[str, str]:
        env = {"LABKIT_FAAS_AUTH": self.ctx.secrets.faas_auth.get_secret_value()}
        if self.tls:  # the actions (its workers inherit it) reach the store over TLS
            env["SSL_CERT_FILE"] = str(self.tls.ca_file)
        return env

    def command(self) -> list[str]:
        tls = ["--tls-cert", str(self.tls.cert_file), "--tls-key", str(self.tls.key_file)] if self.tls else []
        return [sys.executable, "-m", "labkit.faas", "--host", self.host, "--port", str(self.ports["faas"]), *tls,
                "--data-dir", str(self.workdir)]

    def readiness(self) -> Readiness:
        return HttpReady(f"{self.endpoint()}/ping", verify=self.ctx.verify)

    def endpoint(self) -> str:
        return f"{self.scheme}://{self.host}:{self.ports['faas']}"
