"""The S3 object store: two versitygw gateways over one data root.

Each versitygw process sends its S3 events to one target only. Uploads go
through ``storage``, whose events go to Kafka; the action writes its output
through ``storage-out``, whose events go to Node-RED's webhook.

Identities: both gateways share one internal IAM (``--iam-dir``, a ``users.json``
in the lab's data dir) besides the root account labkit and Node-RED use. The
resize action has an account of its own, role ``user``, that ``storage`` creates
through versitygw's admin API when it is ready (again after a crash, and on every
``stand_up``); what it may do is granted bucket by bucket with bucket policies
(:func:`bucket_policy`, :data:`labkit.pipeline.deploy.ACTION_GRANTS`).

What versitygw v1.7.0 enforces, checked against the real binary (tests/test_least_privilege.py):

- Roles: ``admin`` and the root account bypass every ACL and bucket policy;
  ``userplus`` may also create buckets; ``user`` may not, and lists only the
  buckets it owns (none, here).
- A bucket with a policy is governed by the policy alone for a ``user``: an
  action not allowed there is denied (the bucket's ACL is no longer consulted).
  A bucket without one falls back to its ACL, which grants the owner (root) only,
  so every other bucket is closed to the action.
- Policies name principals by access key and match actions and ``bucket/key``
  resources with ``*`` wildcards; a statement may ``Deny``.

What it cannot express (the gaps):

- No identity (per-user) policies: the grant lives on each bucket, so a bucket the
  lab creates later is closed to the action by default, but is opened only by
  giving that bucket a policy.
- No ``Condition`` keys: the action's write to ``dit247c`` cannot be limited to
  new keys (no ``s3:if-none-match``), to a content type, or to a source address;
  it may overwrite any output, which is also what an idempotent retry needs.
- An account is not bound to a gateway: the action's key works on ``storage`` as
  well as on ``storage-out``, so only its bound endpoint keeps its writes (and
  their events) on ``storage-out``.
- The internal IAM keeps secrets in clear text in ``users.json`` (0600, in a 0700
  dir), and each gateway caches an account for up to 120 s, so a changed secret
  reaches ``storage-out`` only after that (or a restart).
"""

from __future__ import annotations

import json
import ssl
import xml.etree.ElementTree as ET
from pathlib import Path
from urllib.parse import quote, urlsplit
from xml.sax.saxutils import escape

import httpx
from minio import time as amz_time
from minio.credentials import Credentials
from minio.helpers import sha256_hash
from minio.signer import sign_v4_s3

from labkit.errors import ServiceError
from labkit.stack.gomod import GoPatch
from labkit.stack.install import GoBinary, InstallStep
from labkit.stack.readiness import HttpReady, Readiness
from labkit.stack.secrets import LabSecrets
from labkit.stack.services.base import Service
from labkit.stack.services.catalog import hop_url
from labkit.stack.services.declarations import Hop, RemoteEndpoint, hop_address
from labkit.stack.versions import pin

TOPIC = "dit247"
WEBHOOK_PATH = "/hooks/{token}/object-created"
REGION = "us-east-1"
# The action's role: no bucket creation, and bucket policies apply to it (not to admin).
ACTION_ROLE = "user"
# Bucket-policy actions that make up "read" and "write" of objects. Multipart parts
# count as PutObject; AbortMultipartUpload lets a failed big upload clean up.
READ_OBJECTS = ("s3:GetObject",)
WRITE_OBJECTS = ("s3:PutObject", "s3:AbortMultipartUpload")
# versitygw writes each object through an unnamed file in <bucket>/.sgwtmp (created with the
# process's umask); while that dir is missing it falls back to a named temp file that it then
# chmods 0644 itself, so the lab makes the dir with the bucket (keep_bucket_private).
BUCKET_TMP_DIR = ".sgwtmp"


def versitygw_step() -> GoBinary:
    """versitygw as its pin in stack/versions.toml declares it, with the pin's patch of its Kafka
    client (the writer's metadata refresh: 1 s, not 15 s, so a new partition leader is found soon)."""
    p = pin("versitygw")
    return GoBinary("versitygw", p["version"], package=p["go_package"], binary=p["binary"], module=p["go_module"],
                    patch=GoPatch.from_pin(p.get("patch")))


