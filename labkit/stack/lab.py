"""``Lab``: one object a notebook or a test holds to drive the whole stack."""

from __future__ import annotations

import ssl
from collections.abc import Callable
from functools import cached_property
from urllib.parse import urlparse

import pandas as pd
import urllib3
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
    @property
    def verify(self) -> ssl.SSLContext | bool:
        """What an HTTP client of this lab passes as ``verify`` (``httpx.get(url, verify=lab.verify)``):
        natively, the lab's CA, which the store, the FaaS runner and Node-RED's TLS listener
        present (:mod:`labkit.stack.tls`)."""
        return self.ctx.verify

    def s3(self, gateway: str = "storage", credentials: tuple[str, str] | None = None,
           region: str | None = None) -> Minio:
        """An S3 client on one gateway: ``storage`` (uploads) or ``storage-out`` (the action's writes).

        Args:
            gateway: ``storage`` or ``storage-out``.
            credentials: ``(access_key, secret_key)`` of another store account; default the root account.
            region: The region to sign for, when the account may not ask the bucket's location.
        """
        s = self.ctx.secrets
        access, secret = credentials or (s.s3_access_key.get_secret_value(), s.s3_secret_key.get_secret_value())
        url = urlparse(self.endpoint(gateway))
        secure = url.scheme == "https"
        return _LabMinio(url.netloc, access_key=access, secret_key=secret, secure=secure, region=region,
                         http_client=_trusting(self.ctx.ca_file) if secure and self.ctx.ca_file else None,
                         on_bucket_made=self.backend.bucket_made)

    @property
    def kafka_bootstrap(self) -> str:
        return self.endpoint("kafka")

    def faas(self) -> OpenWhiskClient:
        return OpenWhiskClient(self.endpoint("faas"), self.ctx.secrets.faas_auth.get_secret_value(),
                              verify=self.ctx.verify)

    def nodered(self) -> NodeRedAdmin:
        s = self.ctx.secrets
        return NodeRedAdmin(self.endpoint("nodered"), s.nodered_user, s.nodered_password.get_secret_value())

    def mailbox(self) -> Mailbox:
        return Mailbox(self.endpoint("mail"))

    def toxiproxy(self) -> ToxiproxyClient:
        return ToxiproxyClient(self.endpoint("toxiproxy"))


class _LabMinio(Minio):
    """minio, telling the backend about each bucket it makes (``Backend.bucket_made``)."""

    def __init__(self, *args, on_bucket_made: Callable[[str], None], **kwargs):
        super().__init__(*args, **kwargs)
        self._on_bucket_made = on_bucket_made

    def make_bucket(self, bucket_name: str, *args, **kwargs) -> None:
        super().make_bucket(bucket_name, *args, **kwargs)
        self._on_bucket_made(bucket_name)


def _trusting(ca_file) -> urllib3.PoolManager:
    """minio's own HTTP client (its timeouts and retries), trusting the lab's CA alone."""
    timeout = 300
    return urllib3.PoolManager(timeout=urllib3.Timeout(connect=timeout, read=timeout), maxsize=10,
                               cert_reqs="CERT_REQUIRED", ca_certs=str(ca_file),
                               retries=urllib3.Retry(total=5, backoff_factor=0.2,
                                                     status_forcelist=[500, 502, 503, 504]))
