"""Backends behind one small interface, chosen by name."""

from __future__ import annotations

from labkit.core.progress import QUIET, Reporter
from labkit.errors import LabConfigError
from labkit.stack.backends.base import Backend, ServiceStatus, check_service_name
from labkit.stack.backends.compose import ComposeBackend
from labkit.stack.backends.native import NativeBackend
from labkit.stack.backends.remote import RemoteBackend
from labkit.stack.context import LabContext

BACKENDS: dict[str, type[Backend]] = {"native": NativeBackend, "compose": ComposeBackend, "remote": RemoteBackend}


def get_backend(ctx: LabContext, reporter: Reporter = QUIET) -> Backend:
    """Return the backend named by ``LABKIT_BACKEND``.

    Raises:
        LabConfigError: the name is not one of ``BACKENDS``.
    """
    name = ctx.config.backend
    if name not in BACKENDS:
        raise LabConfigError(f"Unknown backend {name!r}. Valid backends: {', '.join(BACKENDS)} (set LABKIT_BACKEND).")
    return BACKENDS[name](ctx, reporter)


__all__ = ["BACKENDS", "Backend", "ServiceStatus", "check_service_name", "get_backend"]
