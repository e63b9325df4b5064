"""The HTTP side of the OpenWhisk API: basic auth, error bodies, transaction ids and query parameters."""

from __future__ import annotations

import base64
import binascii
import hmac
import re
import secrets
import string
import json
from collections.abc import Mapping
from typing import Any

from pydantic import ValidationError
from starlette.authentication import (
    AuthCredentials,
    AuthenticationBackend,
    AuthenticationError,
    SimpleUser,
)
from starlette.exceptions import HTTPException
from starlette.requests import HTTPConnection, Request
from starlette.responses import JSONResponse, Response

from labkit.faas.config import Credentials
from labkit.faas.models import (
    DEFAULT_NAMESPACE,
    Msg,
    check_entity_name,
)

API_PREFIX = "/api/v1/"


LIST_MAX = 200


ACTIVATION_ID_RE = re.compile(r"\A[0-9a-f]{32}\Z")


_TXID_ALPHABET = string.ascii_letters + string.digits


def _transaction_id() -> str:
    """OpenWhisk puts a transaction id in every error body's ``code``."""
    return "".join(secrets.choice(_TXID_ALPHABET) for _ in range(32))


def error_response(status: int, message: str, headers: Mapping[str, str] | None = None) -> JSONResponse:
    """OpenWhisk's error body: ``{"error": ..., "code": ...}``."""
    return JSONResponse({"error": message, "code": _transaction_id()}, status_code=status, headers=headers)


class BasicAuthBackend(AuthenticationBackend):
    """Checks HTTP basic auth (uuid:key) on every ``/api/v1/...`` route."""

    def __init__(self, creds: Credentials) -> None:
        """Remember the expected credentials.

        Args:
            creds: The runner's uuid and key.
        """
        self._user = creds.uuid.encode()
        self._key = creds.key.encode()

    async def authenticate(self, conn: HTTPConnection) -> tuple[AuthCredentials, SimpleUser] | None:
        """Accept valid credentials, reject anything else under ``/api/v1/``."""
        if not conn.url.path.startswith(API_PREFIX):
            return None  # /ping and /api/v1 are open
        scheme, _, encoded = conn.headers.get("authorization", "").partition(" ")
        if scheme.lower() != "basic":
            raise AuthenticationError(Msg.UNAUTHENTICATED)
        try:
            user, _, key = base64.b64decode(encoded.strip(), validate=True).partition(b":")
        except (binascii.Error, ValueError):
            raise AuthenticationError(Msg.UNAUTHENTICATED) from None
        # Evaluate both comparisons so timing does not reveal which part was wrong.
        user_ok = hmac.compare_digest(user, self._user)
        key_ok = hmac.compare_digest(key, self._key)
        if not (user_ok and key_ok):
            raise AuthenticationError(Msg.UNAUTHENTICATED)
        return AuthCredentials(["authenticated"]), SimpleUser(user.decode())


def _auth_error(conn: HTTPConnection, exc: Exception) -> Response:
    return error_response(401, str(exc), headers={"WWW-Authenticate": 'Basic realm="labkit-faas"'})


def _flag(request: Request, name: str) -> bool:
    return request.query_params.get(name, "false").lower() == "true"


def _int_param(request: Request, name: str, default: int, collection: str) -> int:
    raw = request.query_params.get(name)
    if raw is None:
        return default
    try:
        return int(raw)
    except ValueError:
        raise HTTPException(400, f"The value '{raw}' is not an integer for {collection}.") from None


def _page(request: Request, collection: str) -> tuple[int, int]:
    """``limit`` and ``skip`` with OpenWhisk's bounds (limit 0 means the default)."""
    limit = _int_param(request, "limit", 30, collection)
    skip = _int_param(request, "skip", 0, collection)
    if not 0 <= limit <= LIST_MAX:
        raise HTTPException(400, f"The value '{limit}' is not in the range of 0 to {LIST_MAX} for {collection}.")
    if skip < 0:
        raise HTTPException(400, f"The value '{skip}' is not greater than or equal to 0 for {collection}.")
    return limit or 30, skip


def _namespace(request: Request) -> str:
    """Resolve ``_`` to the default namespace; other namespaces are not ours."""
    ns = request.path_params["ns"]
    if ns in ("_", DEFAULT_NAMESPACE):
        return DEFAULT_NAMESPACE
    raise HTTPException(403, f"The supplied authentication is not authorized to access '{ns}'.")


def _entity_name(request: Request) -> str:
    name = str(request.path_params["name"])
    if not check_entity_name(name):
        raise HTTPException(400, Msg.ENTITY_NAME_ILLEGAL)
    return name


def _validation_message(exc: ValidationError) -> str:
    parts = []
    for err in exc.errors():
        where = ".".join(str(p) for p in err["loc"])
        text = err["msg"].removeprefix("Value error, ")
        parts.append(f"requirement failed: {text}" if not where else f"{where}: requirement failed: {text}")
    return Msg.MALFORMED + "\n".join(parts)


async def _read_json(request: Request, limit: int, field: str) -> Any:
    """Read a JSON body no larger than ``limit`` bytes (413 beyond it).

    An empty body reads as ``{}``, which OpenWhisk accepts for invokes.
    """
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise HTTPException(413, Msg.TOO_BIG.format(field=field, size=declared, limit=limit))
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > limit:  # chunked uploads carry no content-length
            raise HTTPException(413, Msg.TOO_BIG.format(field=field, size=f"at least {len(body)}", limit=limit))
    if not body.strip():
        return {}
    try:
        return json.loads(body)
    except ValueError as exc:
        raise HTTPException(400, f"{Msg.MALFORMED}{exc}") from None
