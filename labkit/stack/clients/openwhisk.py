"""A small OpenWhisk REST client (works with labkit's runner and a real OpenWhisk)."""

from __future__ import annotations

import ssl
from types import TracebackType
from typing import Any

import httpx
from tenacity import Retrying, retry_if_exception, stop_after_delay, wait_exponential

from labkit.errors import LabConfigError, ServiceError

DEFAULT_TIMEOUT_S = 30.0
# A blocking invoke can take OpenWhisk's full 60 s before it answers 202.
BLOCKING_TIMEOUT_S = 75.0


class FaasError(ServiceError):
    """An OpenWhisk API call failed.

    Attributes:
        status: HTTP status code.
        message: OpenWhisk's ``error`` text (or the raw body).
        code: OpenWhisk's transaction id, when given.
    """

    def __init__(self, status: int, message: str, code: str | None = None) -> None:
        """Describe the failure; ``str()`` gives status, message and code."""
        self.status = status
        self.message = message
        self.code = code
        suffix = f" (code {code})" if code else ""
        super().__init__(f"OpenWhisk API error {status}: {message}{suffix}")


def _api_base(base_url: str) -> str:
    base = base_url.rstrip("/")
    return base if base.endswith("/api/v1") else f"{base}/api/v1"


def _error_from(response: httpx.Response) -> FaasError:
    try:
        body = response.json()
    except ValueError:
        body = None
    if isinstance(body, dict) and "error" in body:
        return FaasError(response.status_code, str(body["error"]), body.get("code"))
    return FaasError(response.status_code, response.text[:500] or response.reason_phrase)


def _is_activation_answer(response: httpx.Response, result_only: bool) -> bool:
    """Tell a failed activation (blocking 502/500) from an API error.

    OpenWhisk answers a blocking invoke whose action failed with 502 (500 for
    an internal error) and the activation record, or only its result with
    ``result=true``. API errors carry ``{"error", "code"}`` instead.
    """
    if response.status_code not in (500, 502):
        return False
    try:
        body = response.json()
    except ValueError:
        return False
    if not isinstance(body, dict):
        return False
    # A bare result is only recognisable on 502; a 500 {"error"} may be the API's own.
    return "activationId" in body or (result_only and response.status_code == 502 and "code" not in body)


