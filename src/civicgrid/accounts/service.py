"""Rules of the unified user system: orgs, users, memberships, logins, sessions and tokens."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import timedelta
from functools import cache
from typing import Any

from sqlalchemy import Select, delete, func, select, update
from sqlalchemy.orm import Session, selectinload

from civicgrid.accounts.models import ApiToken, LoginFailure, Membership, Org, OrgKind, User, WebSession
from civicgrid.accounts.permissions import Role, permissions_for
from civicgrid.core import audit
from civicgrid.core.auth import Actor
from civicgrid.core.config import get_settings
from civicgrid.core.db import one_of, utcnow
from civicgrid.core.errors import Conflict, Invalid, NotFound, PermissionDenied, TooManyRequests
from civicgrid.core.security import hash_password, new_token, token_hash, verify_password
from civicgrid.core.vocab import Platform
from civicgrid.regions import service as regions

TOKEN_PREFIX = "cgp_"


# ---- orgs -------------------------------------------------------------------------------


def org_dict(org: Org) -> dict[str, object]:
    return {
        "code": org.code,
        "name": org.name,
        "name_en": org.name_en,
        "kind": str(org.kind),
        "region_id": org.region_id,
        "platform": str(org.platform) if org.platform else None,
        "active": org.active,
    }


def get_org(session: Session, org_id: int) -> Org:
    org = session.get(Org, org_id)
    if org is None:
        raise NotFound("No organisation with this id.")
    return org


def get_org_by_code(session: Session, code: str) -> Org:
    org = session.scalar(select(Org).where(Org.code == code))
    if org is None:
        raise NotFound("No organisation with code {code}.", code=code)
    return org


def create_org(
    session: Session,
    actor: Actor,
    *,
    code: str,
    name: str,
    kind: OrgKind,
    region_code: str,
    name_en: str = "",
    platform: Platform | None = None,
) -> Org:
    region = regions.get_by_code(session, region_code)
    regions.check_in_scope(actor, region)
    if session.scalar(select(Org.id).where(Org.code == code)) is not None:
        raise Conflict("An organisation with code {code} already exists.", code=code)
    if kind == OrgKind.department and platform is None:
        raise Invalid("A department must name the platform it belongs to.")
    org = Org(code=code, name=name, name_en=name_en, kind=kind, region_id=region.id, platform=platform)
    session.add(org)
    session.flush()
    audit.record(session, actor, "org.create", "org", org.id, after=org_dict(org))
    return org


def list_orgs(session: Session, actor: Actor, *, kind: OrgKind | None = None, q: str = "") -> list[Org]:
    stmt = select(Org).join(regions.Region, Org.region_id == regions.Region.id)
    stmt = stmt.where(regions.Region.path.startswith(actor.region_path)).order_by(Org.code)
    if kind:
        stmt = stmt.where(Org.kind == kind)
    if q:
        stmt = stmt.where(Org.name.contains(q) | Org.code.contains(q))
    return list(session.scalars(stmt).all())


# ---- users ------------------------------------------------------------------------------


def user_dict(user: User) -> dict[str, object]:
    return {
        "username": user.username,
        "display_name": user.display_name,
        "phone": user.phone,
        "active": user.active,
    }


def get_user(session: Session, user_id: int) -> User:
    user = session.get(User, user_id, options=[selectinload(User.memberships).selectinload(Membership.org)])
    if user is None:
        raise NotFound("No user with this id.")
    return user


def get_user_by_username(session: Session, username: str) -> User | None:
    return session.scalar(select(User).where(func.lower(User.username) == username.lower()))


def user_in_scope(session: Session, actor: Actor, user: User) -> bool:
    """A user is visible when any of their orgs lies inside the actor's subtree."""
    return (
        any(actor.in_scope(regions.get(session, m.org.region_id).path) for m in user.memberships)
        or user.id == actor.user_id
    )


def get_user_in_scope(session: Session, actor: Actor, user_id: int) -> User:
    user = get_user(session, user_id)
    if not user_in_scope(session, actor, user):
        raise NotFound("No user with this id.")
    return user


def list_users(session: Session, actor: Actor, *, q: str = "", role: Role | None = None) -> list[User]:
    in_scope = (
        select(Membership.user_id)
        .join(Org, Membership.org_id == Org.id)
        .join(regions.Region, Org.region_id == regions.Region.id)
        .where(regions.Region.path.startswith(actor.region_path))
    )
    if role:
        in_scope = in_scope.where(Membership.role == role)
    stmt = (
        select(User)
        .where(User.id.in_(in_scope))
        .options(selectinload(User.memberships).selectinload(Membership.org))
        .order_by(User.username)
    )
    if q:
        stmt = stmt.where(User.username.contains(q) | User.display_name.contains(q))
    return list(session.scalars(stmt).all())


