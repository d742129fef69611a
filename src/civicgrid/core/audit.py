"""The append-only, hash-chained audit log that every write goes through.

Each record carries the hash of the one before it, so a changed, inserted or deleted row
breaks the chain and `civicgrid audit verify` names where. Personal fields are masked
before they are stored.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import ForeignKey, Select, String, Text, select, text
from sqlalchemy.orm import Mapped, Session, mapped_column

from civicgrid.core.auth import Actor
from civicgrid.core.db import Base, utcnow
from civicgrid.core.masking import mask_record

GENESIS = "0" * 64


class AuditRecord(Base):
    __tablename__ = "audit_record"

    id: Mapped[int] = mapped_column(primary_key=True)
    at: Mapped[datetime] = mapped_column(default=utcnow, index=True)
    actor_user_id: Mapped[int | None] = mapped_column(ForeignKey("user_account.id", ondelete="SET NULL"))
    actor: Mapped[str] = mapped_column(String(64))
    org_id: Mapped[int | None] = mapped_column(ForeignKey("org.id", ondelete="SET NULL"))
    action: Mapped[str] = mapped_column(String(64), index=True)
    target_type: Mapped[str] = mapped_column(String(64), index=True)
    target_id: Mapped[str] = mapped_column(String(64))
    diff: Mapped[str] = mapped_column(Text)  # JSON {"field": [before, after]}, personal fields masked
    prev_hash: Mapped[str] = mapped_column(String(64))
    hash: Mapped[str] = mapped_column(String(64), unique=True)


def _digest(rec: AuditRecord) -> str:
    payload = json.dumps(
        [
            rec.at.isoformat(),
            rec.actor_user_id,
            rec.actor,
            rec.org_id,
            rec.action,
            rec.target_type,
            rec.target_id,
            rec.diff,
            rec.prev_hash,
        ],
        ensure_ascii=False,
        separators=(",", ":"),
    )
    return hashlib.sha256(payload.encode()).hexdigest()


def diff(before: dict[str, Any] | None, after: dict[str, Any] | None) -> dict[str, list[Any]]:
    """Changed fields as {"field": [before, after]}, masked."""
    b = mask_record(before or {})
    a = mask_record(after or {})
    return {k: [b.get(k), a.get(k)] for k in sorted(set(a) | set(b)) if b.get(k) != a.get(k)}


def record(
    session: Session,
    actor: Actor,
    action: str,
    target_type: str,
    target_id: Any,
    before: dict[str, Any] | None = None,
    after: dict[str, Any] | None = None,
    extra: dict[str, Any] | None = None,
) -> AuditRecord:
    """Append one record in the caller's transaction (it commits or rolls back with the write)."""
    session.flush()  # take the write lock (SQLite) before reading the chain's head
    if session.get_bind().dialect.name == "postgresql":
        # Serialise appenders so two transactions never link to the same predecessor.
        session.execute(text("SELECT pg_advisory_xact_lock(727274)"))
    prev = session.scalar(select(AuditRecord.hash).order_by(AuditRecord.id.desc()).limit(1)) or GENESIS
    changes: dict[str, Any] = diff(before, after)
    if extra:
        changes["_"] = mask_record(extra)
    rec = AuditRecord(
        at=utcnow(),
        actor_user_id=actor.user_id or None,
        actor=actor.username,
        org_id=actor.org_id or None,
        action=action,
        target_type=target_type,
        target_id=str(target_id),
        diff=json.dumps(changes, ensure_ascii=False, sort_keys=True, default=str),
        prev_hash=prev,
    )
    rec.hash = _digest(rec)
    session.add(rec)
    session.flush()
    return rec


@dataclass
class ChainBreak:
    record_id: int
    reason: str


def verify(session: Session, batch: int = 5000) -> list[ChainBreak]:
    """Walk the chain in order; every record whose content or link does not match is returned."""
    breaks: list[ChainBreak] = []
    prev = GENESIS
    for rec in _iterate(session, batch):
        if rec.prev_hash != prev:
            breaks.append(ChainBreak(rec.id, "link"))
        if _digest(rec) != rec.hash:
            breaks.append(ChainBreak(rec.id, "content"))
        prev = rec.hash
    return breaks


def _iterate(session: Session, batch: int) -> Iterator[AuditRecord]:
    last = 0
    while True:
        rows = session.scalars(
            select(AuditRecord).where(AuditRecord.id > last).order_by(AuditRecord.id).limit(batch)
        ).all()
        if not rows:
            return
        yield from rows
        last = rows[-1].id
        session.expunge_all()


def search_stmt(
    *,
    org_ids_in_scope: Select[Any] | None,
    by: str = "",
    action: str = "",
    target_type: str = "",
    target_id: str = "",
    since: datetime | None = None,
    until: datetime | None = None,
) -> Select[Any]:
    """Records matching the filters, newest first. `org_ids_in_scope` is a subquery of the org
    ids the reader may see (None: everything, for readers whose scope is the whole jurisdiction)."""
    stmt = select(AuditRecord).order_by(AuditRecord.id.desc())
    if org_ids_in_scope is not None:
        stmt = stmt.where(AuditRecord.org_id.in_(org_ids_in_scope))
    if by:
        stmt = stmt.where(AuditRecord.actor == by)
    if action:
        stmt = stmt.where(AuditRecord.action.startswith(action))
    if target_type:
        stmt = stmt.where(AuditRecord.target_type == target_type)
    if target_id:
        stmt = stmt.where(AuditRecord.target_id == target_id)
    if since:
        stmt = stmt.where(AuditRecord.at >= since)
    if until:
        stmt = stmt.where(AuditRecord.at < until)
    return stmt
