"""What a service declares about its place in the lab, besides how it runs.

:class:`ServiceDeclaration` holds the declaration as class attributes: ports, pins,
toolchain, start order, the hops it is on (:class:`Hop`), the endpoint the remote backend
asks the user for (:class:`RemoteEndpoint`) and its entry in ``stack/compose.yaml``
(:class:`ComposeEntry`). The tables that the config, the backends and the experiments need
are derived from them (:mod:`labkit.stack.services.catalog`). This module imports nothing
of the lab's config: the config is derived from it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar, Literal, Protocol

from labkit.errors import LabConfigError
from labkit.stack.readiness import HttpReady, PortReady, Readiness
from labkit.stack.tls import tls_on


class LabPorts(Protocol):
    """What hop addresses need of a :class:`labkit.stack.config.LabConfig` (a protocol, because
    the config imports the services to derive its port table, not the other way round)."""

    host: str
    backend: str

    def port(self, name: str) -> int: ...


@dataclass(frozen=True)
class Hop:
    """One hop of the pipeline, declared by the service at its far end.

    Toxiproxy's proxy ``name`` listens on ``port`` (the config's ``hop-<name>`` port) and
    forwards to the service's listener ``upstream``; the near end connects to the proxy.

    A hop that carries a credential (a key, a signed request, a token) says so with ``tls``:
    natively it is then TLS from end to end (:mod:`labkit.stack.tls`), its URL is ``https``,
    and its proxy forwards to ``tls_upstream`` when the service serves TLS on a listener of
    its own (Node-RED), else to ``upstream``.
    """

    name: str
    port: int
    upstream: str
    description: str
    tls: bool = False
    tls_upstream: str | None = None

    @property
    def listen(self) -> str:
        """The name of the proxy's listener among the config's ports."""
        return hop_port_name(self.name)

    def upstream_for(self, config: LabPorts) -> str:
        """The listener this hop's proxy forwards to in a lab with ``config``."""
        return self.tls_upstream if self.tls_upstream and self.secure(config) else self.upstream

    def secure(self, config: LabPorts) -> bool:
        """Whether this hop is TLS in a lab with ``config``."""
        return self.tls and tls_on(config)


def hop_port_name(hop: str) -> str:
    """``client-store`` -> ``hop-client-store``: each hop's proxy has a port of its own."""
    return f"hop-{hop}"


def hop_address(config: LabPorts, hop: str) -> str:
    """``host:port`` where the near end of hop ``hop`` connects: its proxy, not the service."""
    return f"{config.host}:{config.port(hop_port_name(hop))}"


def hop_url(config: LabPorts, hop: Hop) -> str:
    """``https://host:port`` of ``hop``'s proxy when the hop is TLS in this lab, else ``http://``
    (by name: :func:`labkit.stack.services.catalog.hop_url`)."""
    return f"{'https' if hop.secure(config) else 'http'}://{hop_address(config, hop.name)}"


@dataclass(frozen=True)
class RemoteEndpoint:
    """What the remote backend needs from the user to reach an existing deployment.

    ``setting`` becomes a field of the lab's config (``LABKIT_<SETTING>``); ``probe`` says how
    ``labkit up`` tells that the endpoint answers: ``http`` (any HTTP status below 500) or
    ``bootstrap`` (a TCP connect to the first ``host:port`` of a comma-separated list).
    """

    setting: str
    description: str
    probe: Literal["http", "bootstrap"] = "http"

    @property
    def variable(self) -> str:
        return f"LABKIT_{self.setting.upper()}"

    def readiness(self, address: str, verify: object = True) -> Readiness:
        """The check of ``address``, the value the user set (an ``https`` one's certificate checked
        against ``verify``: the remote deployment's CA, ``LABKIT_REMOTE_CA_BUNDLE``).

        Raises:
            LabConfigError: a bootstrap list whose first entry is not ``host:port``.
        """
        if self.probe == "http":  # any HTTP answer means reachable
            return HttpReady(address, statuses=tuple(range(200, 500)), verify=verify)
        host, _, port = address.split(",")[0].strip().rpartition(":")
        if not host or not port.isdigit():
            raise LabConfigError(f"{self.variable}={address!r} is not a list of host:port. "
                                 f"Fix: set it like {self.variable}=broker1.example:9092,broker2.example:9092.")
        return PortReady(int(port), host)


@dataclass(frozen=True)
class ComposeEntry:
    """The service's entry in ``stack/compose.yaml``. Every field has a default taken from the
    rest of the declaration (see :class:`ServiceDeclaration`'s compose helpers).

    Attributes:
        service: the compose service name, when it is not the lab's name for the service.
        pin: the ``stack/versions.toml`` key of its image, when it is not the native pin.
        endpoint: where containers reach it, when not ``http://<service>:<first port>``.
        unpublished: listeners that stay inside the network (no host port).
    """

    service: str | None = None
    pin: str | None = None
    endpoint: str | None = None
    unpublished: tuple[str, ...] = ()


class ServiceDeclaration:
    """Everything a service says about itself that other parts of the lab need to know,
    as class attributes, and the facts derived from them. :class:`labkit.stack.services.base.Service`
    adds how it runs."""

    name: ClassVar[str]
    # Place in the start order and in `labkit status` (lower first, ties by name).
    start_order: ClassVar[int] = 100
    # Listener name -> default port; LABKIT_PORT_OFFSET shifts them (labkit.stack.config).
    default_ports: ClassVar[dict[str, int]]
    # Its entry in stack/versions.toml (None: it is part of labkit and has no pin).
    pin_key: ClassVar[str | None]
    # Commands it needs on PATH to run (those it needs to build are its install step's).
    runtime_tools: ClassVar[tuple[str, ...]] = ()
    # Services this one sends events to: they must be ready before it starts.
    after: ClassVar[tuple[str, ...]] = ()
    # Hops whose far end it is; each runs through a Toxiproxy proxy (labkit.stack.hops).
    hops: ClassVar[tuple[Hop, ...]] = ()
    # What the remote backend asks the user for (None: no remote counterpart).
    remote: ClassVar[RemoteEndpoint | None] = None
    compose: ClassVar[ComposeEntry] = ComposeEntry()
    # True when images stop while it is down (the experiments' pipeline probe needs it).
    on_image_path: ClassVar[bool] = False
    # True when the fault matrix kills it in turn.
    crash_tested: ClassVar[bool] = True

    # -- derived ----------------------------------------------------------------
    @classmethod
    def listeners(cls) -> dict[str, int]:
        """Every port its process opens, by name, at its default number."""
        return dict(cls.default_ports)

    @classmethod
    def pins(cls) -> tuple[str, ...]:
        """Its keys in ``stack/versions.toml``: the native pin and the compose image's."""
        return tuple(dict.fromkeys(k for k in (cls.pin_key, cls.compose_pin()) if k))

    @classmethod
    def compose_name(cls) -> str:
        return cls.compose.service or cls.name

    @classmethod
    def compose_pin(cls) -> str | None:
        return cls.compose.pin or cls.pin_key

    @classmethod
    def network_endpoint(cls) -> str:
        """Where containers reach it inside the compose network (containers keep the default ports)."""
        first = next(iter(cls.default_ports.values()))
        return cls.compose.endpoint or f"http://{cls.compose_name()}:{first}"

    @classmethod
    def published_ports(cls) -> dict[str, int]:
        """The listeners compose publishes on the host."""
        return {p: n for p, n in cls.listeners().items() if p not in cls.compose.unpublished}

