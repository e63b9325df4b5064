"""The declared services, found in this package's modules, and the tables derived from them.

Every service class with a ``name`` (a :class:`~labkit.stack.services.base.Service`, so a
:class:`~labkit.stack.services.declarations.ServiceDeclaration`) defined in a module of this
package is a service of the lab: there is no list to add it to. The config's ports, the
hops, the remote settings and the backends' tables all come from here.

Only the declarations are imported by name here; the service modules are imported when
the catalog is first read, so the config can derive its ports from them without an
import cycle.
"""

from __future__ import annotations

import importlib
import inspect
import pkgutil
from functools import cache
from pathlib import Path
from types import ModuleType

from labkit.stack.services import declarations
from labkit.stack.services.declarations import Hop, RemoteEndpoint, ServiceDeclaration

PACKAGE = __name__.rpartition(".")[0]
PACKAGE_DIR = Path(__file__).resolve().parent
_discovering = False


@cache
def service_types() -> tuple[type[ServiceDeclaration], ...]:
    """Every declared service, in start order (``start_order``, then name).

    Raises:
        RuntimeError: a service module needs this table while it is being imported: it imports
            the config, the context or the hops, which are derived from here.
    """
    global _discovering
    if _discovering:  # without this, the config would silently get a partial port table
        raise RuntimeError("A service module asked for the service catalog while the catalog was importing it. "
                           "Fix: a service module must not import labkit.stack.config, context or hops; it "
                           "reads self.config, and hop addresses come from labkit.stack.services.declarations.")
    _discovering = True
    try:
        found = [t for info in pkgutil.iter_modules([str(PACKAGE_DIR)])
                 for t in _declared_in(importlib.import_module(f"{PACKAGE}.{info.name}"))]
    finally:
        _discovering = False
    return tuple(sorted(found, key=lambda t: (t.start_order, t.name)))


def _declared_in(module: ModuleType) -> list[type[ServiceDeclaration]]:
    """The services a module defines (not those it imports, nor bases without a name)."""
    return [obj for obj in vars(module).values()
            if inspect.isclass(obj) and issubclass(obj, ServiceDeclaration) and obj.__module__ == module.__name__
            and isinstance(getattr(obj, "name", None), str)]


def service_type(name: str) -> type[ServiceDeclaration]:
    """The declared service called ``name`` (KeyError when there is none)."""
    return {t.name: t for t in service_types()}[name]


def default_ports() -> dict[str, int]:
    """Every listener of the lab -> its default port, in start order."""
    return {port: number for t in service_types() for port, number in t.listeners().items()}


def port_owner(port: str) -> type[ServiceDeclaration]:
    """The service whose process opens the listener named ``port``."""
    return next(t for t in service_types() if port in t.listeners())


def declared_hops() -> tuple[Hop, ...]:
    """Every hop of the pipeline, in the order of their proxies' ports."""
    return tuple(sorted((h for t in service_types() for h in t.hops), key=lambda h: h.port))


def hop_url(config: declarations.LabPorts, name: str) -> str:
    """Where the near end of hop ``name`` connects: its proxy's URL, ``https`` when the hop is
    TLS in this lab (a service module calls it at run time, never while it is imported).

    Raises:
        KeyError: there is no such hop.
    """
    found = {h.name: h for h in declared_hops()}
    return declarations.hop_url(config, found[name])


def remote_endpoints() -> dict[str, RemoteEndpoint]:
    """Service -> what the remote backend needs to reach it, for the services that have one."""
    return {t.name: t.remote for t in service_types() if t.remote is not None}
