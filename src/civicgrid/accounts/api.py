"""JSON routes of the unified user system under /api/v1/accounts."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

from fastapi import APIRouter, status

from civicgrid.accounts import service
from civicgrid.accounts.models import ApiToken, OrgKind, User
from civicgrid.accounts.permissions import Permission, Role
from civicgrid.accounts.schemas import (
    AuditOut,
    AuditPage,
    AuditVerifyOut,
    LoginIn,
    MembershipIn,
    MembershipOut,
    MeOut,
    OrgIn,
    OrgOut,
    TokenCreated,
    TokenIn,
    TokenOut,
    UserIn,
    UserOut,
    UserUpdate,
)
from civicgrid.core import audit
from civicgrid.core.auth import Actor
from civicgrid.core.deps import SessionDep, requires
from civicgrid.core.errors import Unauthenticated
from civicgrid.core.masking import mask_phone
from civicgrid.core.pagination import PageDep, paginate

router = APIRouter(prefix="/api/v1/accounts", tags=["accounts"])
P = Permission


def user_out(user: User, actor: Actor) -> UserOut:
    clear = actor.can(P.users_manage) or user.id == actor.user_id
    return UserOut(
        id=user.id,
        username=user.username,
        display_name=user.display_name,
        phone=user.phone if clear or not user.phone else mask_phone(user.phone),
        active=user.active,
        memberships=[
            MembershipOut(id=m.id, org_id=m.org_id, org_code=m.org.code, org_name=m.org.name, role=m.role)
            for m in user.memberships
        ],
    )


def token_out(row: ApiToken) -> TokenOut:
    return TokenOut.model_validate(row, from_attributes=True)


@router.post("/login", response_model=TokenCreated, status_code=status.HTTP_201_CREATED)
def login_for_token(body: LoginIn, session: SessionDep) -> TokenCreated:
    """Exchange a username and password for a personal access token (for other systems and scripts)."""
    result = service.authenticate(session, body.username, body.password)
    if result.locked_for:
        raise service.throttle_error(result.locked_for)
    if result.user is None:
        session.commit()  # the failure must count even though the request fails
        raise Unauthenticated("Wrong username or password.")
    actor = service.actor_for_user(session, result.user, via="password")
    row, token = service.create_api_token(session, actor, name=body.name, days=body.days)
    return TokenCreated(**token_out(row).model_dump(), token=token)


@router.get("/me", response_model=MeOut)
def me(actor: Annotated[Actor, requires(P.tokens_own)]) -> MeOut:
    return MeOut(
        user_id=actor.user_id,
        username=actor.username,
        display_name=actor.display_name,
        org_id=actor.org_id,
        org_name=actor.org_name,
        role=actor.role,
        region_id=actor.region_id,
        permissions=sorted(actor.permissions),
    )


@router.get("/orgs", response_model=list[OrgOut])
def list_orgs(
    session: SessionDep,
    actor: Annotated[Actor, requires(P.orgs_read)],
    kind: OrgKind | None = None,
    q: str = "",
) -> list:
    return service.list_orgs(session, actor, kind=kind, q=q)


@router.post("/orgs", response_model=OrgOut, status_code=status.HTTP_201_CREATED)
def create_org(body: OrgIn, session: SessionDep, actor: Annotated[Actor, requires(P.orgs_manage)]) -> object:
    return service.create_org(session, actor, **body.model_dump())


@router.get("/users", response_model=list[UserOut])
def list_users(
    session: SessionDep,
    actor: Annotated[Actor, requires(P.users_read)],
    q: str = "",
    role: Role | None = None,
) -> list[UserOut]:
    return [user_out(u, actor) for u in service.list_users(session, actor, q=q, role=role)]


@router.post("/users", response_model=UserOut, status_code=status.HTTP_201_CREATED)
def create_user(
    body: UserIn, session: SessionDep, actor: Annotated[Actor, requires(P.users_manage)]
) -> UserOut:
    user = service.create_user(
        session,
        actor,
        username=body.username,
        display_name=body.display_name,
        password=body.password,
        phone=body.phone,
        memberships=[(m.org_code, m.role) for m in body.memberships],
    )
    return user_out(service.get_user(session, user.id), actor)


@router.get("/users/{user_id}", response_model=UserOut)
def get_user(user_id: int, session: SessionDep, actor: Annotated[Actor, requires(P.users_read)]) -> UserOut:
    return user_out(service.get_user_in_scope(session, actor, user_id), actor)


@router.patch("/users/{user_id}", response_model=UserOut)
def update_user(
    user_id: int, body: UserUpdate, session: SessionDep, actor: Annotated[Actor, requires(P.users_manage)]
) -> UserOut:
    user = service.update_user(session, actor, user_id, **body.model_dump(exclude_unset=True))
    return user_out(user, actor)


@router.post("/users/{user_id}/memberships", response_model=UserOut, status_code=status.HTTP_201_CREATED)
def add_membership(
    user_id: int, body: MembershipIn, session: SessionDep, actor: Annotated[Actor, requires(P.users_manage)]
) -> UserOut:
    service.add_membership(session, actor, user_id, body.org_code, body.role)
    session.expire_all()
    return user_out(service.get_user(session, user_id), actor)


@router.get("/tokens", response_model=list[TokenOut])
def list_tokens(session: SessionDep, actor: Annotated[Actor, requires(P.tokens_own)]) -> list[TokenOut]:
    return [token_out(t) for t in service.list_api_tokens(session, actor)]


@router.post("/tokens", response_model=TokenCreated, status_code=status.HTTP_201_CREATED)
def create_token(
    body: TokenIn, session: SessionDep, actor: Annotated[Actor, requires(P.tokens_own)]
) -> TokenCreated:
    row, token = service.create_api_token(session, actor, name=body.name, days=body.days)
    return TokenCreated(**token_out(row).model_dump(), token=token)


@router.delete("/tokens/{token_id}", response_model=TokenOut)
def revoke_token(
    token_id: int, session: SessionDep, actor: Annotated[Actor, requires(P.tokens_own)]
) -> TokenOut:
    return token_out(service.revoke_api_token(session, actor, token_id))


audit_router = APIRouter(prefix="/api/v1/audit", tags=["audit"])


@audit_router.get("", response_model=AuditPage)
def search_audit(
    session: SessionDep,
    actor: Annotated[Actor, requires(P.audit_read)],
    page: PageDep,
    by: str = "",
    action: str = "",
    target_type: str = "",
    target_id: str = "",
    since: datetime | None = None,
    until: datetime | None = None,
) -> AuditPage:
    stmt = service.audit_stmt(
        session,
        actor,
        by=by,
        action=action,
        target_type=target_type,
        target_id=target_id,
        since=since,
        until=until,
    )
    rows, total = paginate(session, stmt, page)
    return AuditPage(
        items=[AuditOut.model_validate(r) for r in rows], total=total, page=page.page, size=page.size
    )


@audit_router.post("/verify", response_model=AuditVerifyOut)
def verify_audit(session: SessionDep, actor: Annotated[Actor, requires(P.audit_read)]) -> AuditVerifyOut:
    breaks = audit.verify(session)
    return AuditVerifyOut(
        intact=not breaks, breaks=[{"record_id": b.record_id, "reason": b.reason} for b in breaks]
    )
