"""The OpenWhisk-compatible REST API (Starlette application)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator

from pydantic import ValidationError
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.middleware.authentication import AuthenticationMiddleware
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import Route

from labkit.faas.activation import HTTP_STATUS, build_record, new_activation_id
from labkit.faas.config import RunnerSettings
from labkit.faas.entities import _activation_summary, _summary, build_action
from labkit.faas.http import (
    ACTIVATION_ID_RE,
    BasicAuthBackend,
    _auth_error,
    _entity_name,
    _flag,
    _int_param,
    _namespace,
    _page,
    _read_json,
    _transaction_id,
    _validation_message,
    error_response,
)
from labkit.faas.models import (
    DEFAULT_NAMESPACE,
    SUPPORTED_KINDS,
    ActionPut,
    Msg,
)
from labkit.faas.packages import PackageApi, inherit
from labkit.faas.pool import Invocation, WorkerManager, now_ms
from labkit.faas.store import ActionStore, ActivationStore, Record

log = logging.getLogger(__name__)


# --- the service -------------------------------------------------------------


class FaasService:
    """Owns the stores and the worker manager; its methods are the route handlers."""

    def __init__(self, settings: RunnerSettings) -> None:
        """Open the stores; workers start in :meth:`lifespan`.

        Args:
            settings: Runner settings.
        """
        settings.data_dir.mkdir(parents=True, exist_ok=True)
        self.settings = settings
        self.actions = ActionStore(settings.data_dir)
        self.activations = ActivationStore(settings.data_dir, settings.activation_ring)
        self.manager = WorkerManager(settings)
        self._running: set[asyncio.Task[Record]] = set()
        self._put_lock = asyncio.Lock()  # PUT is read-modify-write (version bump)
        self.packages = PackageApi(ActionStore(settings.data_dir, "packages"), self.actions, self._put_lock,
                                   self.manager, settings.max_payload_bytes)

    @contextlib.asynccontextmanager
    async def lifespan(self, app: Starlette) -> AsyncIterator[None]:
        """Start the worker manager; on shutdown stop every worker."""
        await self.manager.start()
        for action in self.actions.all():
            self.manager.prewarm(action)
        try:
            yield
        finally:
            await self.stop_workers()
            self.activations.close()

    async def stop_workers(self) -> None:
        """Kill all workers and let the cut-short activations record themselves.

        Called as soon as shutdown starts, so that blocked invokes answer at
        once instead of holding the server's graceful-shutdown wait.
        """
        await self.manager.close()
        if self._running:
            await asyncio.wait(self._running, timeout=5.0)

    # --- info ----------------------------------------------------------------

    async def ping(self, request: Request) -> Response:
        """Readiness check."""
        return PlainTextResponse("pong")

    async def api_info(self, request: Request) -> Response:
        """Small description of this API, like OpenWhisk's ``GET /api/v1``."""
        return JSONResponse({
            "api_paths": ["/api/v1"],
            "description": "OpenWhisk-compatible API (labkit FaaS runner)",
            "runtimes": {"python": [{"kind": k, "default": True} for k in SUPPORTED_KINDS]},
            "limits": {
                "max_action_bytes": self.settings.max_action_bytes,
                "max_payload_bytes": self.settings.max_payload_bytes,
            },
        })

    async def list_namespaces(self, request: Request) -> Response:
        """The only namespace there is."""
        return JSONResponse([DEFAULT_NAMESPACE])

    # --- actions ---------------------------------------------------------------

    async def list_actions(self, request: Request) -> Response:
        """``GET /namespaces/{ns}/actions``."""
        ns = _namespace(request)
        limit, skip = _page(request, "actions")
        actions = self.actions.list(ns, packaged=True)  # as OpenWhisk lists them: packaged ones too
        if _flag(request, "count"):
            return JSONResponse({"actions": len(actions)})
        return JSONResponse([_summary(a) for a in actions[skip : skip + limit]])

    async def get_action(self, request: Request) -> Response:
        """``GET /namespaces/{ns}/actions/[{pkg}/]{name}`` (``code=false`` omits the code); an
        action in a package shows the parameters it inherits, as OpenWhisk does."""
        action = self._action_or_404(request)
        if request.query_params.get("code", "true").lower() == "false":
            action = {**action, "exec": {k: v for k, v in action["exec"].items() if k != "code"}}
        return JSONResponse(action)

    async def put_action(self, request: Request) -> Response:
        """``PUT /namespaces/{ns}/actions/[{pkg}/]{name}?overwrite=...``."""
        ns, name = self._action_key(request)
        body = await _read_json(request, self.settings.max_action_bytes, "exec")
        try:
            put = ActionPut.model_validate(body)
        except ValidationError as exc:
            raise HTTPException(400, _validation_message(exc)) from None
        async with self._put_lock:
            existing = self.actions.get(ns, name)
            if existing is not None and not _flag(request, "overwrite"):
                raise HTTPException(409, Msg.CONFLICT)
            record = build_action(ns, name, put, existing)
            await asyncio.to_thread(self.actions.put, record)  # code can be up to 48 MB
        if existing is not None:
            self.manager.retire(ns, name)  # the next call cold-starts with the new code
        self.manager.prewarm(record)  # unless the action asks for warm workers
        return JSONResponse(record)

    async def delete_action(self, request: Request) -> Response:
        """``DELETE /namespaces/{ns}/actions/[{pkg}/]{name}``; answers with the deleted record."""
        ns, name = self._action_key(request)
        async with self._put_lock:
            record = self.actions.delete(ns, name)
        if record is None:
            raise HTTPException(404, Msg.NOT_FOUND)
        self.manager.retire(ns, name)
        return JSONResponse(record)

    def _action_key(self, request: Request) -> tuple[str, str]:
        """The action's store key: ``(ns, name)``, or ``(ns/pkg, name)`` inside a package."""
        ns = _namespace(request)
        package = self.packages.package_of(ns, request)
        return (ns if package is None else f"{ns}/{package['name']}"), _entity_name(request)

    def _action_or_404(self, request: Request) -> Record:
        """The action with its package's parameters under its own."""
        ns = _namespace(request)
        package = self.packages.package_of(ns, request)
        action = self.actions.get(ns if package is None else f"{ns}/{package['name']}", _entity_name(request))
        if action is None:
            raise HTTPException(404, Msg.NOT_FOUND)
        return inherit(action, package)

    # --- invocation ------------------------------------------------------------

    async def invoke(self, request: Request) -> Response:
        """``POST /namespaces/{ns}/actions/[{pkg}/]{name}?blocking=...&result=...``."""
        arrived = now_ms()
        action = self._action_or_404(request)
        params = await _read_json(request, self.settings.max_payload_bytes, "request entity")
        if not isinstance(params, dict):
            raise HTTPException(400, f"{Msg.MALFORMED}the invocation parameters must be a JSON object")
        activation_id = new_activation_id()
        # OpenWhisk takes the transaction id from X-Request-ID when the caller sends one
        transaction_id = request.headers.get("x-request-id", "")[:64] or _transaction_id()
        task = self._submit(Invocation(action, params, activation_id, arrived, api_key=self.settings.auth.basic,
                                       transaction_id=transaction_id))
        headers = {"x-openwhisk-activation-id": activation_id}
        accepted = JSONResponse({"activationId": activation_id}, status_code=202, headers=headers)
        if not _flag(request, "blocking"):
            return accepted
        # OpenWhisk waits a bounded time, then hands back the id to poll.
        done, _ = await asyncio.wait({task}, timeout=self.settings.blocking_timeout_s)
        if not done:
            return accepted
        record = task.result()
        status = HTTP_STATUS[record["response"]["statusCode"]]
        body = record["response"]["result"] if _flag(request, "result") else record
        return JSONResponse(body, status_code=status, headers=headers)

    def _submit(self, inv: Invocation) -> asyncio.Task[Record]:
        """Run an activation in the background; the task yields its record."""
        task = asyncio.create_task(self._activate(inv))
        self._running.add(task)  # keep a reference: non-blocking calls have no other owner
        task.add_done_callback(self._running.discard)
        return task

    async def _activate(self, inv: Invocation) -> Record:
        execution = await self.manager.execute(inv)
        record = build_record(inv.action, inv.activation_id, execution)
        self.activations.add(record)
        return record

    # --- activations -----------------------------------------------------------

    async def list_activations(self, request: Request) -> Response:
        """``GET /namespaces/{ns}/activations?limit&skip&name&since&upto&docs``."""
        ns = _namespace(request)
        limit, skip = _page(request, "activations")
        since = _int_param(request, "since", -1, "activations")
        upto = _int_param(request, "upto", -1, "activations")
        count = _flag(request, "count")
        records = self.activations.list(
            ns,
            name=request.query_params.get("name"),
            limit=self.settings.activation_ring if count else limit,
            skip=0 if count else skip,
            since=since if since >= 0 else None,
            upto=upto if upto >= 0 else None,
        )
        if count:
            return JSONResponse({"activations": len(records)})
        if not _flag(request, "docs"):
            records = [_activation_summary(r) for r in records]
        return JSONResponse(records)

    def _activation_or_404(self, request: Request) -> Record:
        _namespace(request)
        activation_id = request.path_params["aid"]
        if not ACTIVATION_ID_RE.match(activation_id):
            raise HTTPException(400, "The activation id is not valid.")
        record = self.activations.get(activation_id)
        if record is None:
            raise HTTPException(404, Msg.NOT_FOUND)
        return record

    async def get_activation(self, request: Request) -> Response:
        """``GET /namespaces/{ns}/activations/{id}``."""
        return JSONResponse(self._activation_or_404(request))

    async def get_activation_logs(self, request: Request) -> Response:
        """``GET /namespaces/{ns}/activations/{id}/logs``."""
        return JSONResponse({"logs": self._activation_or_404(request)["logs"]})

    async def get_activation_result(self, request: Request) -> Response:
        """``GET /namespaces/{ns}/activations/{id}/result`` (the ``response`` object)."""
        return JSONResponse(self._activation_or_404(request)["response"])


