"""Client for the Node-RED admin HTTP API (token auth, deploy, inspect).

Node-RED is started with ``stack/nodered/settings.js`` whose ``adminAuth`` uses
the ``credentials`` scheme, so every admin call needs a bearer token obtained
from ``POST /auth/token`` with the OAuth2 password grant.

The password is kept in a private attribute only: it never appears in
``repr()``, in exception messages or in log records.
"""

from __future__ import annotations

import logging
from typing import Any

import httpx

from labkit.errors import LabConfigError, ServiceError

__all__ = ["NodeRedAdmin", "NodeRedError", "DEPLOYMENT_TYPES"]

log = logging.getLogger(__name__)

#: Values accepted by the ``Node-RED-Deployment-Type`` header.
DEPLOYMENT_TYPES = frozenset({"full", "nodes", "flows", "reload"})


class NodeRedError(ServiceError):
    """An admin API call failed.

    ``status`` is the HTTP status code, or ``None`` when no response arrived
    (connection refused, timeout, ...).
    """

    def __init__(self, status: int | None, message: str) -> None:
        super().__init__(f"Node-RED admin API error ({status if status is not None else 'no response'}): {message}")
        self.status = status
        self.message = message


def _error_text(response: httpx.Response) -> str:
    """Best-effort human readable error from a Node-RED error response."""
    try:
        body = response.json()
    except ValueError:
        text = response.text.strip()
        return text[:500] or response.reason_phrase
    if isinstance(body, dict):
        for key in ("message", "error_description", "error"):
            if body.get(key):
                code = body.get("code")
                return f"{code}: {body[key]}" if code and key == "message" else str(body[key])
    return str(body)[:500]


class NodeRedAdmin:
    """Synchronous Node-RED admin API client built on :mod:`httpx`.

    Use as a context manager (or call :meth:`close`) so the token is revoked
    and the connection pool released.
    """

    CLIENT_ID = "node-red-admin"

    def __init__(self, base_url: str, username: str, password: str, timeout_s: float = 10) -> None:
        self.base_url = base_url.rstrip("/")
        self.username = username
        self.__password = password
        self._token: str | None = None
        self._http = httpx.Client(base_url=self.base_url, timeout=timeout_s)

    def __repr__(self) -> str:
        return f"NodeRedAdmin(base_url={self.base_url!r}, username={self.username!r})"

    # ----------------------------------------------------------- lifecycle
    def __enter__(self) -> NodeRedAdmin:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Revoke the token (best effort) and close the HTTP client."""
        token, self._token = self._token, None
        if token is not None:
            try:
                self._http.post(
                    "/auth/revoke",
                    data={"token": token},
                    headers={"Authorization": f"Bearer {token}"},
                )
            except httpx.HTTPError:
                pass
        self._http.close()

    # ------------------------------------------------------------- auth
    def login(self) -> None:
        """Obtain a fresh bearer token (called lazily by every API method)."""
        try:
            response = self._http.post(
                "/auth/token",
                data={
                    "client_id": self.CLIENT_ID,
                    "grant_type": "password",
                    "scope": "*",
                    "username": self.username,
                    "password": self.__password,
                },
            )
        except httpx.HTTPError as exc:
            raise NodeRedError(None, f"token request to {self.base_url} failed: {type(exc).__name__}") from None
        if response.status_code != 200:
            raise NodeRedError(response.status_code, f"login as {self.username!r} refused: {_error_text(response)}")
        try:
            token = response.json()["access_token"]
        except (ValueError, KeyError, TypeError):
            raise NodeRedError(response.status_code, "token response has no access_token") from None
        self._token = token
        log.debug("obtained Node-RED admin token for %s at %s", self.username, self.base_url)

    def _request(self, method: str, path: str, *, headers: dict[str, str] | None = None, **kwargs: Any) -> httpx.Response:
        if self._token is None:
            self.login()
        for attempt in (1, 2):
            all_headers = {"Authorization": f"Bearer {self._token}", **(headers or {})}
            try:
                response = self._http.request(method, path, headers=all_headers, **kwargs)
            except httpx.HTTPError as exc:
                raise NodeRedError(None, f"{method} {path} failed: {type(exc).__name__}: {exc}") from None
            if response.status_code == 401 and attempt == 1:
                # token expired or revoked (e.g. Node-RED restarted): log in again once
                self.login()
                continue
            if response.status_code >= 400:
                raise NodeRedError(response.status_code, f"{method} {path}: {_error_text(response)}")
            return response
        raise AssertionError("unreachable")  # pragma: no cover

    @staticmethod
    def _json(response: httpx.Response) -> Any:
        try:
            return response.json()
        except ValueError:
            raise NodeRedError(response.status_code, f"expected JSON from {response.request.url.path}") from None

    # -------------------------------------------------------------- API
    def deploy(self, flows: list[dict], deployment_type: str = "full", rev: str | None = None) -> str:
        """Deploy ``flows`` (the complete flow configuration) and return the new revision.

        ``deployment_type`` is ``full``, ``nodes``, ``flows`` or ``reload``.
        Passing ``rev`` (from a previous deploy) makes Node-RED refuse with 409
        if the flows were changed by someone else in between.
        """
        if deployment_type not in DEPLOYMENT_TYPES:
            raise LabConfigError(f"deployment_type must be one of {sorted(DEPLOYMENT_TYPES)}, not {deployment_type!r}")
        body: dict[str, Any] = {"flows": list(flows)}
        if rev is not None:
            body["rev"] = rev
        response = self._request(
            "POST",
            "/flows",
            json=body,
            headers={
                "Node-RED-API-Version": "v2",
                "Node-RED-Deployment-Type": deployment_type,
            },
        )
        data = self._json(response)
        if not isinstance(data, dict) or "rev" not in data:
            raise NodeRedError(response.status_code, "deploy response has no rev")
        return str(data["rev"])

    def flows_with_rev(self) -> tuple[list[dict], str]:
        """The deployed flow configuration and its revision."""
        response = self._request("GET", "/flows", headers={"Node-RED-API-Version": "v2", "Accept": "application/json"})
        data = self._json(response)
        return list(data.get("flows", [])), str(data.get("rev", ""))

    def flows(self) -> list[dict]:
        """The deployed flow configuration (all tabs, nodes and config nodes)."""
        return self.flows_with_rev()[0]

    def nodes(self) -> list[dict]:
        """Installed node sets (``GET /nodes``); each has ``module``, ``types``, ``version``..."""
        response = self._request("GET", "/nodes", headers={"Accept": "application/json"})
        data = self._json(response)
        if not isinstance(data, list):
            raise NodeRedError(response.status_code, "GET /nodes did not return a list")
        return data

    def node_types(self) -> set[str]:
        """All node types available in the palette."""
        return {t for node_set in self.nodes() for t in node_set.get("types", [])}

    def settings(self) -> dict:
        """Runtime settings as the editor sees them (``GET /settings``)."""
        response = self._request("GET", "/settings", headers={"Accept": "application/json"})
        data = self._json(response)
        if not isinstance(data, dict):
            raise NodeRedError(response.status_code, "GET /settings did not return an object")
        return data
