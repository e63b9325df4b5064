"""``Lab``: one object a notebook or a test holds to drive the whole stack."""

from __future__ import annotations

from functools import cached_property
from urllib.parse import urlparse

import pandas as pd
from minio import Minio

from labkit.core.progress import QUIET, Reporter
from labkit.errors import LabConfigError
from labkit.stack.backends import Backend, ServiceStatus, check_service_name, get_backend
from labkit.stack.clients.nodered import NodeRedAdmin
from labkit.stack.clients.openwhisk import OpenWhiskClient
from labkit.stack.context import LabContext
from labkit.stack.services.catalog import service_type
from labkit.stack.services.mail import Mailbox
from labkit.stack.services.toxiproxy import ToxiproxyClient


class Lab:
    """The lab's stack (on whichever backend is configured) and clients for each service.

    Example:
        >>> lab = Lab.from_env()
        >>> lab.up()
        >>> lab.s3().bucket_exists("dit247")
    """

    def __init__(self, ctx: LabContext, reporter: Reporter = QUIET):
        self.ctx = ctx
        self.backend: Backend = get_backend(ctx, reporter)

    @classmethod
    def from_env(cls, reporter: Reporter = QUIET, **overrides: object) -> "Lab":
        """The lab configured by ``LABKIT_*`` variables; overrides that are None are ignored,
        so a notebook can pass its parameters straight through."""
        given = {k: v for k, v in overrides.items() if v is not None}
        return cls(LabContext.from_env(**given), reporter)

    # -- the stack -----------------------------------------------------------
    def up(self, wipe: bool = False) -> list[ServiceStatus]:
        return self.backend.up(wipe=wipe)

    def down(self, wipe: bool = False) -> None:
        self.backend.down(wipe=wipe)

    def status(self) -> pd.DataFrame:
        """One row per service: state, health, pid, ports, version, endpoint."""
        return pd.DataFrame([row.as_dict() for row in self.backend.status()]).set_index("name")

    @cached_property
    def endpoints(self) -> dict[str, str]:
        return self.backend.endpoints()

    def endpoint(self, service: str) -> str:
        """Where clients reach ``service``.

        Raises:
            LabConfigError: no such service, or the backend has no endpoint for it (a
                remote lab whose setting for it is not set).
        """
        if service in self.endpoints:
            return self.endpoints[service]
        remote = service_type(check_service_name(service)).remote
        fix = f"set {remote.variable}" if remote else "use LABKIT_BACKEND=native or compose"
        raise LabConfigError(f"The {self.ctx.config.backend} backend has no endpoint for {service}. Fix: {fix}.")

    # -- clients -------------------------------------------------------------
    def s3(self, gateway: str = "storage") -> Minio:
        """An S3 client on one gateway: ``storage`` (uploads) or ``storage-out`` (the action's writes)."""
        s = self.ctx.secrets
        url = urlparse(self.endpoint(gateway))
        return Minio(url.netloc, access_key=s.s3_access_key.get_secret_value(),
                     secret_key=s.s3_secret_key.get_secret_value(), secure=url.scheme == "https")

    @property
    def kafka_bootstrap(self) -> str:
        return self.endpoint("kafka")

    def faas(self) -> OpenWhiskClient:
        return OpenWhiskClient(self.endpoint("faas"), self.ctx.secrets.faas_auth.get_secret_value())

    def nodered(self) -> NodeRedAdmin:
        s = self.ctx.secrets
        return NodeRedAdmin(self.endpoint("nodered"), s.nodered_user, s.nodered_password.get_secret_value())

    def mailbox(self) -> Mailbox:
        return Mailbox(self.endpoint("mail"))

    def toxiproxy(self) -> ToxiproxyClient:
        return ToxiproxyClient(self.endpoint("toxiproxy"))