async def _http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    message = str(exc.detail)
    if exc.status_code == 404 and message == "Not Found":  # Starlette's own 404 for unknown paths
        message = Msg.NOT_FOUND
    return error_response(exc.status_code, message, headers=exc.headers)


async def _server_error(request: Request, exc: Exception) -> Response:
    log.exception("unhandled error on %s %s", request.method, request.url.path, exc_info=exc)
    return error_response(500, Msg.INTERNAL)


def create_app(settings: RunnerSettings) -> Starlette:
    """Build the ASGI application.

    Args:
        settings: Runner settings.

    Returns:
        The Starlette app; its lifespan starts and stops the workers.
    """
    svc = FaasService(settings)
    base = "/api/v1/namespaces/{ns}"
    routes = [
        Route("/ping", svc.ping, methods=["GET"]),
        Route("/api/v1", svc.api_info, methods=["GET"]),
        Route("/api/v1/namespaces", svc.list_namespaces, methods=["GET"]),
        Route(f"{base}/actions", svc.list_actions, methods=["GET"]),
        Route(f"{base}/actions/{{name}}", svc.get_action, methods=["GET"]),
        Route(f"{base}/actions/{{name}}", svc.put_action, methods=["PUT"]),
        Route(f"{base}/actions/{{name}}", svc.invoke, methods=["POST"]),
        Route(f"{base}/actions/{{name}}", svc.delete_action, methods=["DELETE"]),
        Route(f"{base}/actions/{{pkg}}/{{name}}", svc.get_action, methods=["GET"]),
        Route(f"{base}/actions/{{pkg}}/{{name}}", svc.put_action, methods=["PUT"]),
        Route(f"{base}/actions/{{pkg}}/{{name}}", svc.invoke, methods=["POST"]),
        Route(f"{base}/actions/{{pkg}}/{{name}}", svc.delete_action, methods=["DELETE"]),
        Route(f"{base}/packages", svc.packages.list, methods=["GET"]),
        Route(f"{base}/packages/{{name}}", svc.packages.get, methods=["GET"]),
        Route(f"{base}/packages/{{name}}", svc.packages.put, methods=["PUT"]),
        Route(f"{base}/packages/{{name}}", svc.packages.delete, methods=["DELETE"]),
        Route(f"{base}/activations", svc.list_activations, methods=["GET"]),
        Route(f"{base}/activations/{{aid}}", svc.get_activation, methods=["GET"]),
        Route(f"{base}/activations/{{aid}}/logs", svc.get_activation_logs, methods=["GET"]),
        Route(f"{base}/activations/{{aid}}/result", svc.get_activation_result, methods=["GET"]),
    ]
    middleware = [
        Middleware(AuthenticationMiddleware, backend=BasicAuthBackend(settings.auth), on_error=_auth_error),
    ]
    app = Starlette(
        routes=routes,
        middleware=middleware,
        exception_handlers={HTTPException: _http_error, Exception: _server_error},
        lifespan=svc.lifespan,
    )
    app.state.service = svc
    return app
