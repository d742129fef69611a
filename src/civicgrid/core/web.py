"""Page plumbing: one Jinja2 environment over every package's templates, locale selection,
and rendering with the acting user, CSRF token and translations in the context."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from fastapi import Request
from fastapi.responses import HTMLResponse
from jinja2 import Environment, FileSystemLoader, select_autoescape
from starlette.datastructures import QueryParams
from starlette.requests import cookie_parser
from starlette.types import ASGIApp, Receive, Scope, Send

from civicgrid.core.i18n import (
    LOCALES,
    get_locale,
    gettext,
    negotiate_locale,
    ngettext,
    reset_locale,
    set_locale,
)

PACKAGE_DIR = Path(__file__).resolve().parent.parent
LOCALE_COOKIE = "lang"


def _template_dirs() -> list[str]:
    # templates/<package>/page.html inside each package; web/ holds the shell (base.html).
    return [str(p) for p in sorted(PACKAGE_DIR.glob("*/templates"))]


def make_environment() -> Environment:
    env = Environment(
        loader=FileSystemLoader(_template_dirs()),
        autoescape=select_autoescape(["html", "xml"]),
        extensions=["jinja2.ext.i18n"],
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.install_gettext_callables(gettext, ngettext, newstyle=True)  # type: ignore[attr-defined]
    env.globals["get_locale"] = get_locale
    env.filters["tojson_zh"] = lambda v: json.dumps(v, ensure_ascii=False)
    return env


ENV = make_environment()


def render(request: Request, template: str, status_code: int = 200, **context: Any) -> HTMLResponse:
    """Render a page; the shell reads `actor`, `csrf_token`, `locale` and `path` from here."""
    actor = getattr(request.state, "actor", None)
    ctx = {
        "request": request,
        "actor": actor,
        "csrf_token": actor.csrf_token if actor else "",
        "locale": get_locale(),
        "locales": LOCALES,
        "path": request.url.path,
        **context,
    }
    html = ENV.get_template(template).render(ctx)
    return HTMLResponse(html, status_code=status_code, media_type="text/html; charset=utf-8")


class LocaleMiddleware:
    """Chooses the request's language: ?lang= (remembered in a cookie), the cookie,
    then Accept-Language, then Simplified Chinese."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        # Read straight off the scope: this runs on every request, and a Request with its
        # parsed query string and cookies cost more than the choice itself.
        query: bytes = scope.get("query_string", b"")
        explicit = QueryParams(query).get("lang") if b"lang=" in query else None
        cookie = accept = None
        for name, value in scope["headers"]:
            if name == b"cookie":
                cookie = cookie_parser(value.decode("latin-1")).get(LOCALE_COOKIE)
            elif name == b"accept-language":
                accept = value.decode("latin-1")
        locale = negotiate_locale(explicit or cookie, accept)
        token = set_locale(locale)

        async def send_with_cookie(message: Any) -> None:
            if explicit and message["type"] == "http.response.start":
                headers = list(message.get("headers", []))
                headers.append(
                    (
                        b"set-cookie",
                        f"{LOCALE_COOKIE}={locale}; Path=/; Max-Age=31536000; SameSite=Lax".encode(),
                    )
                )
                message["headers"] = headers
            await send(message)

        try:
            await self.app(scope, receive, send_with_cookie)
        finally:
            reset_locale(token)
