"""API keys of consumer orgs (统一供需): created once in clear, stored as SHA-256, revocable, expiring.

A key belongs to an org, not a person: what it may read is whatever live grants that org
holds. Its creator is kept for the audit trail.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from civicgrid.core import audit
from civicgrid.core.auth import Actor
from civicgrid.core.db import utcnow
from civicgrid.core.errors import Conflict, Invalid, NotFound, Unauthenticated
from civicgrid.core.security import new_token, token_hash
from civicgrid.data.models import ApiKey

KEY_PREFIX = "cgk_"
MAX_DAYS = 366
# Quotas are per key: capping live keys per org bounds how far an org can multiply them.
MAX_LIVE_KEYS = 10
HEADER = "X-API-Key"


def key_dict(key: ApiKey) -> dict[str, Any]:
    return {
        "id": key.id,
        "org_id": key.org_id,
        "name": key.name,
        "prefix": key.prefix,
        "created_by": key.created_by,
        "created_at": key.created_at,
        "expires_at": key.expires_at,
        "revoked_at": key.revoked_at,
        "live": key.revoked_at is None and key.expires_at > utcnow(),
    }


def _live(now: Any) -> Any:
    return (ApiKey.revoked_at.is_(None)) & (ApiKey.expires_at > now)


def create_key(session: Session, actor: Actor, *, name: str, days: int = 365) -> tuple[ApiKey, str]:
    """A new key for the actor's org; the clear key is returned here and never again."""
    name = name.strip()
    if not name:
        raise Invalid("Give the key a name, for example the system that will use it.")
    if not 1 <= days <= MAX_DAYS:
        raise Invalid("A key lasts between 1 and {max} days.", max=MAX_DAYS)
    now = utcnow()
    live = session.scalar(select(func.count()).where(ApiKey.org_id == actor.org_id, _live(now))) or 0
    if live >= MAX_LIVE_KEYS:
        raise Conflict(
            "Your organisation already has {max} live keys; revoke one before creating another.",
            max=MAX_LIVE_KEYS,
        )
    clear = new_token(KEY_PREFIX)
    key = ApiKey(
        org_id=actor.org_id,
        name=name[:100],
        prefix=clear[: len(KEY_PREFIX) + 8],
        key_hash=token_hash(clear),
        created_by=actor.username,
        created_at=now,
        expires_at=now + timedelta(days=days),
    )
    session.add(key)
    session.flush()
    audit.record(
        session, actor, "data.key.create", "data_api_key", key.id, after={"name": key.name, "days": days}
    )
    return key, clear


def list_keys(session: Session, actor: Actor) -> list[ApiKey]:
    """The keys of the actor's org, newest first (live and ended: the history stays visible)."""
    return list(
        session.scalars(select(ApiKey).where(ApiKey.org_id == actor.org_id).order_by(ApiKey.id.desc()))
    )


def get_own_key(session: Session, actor: Actor, key_id: int) -> ApiKey:
    key = session.get(ApiKey, key_id)
    if key is None or key.org_id != actor.org_id:
        raise NotFound("No API key with this id in your organisation.")
    return key


def revoke_key(session: Session, actor: Actor, key_id: int) -> ApiKey:
    """Ends the key at once; the next call with it is refused. Revoking twice changes nothing."""
    key = get_own_key(session, actor, key_id)
    if key.revoked_at is None:
        key.revoked_at = utcnow()
        audit.record(session, actor, "data.key.revoke", "data_api_key", key.id, after={"name": key.name})
    return key


def key_from_headers(headers: Any) -> str:
    """The clear key sent as `X-API-Key: …`, `Authorization: ApiKey …`, or CKAN's bare
    `Authorization: cgk_…`; "" when none was sent."""
    sent = headers.get(HEADER) or ""
    if sent:
        return str(sent).strip()
    auth = str(headers.get("authorization") or "").strip()
    if auth.lower().startswith("apikey "):
        return auth[7:].strip()
    if auth.startswith(KEY_PREFIX):
        return auth
    return ""


def resolve_key(session: Session, clear: str) -> ApiKey:
    """The live key for a clear key, or a 401 saying why it cannot be used."""
    if not clear:
        raise Unauthenticated("Send your API key in the X-API-Key header.", error_code="api_key_missing")
    key = session.scalar(select(ApiKey).where(ApiKey.key_hash == token_hash(clear)))
    if key is None:
        raise Unauthenticated("This API key is not known.", error_code="api_key_unknown")
    if key.revoked_at is not None:
        raise Unauthenticated("This API key has been revoked.", error_code="api_key_revoked")
    if key.expires_at <= utcnow():
        raise Unauthenticated("This API key has expired.", error_code="api_key_expired")
    return key


def key_actor(session: Session, key: ApiKey) -> Actor:
    """The audit identity of a call made with a key: its org, named by the key's prefix."""
    from civicgrid.accounts import service as accounts
    from civicgrid.regions import service as regions

    org = accounts.get_org(session, key.org_id)
    if not org.active:
        raise Unauthenticated(
            "The organisation of this API key is no longer active.", error_code="api_key_org"
        )
    return Actor(
        user_id=0,
        username=f"apikey:{key.prefix}",
        display_name=key.name,
        membership_id=0,
        org_id=org.id,
        org_name=org.name,
        role="api_key",
        region_id=org.region_id,
        region_path=regions.get(session, org.region_id).path,
        via="api_key",
    )
