"""Packages: create, get, list and delete, and the default parameters their actions inherit.

A package groups actions (``/namespaces/_/actions/P/name``) and binds default parameters to
them: an invocation sees the package's parameters, overridden by the action's, overridden by
the caller's, as in OpenWhisk. Bindings (a package that refers to another one) are out of
scope: a PUT with ``binding`` is refused with 400.
"""

from __future__ import annotations

import asyncio
from typing import Any

from pydantic import BaseModel, ConfigDict, ValidationError
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from labkit.faas.entities import _kv_list
from labkit.faas.http import _entity_name, _flag, _namespace, _page, _read_json, _validation_message
from labkit.faas.models import KeyValue, Msg, bump_patch, kv_to_dict
from labkit.faas.pool import WorkerManager, now_ms
from labkit.faas.store import ActionStore, Record


class PackagePut(BaseModel):
    """Body of ``PUT /namespaces/{ns}/packages/{name}`` (``WhiskPackagePut``)."""

    model_config = ConfigDict(extra="ignore")

    parameters: list[KeyValue] | None = None
    annotations: list[KeyValue] | None = None
    binding: dict[str, Any] | None = None
    publish: bool | None = None
    version: str | None = None


def build_package(namespace: str, name: str, put: PackagePut, existing: Record | None) -> Record:
    """Create or update a package record; fields left out of an update keep their value."""
    old = existing or {}
    return {
        "namespace": namespace,
        "name": name,
        "version": bump_patch(existing["version"]) if existing else "0.0.1",
        "publish": put.publish if put.publish is not None else old.get("publish", False),
        "binding": {},
        "parameters": _kv_list(put.parameters) if put.parameters is not None else old.get("parameters", []),
        "annotations": _kv_list(put.annotations) if put.annotations is not None else old.get("annotations", []),
        "updated": now_ms(),
    }


def inherit(action: Record, package: Record | None) -> Record:
    """The action as it runs: its package's parameters under its own (the action's win)."""
    if package is None:
        return action
    merged = {**kv_to_dict(package.get("parameters", [])), **kv_to_dict(action.get("parameters", []))}
    return {**action, "parameters": [{"key": k, "value": v} for k, v in merged.items()]}


class PackageApi:
    """The ``/packages`` routes; shares the action store and its lock with the action routes."""

    def __init__(self, packages: ActionStore, actions: ActionStore, lock: asyncio.Lock,
                 manager: WorkerManager, max_bytes: int) -> None:
        """Keep the stores, the entity lock, the worker manager (to retire a package's actions)
        and the largest body accepted."""
        self.packages = packages
        self._max_bytes = max_bytes
        self.actions = actions
        self._lock = lock
        self._manager = manager

    def package_of(self, namespace: str, request: Request) -> Record | None:
        """The package an action route names (``actions/P/name``), None for an unpackaged one.

        Raises:
            HTTPException: 404 when the route names a package that does not exist.
        """
        name = request.path_params.get("pkg")
        if name is None:
            return None
        package = self.packages.get(namespace, str(name))
        if package is None:
            raise HTTPException(404, Msg.NOT_FOUND)
        return package

    async def list(self, request: Request) -> Response:
        """``GET /namespaces/{ns}/packages`` (``count=true`` answers ``{"packages": N}``)."""
        ns = _namespace(request)
        limit, skip = _page(request, "packages")
        packages = self.packages.list(ns)
        if _flag(request, "count"):
            return JSONResponse({"packages": len(packages)})
        return JSONResponse([{**p, "binding": False} for p in packages[skip : skip + limit]])

    async def get(self, request: Request) -> Response:
        """``GET /namespaces/{ns}/packages/{name}``: the package with its actions listed."""
        ns, name = _namespace(request), _entity_name(request)
        package = self.packages.get(ns, name)
        if package is None:
            raise HTTPException(404, Msg.NOT_FOUND)
        actions = [{"name": a["name"], "version": a["version"], "annotations": a["annotations"]}
                   for a in self.actions.list(f"{ns}/{name}")]
        return JSONResponse({**package, "actions": actions, "feeds": []})

    async def put(self, request: Request) -> Response:
        """``PUT /namespaces/{ns}/packages/{name}?overwrite=...``."""
        ns, name = _namespace(request), _entity_name(request)
        try:
            put = PackagePut.model_validate(await _read_json(request, self._max_bytes, "package"))
        except ValidationError as exc:
            raise HTTPException(400, _validation_message(exc)) from None
        if put.binding:
            raise HTTPException(400, "Package bindings are not supported by this runner.")
        async with self._lock:
            existing = self.packages.get(ns, name)
            if existing is not None and not _flag(request, "overwrite"):
                raise HTTPException(409, Msg.CONFLICT)
            record = build_package(ns, name, put, existing)
            self.packages.put(record)
        return JSONResponse(record)

    async def delete(self, request: Request) -> Response:
        """``DELETE /namespaces/{ns}/packages/{name}[?force=true]``: 409 while it holds actions."""
        ns, name = _namespace(request), _entity_name(request)
        async with self._lock:
            package = self.packages.get(ns, name)
            if package is None:
                raise HTTPException(404, Msg.NOT_FOUND)
            contents = self.actions.list(f"{ns}/{name}")
            if contents and not _flag(request, "force"):
                n = len(contents)
                raise HTTPException(409, Msg.PACKAGE_NOT_EMPTY.format(n=n, entities="entity" if n == 1 else "entities"))
            for action in contents:
                self.actions.delete(action["namespace"], action["name"])
                self._manager.retire(action["namespace"], action["name"])
            self.packages.delete(ns, name)
        return JSONResponse(package)
