"""Typed dependencies every route uses: the database session and the acting user.

`require(permission)` is the one permission check: it authenticates (session cookie or
bearer token), checks CSRF for cookie-authenticated writes, and checks the role's rights.
"""

from __future__ import annotations

import hmac
from collections.abc import Callable, Iterator
from typing import Annotated, Any

from fastapi import Depends, Request
from sqlalchemy.orm import Session

from civicgrid.core.auth import Actor
from civicgrid.core.errors import PermissionDenied, Unauthenticated

SESSION_COOKIE = "cg_session"
CSRF_HEADER = "X-CSRF-Token"
SAFE_METHODS = {"GET", "HEAD", "OPTIONS"}


def get_session(request: Request) -> Iterator[Session]:
    """One transaction per request, committed when the route returns (before the response)."""
    with request.app.state.db.session() as session:
        yield session


SessionDep = Annotated[Session, Depends(get_session, scope="function")]


async def _csrf_ok(request: Request, expected: str) -> bool:
    sent = request.headers.get(CSRF_HEADER)
    if sent is None and request.headers.get("content-type", "").startswith(
        ("application/x-www-form-urlencoded", "multipart/form-data")
    ):
        form = await request.form()
        value = form.get("csrf_token")
        sent = value if isinstance(value, str) else None
    return bool(sent) and hmac.compare_digest(str(sent), expected)


def _authenticated(request: Request, session: SessionDep) -> Actor | None:
    """The actor behind the bearer token or session cookie. A plain `def`, so FastAPI runs this
    database work in its thread pool and a slow query never blocks the event loop."""
    from civicgrid.accounts import service as accounts

    auth = request.headers.get("authorization", "")
    if auth.lower().startswith("bearer "):
        actor = accounts.actor_for_api_token(session, auth[7:].strip())
        if actor is None:
            raise Unauthenticated("The API token is invalid, expired or revoked.")
        return actor
    if token := request.cookies.get(SESSION_COOKIE):
        return accounts.actor_for_web_session(session, token)
    return None


async def optional_actor(
    request: Request, actor: Annotated[Actor | None, Depends(_authenticated)]
) -> Actor | None:
    # Only the CSRF check is async (it may read the form body); it touches no database.
    csrf_needed = actor is not None and actor.via == "session" and request.method not in SAFE_METHODS
    if csrf_needed and not await _csrf_ok(request, actor.csrf_token if actor else ""):
        raise PermissionDenied(
            "The form has expired or did not come from this site. Reload the page and try again.",
            error_code="csrf",
        )
    request.state.actor = actor
    return actor


OptionalActor = Annotated[Actor | None, Depends(optional_actor)]


def require(*permissions: Any) -> Callable[..., Any]:
    """Dependency: the acting user, who must be logged in and hold every permission named."""

    async def dependency(actor: OptionalActor) -> Actor:
        if actor is None:
            raise Unauthenticated("Please log in.")
        for p in permissions:
            if not actor.can(p):
                raise PermissionDenied("Your role does not allow this.")
        return actor

    return dependency


def requires(*permissions: Any) -> Any:
    """In a route signature: `actor: Annotated[Actor, requires(Permission.x)]`."""
    return Depends(require(*permissions))


def actor_with(*permissions: Any) -> Any:
    """Runtime alias of `Annotated[Actor, requires(...)]` (mypy cannot read it; prefer the long form)."""
    return Annotated[Actor, requires(*permissions)]