def _check_password(password: str) -> None:
    if len(password) < 8:
        raise Invalid("The password must have at least 8 characters.")


def create_user(
    session: Session,
    actor: Actor,
    *,
    username: str,
    display_name: str,
    password: str,
    memberships: list[tuple[str, Role]],
    phone: str | None = None,
) -> User:
    """Create a user with one or more (org code, role) memberships inside the actor's scope."""
    if not memberships:
        raise Invalid("A user needs at least one organisation and role.")
    if get_user_by_username(session, username) is not None:
        raise Conflict("The username {username} is taken.", username=username)
    _check_password(password)
    orgs = []
    for org_code, role in memberships:
        org = get_org_by_code(session, org_code)
        regions.check_in_scope(actor, regions.get(session, org.region_id))
        if role == Role.admin and actor.role != Role.admin and actor.via != "system":
            raise PermissionDenied("Only an administrator may create administrators.")
        orgs.append((org, role))
    user = User(
        username=username, display_name=display_name, phone=phone, password_hash=hash_password(password)
    )
    user.memberships = [Membership(org=org, role=role) for org, role in orgs]
    session.add(user)
    session.flush()
    audit.record(
        session,
        actor,
        "user.create",
        "user",
        user.id,
        after={**user_dict(user), "memberships": [f"{o.code}:{r}" for o, r in orgs]},
    )
    return user


def update_user(
    session: Session,
    actor: Actor,
    user_id: int,
    *,
    display_name: str | None = None,
    phone: str | None = None,
    active: bool | None = None,
    password: str | None = None,
) -> User:
    user = get_user_in_scope(session, actor, user_id)
    before = user_dict(user)
    if display_name is not None:
        user.display_name = display_name
    if phone is not None:
        user.phone = phone or None
    if active is not None:
        if not active and user.id == actor.user_id:
            raise Invalid("You cannot deactivate yourself.")
        user.active = active
        if not active:
            _end_all_sessions(session, user.id)
    extra = None
    if password is not None:
        _check_password(password)
        user.password_hash = hash_password(password)
        _end_all_sessions(session, user.id)
        extra = {"password": "changed"}
    session.flush()
    audit.record(
        session, actor, "user.update", "user", user.id, before=before, after=user_dict(user), extra=extra
    )
    return user


def add_membership(session: Session, actor: Actor, user_id: int, org_code: str, role: Role) -> Membership:
    user = get_user_in_scope(session, actor, user_id)
    org = get_org_by_code(session, org_code)
    regions.check_in_scope(actor, regions.get(session, org.region_id))
    if any(m.org_id == org.id and m.role == role for m in user.memberships):
        raise Conflict("The user already has this role in this organisation.")
    m = Membership(user_id=user.id, org_id=org.id, role=role)
    session.add(m)
    session.flush()
    audit.record(
        session, actor, "membership.add", "user", user.id, after={"membership": f"{org.code}:{role}"}
    )
    return m


def _end_all_sessions(session: Session, user_id: int) -> None:
    session.execute(delete(WebSession).where(WebSession.user_id == user_id))


# ---- login and throttling --------------------------------------------------------------


@dataclass
class LoginResult:
    user: User | None
    locked_for: int = 0  # seconds until another try is allowed


def authenticate(session: Session, username: str, password: str) -> LoginResult:
    """Check a password. Failures are recorded (the caller commits); too many lock the username."""
    settings = get_settings()
    key = username.strip().lower()[:64]
    now = utcnow()
    window = now - timedelta(minutes=settings.login_window_minutes)
    failures = session.scalars(
        select(LoginFailure.at)
        .where(LoginFailure.username == key, LoginFailure.at > window)
        .order_by(LoginFailure.at)
    ).all()
    if len(failures) >= settings.login_max_failures:
        unlock = failures[-settings.login_max_failures] + timedelta(minutes=settings.login_window_minutes)
        return LoginResult(None, locked_for=max(1, int((unlock - now).total_seconds())))
    user = get_user_by_username(session, key)
    ok = verify_password(user.password_hash if user else None, password)
    if not ok or user is None or not user.active:
        session.add(LoginFailure(username=key, at=now))
        session.flush()
        return LoginResult(None)
    session.execute(delete(LoginFailure).where(LoginFailure.username == key))
    return LoginResult(user)


