"""The page shell: home page per role, login and logout, health check."""

from __future__ import annotations

from typing import Annotated, Any
from urllib.parse import urlsplit

from fastapi import APIRouter, Form, Request
from fastapi.responses import JSONResponse, RedirectResponse, Response
from sqlalchemy import text
from sqlalchemy.orm import Session

from civicgrid.accounts import service as accounts
from civicgrid.core.auth import Actor
from civicgrid.core.deps import SESSION_COOKIE, OptionalActor, SessionDep, requires
from civicgrid.core.i18n import gettext as _
from civicgrid.core.pagination import PageParams, paginate
from civicgrid.core.web import render
from civicgrid.regions import service as regions

router = APIRouter(include_in_schema=False)
LoggedIn = Annotated[Actor, requires()]  # any logged-in user; pages check finer permissions themselves


def safe_next(target: str | None) -> str:
    """Only a path on this site may follow a login: no scheme, host or protocol-relative URL."""
    if not target or "\\" in target or any(ord(c) < 32 for c in target):
        return "/"
    parts = urlsplit(target)
    if parts.scheme or parts.netloc or not target.startswith("/") or target.startswith("//"):
        return "/"
    return target


def _same_origin(request: Request) -> bool:
    """A login form posted from another site (login CSRF) is refused when the browser says so."""
    origin = request.headers.get("origin")
    if not origin or origin == "null":
        return origin is None
    return urlsplit(origin).netloc == request.url.netloc


@router.get("/healthz")
def healthz(session: SessionDep) -> JSONResponse:
    session.execute(text("SELECT 1"))
    return JSONResponse({"status": "ok"})


@router.get("/")
def home_page(request: Request, session: SessionDep, actor: LoggedIn) -> Response:
    ctx = home_context(session, actor)
    return render(request, f"web/home_{ctx['kind']}.html", **ctx)


@router.get("/login")
def login_form(request: Request, actor: OptionalActor, next: str = "/") -> Response:
    if actor is not None:
        return RedirectResponse(safe_next(next), status_code=303)
    return render(request, "web/login.html", next=safe_next(next), username="", error="")


@router.post("/login")
def login(
    request: Request,
    session: SessionDep,
    username: Annotated[str, Form()] = "",
    password: Annotated[str, Form()] = "",
    next: Annotated[str, Form()] = "/",
) -> Response:
    target = safe_next(next)

    def again(status: int, error: str, headers: dict[str, str] | None = None) -> Response:
        # Rendered, not raised: the request's transaction commits, so a failure still counts.
        res = render(
            request, "web/login.html", status_code=status, next=target, username=username, error=error
        )
        res.headers.update(headers or {})
        return res

    if not _same_origin(request):
        return again(403, _("The form did not come from this site. Reload the page and try again."))
    if not username.strip() or not password:
        return again(422, _("Enter your username and password."))
    result = accounts.authenticate(session, username, password)
    if result.locked_for:
        err = accounts.throttle_error(result.locked_for)
        return again(429, err.translated(), {"Retry-After": str(result.locked_for)})
    if result.user is None:
        return again(401, _("Wrong username or password."))
    if old := request.cookies.get(SESSION_COOKIE):
        accounts.end_web_session(session, old)
    token = accounts.start_web_session(session, result.user)
    res = RedirectResponse(target, status_code=303)
    settings = request.app.state.settings
    res.set_cookie(
        SESSION_COOKIE,
        token,
        max_age=settings.session_hours * 3600,
        path="/",
        httponly=True,
        samesite="lax",
        secure=settings.secure_cookies,
    )
    return res


@router.post("/logout")
def logout(request: Request, session: SessionDep, actor: LoggedIn) -> Response:
    if token := request.cookies.get(SESSION_COOKIE):
        accounts.end_web_session(session, token)
    res = RedirectResponse("/login", status_code=303)
    res.delete_cookie(SESSION_COOKIE, path="/")
    return res


def home_context(session: Session, actor: Actor) -> dict[str, Any]:
    """What the home page shows, by role: the region overview, the admin's counts, the worker's grids."""
    region = regions.get(session, actor.region_id)
    chain = regions.ancestors(session, region)
    ctx: dict[str, Any] = {"region": region, "ancestors": chain}
    role = actor.role
    if role in ("dispatcher", "leader", "admin"):
        ctx["counts"] = regions.count_by_level(session, region)
        ctx["workers_count"] = regions.count_grid_workers(session, region)
    if role == "dispatcher":
        ctx["villages"] = regions.children(session, actor, region.code)
        ctx["kind"] = "dispatcher"
    elif role == "leader":
        ctx["kind"] = "leader"
    elif role == "admin":
        audit_total = paginate(session, accounts.audit_stmt(session, actor), PageParams(page=1, size=1))[1]
        ctx["admin_counts"] = {
            "users": len(accounts.list_users(session, actor)),
            "orgs": len(accounts.list_orgs(session, actor)),
            "audit": audit_total,
        }
        ctx["kind"] = "admin"
    elif role == "grid_worker":
        ctx["grids"] = [
            {"code": g.code, "name": g.name, "name_en": g.name_en, "parent_code": regions.parent_code(g)}
            for g in regions.grids_of_worker(session, actor.user_id)
        ]
        ctx["kind"] = "grid_worker"
    elif role == "resident":
        ctx["kind"] = "resident"
    else:
        ctx["kind"] = "staff"
    return ctx