class OpenWhiskClient:
    r"""Client for the part of OpenWhisk's REST API that the lab uses.

    Example:
        >>> with OpenWhiskClient("http://127.0.0.1:3233", auth) as ow:   # doctest: +SKIP
        ...     ow.put_action("hello", "def main(args):\\n    return {'hi': args.get('name')}\\n")
        ...     ow.invoke("hello", {"name": "lab"}, result=True)
    """

    def __init__(
        self,
        base_url: str,
        auth: str,
        namespace: str = "_",
        timeout_s: float = DEFAULT_TIMEOUT_S,
        verify: ssl.SSLContext | bool = True,
    ) -> None:
        """Open an HTTP client.

        Args:
            base_url: API host, e.g. ``http://127.0.0.1:3233`` (``/api/v1`` optional).
            auth: ``uuid:key`` as in ``wsk property get --auth``.
            namespace: Namespace; ``_`` is the caller's default one.
            timeout_s: Timeout for ordinary calls.
            verify: Verify TLS certificates: True (the system's roots), False (a local OpenWhisk
                often has a self-signed one), or a context (``lab.verify``: the lab's own CA).
        """
        user, sep, key = auth.partition(":")
        if not sep:
            raise LabConfigError("the OpenWhisk auth must be 'uuid:key'. Fix: pass the key from `wsk property get --auth`.")
        self.namespace = namespace
        self._http = httpx.Client(
            base_url=_api_base(base_url), auth=(user, key), timeout=timeout_s, verify=verify
        )

    def __enter__(self) -> OpenWhiskClient:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def close(self) -> None:
        """Close the underlying connection pool."""
        self._http.close()

    def _path(self, *parts: str) -> str:
        return "/".join(["namespaces", self.namespace, *parts])

    def _call(self, method: str, path: str, **kwargs: Any) -> Any:
        response = self._http.request(method, path, **kwargs)
        if response.status_code != 200:
            raise _error_from(response)
        return response.json()

    def _object(self, method: str, path: str, **kwargs: Any) -> dict[str, Any]:
        body = self._call(method, path, **kwargs)
        if not isinstance(body, dict):
            raise FaasError(200, f"expected a JSON object from {path}, got {type(body).__name__}")
        return body

    def _list(self, path: str, **kwargs: Any) -> list[dict[str, Any]]:
        body = self._call("GET", path, **kwargs)
        if not isinstance(body, list):
            raise FaasError(200, f"expected a JSON array from {path}, got {type(body).__name__}")
        return body

    # --- actions -------------------------------------------------------------

    def put_action(
        self,
        name: str,
        code: str,
        kind: str = "python:3.11",
        main: str = "main",
        params: dict[str, Any] | None = None,
        limits: dict[str, int] | None = None,
        overwrite: bool = True,
        annotations: dict[str, Any] | None = None,
    ) -> dict[str, Any]:
        """Create or update an action from single-file source.

        Args:
            name: Action name.
            code: Python source defining ``main(args) -> dict``.
            kind: Runtime kind.
            main: Entry function name.
            params: Bound (default) parameters.
            limits: Any of ``timeout`` (ms), ``memory`` (MB), ``logs`` (MB), ``concurrency``.
            overwrite: Update when it exists (else a 409 raises).
            annotations: Annotations, e.g. ``{"provide-api-key": True}``.

        Returns:
            The stored action record.
        """
        body: dict[str, Any] = {"exec": {"kind": kind, "code": code, "main": main}}
        if params is not None:
            body["parameters"] = [{"key": k, "value": v} for k, v in params.items()]
        if limits is not None:
            body["limits"] = limits
        if annotations is not None:
            body["annotations"] = [{"key": k, "value": v} for k, v in annotations.items()]
        query = {"overwrite": "true" if overwrite else "false"}
        return self._object("PUT", self._path("actions", name), params=query, json=body)

    def get_action(self, name: str) -> dict[str, Any]:
        """Return one action, with its code."""
        return self._object("GET", self._path("actions", name))

    def list_actions(self, limit: int = 30, skip: int = 0) -> list[dict[str, Any]]:
        """Return the namespace's actions (without code)."""
        return self._list(self._path("actions"), params={"limit": limit, "skip": skip})

    def delete_action(self, name: str) -> dict[str, Any]:
        """Delete an action; returns the deleted record."""
        return self._object("DELETE", self._path("actions", name))

    # --- packages ----------------------------------------------------------------

    def put_package(self, name: str, params: dict[str, Any] | None = None, overwrite: bool = True) -> dict[str, Any]:
        """Create or update a package; its ``params`` are default parameters of every action in it."""
        body = {"parameters": [{"key": k, "value": v} for k, v in (params or {}).items()]}
        query = {"overwrite": "true" if overwrite else "false"}
        return self._object("PUT", self._path("packages", name), params=query, json=body)

    def get_package(self, name: str) -> dict[str, Any]:
        """Return one package, with its parameters and actions."""
        return self._object("GET", self._path("packages", name))

    def delete_package(self, name: str, force: bool = False) -> dict[str, Any]:
        """Delete a package; one that still holds actions only with ``force``."""
        return self._object("DELETE", self._path("packages", name), params={"force": "true"} if force else None)

    # --- invocation ------------------------------------------------------------

    def invoke(
        self,
        name: str,
        params: dict[str, Any] | None = None,
        blocking: bool = True,
        result: bool = False,
        timeout_s: float = BLOCKING_TIMEOUT_S,
    ) -> dict[str, Any]:
        """Invoke an action.

        A blocking call that ran but failed (HTTP 502, or 500 for an internal
        error) still returns the activation record (or, with ``result=True``,
        its ``{"error": ...}`` result); check ``response.success``. A blocking call that outlived
        OpenWhisk's wait returns ``{"activationId": ...}`` like a non-blocking one.

        Args:
            name: Action name.
            params: Invocation parameters (override bound ones).
            blocking: Wait for the activation to finish.
            result: Return only ``response.result`` (blocking only).
            timeout_s: HTTP timeout for this call.

        Returns:
            The activation record, its result, or ``{"activationId": ...}``.
        """
        query = {"blocking": str(blocking).lower(), "result": str(result).lower()}
        response = self._http.post(
            self._path("actions", name), params=query, json=params or {}, timeout=timeout_s
        )
        ran = response.status_code in (200, 202)
        failed_run = blocking and _is_activation_answer(response, result)
        if not (ran or failed_run):
            raise _error_from(response)
        body = response.json()
        if not isinstance(body, dict):
            raise FaasError(response.status_code, f"expected a JSON object, got {type(body).__name__}")
        return body

    # --- activations -------------------------------------------------------------

    def get_activation(self, activation_id: str) -> dict[str, Any]:
        """Return a full activation record."""
        return self._object("GET", self._path("activations", activation_id))

    def get_activation_logs(self, activation_id: str) -> list[str]:
        """Return an activation's log lines."""
        return list(self._object("GET", self._path("activations", activation_id, "logs"))["logs"])

    def get_activation_result(self, activation_id: str) -> dict[str, Any]:
        """Return an activation's ``response`` (status, success, result)."""
        return self._object("GET", self._path("activations", activation_id, "result"))

    def list_activations(
        self, name: str | None = None, limit: int = 30, skip: int = 0, docs: bool = False
    ) -> list[dict[str, Any]]:
        """List activations, newest first.

        Args:
            name: Only this action's activations.
            limit: Page size (OpenWhisk allows up to 200).
            skip: Records to skip.
            docs: Include logs and response (full records).

        Returns:
            Activation records (summaries unless ``docs``).
        """
        query: dict[str, Any] = {"limit": limit, "skip": skip}
        if name is not None:
            query["name"] = name
        if docs:
            query["docs"] = "true"
        return self._list(self._path("activations"), params=query)

    def wait_activation(self, activation_id: str, timeout_s: float = 90.0) -> dict[str, Any]:
        """Poll until a (non-blocking) activation's record exists.

        Args:
            activation_id: Id returned by a non-blocking invoke.
            timeout_s: Give up after this long.

        Returns:
            The activation record.

        Raises:
            FaasError: 404 when it did not finish in time, or any other API error.
        """
        retrying = Retrying(
            retry=retry_if_exception(lambda e: isinstance(e, FaasError) and e.status == 404),
            wait=wait_exponential(multiplier=0.05, max=1.0),
            stop=stop_after_delay(timeout_s),
            reraise=True,
        )
        record: dict[str, Any] = retrying(self.get_activation, activation_id)
        return record
