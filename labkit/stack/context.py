"""What every part of one lab instance shares: its config, its secrets and its TLS trust."""

from __future__ import annotations

import ssl
from dataclasses import dataclass
from functools import cached_property

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
    def verify(self) -> ssl.SSLContext | bool:
        """What an HTTP client of this lab passes as ``verify``: the lab's CA natively, else the
        system's roots (``httpx``'s ``verify=``, ``OpenWhiskClient(verify=...)``)."""
        return self.tls.client_context if self.tls else True
