"""Administration pages of the unified user system: users, orgs, the audit log, my account.

Thin: every route reads and writes through `accounts.service`. Forms post with htmx; a
service error propagates (so the transaction rolls back) and the app's handler renders it
as a fragment that app.js swaps into the form's error area with its 4xx status.
"""

from __future__ import annotations

import json
from datetime import UTC, date, datetime, time, timedelta
from typing import Annotated, Any

from fastapi import APIRouter, Form, Request
from fastapi.responses import RedirectResponse, Response

from civicgrid.accounts import service
from civicgrid.accounts.models import OrgKind, User
from civicgrid.accounts.permissions import Permission, Role
from civicgrid.core import audit
from civicgrid.core.auth import Actor
from civicgrid.core.deps import SESSION_COOKIE, SessionDep, requires
from civicgrid.core.errors import Invalid, PermissionDenied
from civicgrid.core.masking import mask_phone
from civicgrid.core.pagination import PageDep, PageParams, paginate
from civicgrid.core.vocab import Platform
from civicgrid.core.web import render

router = APIRouter(include_in_schema=False)
P = Permission
Text = Annotated[str, Form()]
# One permission dependency per route (core.deps.requires), named by what the reader may do.
UserReader = Annotated[Actor, requires(P.users_read)]
UserManager = Annotated[Actor, requires(P.users_manage)]
OrgReader = Annotated[Actor, requires(P.orgs_read)]
OrgManager = Annotated[Actor, requires(P.orgs_manage)]
AuditReader = Annotated[Actor, requires(P.audit_read)]
TokenOwner = Annotated[Actor, requires(P.tokens_own)]


def done(request: Request, url: str) -> Response:
    """After a successful form post: htmx follows HX-Redirect, a plain form a 303."""
    if request.headers.get("hx-request"):
        return Response(status_code=204, headers={"HX-Redirect": url})
    return RedirectResponse(url, status_code=303)


def user_row(user: User, actor: Actor) -> dict[str, Any]:
    clear = actor.can(P.users_manage) or user.id == actor.user_id
    return {
        "id": user.id,
        "username": user.username,
        "display_name": user.display_name,
        "phone": (user.phone if clear else mask_phone(user.phone)) if user.phone else "",
        "active": user.active,
        "memberships": [
            {"org": m.org.name, "org_code": m.org.code, "role": str(m.role)} for m in user.memberships
        ],
    }


# ---- users -------------------------------------------------------------------------------


@router.get("/admin/users")
def users_page(
    request: Request, session: SessionDep, actor: UserReader, q: str = "", role: str = ""
) -> Response:
    role_filter = Role(role) if role in Role.__members__ else None
    users = service.list_users(session, actor, q=q.strip(), role=role_filter)
    return render(
        request,
        "accounts/users.html",
        users=[user_row(u, actor) for u in users],
        q=q,
        role=role,
        roles=list(Role),
    )


def _assignable_roles(actor: Actor) -> list[Role]:
    return [r for r in Role if r != Role.admin or actor.role == Role.admin]


@router.get("/admin/users/new")
def new_user_page(request: Request, session: SessionDep, actor: UserManager) -> Response:
    return render(
        request,
        "accounts/user_new.html",
        orgs=service.list_orgs(session, actor),
        roles=_assignable_roles(actor),
    )


@router.post("/admin/users/new")
def create_user(
    request: Request,
    session: SessionDep,
    actor: UserManager,
    username: Text,
    display_name: Text,
    password: Text,
    org_code: Text,
    role: Text,
    phone: Text = "",
) -> Response:
    if role not in Role.__members__:
        raise Invalid("Choose a role.")
    user = service.create_user(
        session,
        actor,
        username=username.strip(),
        display_name=display_name.strip(),
        password=password,
        phone=phone.strip() or None,
        memberships=[(org_code, Role(role))],
    )
    return done(request, f"/admin/users/{user.id}?created=1")


@router.get("/admin/users/{user_id}")
def user_page(
    request: Request, session: SessionDep, actor: UserReader, user_id: int, created: int = 0
) -> Response:
    user = service.get_user_in_scope(session, actor, user_id)
    return render(
        request,
        "accounts/user_detail.html",
        user=user_row(user, actor),
        orgs=service.list_orgs(session, actor) if actor.can(P.users_manage) else [],
        roles=_assignable_roles(actor),
        created=bool(created),
        saved=request.query_params.get("saved") == "1",
    )


@router.post("/admin/users/{user_id}")
def update_user(
    request: Request,
    session: SessionDep,
    actor: UserManager,
    user_id: int,
    display_name: Text,
    phone: Text = "",
    password: Text = "",
) -> Response:
    service.update_user(
        session,
        actor,
        user_id,
        display_name=display_name.strip(),
        phone=phone.strip(),
        password=password or None,
    )
    return done(request, f"/admin/users/{user_id}?saved=1")


@router.post("/admin/users/{user_id}/active")
def set_user_active(
    request: Request, session: SessionDep, actor: UserManager, user_id: int, active: Text
) -> Response:
    service.update_user(session, actor, user_id, active=active == "1")
    return done(request, f"/admin/users/{user_id}?saved=1")


@router.post("/admin/users/{user_id}/memberships")
def add_membership(
    request: Request,
    session: SessionDep,
    actor: UserManager,
    user_id: int,
    org_code: Text,
    role: Text,
) -> Response:
    if role not in Role.__members__:
        raise Invalid("Choose a role.")
    service.add_membership(session, actor, user_id, org_code, Role(role))
    return done(request, f"/admin/users/{user_id}?saved=1")


# ---- orgs --------------------------------------------------------------------------------


