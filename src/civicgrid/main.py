"""The FastAPI application: mounts every package's routers, static files and error handlers."""

from __future__ import annotations

import logging
import threading
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from urllib.parse import quote

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, RedirectResponse, Response
from fastapi.staticfiles import StaticFiles
from sqlalchemy.exc import DataError
from sqlalchemy.orm.exc import StaleDataError
from starlette.exceptions import HTTPException as StarletteHTTPException

from civicgrid.core.config import Settings, get_settings
from civicgrid.core.db import Database
from civicgrid.core.errors import AppError, TooManyRequests, Unauthenticated, error_body
from civicgrid.core.i18n import gettext
from civicgrid.core.logging import AccessLogMiddleware
from civicgrid.core.web import LocaleMiddleware, render
from civicgrid.worker import start_embedded

log = logging.getLogger("civicgrid")
STATIC_DIR = Path(__file__).resolve().parent / "web" / "static"


def wants_html(request: Request) -> bool:
    path = request.url.path
    if path.startswith(("/api/", "/open311/", "/docs", "/openapi")):
        return False
    return "text/html" in request.headers.get("accept", "")


def error_response(request: Request, status: int, code: str, message: str, **extra: object) -> Response:
    headers = {}
    if "retry_after" in extra:
        headers["Retry-After"] = str(extra.pop("retry_after"))
    details = extra.get("details", [])
    if wants_html(request) and not request.headers.get("hx-request"):
        return render(
            request, "web/error.html", status_code=status, status=status, message=message, details=details
        )
    if request.headers.get("hx-request"):
        # htmx swaps the message into the page's error area.
        return render(request, "web/_error.html", status_code=status, message=message, details=details)
    return JSONResponse(error_body(code, message, **extra), status_code=status, headers=headers)


def install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(AppError)
    async def app_error(request: Request, exc: AppError) -> Response:
        if isinstance(exc, Unauthenticated) and wants_html(request) and not request.headers.get("hx-request"):
            return RedirectResponse(f"/login?next={quote(request.url.path)}", status_code=303)
        extra: dict[str, object] = (
            {"retry_after": exc.retry_after} if isinstance(exc, TooManyRequests) else {}
        )
        if exc.details:
            extra["details"] = exc.details
        return error_response(request, exc.status, exc.code, exc.translated(), **extra)

    @app.exception_handler(StaleDataError)
    async def stale(request: Request, exc: StaleDataError) -> Response:
        # Optimistic locking: another request changed the same row between our read and write.
        message = gettext("Someone else changed this a moment ago. Reload and try again.")
        return error_response(request, 409, "conflict", message)

    @app.exception_handler(OverflowError)
    @app.exception_handler(DataError)
    async def out_of_range(request: Request, exc: Exception) -> Response:
        # A number too large for the database column (e.g. an id of 2**63): bad input, not a crash.
        return error_response(request, 422, "invalid", gettext("A number in the request is out of range."))

    @app.exception_handler(RequestValidationError)
    async def validation_error(request: Request, exc: RequestValidationError) -> Response:
        problems = []
        for err in exc.errors():
            loc = [str(p) for p in err.get("loc", ()) if p not in ("body", "query", "path", "form")]
            problems.append(
                gettext("{field}: {problem}", field=".".join(loc) or "-", problem=err.get("msg", ""))
            )
        message = gettext("The input is not valid. {details}", details="; ".join(problems))
        return error_response(request, 422, "invalid", message)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> Response:
        messages = {
            404: gettext("Not found."),
            405: gettext("This method is not allowed here."),
        }
        message = messages.get(exc.status_code) or gettext("The request could not be handled.")
        return error_response(request, exc.status_code, f"http_{exc.status_code}", message)


def create_app(settings: Settings | None = None, db: Database | None = None) -> FastAPI:
    settings = settings or get_settings()
    settings.ensure_data_dir()
    database = db or Database(settings.resolved_database_url, settings.db_pool_size)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        from civicgrid.data import metering
        from civicgrid.events import text

        threading.Thread(target=text.warm_up, name="jieba-warm-up", daemon=True).start()
        worker = start_embedded(database) if settings.embedded_worker else None
        # A separate worker process cannot flush this process's metered reads: a thread does.
        flusher = None if worker else metering.start_flusher(database)
        yield
        if worker:
            thread, stop = worker
            stop.set()
            thread.join(timeout=10)
        if flusher:
            flusher.stop()
        metering.flush(database)  # metered reads still in memory are stored before the process ends
        if db is None:
            database.dispose()

    app = FastAPI(
        title="CivicGrid",
        version="0.1.0",
        description="Grassroots social governance: grids, events, disputes, risks, public data.",
        lifespan=lifespan,
    )
    app.state.settings = settings
    app.state.db = database
    app.add_middleware(LocaleMiddleware)
    app.add_middleware(AccessLogMiddleware)
    install_error_handlers(app)
    app.mount("/static", StaticFiles(directory=STATIC_DIR), name="static")

    from civicgrid.accounts import api as accounts_api
    from civicgrid.accounts import web as accounts_web
    from civicgrid.cockpit import api as cockpit_api
    from civicgrid.cockpit import web as cockpit_web
    from civicgrid.data import access_api, ckan_api, sandbox_api
    from civicgrid.data import api as data_api
    from civicgrid.data import web as data_web
    from civicgrid.disputes import api as disputes_api
    from civicgrid.disputes import web as disputes_web
    from civicgrid.events import api as events_api
    from civicgrid.events import attachments_api, hotline_web, stats_api
    from civicgrid.events import web as events_web
    from civicgrid.events.open311 import api as open311_api
    from civicgrid.regions import api as regions_api
    from civicgrid.regions import web as regions_web
    from civicgrid.risks import api as risks_api
    from civicgrid.risks import web as risks_web
    from civicgrid.web import web as shell_web

    # The busiest route first, as a plain Starlette route (events/api.py, after report_event).
    app.add_route("/api/v1/events", events_api.report_event, methods=["POST"], include_in_schema=False)
    for router in (
        events_api.intake_router,  # first: see there
        accounts_api.router,
        accounts_api.audit_router,
        attachments_api.router,  # before events_api: its POST /{number}/{action} would take ours
        events_api.router,
        events_api.inbox_router,
        stats_api.router,
        disputes_api.router,
        disputes_api.stats_router,
        open311_api.router,
        regions_api.router,
        risks_api.router,
        data_api.router,
        access_api.router,
        sandbox_api.router,
        ckan_api.router,
        cockpit_api.router,
        cockpit_web.router,
        accounts_web.router,
        regions_web.router,
        events_web.router,
        hotline_web.router,
        data_web.router,
        disputes_web.router,
        risks_web.router,
        shell_web.router,
    ):
        app.include_router(router)
    return app