def throttle_error(locked_for: int) -> TooManyRequests:
    minutes = max(1, -(-locked_for // 60))
    return TooManyRequests(
        "Too many wrong passwords. Try again in {minutes} minutes.", retry_after=locked_for, minutes=minutes
    )


def _active_membership(user: User, membership_id: int | None) -> Membership:
    if not user.memberships:
        raise PermissionDenied("This account belongs to no organisation; ask an administrator.")
    if membership_id is None:
        return user.memberships[0]
    for m in user.memberships:
        if m.id == membership_id:
            return m
    raise NotFound("You do not hold this role.")


def _actor(session: Session, user: User, membership: Membership, via: str, csrf: str = "") -> Actor:
    org = membership.org
    region = regions.get(session, org.region_id)
    return Actor(
        user_id=user.id,
        username=user.username,
        display_name=user.display_name,
        membership_id=membership.id,
        org_id=org.id,
        org_name=org.name,
        role=str(membership.role),
        region_id=region.id,
        region_path=region.path,
        permissions=_permission_names(Role(membership.role)),
        via=via,
        csrf_token=csrf,
    )


def actor_for_user(
    session: Session, user: User, membership_id: int | None = None, via: str = "system"
) -> Actor:
    return _actor(session, user, _active_membership(user, membership_id), via)


# ---- web sessions ----------------------------------------------------------------------


def start_web_session(session: Session, user: User, membership_id: int | None = None) -> str:
    """Create a browser session; returns the cookie value (only its hash is stored)."""
    membership = _active_membership(user, membership_id)
    token = new_token()
    session.add(
        WebSession(
            token_hash=token_hash(token),
            user_id=user.id,
            membership_id=membership.id,
            csrf_token=new_token(),
            expires_at=utcnow() + timedelta(hours=get_settings().session_hours),
        )
    )
    session.flush()
    audit.record(session, actor_for_user(session, user, membership.id), "session.login", "user", user.id)
    return token


def actor_for_web_session(session: Session, token: str) -> Actor | None:
    ws = session.scalar(select(WebSession).where(WebSession.token_hash == token_hash(token)))
    if ws is None or ws.expires_at <= utcnow():
        return None
    user = get_user(session, ws.user_id)
    if not user.active:
        return None
    return _actor(session, user, _active_membership(user, ws.membership_id), "session", ws.csrf_token)


def switch_membership(session: Session, token: str, membership_id: int) -> None:
    ws = session.scalar(select(WebSession).where(WebSession.token_hash == token_hash(token)))
    if ws is None:
        raise NotFound("Your session has ended; please log in again.")
    user = get_user(session, ws.user_id)
    ws.membership_id = _active_membership(user, membership_id).id


def end_web_session(session: Session, token: str) -> None:
    session.execute(delete(WebSession).where(WebSession.token_hash == token_hash(token)))


# ---- API tokens -------------------------------------------------------------------------


def create_api_token(session: Session, actor: Actor, *, name: str, days: int = 90) -> tuple[ApiToken, str]:
    """A personal access token acting with the actor's current role; the clear token is returned once."""
    if actor.via == "token":
        raise PermissionDenied("A token cannot create further tokens; log in with a password.")
    token = new_token(TOKEN_PREFIX)
    row = ApiToken(
        user_id=actor.user_id,
        membership_id=actor.membership_id,
        name=name,
        prefix=token[: len(TOKEN_PREFIX) + 6],
        token_hash=token_hash(token),
        expires_at=utcnow() + timedelta(days=days),
    )
    session.add(row)
    session.flush()
    audit.record(session, actor, "token.create", "api_token", row.id, after={"name": name, "days": days})
    return row, token


def list_api_tokens(session: Session, actor: Actor) -> list[ApiToken]:
    return list(
        session.scalars(
            select(ApiToken).where(ApiToken.user_id == actor.user_id).order_by(ApiToken.id.desc())
        )
    )


def revoke_api_token(session: Session, actor: Actor, token_id: int) -> ApiToken:
    row = session.get(ApiToken, token_id)
    if row is None or (row.user_id != actor.user_id and actor.role != Role.admin):
        raise NotFound("No token with this id.")
    if row.revoked_at is None:
        row.revoked_at = utcnow()
        audit.record(session, actor, "token.revoke", "api_token", row.id)
    return row


def actor_for_api_token(session: Session, token: str) -> Actor | None:
    """The actor behind a bearer token (None for an unknown, revoked or expired one)."""
    return actors_for_api_tokens(session, [token]).get(token)


def actors_for_api_tokens(session: Session, tokens: Iterable[str]) -> dict[str, Actor]:
    """The actors behind bearer tokens, read fresh on every request (so revocation, expiry,
    deactivation and role changes apply at once) in one query for all of them over token,
    user, the token's membership, its org and the org's region — plain columns, since every
    API call pays for it. Tokens that are unknown, revoked or expired are missing."""
    hashes = {token_hash(t): t for t in tokens}
    if not hashes:
        return {}
    rows = session.execute(
        select(
            ApiToken.id,
            ApiToken.token_hash,
            ApiToken.expires_at,
            ApiToken.last_used_at,
            # labelled as the Actor's fields
            User.id.label("user_id"),
            User.username,
            User.display_name,
            Membership.id.label("membership_id"),
            Membership.role,
            Org.id.label("org_id"),
            Org.name.label("org_name"),
            regions.Region.id.label("region_id"),
            regions.Region.path.label("region_path"),
        )
        .join(User, User.id == ApiToken.user_id)
        .join(Membership, (Membership.id == ApiToken.membership_id) & (Membership.user_id == User.id))
        .join(Org, Org.id == Membership.org_id)
        .join(regions.Region, regions.Region.id == Org.region_id)
        .where(
            one_of(session, ApiToken.token_hash, hashes),
            ApiToken.revoked_at.is_(None),
            User.active.is_(True),
        )
    ).all()
    now = utcnow()
    out: dict[str, Actor] = {}
    stale = []
    for r in rows:
        if r.expires_at <= now:
            continue
        # Touch at most every five minutes so reads do not turn into writes (and row locks) on every call.
        if r.last_used_at is None or now - r.last_used_at > timedelta(minutes=5):
            stale.append(r.id)
        fields = {k: r._mapping[k] for k in _ACTOR_COLUMNS}
        role = Role(r.role)
        out[hashes[r.token_hash]] = Actor(
            **fields, role=str(role), permissions=_permission_names(role), via="token"
        )
    if stale:
        session.execute(update(ApiToken).where(ApiToken.id.in_(stale)).values(last_used_at=now))
    return out


_ACTOR_COLUMNS = (
    "user_id",
    "username",
    "display_name",
    "membership_id",
    "org_id",
    "org_name",
    "region_id",
    "region_path",
)


@cache
def _permission_names(role: Role) -> frozenset[str]:
    return frozenset(str(p) for p in permissions_for(role))


def purge_expired(session: Session) -> int:
    """Worker job: drop ended browser sessions and login failures older than the throttle window."""
    now = utcnow()
    cutoff = now - timedelta(minutes=get_settings().login_window_minutes)
    expired = session.scalars(select(WebSession.id).where(WebSession.expires_at <= now)).all()
    old = session.scalars(select(LoginFailure.id).where(LoginFailure.at <= cutoff)).all()
    session.execute(delete(WebSession).where(WebSession.id.in_(expired)))
    session.execute(delete(LoginFailure).where(LoginFailure.id.in_(old)))
    return len(expired) + len(old)


def audit_stmt(session: Session, actor: Actor, **filters: Any) -> Select[Any]:
    """The audit records the actor may read: all of them for a jurisdiction-wide admin, else
    those written by orgs inside the actor's subtree."""
    root = actor.region_path.count("/") == 2  # "/<city code>/": the top of the tree
    scope = (
        None
        if root
        else (
            select(Org.id)
            .join(regions.Region, Org.region_id == regions.Region.id)
            .where(regions.Region.path.startswith(actor.region_path))
        )
    )
    return audit.search_stmt(org_ids_in_scope=scope, **filters)


def find_org(session: Session, region_id: int, kind: OrgKind, platform: Platform | None = None) -> Org | None:
    """The active org of a kind (and platform) sitting on a region; the lowest id when several do."""
    stmt = select(Org).where(Org.region_id == region_id, Org.kind == kind, Org.active.is_(True))
    if platform is not None:
        stmt = stmt.where(Org.platform == platform)
    return session.scalars(stmt.order_by(Org.id).limit(1)).first()


def org_members(session: Session, org_id: int, roles: Iterable[Role]) -> list[User]:
    """Active users holding one of `roles` in the org (who gets an org's notices)."""
    stmt = (
        select(User)
        .join(Membership, Membership.user_id == User.id)
        .where(Membership.org_id == org_id, Membership.role.in_(list(roles)), User.active.is_(True))
        .order_by(User.id)
    )
    return list(session.scalars(stmt).unique())