class _Gateway(Service):
    pin_key = "versitygw"
    on_image_path = True
    serves_tls = True  # S3 requests are signed with a store account's key, so both gateways speak TLS
    hint = "versitygw sends a test event at start, so its event target must be up first"

    def install_step(self) -> InstallStep:
        return versitygw_step()

    @property
    def root(self):
        """The data root both gateways share."""
        return self.config.data_dir / "s3"

    @property
    def iam_dir(self):
        """The internal IAM both gateways share (outside the root: a dir there is a bucket)."""
        return self.config.data_dir / "iam"

    def port(self) -> int:
        return self.ports[self.name]

    def data_paths(self) -> list[Path]:
        return [self.workdir, self.root, self.iam_dir]

    def environment(self) -> dict[str, str]:
        s = self.ctx.secrets
        env = {"ROOT_ACCESS_KEY": s.s3_access_key.get_secret_value(),
               "ROOT_SECRET_KEY": s.s3_secret_key.get_secret_value()}
        if self.tls:  # Go's HTTP client (the webhook's) trusts the lab's CA, and nothing else
            env["SSL_CERT_FILE"] = str(self.tls.ca_file)
        return env

    def command(self) -> list[str]:
        binary = self.install_step().target(self.config.cache_dir) / "versitygw"
        tls = ["--cert", str(self.tls.cert_file), "--key", str(self.tls.key_file)] if self.tls else []
        # --keep-alive: without it every S3 request is a new TCP and TLS connection, at both ends and
        # through Toxiproxy (about a quarter of the pipeline's CPU per image: docs/performance.md).
        return [str(binary), "--port", f"{self.host}:{self.port()}", *tls, "--health", "/health",
                "--quiet", "--keep-alive", "--iam-dir", str(self.iam_dir), *self.event_flags(),
                "posix", "--dir-perms", "0700", str(self.root)]

    def event_flags(self) -> list[str]:
        raise NotImplementedError

    def prepare(self) -> None:
        self.root.mkdir(mode=0o700, parents=True, exist_ok=True)
        self.iam_dir.mkdir(mode=0o700, exist_ok=True)
        for bucket in (d for d in self.root.iterdir() if d.is_dir() and not d.name.startswith(".")):
            keep_bucket_private(self.root, bucket.name)

    def readiness(self) -> Readiness:
        return HttpReady(f"{self.endpoint()}/health", verify=self.ctx.verify)

    def endpoint(self) -> str:
        return f"{self.scheme}://{self.host}:{self.port()}"


class Storage(_Gateway):
    """The upload gateway; its ObjectCreated events go to Kafka topic ``dit247``."""

    name = "storage"
    start_order = 60
    default_ports = {"storage": 7070}
    after = ("kafka", "toxiproxy")
    hops = (Hop("client-store", 8481, upstream="storage", description="uploads from Node-RED to the store", tls=True),)
    remote = RemoteEndpoint("remote_s3_url", "the S3 endpoint uploads go to")

    def event_flags(self) -> list[str]:
        return ["--event-kafka-url", hop_address(self.config, "store-kafka"), "--event-kafka-topic", TOPIC]

    def on_ready(self) -> None:
        """Create (or bring up to date) the action's account; ``storage-out`` reads the same IAM."""
        ensure_action_account(self.endpoint(), self.ctx.secrets, verify=self.ctx.verify)


class StorageOut(_Gateway):
    """The gateway the action writes through; its events go to Node-RED's webhook."""

    name = "storage-out"
    start_order = 70
    default_ports = {"storage-out": 7071}
    after = ("nodered", "toxiproxy")
    hops = (Hop("action-store", 8484, upstream="storage-out", description="the action's reads and writes", tls=True),)
    remote = RemoteEndpoint("remote_s3_out_url", "the S3 endpoint the action writes through")
    output_has_secrets = True  # versitygw prints the webhook URL, and the URL carries the token

    def webhook_url(self) -> str:
        token = self.ctx.secrets.webhook_token.get_secret_value()
        return hop_url(self.config, "store-webhook") + WEBHOOK_PATH.format(token=token)

    def event_flags(self) -> list[str]:
        return []

    def environment(self) -> dict[str, str]:
        # The hook's URL carries its secret, so it goes in the environment, not argv.
        return {**super().environment(), "VGW_EVENT_WEBHOOK_URL": self.webhook_url()}


# ---------------------------------------------------------------- identities


