"""Fault injection: Toxiproxy, driven through its HTTP API."""

from __future__ import annotations

import httpx

from labkit.errors import ServiceError
from labkit.stack.install import GoBinary, InstallStep
from labkit.stack.readiness import HttpReady, Readiness
from labkit.stack.services.base import Service
from labkit.stack.services.catalog import declared_hops
from labkit.stack.services.declarations import RemoteEndpoint
from labkit.stack.versions import pin

LOOPBACK = ("127.0.0.1", "::1", "localhost")


class Toxiproxy(Service):
    """The fault tool: one proxy per hop that the other services declare."""

    name = "toxiproxy"
    start_order = 20
    default_ports = {"toxiproxy": 8474}
    pin_key = "toxiproxy"
    crash_tested = False  # killing the fault tool is a blackhole on every hop: the hops' cases
    # A remote deployment's own Toxiproxy, its proxies named after the hops and in front of the
    # services: the network faults act there (docs/scaling.md); without it they are refused.
    remote = RemoteEndpoint("remote_toxiproxy_url", "a Toxiproxy in front of the remote services, one proxy per hop")

    @classmethod
    def listeners(cls) -> dict[str, int]:
        """Its API, and the listener of each hop's proxy."""
        return {**cls.default_ports, **{h.listen: h.port for h in declared_hops()}}

    def install_step(self) -> InstallStep:
        p = pin("toxiproxy")
        return GoBinary("toxiproxy", p["version"], package=p["go_package"], binary=p["binary"])

    def command(self) -> list[str]:
        binary = self.install_step().target(self.config.cache_dir) / "toxiproxy-server"
        return [str(binary), "-host", self.host, "-port", str(self.ports["toxiproxy"])]

    def readiness(self) -> Readiness:
        return HttpReady(f"{self.endpoint()}/version")

    def endpoint(self) -> str:
        return f"http://{self.host}:{self.ports['toxiproxy']}"

    def on_ready(self) -> None:
        """Create one proxy per hop, before the services that connect through them start; a proxy
        someone repointed is put back (the hops that carry credentials are TLS, so a repointed
        one yields nothing reusable, docs/security.md)."""
        client = ToxiproxyClient(self.endpoint())
        for h in declared_hops():
            client.ensure_proxy(h.name, f"{self.host}:{self.config.port(h.listen)}",
                                f"{self.host}:{self.config.port(h.upstream_for(self.config))}")
        for name in client.beyond_loopback():  # nothing of the lab listens beyond loopback
            client.delete_proxy(name)


class ToxiproxyClient:
    """Toxiproxy's HTTP API: proxies between hops, and the toxics that degrade them."""

    def __init__(self, base_url: str, timeout_s: float = 5.0):
        self.http = httpx.Client(base_url=base_url, timeout=timeout_s)

    def proxies(self) -> dict[str, dict]:
        return self._call("GET", "/proxies")

    def beyond_loopback(self) -> list[str]:
        """The proxies that listen on an address other than loopback (``0.0.0.0``, say): what
        exposes a port of the lab on the machine's network."""
        return [name for name, proxy in self.proxies().items()
                if proxy["listen"].rpartition(":")[0].strip("[]") not in LOOPBACK]

    def ensure_proxy(self, name: str, listen: str, upstream: str) -> dict:
        """Create (or re-create, when it differs) a proxy ``listen`` -> ``upstream``."""
        existing = self.proxies().get(name)
        if existing and existing["listen"] == listen and existing["upstream"] == upstream:
            return existing
        if existing:
            self._call("DELETE", f"/proxies/{name}")
        return self._call("POST", "/proxies", json={"name": name, "listen": listen, "upstream": upstream,
                                                    "enabled": True})

    def add_toxic(self, proxy: str, kind: str, stream: str = "downstream", toxicity: float = 1.0,
                  name: str | None = None, **attributes: float) -> dict:
        """Add a toxic (``latency``, ``timeout``, ``reset_peer``, ``bandwidth``, ...) to a proxy."""
        body = {"name": name or f"{kind}_{stream}", "type": kind, "stream": stream, "toxicity": toxicity,
                "attributes": attributes}
        return self._call("POST", f"/proxies/{proxy}/toxics", json=body)

    def remove_toxic(self, proxy: str, name: str) -> None:
        self._call("DELETE", f"/proxies/{proxy}/toxics/{name}")

    def toxics(self, proxy: str) -> list[dict]:
        return self._call("GET", f"/proxies/{proxy}/toxics")

    def delete_proxy(self, name: str) -> None:
        self._call("DELETE", f"/proxies/{name}")

    def reset(self) -> None:
        """Remove every toxic and re-enable every proxy."""
        self._call("POST", "/reset")

    def _call(self, method: str, path: str, **kwargs):
        try:
            response = self.http.request(method, path, **kwargs)
            response.raise_for_status()
        except httpx.HTTPError as e:
            detail = getattr(getattr(e, "response", None), "text", "")
            raise ServiceError(f"Toxiproxy {method} {path} failed: {e} {detail}".strip()) from e
        return response.json() if response.content else None
