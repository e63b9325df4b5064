"""The mail sink: Mailpit, with SMTP for the alerts and an HTTP API to read them."""

from __future__ import annotations

import hashlib

import httpx

from labkit.errors import ServiceError
from labkit.stack.install import GoWithWebAssets, InstallStep
from labkit.stack.readiness import HttpReady, Readiness
from labkit.stack.services.base import Service
from labkit.stack.services.declarations import ComposeEntry, RemoteEndpoint
from labkit.stack.versions import STACK_DIR, pin

# The package.json and lock of the npm build of Mailpit's web UI (its sources are the Go module's).
UI_BUILD_DIR = STACK_DIR / "mailpit"
VERSION_VAR = "github.com/axllent/mailpit/config.Version"


def _ui_build_digest() -> str:
    """A digest of the UI build's npm files, so editing either rebuilds the entry."""
    h = hashlib.sha256()
    for name in ("package.json", "package-lock.json"):
        h.update(name.encode() + (UI_BUILD_DIR / name).read_bytes())
    return h.hexdigest()[:10]


class Mail(Service):
    name = "mail"
    start_order = 10
    default_ports = {"mail-smtp": 1025, "mail-http": 8025}
    pin_key = "mailpit"
    remote = RemoteEndpoint("remote_mail_url", "Mailpit's HTTP API (optional)")
    compose = ComposeEntry(endpoint="mail:1025")  # the flow sends its alerts over SMTP

    def install_step(self) -> InstallStep:
        p = pin("mailpit")
        return GoWithWebAssets("mailpit", f"{p['version']}-ui-{_ui_build_digest()}", package=p["go_package"],
                               module_version=p["version"], binary=p["binary"], version_var=VERSION_VAR,
                               npm_files=UI_BUILD_DIR)

    def command(self) -> list[str]:
        binary = self.install_step().target(self.config.cache_dir) / "mailpit"
        return [str(binary), "--smtp", f"{self.host}:{self.ports['mail-smtp']}",
                "--listen", f"{self.host}:{self.ports['mail-http']}",
                "--webroot", self.webroot,
                "--database", str(self.workdir / "mailpit.db"), "--disable-version-check",
                "--smtp-auth-accept-any", "--smtp-auth-allow-insecure"]

    def readiness(self) -> Readiness:
        return HttpReady(f"{self.endpoint()}/readyz")

    @property
    def webroot(self) -> str:
        """Where Mailpit serves its UI and API: under the Jupyter prefix, where its proxy forwards
        whole paths (labkit.teaching.proxy), else at the root."""
        return f"{self.config.web_prefix}mailpit/" if self.config.web_prefix else "/"

    def endpoint(self) -> str:
        return f"http://{self.host}:{self.ports['mail-http']}{self.webroot.rstrip('/')}"

    def running_version(self, recorded: str) -> str:
        """What Mailpit says of itself (``/api/v1/info``): a build without its version stamped says "dev"."""
        try:
            return Mailbox(self.endpoint()).info()["Version"]
        except ServiceError:  # it stopped answering since its health check
            return recorded

    def smtp(self) -> tuple[str, int]:
        return self.host, self.ports["mail-smtp"]


class Mailbox:
    """Reads what the lab mailed, through Mailpit's HTTP API (``/api/v1``)."""

    def __init__(self, base_url: str, timeout_s: float = 5.0):
        self.http = httpx.Client(base_url=base_url, timeout=timeout_s)

    def messages(self) -> list[dict]:
        """Summaries of every stored message, newest first."""
        return self._get("/api/v1/messages")["messages"]

    def message(self, message_id: str) -> dict:
        """One whole message: headers, text and HTML bodies."""
        return self._get(f"/api/v1/message/{message_id}")

    def search(self, query: str) -> list[dict]:
        """Messages matching Mailpit's search syntax, e.g. ``subject:"SLA"``."""
        return self._get("/api/v1/search", params={"query": query})["messages"]

    def info(self) -> dict:
        """Mailpit's own facts: its version, the database, message counts."""
        return self._get("/api/v1/info")

    def delete_all(self) -> None:
        self._call("DELETE", "/api/v1/messages")

    def _get(self, path: str, **kwargs) -> dict:
        return self._call("GET", path, **kwargs).json()

    def _call(self, method: str, path: str, **kwargs) -> httpx.Response:
        """Raises:
            ServiceError: Mailpit did not answer, or refused.
        """
        try:
            response = self.http.request(method, path, **kwargs)
            response.raise_for_status()
        except httpx.HTTPError as e:
            raise ServiceError(f"Mailpit API {path} failed: {e}. Hint: is the mail service up (`labkit status`)?") from e
        return response
