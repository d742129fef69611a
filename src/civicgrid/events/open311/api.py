"""Open311 GeoReport v2 routes under /open311/v2. The format follows the path's suffix
(`services.json`, `services.xml`; JSON without one), and every error, whatever raised it,
answers in the spec's error format: `[{"code": 400, "description": "…"}]` or `<errors>`."""

from __future__ import annotations

import re
from collections.abc import Callable, Coroutine
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Form, Query, Request, status
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from fastapi.routing import APIRoute
from pydantic import BaseModel
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.routing import Match

from civicgrid.core.deps import SessionDep
from civicgrid.core.errors import AppError, Invalid, Unauthenticated
from civicgrid.core.i18n import gettext
from civicgrid.events.open311 import service, xml
from civicgrid.events.open311.schemas import (
    Discovery,
    Error,
    Format,
    RequestCreated,
    RequestToken,
    Service,
    ServiceDefinition,
    ServiceRequest,
)

PREFIX = "/open311/v2"
XML = "text/xml; charset=utf-8"


# ---- the spec's response and error formats ----------------------------------------------


def format_of(request: Request) -> Format:
    wanted = request.path_params.get("format") or request.query_params.get("format")
    return Format.xml if wanted == "xml" or request.url.path.endswith(".xml") else Format.json


def respond(request: Request, root: str, data: BaseModel | list[Any], status_code: int = 200) -> Response:
    """The same data as JSON or as XML with the spec's element names."""
    body: Any = (
        [d.model_dump(mode="json") for d in data] if isinstance(data, list) else data.model_dump(mode="json")
    )
    if format_of(request) == Format.xml:
        return Response(xml.render(root, body), status_code=status_code, media_type=XML)
    return JSONResponse(body, status_code=status_code)


def error_response(request: Request, code: int, description: str) -> Response:
    return respond(request, "errors", [Error(code=code, description=description)], status_code=code)


def _spec_status(exc: AppError) -> int:
    """Our 422 is the spec's 400 (bad request); a missing key is its 403 (invalid api_key)."""
    if isinstance(exc, Invalid):
        return 400
    if isinstance(exc, Unauthenticated):
        return 403
    return exc.status