@router.get("/admin/orgs")
def orgs_page(request: Request, session: SessionDep, actor: OrgReader, q: str = "") -> Response:
    return render(
        request,
        "accounts/orgs.html",
        orgs=service.list_orgs(session, actor, q=q.strip()),
        q=q,
        kinds=list(OrgKind),
        platforms=list(Platform),
    )


@router.post("/admin/orgs")
def create_org(
    request: Request,
    session: SessionDep,
    actor: OrgManager,
    code: Text,
    name: Text,
    kind: Text,
    region_code: Text,
    name_en: Text = "",
    platform: Text = "",
) -> Response:
    if kind not in OrgKind.__members__:
        raise Invalid("Choose the kind of organisation.")
    if platform and platform not in Platform.__members__:
        raise Invalid("Choose a platform.")
    service.create_org(
        session,
        actor,
        code=code.strip(),
        name=name.strip(),
        name_en=name_en.strip(),
        kind=OrgKind(kind),
        region_code=region_code.strip(),
        platform=Platform(platform) if platform else None,
    )
    return done(request, "/admin/orgs?created=1")


# ---- audit log ---------------------------------------------------------------------------


def _day(value: str, field: str) -> date | None:
    if not value:
        return None
    try:
        return date.fromisoformat(value)
    except ValueError:
        raise Invalid("{field} is not a date (YYYY-MM-DD).", field=field) from None


def _diff_rows(raw: str) -> list[dict[str, Any]]:
    try:
        data = json.loads(raw or "{}")
    except ValueError:
        return [{"field": "?", "before": None, "after": raw}]
    rows: list[dict[str, Any]] = []
    for key, value in data.items():
        if key == "_" and isinstance(value, dict):
            rows.extend({"field": k, "before": None, "after": v} for k, v in value.items())
        elif isinstance(value, list) and len(value) == 2:
            rows.append({"field": key, "before": value[0], "after": value[1]})
        else:
            rows.append({"field": key, "before": None, "after": value})
    return rows


@router.get("/admin/audit")
def audit_page(
    request: Request,
    session: SessionDep,
    actor: AuditReader,
    page: PageDep,
    by: str = "",
    action: str = "",
    target_type: str = "",
    since: str = "",
    until: str = "",
) -> Response:
    start, end = _day(since, "since"), _day(until, "until")
    stmt = service.audit_stmt(
        session,
        actor,
        by=by.strip(),
        action=action.strip(),
        target_type=target_type.strip(),
        since=datetime.combine(start, time(), UTC) if start else None,
        until=datetime.combine(end + timedelta(days=1), time(), UTC) if end else None,
    )
    rows, total = paginate(session, stmt, page)
    records = [
        {
            "id": r.id,
            "at": r.at,
            "actor": r.actor,
            "action": r.action,
            "target": f"{r.target_type}:{r.target_id}",
            "diff": _diff_rows(r.diff),
        }
        for r in rows
    ]
    filters = {"by": by, "action": action, "target_type": target_type, "since": since, "until": until}
    return render(
        request,
        "accounts/audit.html",
        records=records,
        total=total,
        page=page.page,
        size=page.size,
        filters=filters,
        base_params={k: v for k, v in {**filters, "size": page.size}.items() if v},
    )


@router.post("/admin/audit/verify")
def verify_audit(request: Request, session: SessionDep, actor: AuditReader) -> Response:
    checked = paginate(session, service.audit_stmt(session, actor), PageParams(page=1, size=1))[1]
    breaks = audit.verify(session)
    return render(
        request,
        "accounts/_verify.html",
        breaks=[{"id": b.record_id, "reason": b.reason} for b in breaks],
        checked=checked,
    )


# ---- my account: role switch and API tokens ---------------------------------------------


def _account_context(session: SessionDep, actor: Actor) -> dict[str, Any]:
    me = service.get_user(session, actor.user_id)
    return {
        "me": user_row(me, actor),
        "memberships": [
            {"id": m.id, "org": m.org.name, "role": str(m.role), "current": m.id == actor.membership_id}
            for m in me.memberships
        ],
        "tokens": service.list_api_tokens(session, actor),
    }


@router.get("/account")
def account_page(request: Request, session: SessionDep, actor: TokenOwner) -> Response:
    return render(request, "accounts/account.html", **_account_context(session, actor), new_token="")


@router.post("/account/role")
def switch_role(
    request: Request,
    session: SessionDep,
    actor: TokenOwner,
    membership_id: Annotated[int, Form()],
) -> Response:
    token = request.cookies.get(SESSION_COOKIE)
    if actor.via != "session" or not token:
        raise PermissionDenied("Only a browser session can switch roles.")
    service.switch_membership(session, token, membership_id)
    return done(request, "/")


@router.post("/account/tokens")
def create_token(
    request: Request,
    session: SessionDep,
    actor: TokenOwner,
    name: Text,
    days: Annotated[int, Form()] = 90,
) -> Response:
    if not 1 <= days <= 366:
        raise Invalid("A token lives between 1 and 366 days.")
    _row, token = service.create_api_token(session, actor, name=name.strip() or "web", days=days)
    ctx = _account_context(session, actor)
    if request.headers.get("hx-request"):
        return render(request, "accounts/_token_created.html", status_code=201, new_token=token, **ctx)
    return render(request, "accounts/account.html", status_code=201, new_token=token, **ctx)


@router.post("/account/tokens/{token_id}/revoke")
def revoke_token(request: Request, session: SessionDep, actor: TokenOwner, token_id: int) -> Response:
    service.revoke_api_token(session, actor, token_id)
    if request.headers.get("hx-request"):
        return render(request, "accounts/_tokens.html", tokens=service.list_api_tokens(session, actor))
    return done(request, "/account")
