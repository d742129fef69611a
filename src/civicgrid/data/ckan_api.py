"""CKAN's action API at /api/3/action/<action> (and CKAN's unversioned /api/action/ alias):
GET with query parameters or POST with a JSON (or form) body, CKAN's envelope and error shape."""

from __future__ import annotations

import json
from typing import Any

from fastapi import APIRouter, Request
from fastapi.encoders import jsonable_encoder
from fastapi.responses import JSONResponse
from starlette.concurrency import run_in_threadpool

from civicgrid.core.deps import SessionDep
from civicgrid.core.errors import AppError
from civicgrid.data import ckan, keys, metering

router = APIRouter(tags=["ckan"])


async def _params(request: Request) -> dict[str, Any]:
    """Query parameters, overlaid by a JSON object or form body (a repeated parameter is a list)."""
    params: dict[str, Any] = {}
    for name in request.query_params:
        values = request.query_params.getlist(name)
        params[name] = values if len(values) > 1 else values[0]
    if request.method == "POST":
        ctype = request.headers.get("content-type", "")
        raw = await request.body()
        if ctype.startswith(("application/x-www-form-urlencoded", "multipart/form-data")):
            form = await request.form()
            for name in form:
                values = [v for v in form.getlist(name) if isinstance(v, str)]
                if values:
                    params[name] = values if len(values) > 1 else values[0]
        elif raw.strip():
            try:
                body = json.loads(raw)
            except ValueError:
                raise ckan.invalid("body", "The request body is not valid JSON.") from None
            if not isinstance(body, dict):
                raise ckan.invalid("body", "The request body must be a JSON object.")
            params.update(body)
    return params


def _help(request: Request, action: str) -> str:
    return f"{request.base_url}api/3/action/help_show?name={action}"


async def _action(request: Request, session: SessionDep, action: str) -> JSONResponse:
    try:
        params = await _params(request)
    except ckan.CkanError as err:
        return _error(request, session, action, err)
    # The database and the engine are synchronous: run the action off the event loop.
    return await run_in_threadpool(_run, request, session, action, params)


def _run(request: Request, session: SessionDep, action: str, params: dict[str, Any]) -> JSONResponse:
    try:
        clear_key = keys.key_from_headers(request.headers)
        if not clear_key:
            _limit_anonymous(request, session)
        try:
            caller = ckan.caller_for(session, clear_key)
        except ckan.CkanError:
            # A key that does not resolve counts against the address too, so guessing keys
            # is no way around the anonymous limit.
            _limit_anonymous(request, session)
            raise
        result = ckan.call(session, caller, str(request.base_url), action, params)
    except AppError as exc:
        err = ckan.from_app_error(exc)
        return _error(request, session, action, err)
    except ckan.CkanError as err:
        return _error(request, session, action, err)
    body = {"help": _help(request, action), "success": True, "result": result}
    return JSONResponse(jsonable_encoder(body))


def _limit_anonymous(request: Request, session: SessionDep) -> None:
    """Calls without a (valid) key: `ckan.ANONYMOUS_PER_MINUTE` per client address (429 and
    Retry-After beyond). The address is the socket's peer, or the client named by a trusted
    proxy when uvicorn runs with --proxy-headers (see docs/data-sandbox.md)."""
    address = request.client.host if request.client else "unknown"
    per_minute = ckan.anonymous_per_minute()
    wait = metering.limiter_for(session.get_bind()).take_bucket(("ckan-anonymous", address), per_minute)
    if wait:
        raise ckan.rate_limited(per_minute, wait)


def _error(request: Request, session: SessionDep, action: str, err: ckan.CkanError) -> JSONResponse:
    session.rollback()  # a failed action changes nothing
    headers = {"Retry-After": str(err.retry_after)} if err.retry_after else None
    body = {"help": _help(request, action), "success": False, "error": err.body()}
    return JSONResponse(body, status_code=err.status, headers=headers)


# One route per prefix and method, each with its own operation id: a route serving GET and
# POST would give both the same id in /openapi.json (FastAPI warns about duplicates).
for prefix, slug in (("/api/3/action", "ckan_action"), ("/api/action", "ckan_action_unversioned")):
    for method in ("GET", "POST"):
        router.add_api_route(
            prefix + "/{action}",
            _action,
            methods=[method],
            operation_id=f"{slug}_{method.lower()}",
            include_in_schema=prefix == "/api/3/action",
            summary="CKAN action (package_search, package_show, datastore_search, …)",
        )
