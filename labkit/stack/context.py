"""What every part of one lab instance shares: its config, its secrets and its TLS trust."""

from __future__ import annotations

import ssl
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

from labkit.errors import LabConfigError
from labkit.stack.config import LabConfig, load_config
from labkit.stack.secrets import LabSecrets, load_or_create
from labkit.stack.tls import TLS_DIR, LabTLS, tls_on


@dataclass
class LabContext:
    """The config of one lab, its secrets and its CA, loaded (and generated) on first use."""

    config: LabConfig

    @classmethod
    def from_env(cls, **overrides: object) -> "LabContext":
        return cls(load_config(**overrides))

    @cached_property
    def secrets(self) -> LabSecrets:
        return load_or_create(self.config.data_dir)

    @cached_property
    def tls(self) -> LabTLS | None:
        """The lab's CA and server certificate when it runs TLS (natively), else None."""
        return LabTLS(self.config.data_dir / TLS_DIR).ensure() if tls_on(self.config) else None

    @property
    def ca_file(self) -> Path | None:
        """The CA bundle this lab's clients trust for its TLS endpoints: the lab's own CA natively,
        ``LABKIT_REMOTE_CA_BUNDLE`` for a remote lab that sets it, else None (the system's roots).

        Raises:
            LabConfigError: ``LABKIT_REMOTE_CA_BUNDLE`` names no readable file.
        """
        if self.tls:
            return self.tls.ca_file
        bundle = self.config.remote_ca_bundle if self.config.backend == "remote" else None
        if bundle is not None and not Path(bundle).is_file():
            raise LabConfigError(f"LABKIT_REMOTE_CA_BUNDLE={bundle} is not a file. Fix: point it at the PEM file "
                                 "of the remote deployment's CA, or unset it to trust the system's roots.")
        return bundle

    @cached_property
    def _remote_context(self) -> ssl.SSLContext:
        return ssl.create_default_context(cafile=str(self.ca_file))

    @property
    def verify(self) -> ssl.SSLContext | bool:
        """What an HTTP client of this lab passes as ``verify``: the lab's CA natively, a remote
        lab's ``LABKIT_REMOTE_CA_BUNDLE``, else the system's roots (``httpx``'s ``verify=``,
        ``OpenWhiskClient(verify=...)``)."""
        if self.tls:
            return self.tls.client_context
        return self._remote_context if self.ca_file else True