class StoreAdmin:
    """versitygw's admin API (``PATCH /create-user`` and so on on the S3 port), signed
    with AWS SigV4 as the root account, the way ``versitygw admin`` signs it. Secrets
    travel in the request body, never on a command line."""

    def __init__(self, endpoint: str, access_key: str, secret_key: str, timeout_s: float = 10.0,
                 verify: ssl.SSLContext | bool = True):
        self.endpoint = endpoint.rstrip("/")
        self.credentials = Credentials(access_key, secret_key)
        self.http = httpx.Client(timeout=timeout_s, verify=verify)

    def __enter__(self) -> "StoreAdmin":
        return self

    def __exit__(self, *exc: object) -> None:
        self.http.close()

    def ensure_user(self, access_key: str, secret_key: str, role: str) -> None:
        """Create the account, or set its secret and role when it exists; idempotent."""
        account = _xml("Account", Access=access_key, Secret=secret_key, Role=role)
        response = self._patch("/create-user", account)
        if response.status_code == 409 and _error_code(response) == "XAdminUserExists":
            props = _xml("MutableProps", Secret=secret_key, Role=role)
            response = self._patch(f"/update-user?access={quote(access_key, safe='')}", props)
        self._check(response, "create the action's account")

    def delete_user(self, access_key: str) -> None:
        """Delete an account (no error when there is none)."""
        self._check(self._patch(f"/delete-user?access={quote(access_key, safe='')}"), "delete an account")

    def roles(self) -> dict[str, str]:
        """Access key -> role of every account but root (never their secrets)."""
        response = self._patch("/list-users")
        self._check(response, "list accounts")
        try:
            accounts = ET.fromstring(response.content).iter("Accounts")
        except ET.ParseError as e:
            raise ServiceError(f"versitygw's account list ({self.endpoint}) is not XML: {e}. "
                               "Hint: `labkit logs storage`.") from e
        return {a.findtext("Access"): a.findtext("Role") for a in accounts}

    def _patch(self, path_query: str, body: bytes = b"") -> httpx.Response:
        url = urlsplit(self.endpoint + path_query)
        date, digest = amz_time.utcnow(), sha256_hash(body)
        headers = {"Host": url.netloc, "x-amz-date": amz_time.to_amz_date(date), "x-amz-content-sha256": digest}
        headers = sign_v4_s3(method="PATCH", url=url, region=REGION, headers=headers,
                             credentials=self.credentials, content_sha256=digest, date=date)
        try:
            return self.http.patch(url.geturl(), content=body, headers=headers)
        except httpx.HTTPError as e:
            raise ServiceError(f"versitygw's admin API at {self.endpoint} is unreachable: {e}. "
                               "Hint: `labkit status`; `labkit logs storage`.") from e

    def _check(self, response: httpx.Response, what: str) -> None:
        if response.status_code >= 300:
            code = _error_code(response)
            raise ServiceError(f"versitygw refused to {what} ({self.endpoint}): {code}. Hint: the gateway "
                               "must run with --iam-dir (internal IAM); `labkit logs storage`.")


def ensure_action_account(endpoint: str, secrets: LabSecrets, verify: ssl.SSLContext | bool = True) -> None:
    """Provision the action's store account through the gateway at ``endpoint`` (its TLS
    certificate checked against ``verify``: ``lab.ctx.verify``).

    Raises:
        ServiceError: the gateway is unreachable or refused.
    """
    root = (secrets.s3_access_key.get_secret_value(), secrets.s3_secret_key.get_secret_value())
    with StoreAdmin(endpoint, *root, verify=verify) as admin:
        admin.ensure_user(secrets.action_access_key.get_secret_value(),
                          secrets.action_secret_key.get_secret_value(), ACTION_ROLE)


def keep_bucket_private(root: Path, bucket: str) -> None:
    """Give a bucket of the store rooted at ``root`` its temp dir (0700), so that every object
    versitygw writes in it is created with the gateway's umask (0600), the first one included."""
    if (root / bucket).is_dir():
        (root / bucket / BUCKET_TMP_DIR).mkdir(mode=0o700, exist_ok=True)


def bucket_policy(bucket: str, principal: str, actions: tuple[str, ...]) -> str:
    """A bucket policy allowing ``principal`` (an access key) ``actions`` on every object of ``bucket``."""
    statement = {"Sid": "labkit-action", "Effect": "Allow", "Principal": {"AWS": [principal]},
                 "Action": list(actions), "Resource": [f"arn:aws:s3:::{bucket}/*"]}
    return json.dumps({"Version": "2012-10-17", "Statement": [statement]})


def _xml(root: str, **fields: str) -> bytes:
    return f"<{root}>{''.join(f'<{k}>{escape(v)}</{k}>' for k, v in fields.items())}</{root}>".encode()


def _error_code(response: httpx.Response) -> str:
    """The S3 error code of a refusal (``XAdminUserExists``, ``AccessDenied``...), else the HTTP status."""
    try:
        return ET.fromstring(response.content).findtext("Code") or str(response.status_code)
    except ET.ParseError:
        return f"HTTP {response.status_code}"
