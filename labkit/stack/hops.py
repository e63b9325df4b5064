"""The pipeline's hops, each routed through a Toxiproxy proxy so any of them can be degraded.

A hop is named after its two ends and declared by the service at its far end
(``Service.hops``). Its proxy listens on the hop's own port and forwards to the real
service; the near end of every hop is configured to use the proxy's address, never the
service's.
"""

from __future__ import annotations

from labkit.errors import LabConfigError
from labkit.stack.config import LabConfig
from labkit.stack.services import declarations
from labkit.stack.services.catalog import declared_hops
from labkit.stack.services.declarations import Hop

HOPS: tuple[Hop, ...] = declared_hops()
HOP_NAMES = tuple(h.name for h in HOPS)


def hop(name: str) -> Hop:
    """The hop called ``name``.

    Raises:
        LabConfigError: there is no such hop.
    """
    for h in HOPS:
        if h.name == name:
            return h
    raise LabConfigError(f"Unknown hop {name!r}. Valid hops: {', '.join(HOP_NAMES)}.")


def hop_address(config: LabConfig, name: str) -> str:
    """``host:port`` where the near end of hop ``name`` connects (the proxy).

    Raises:
        LabConfigError: there is no such hop.
    """
    return declarations.hop_address(config, hop(name).name)


def hop_url(config: LabConfig, name: str) -> str:
    """The URL of hop ``name``'s proxy: ``https`` when the hop is TLS in this lab.

    Raises:
        LabConfigError: there is no such hop.
    """
    return declarations.hop_url(config, hop(name))


__all__ = ["HOPS", "HOP_NAMES", "Hop", "hop", "hop_address", "hop_url"]