class Open311Route(APIRoute):
    """Every failure of an Open311 route, including FastAPI's own validation, in the spec's format.
    The route's session has already rolled back when the error arrives here: nothing is written."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()

        async def route(request: Request) -> Response:
            try:
                return await handler(request)
            except AppError as exc:
                return error_response(request, _spec_status(exc), exc.translated())
            except RequestValidationError as exc:
                if any(tuple(err.get("loc", ())) == ("path", "format") for err in exc.errors()):
                    return error_response(
                        request,
                        404,
                        gettext(
                            "Unknown format {format}; use .json or .xml.",
                            format=request.path_params.get("format", ""),
                        ),
                    )
                problems = [
                    gettext(
                        "{field}: {problem}",
                        field=".".join(
                            str(p) for p in err.get("loc", ()) if p not in ("query", "path", "body")
                        ),
                        problem=err.get("msg", ""),
                    )
                    for err in exc.errors()
                ]
                return error_response(
                    request, 400, gettext("The input is not valid. {details}", details="; ".join(problems))
                )
            except StarletteHTTPException as exc:
                code = exc.status_code if 400 <= exc.status_code < 500 else 400
                return error_response(request, code, gettext("The request could not be handled."))

        return route


router = APIRouter(prefix=PREFIX, tags=["open311"], route_class=Open311Route)


def _doc(model: Any, status_code: int = 200) -> dict[int | str, dict[str, Any]]:
    return {
        status_code: {"model": model, "content": {"text/xml": {}}},
        400: {"model": list[Error], "description": "Bad request"},
        403: {"model": list[Error], "description": "Invalid api_key"},
        404: {"model": list[Error], "description": "Not found"},
    }


def both(method: str, path: str, model: Any, status_code: int = 200, **kw: Any) -> Callable[..., Any]:
    """Register a route as `path.{format}` (documented) and as bare `path` (JSON)."""

    def register(fn: Callable[..., Any]) -> Callable[..., Any]:
        common = {"methods": [method], "status_code": status_code, "response_model": None, **kw}
        router.add_api_route(path + ".{format}", fn, responses=_doc(model, status_code), **common)
        router.add_api_route(path, fn, include_in_schema=False, **common)
        return fn

    return register


Jurisdiction = Annotated[
    str | None, Query(description="Our city's region code or name; optional.", max_length=100)
]
ApiKey = Annotated[str | None, Query(description="A CivicGrid personal access token.", max_length=200)]


# ---- routes -----------------------------------------------------------------------------


@both("GET", "/discovery", Discovery, summary="Service discovery")
def get_discovery(request: Request, format: Format = Format.json) -> Response:
    return respond(request, "discovery", service.discovery(str(request.base_url)))


@both("GET", "/services", list[Service], summary="List services (the event categories)")
def get_services(
    request: Request,
    session: SessionDep,
    format: Format = Format.json,
    jurisdiction_id: Jurisdiction = None,
) -> Response:
    service.check_jurisdiction(session, jurisdiction_id)
    return respond(request, "services", service.list_services(session))


@both("GET", "/services/{service_code}", ServiceDefinition, summary="Service definition (attributes)")
def get_service_definition(
    request: Request,
    session: SessionDep,
    service_code: str,
    format: Format = Format.json,
    jurisdiction_id: Jurisdiction = None,
) -> Response:
    service.check_jurisdiction(session, jurisdiction_id)
    return respond(request, "service_definition", service.service_definition(session, service_code))


_ATTRIBUTE = re.compile(r"^attribute\[([^\]]+)\](\[\])?$")


async def form_attributes(request: Request) -> dict[str, list[str]]:
    """`attribute[code]=v` and, for multivaluelist, `attribute[code][]=v` (repeatable)."""
    form = await request.form()
    found: dict[str, list[str]] = {}
    for key, value in form.multi_items():
        m = _ATTRIBUTE.match(key)
        if m and isinstance(value, str):
            found.setdefault(m.group(1), []).append(value)
    return found


FormText = Annotated[str | None, Form(max_length=5000)]


@both(
    "POST",
    "/requests",
    list[RequestCreated],
    status_code=status.HTTP_201_CREATED,
    summary="Create a service request (report an event)",
    description=(
        "Form-encoded (or multipart). Attributes as `attribute[code]=value`, multivaluelist as "
        "`attribute[code][]=value` repeated. lat and long are required: there is no geocoder."
    ),
)
def post_request(
    request: Request,
    session: SessionDep,
    attributes: Annotated[dict[str, list[str]], Depends(form_attributes)],
    format: Format = Format.json,
    api_key: FormText = None,
    jurisdiction_id: FormText = None,
    service_code: FormText = None,
    lat: FormText = None,
    long: FormText = None,
    address_string: FormText = None,
    address_id: FormText = None,
    email: FormText = None,
    device_id: FormText = None,
    account_id: FormText = None,
    first_name: FormText = None,
    last_name: FormText = None,
    phone: FormText = None,
    description: FormText = None,
    media_url: FormText = None,
) -> Response:
    query = request.query_params
    service.check_jurisdiction(session, jurisdiction_id or query.get("jurisdiction_id"))
    actor = service.reporter_for_key(session, api_key or query.get("api_key"))
    form = service.RequestForm(
        service_code=service_code or "",
        lat=lat or "",
        long=long or "",
        address_string=address_string or "",
        address_id=address_id or "",
        email=email or "",
        device_id=device_id or "",
        account_id=account_id or "",
        first_name=first_name or "",
        last_name=last_name or "",
        phone=phone or "",
        description=description or "",
        media_url=media_url or "",
        attributes=attributes,
    )
    created = service.create_request(session, actor, form)
    return respond(request, "service_requests", [created], status_code=201)


@both("GET", "/requests", list[ServiceRequest], summary="Search service requests")
def get_requests(
    request: Request,
    session: SessionDep,
    format: Format = Format.json,
    jurisdiction_id: Jurisdiction = None,
    api_key: ApiKey = None,
    service_request_id: Annotated[
        str | None, Query(description="Comma-separated; overrides every other filter.", max_length=20000)
    ] = None,
    service_code: Annotated[str | None, Query(description="Comma-separated.", max_length=2000)] = None,
    start_date: Annotated[str | None, Query(description="W3C date-time.", max_length=40)] = None,
    end_date: Annotated[str | None, Query(description="W3C date-time.", max_length=40)] = None,
    status: Annotated[str | None, Query(description="open, closed or both.", max_length=20)] = None,
) -> Response:
    service.check_jurisdiction(session, jurisdiction_id)
    reader = service.reader_for_key(session, api_key)
    rows = service.list_requests(
        session,
        reader,
        service_request_id=service_request_id,
        service_code=service_code,
        start_date=start_date,
        end_date=end_date,
        status=status,
    )
    return respond(request, "service_requests", rows)


@both("GET", "/requests/{service_request_id}", list[ServiceRequest], summary="One service request")
def get_request(
    request: Request,
    session: SessionDep,
    service_request_id: str,
    format: Format = Format.json,
    jurisdiction_id: Jurisdiction = None,
    api_key: ApiKey = None,
) -> Response:
    service.check_jurisdiction(session, jurisdiction_id)
    reader = service.reader_for_key(session, api_key)
    return respond(request, "service_requests", service.get_request(session, reader, service_request_id))


@both("GET", "/tokens/{token}", list[RequestToken], summary="The service_request_id of a token")
def get_token(
    request: Request,
    session: SessionDep,
    token: str,
    format: Format = Format.json,
    jurisdiction_id: Jurisdiction = None,
) -> Response:
    service.check_jurisdiction(session, jurisdiction_id)
    return respond(request, "service_requests", service.request_for_token(session, token))


@router.api_route("/{rest:path}", methods=["GET", "POST", "PUT", "PATCH", "DELETE"], include_in_schema=False)
def unknown(request: Request, rest: str) -> Response:
    """Anything else under /open311/v2: 405 when the path exists with other methods, else 404."""
    for route in router.routes:
        if isinstance(route, Open311Route) and route.endpoint is not unknown:
            match, _scope = route.matches(request.scope)
            if match == Match.PARTIAL:
                return error_response(request, 405, gettext("This method is not allowed here."))
    return error_response(request, 404, gettext("Not found."))
