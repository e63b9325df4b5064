"""Network faults: a Toxiproxy toxic on one hop's proxy; the services at both ends keep running.

Each hop of the pipeline runs through a proxy named after it (:mod:`labkit.stack.hops`). A
kind's name is the toxic's type in Toxiproxy, and the toxic it adds is named
``labkit-<kind>-<stream>``, so ``labkit up`` can find and remove it after a dead kernel.
"""

from __future__ import annotations

from abc import abstractmethod
from typing import TYPE_CHECKING, ClassVar

from labkit.errors import LabConfigError, ServiceError
from labkit.experiments.faults.kinds import FaultKind, register, service_state
from labkit.experiments.faults.model import HOPS, Fault, Param, label
from labkit.stack.faultstate import TOXIC_PREFIX

if TYPE_CHECKING:
    from labkit.stack.lab import Lab

# Every network fault also takes `toxicity`: the share of connections the toxic applies to, 0..1.
TOXICITY = Param("toxicity", 1.0)


def toxic_name(kind: str, stream: str) -> str:
    """The name of the toxic a network fault adds, e.g. ``labkit-latency-upstream``."""
    return f"{TOXIC_PREFIX}{kind}-{stream}"


class ToxicKind(FaultKind):
    """A fault that adds one toxic per stream to a hop's proxy, and removes them to clear.

    Attributes:
        streams: Which way the toxic acts. ``upstream`` is the request (or event) on its way to
            the service, ``downstream`` the answer.
    """

    family = "network"
    target_noun, targets_noun = "a hop", "hops"
    streams: ClassVar[tuple[str, ...]] = ("upstream",)

    @abstractmethod
    def attributes(self, values: dict[str, float]) -> dict[str, int]:
        """The toxic's attributes in Toxiproxy's terms, from the fault's parameters (defaults filled in)."""

    def targets(self) -> tuple[str, ...]:
        return HOPS

    def accepted(self) -> dict[str, Param]:
        return {p.name: p for p in (*self.params, TOXICITY)}

    def check(self, fault: Fault, values: dict[str, float]) -> None:
        if values["toxicity"] > 1:
            raise LabConfigError(f"{label(fault)}: toxicity is a share of connections, 0..1; got "
                                 f"{values['toxicity']}. Fix: use 1 for every connection.")

    def inject(self, lab: Lab, fault: Fault) -> None:
        client, values = lab.toxiproxy(), self.values(fault)
        for proxy in hop_proxies(client.proxies(), fault.target):
            for stream in self.streams:
                client.add_toxic(proxy, self.name, stream=stream, toxicity=float(values["toxicity"]),
                                 name=toxic_name(self.name, stream), **self.attributes(values))

    def clear(self, lab: Lab, fault: Fault, *, revive: bool = True) -> None:
        client = lab.toxiproxy()
        try:
            proxies = hop_proxies(client.proxies(), fault.target)
            present = {proxy: {t["name"] for t in client.toxics(proxy)} for proxy in proxies}
        except ServiceError:
            if service_state(lab, "toxiproxy") == "down":
                return  # no Toxiproxy, no toxics: its proxies are made afresh when it starts
            raise
        for proxy, names in present.items():
            for stream in self.streams:
                if toxic_name(self.name, stream) in names:
                    client.remove_toxic(proxy, toxic_name(self.name, stream))


def hop_proxies(proxies: dict[str, dict], hop: str) -> list[str]:
    """The proxies a fault on ``hop`` acts on: its own, and one per further broker when the hop
    leads to the replicated Kafka (``store-kafka`` -> also ``store-kafka-2``, ``store-kafka-3``)."""
    return [hop, *sorted(p for p in proxies if p.startswith(f"{hop}-") and p[len(hop) + 1:].isdigit())]


@register
class Latency(ToxicKind):
    """Delay each request by ``latency_ms`` (± ``jitter_ms``). Only the request: the service
    then does its work late, which is what the pipeline's timestamps see."""

    name = "latency"
    params = (Param("latency_ms", 1000, most=10_000, step=50), Param("jitter_ms", 0))

    def attributes(self, values: dict[str, float]) -> dict[str, int]:
        return {"latency": round(values["latency_ms"]), "jitter": round(values["jitter_ms"])}

    def describe(self, fault: Fault) -> str:
        values = self.values(fault)
        jitter = f" (± {values['jitter_ms'] / 1000:g} s)" if values["jitter_ms"] else ""
        return f"{fault.target}: {values['latency_ms'] / 1000:g} s latency{jitter} for {fault.duration_s:g} s"


@register
class Timeout(ToxicKind):
    """Stop all data both ways; close the connection after ``timeout_ms``, or never when it is
    0: a blackhole, the connection stays open and silent."""

    name = "timeout"
    params = (Param("timeout_ms", 0, most=30_000, step=500),)
    streams = ("upstream", "downstream")

    def attributes(self, values: dict[str, float]) -> dict[str, int]:
        return {"timeout": round(values["timeout_ms"])}

    def describe(self, fault: Fault) -> str:
        timeout_ms = self.values(fault)["timeout_ms"]
        if not timeout_ms:
            return f"{fault.target}: a {fault.duration_s:g} s blackhole"
        return f"{fault.target}: connections closed after {timeout_ms:g} ms, for {fault.duration_s:g} s"


@register
class ResetPeer(ToxicKind):
    """Reset each connection (TCP RST) ``timeout_ms`` after its first byte."""

    name = "reset_peer"
    params = (Param("timeout_ms", 0, most=30_000, step=500),)

    def attributes(self, values: dict[str, float]) -> dict[str, int]:
        return {"timeout": round(values["timeout_ms"])}

    def describe(self, fault: Fault) -> str:
        return (f"{fault.target}: connections reset {self.values(fault)['timeout_ms']:g} ms after their first byte, "
                f"for {fault.duration_s:g} s")


@register
class Bandwidth(ToxicKind):
    """Limit the hop to ``rate_kbps`` kilobits per second, both ways."""

    name = "bandwidth"
    # Toxiproxy's rate is whole kilobytes per second, so 8 kbit/s is the least it can do.
    params = (Param("rate_kbps", 512, least=8, most=8192, step=8),)
    streams = ("upstream", "downstream")

    def attributes(self, values: dict[str, float]) -> dict[str, int]:
        return {"rate": max(1, round(values["rate_kbps"] / 8))}

    def describe(self, fault: Fault) -> str:
        return f"{fault.target}: {self.values(fault)['rate_kbps']:g} kbit/s for {fault.duration_s:g} s"


@register
class LimitData(ToxicKind):
    """Cut each connection once it has carried ``limit_bytes`` one way: short requests and
    answers pass whole, an image upload or download is cut short."""

    name = "limit_data"
    params = (Param("limit_bytes", 65_536, most=1_048_576, step=1024),)
    streams = ("upstream", "downstream")

    def attributes(self, values: dict[str, float]) -> dict[str, int]:
        return {"bytes": round(values["limit_bytes"])}

    def describe(self, fault: Fault) -> str:
        limit = self.values(fault)["limit_bytes"]
        return f"{fault.target}: connections cut after {limit:.0f} bytes, for {fault.duration_s:g} s"
