"""The append-only, hash-chained audit log that every write goes through.

Each record carries the hash of the one before it in its chain, so a changed, inserted or
deleted row breaks the chain and `civicgrid audit verify` names where. Personal fields are
masked before they are stored.

On PostgreSQL the log is CHAINS parallel chains rather than one: an appender holds its
chain's lock until it commits (the link must be to a committed predecessor), and with a
single chain every writing transaction in the installation queued behind that lock.
A transaction takes a free chain (try-lock) and keeps it for all its records. SQLite
serialises writers anyway and uses chain 0 only.
"""

from __future__ import annotations

import hashlib
import json
import random
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import ForeignKey, Index, Integer, Select, String, Table, Text, select, text
from sqlalchemy.orm import Mapped, Session, mapped_column

from civicgrid.core.auth import Actor
from civicgrid.core.db import Base, insert_many, utcnow, with_values
from civicgrid.core.masking import mask_record

GENESIS = "0" * 64
CHAINS = 16  # PostgreSQL: how many writers can append at once
LOCK_KEY = 727274  # advisory lock space (key, chain) of the chains' heads


class AuditRecord(Base):
    __tablename__ = "audit_record"
    __table_args__ = (Index("ix_audit_record_chain_id", "chain", "id"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    # Which chain the record links into; not part of the digest (moving a record to another
    # chain breaks the links of both).
    chain: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
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


def _digest(rec: Mapping[str, Any]) -> str:
    """The record's hash, over its fields (a row's values, or `vars()` of a loaded record)."""
    payload = json.dumps(
        [
            rec["at"].isoformat(),
            rec["actor_user_id"],
            rec["actor"],
            rec["org_id"],
            rec["action"],
            rec["target_type"],
            rec["target_id"],
            rec["diff"],
            rec["prev_hash"],
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


@dataclass
class Entry:
    """One record to append: who did what to which target, and what changed."""

    actor: Actor
    action: str
    target_type: str
    target_id: Any
    before: dict[str, Any] | None = None
    after: dict[str, Any] | None = None
    extra: dict[str, Any] | None = None


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
    return record_many(session, [Entry(actor, action, target_type, target_id, before, after, extra)])[0]


def record_many(session: Session, entries: list[Entry]) -> list[AuditRecord]:
    """Append records in order, linked one to the next, in one INSERT (a batch of reports
    takes the chain's lock and reads its head once). The records are not in the session and
    carry no id."""
    if not entries:
        return []
    session.flush()  # take the write lock (SQLite) before reading the chain's head
    conn = session.connection()
    chain = _lock_chain(session) if conn.dialect.name == "postgresql" else 0
    # A statement of its own, after the lock: its snapshot sees the last committed holder's record.
    table: Table = AuditRecord.__table__  # type: ignore[assignment]
    prev = (
        conn.execute(
            select(table.c.hash).where(table.c.chain == chain).order_by(table.c.id.desc()).limit(1)
        ).scalar()
        or GENESIS
    )
    rows: list[dict[str, Any]] = []
    for e in entries:
        changes: dict[str, Any] = diff(e.before, e.after)
        if e.extra:
            changes["_"] = mask_record(e.extra)
        row = {
            "chain": chain,
            "at": utcnow(),
            "actor_user_id": e.actor.user_id or None,
            "actor": e.actor.username,
            "org_id": e.actor.org_id or None,
            "action": e.action,
            "target_type": e.target_type,
            "target_id": str(e.target_id),
            "diff": json.dumps(changes, ensure_ascii=False, sort_keys=True, default=str),
            "prev_hash": prev,
        }
        row["hash"] = prev = _digest(row)
        rows.append(row)
    # One INSERT on the session's connection, not a flush: the unit of work (and every flush
    # listener) would cost more than the rows. Rows are inserted in order, so ids grow along
    # the chain as `verify` expects.
    insert_many(conn, table, rows)
    return [with_values(AuditRecord, row) for row in rows]


_CHAIN = "civicgrid.audit.chain"


def _lock_chain(session: Session) -> int:
    """Lock a chain for this transaction (held until commit, so appenders to one chain never
    link to the same predecessor) and return it. The transaction's first record takes the
    first free chain from a random start; later records re-lock the same chain (re-entrant,
    and it survives a rolled-back savepoint that released it)."""
    conn = session.connection()
    txn = conn.get_transaction()
    held = session.info.get(_CHAIN)
    if held is not None and held[0] is txn:
        conn.execute(text("SELECT pg_advisory_xact_lock(:k, :c)"), {"k": LOCK_KEY, "c": held[1]})
        return int(held[1])
    start = random.randrange(CHAINS)
    # One round trip: the scan stops at the first chain whose try-lock succeeds.
    chain = conn.execute(
        text(
            "SELECT c FROM (SELECT (:s + i) % :n AS c FROM generate_series(0, :n - 1) AS i) AS t "
            "WHERE pg_try_advisory_xact_lock(:k, c) LIMIT 1"
        ),
        {"s": start, "n": CHAINS, "k": LOCK_KEY},
    ).scalar()
    if chain is None:  # every chain busy: queue for one
        chain = start
        conn.execute(text("SELECT pg_advisory_xact_lock(:k, :c)"), {"k": LOCK_KEY, "c": chain})
    session.info[_CHAIN] = (txn, int(chain))
    return int(chain)


@dataclass
class ChainBreak:
    record_id: int
    reason: str


def verify(session: Session, batch: int = 5000) -> list[ChainBreak]:
    """Walk every chain in order; every record whose content or link does not match is returned.
    Within a chain, ids grow in commit order (the chain's lock is held from the head read
    to the commit), so each record must link to the one before it in its chain."""
    breaks: list[ChainBreak] = []
    heads: dict[int, str] = {}
    for rec in _iterate(session, batch):
        if rec.prev_hash != heads.get(rec.chain, GENESIS):
            breaks.append(ChainBreak(rec.id, "link"))
        if _digest(vars(rec)) != rec.hash:
            breaks.append(ChainBreak(rec.id, "content"))
        heads[rec.chain] = rec.hash
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
