"""Metering of data reads and per-key rate limits, kept off the query path's critical cost.

Counts live in memory (one `Meter` per database engine, guarded by a lock) and are flushed
in batches to `Usage` with an upsert: by the worker every few seconds, and from the app's
lifespan shutdown so a clean stop loses nothing. A failed flush puts its counts back.
"""

from __future__ import annotations

import logging
import math
import threading
import time
import weakref
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from typing import Any

from sqlalchemy import Engine, func, select, update
from sqlalchemy.orm import Session

from civicgrid.core.calendar import default_calendar
from civicgrid.core.db import utcnow
from civicgrid.data.models import Usage

log = logging.getLogger("civicgrid.data.metering")

CHANNELS = ("api", "ckan", "sandbox")
# (key_id, dataset_id, day, channel); key_id None for reads without a key (sandbox, CKAN by session).
CounterKey = tuple[int | None, int, date, str]


def local_day(at: datetime | None = None) -> date:
    """The jurisdiction's calendar day: quotas and usage days turn over at local midnight."""
    return (at or utcnow()).astimezone(default_calendar().tz).date()


def seconds_to_local_midnight(at: datetime | None = None) -> int:
    now = (at or utcnow()).astimezone(default_calendar().tz)
    midnight = datetime.combine(now.date() + timedelta(days=1), datetime.min.time(), now.tzinfo)
    return max(1, math.ceil((midnight - now).total_seconds()))


class Meter:
    """Calls and rows per key, dataset, day and channel, counted in memory and flushed in batches."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._flush_lock = threading.Lock()  # one flush at a time; counting never waits for it
        self._pending: dict[CounterKey, list[int]] = {}
        # Unflushed rows per (key, dataset, day), all channels: the quota check reads it in O(1).
        self._pending_rows: dict[tuple[int | None, int, date], int] = {}
        # Rows of the batch being written: still counted until the stored totals include them.
        self._inflight_rows: dict[tuple[int | None, int, date], int] = {}
        # Rows already stored per (key, dataset, day), all channels: learnt from flushes and reads.
        self._stored: dict[tuple[int, int, date], int] = {}

    def count(
        self, key_id: int | None, dataset_id: int, channel: str, rows: int, day: date | None = None
    ) -> None:
        k = (key_id, dataset_id, day or local_day(), channel)
        with self._lock:
            c = self._pending.get(k)
            if c is None:
                self._pending[k] = [1, rows]
            else:
                c[0] += 1
                c[1] += rows
            sk = k[:3]
            self._pending_rows[sk] = self._pending_rows.get(sk, 0) + rows

    def pending(self) -> dict[CounterKey, tuple[int, int]]:
        with self._lock:
            return {k: (c[0], c[1]) for k, c in self._pending.items()}

    def rows_used(self, session: Session, key_id: int, dataset_id: int, day: date | None = None) -> int:
        """Rows read today with this key from this dataset: stored plus not yet flushed."""
        day = day or local_day()
        sk = (key_id, dataset_id, day)
        with self._lock:
            stored = self._stored.get(sk)
            unflushed = self._pending_rows.get(sk, 0) + self._inflight_rows.get(sk, 0)
        if stored is None:
            stored = session.scalar(
                select(func.coalesce(func.sum(Usage.rows), 0)).where(
                    Usage.key_id == key_id, Usage.dataset_id == dataset_id, Usage.day == day
                )
            )
            stored = int(stored or 0)
            with self._lock:
                self._stored.setdefault(sk, stored)
        return stored + unflushed

    def flush(self, engine: Engine) -> int:
        """Write pending counts to `Usage` in one transaction; returns how many counters were written."""
        with self._flush_lock:
            with self._lock:
                batch, self._pending = self._pending, {}
                self._inflight_rows, self._pending_rows = self._pending_rows, {}
            if not batch:
                return 0
            try:
                with Session(engine) as session, session.begin():
                    totals = _upsert(session, batch)
            except Exception:
                # Put the counts back so the next flush retries them: nothing is lost.
                with self._lock:
                    for k, (calls, rows) in batch.items():
                        c = self._pending.setdefault(k, [0, 0])
                        c[0] += calls
                        c[1] += rows
                        self._pending_rows[k[:3]] = self._pending_rows.get(k[:3], 0) + rows
                    self._inflight_rows = {}
                raise
            today = local_day()
            with self._lock:
                for sk, rows in totals.items():
                    self._stored[sk] = rows
                self._inflight_rows = {}
                # Forget days that are over so the cache stays small.
                for sk in [s for s in self._stored if s[2] < today - timedelta(days=1)]:
                    del self._stored[sk]
            return len(batch)


def _upsert(session: Session, batch: dict[CounterKey, list[int]]) -> dict[tuple[int, int, date], int]:
    dialect = session.get_bind().dialect.name
    if dialect == "postgresql":
        from sqlalchemy.dialects.postgresql import insert
    else:
        from sqlalchemy.dialects.sqlite import insert  # type: ignore[assignment]
    keyed = [
        {"key_id": k[0], "dataset_id": k[1], "day": k[2], "channel": k[3], "calls": c[0], "rows": c[1]}
        for k, c in sorted(batch.items(), key=lambda kv: (kv[0][0] or 0, kv[0][1], kv[0][2], kv[0][3]))
    ]
    for values in keyed:
        if values["key_id"] is None:
            # NULL never conflicts in a unique index: update the key-less row, or add it.
            done = session.execute(
                update(Usage)
                .where(
                    Usage.key_id.is_(None),
                    Usage.dataset_id == values["dataset_id"],
                    Usage.day == values["day"],
                    Usage.channel == values["channel"],
                )
                .values(calls=Usage.calls + values["calls"], rows=Usage.rows + values["rows"])
            )
            if not done.rowcount:  # type: ignore[attr-defined]
                session.add(Usage(**values))
            continue
        stmt = insert(Usage).values(**values)
        stmt = stmt.on_conflict_do_update(
            index_elements=["key_id", "dataset_id", "day", "channel"],
            set_={"calls": Usage.calls + stmt.excluded.calls, "rows": Usage.rows + stmt.excluded.rows},
        )
        session.execute(stmt)
    session.flush()
    wanted = {(k[0], k[1], k[2]) for k in batch if k[0] is not None}
    totals: dict[tuple[int, int, date], int] = {}
    for key_id, dataset_id, day in wanted:
        totals[(key_id, dataset_id, day)] = int(
            session.scalar(
                select(func.coalesce(func.sum(Usage.rows), 0)).where(
                    Usage.key_id == key_id, Usage.dataset_id == dataset_id, Usage.day == day
                )
            )
            or 0
        )
    return totals


_meters: weakref.WeakKeyDictionary[Engine, Meter] = weakref.WeakKeyDictionary()
_meters_lock = threading.Lock()


def meter_for(bind: Any) -> Meter:
    """The meter of a database (keyed by its engine, so every session on it shares one)."""
    engine: Engine = bind.engine if hasattr(bind, "engine") else bind
    m = _meters.get(engine)
    if m is None:
        with _meters_lock:
            m = _meters.setdefault(engine, Meter())
    return m


def flush(bind: Any) -> int:
    """Flush the meter of this database (worker job and lifespan shutdown)."""
    engine: Engine = bind.engine if hasattr(bind, "engine") else bind
    m = _meters.get(engine)
    return m.flush(engine) if m else 0


def flush_job(session: Session) -> int:
    """Worker job: flush the meter of the session's database."""
    return flush(session.get_bind())


# ---- rate limits ------------------------------------------------------------------------


@dataclass
class _Bucket:
    tokens: float
    at: float


class RateLimiter:
    """A token bucket per (key, dataset): `per_minute` calls, refilled evenly over the minute."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._buckets: dict[tuple[int, int], _Bucket] = {}

    def take(self, key_id: int, dataset_id: int, per_minute: int, now: float | None = None) -> int:
        """0 when the call may go ahead, else the seconds to wait (for Retry-After)."""
        now = time.monotonic() if now is None else now
        rate = per_minute / 60.0
        with self._lock:
            b = self._buckets.get((key_id, dataset_id))
            if b is None:
                b = self._buckets[(key_id, dataset_id)] = _Bucket(float(per_minute), now)
            b.tokens = min(float(per_minute), b.tokens + (now - b.at) * rate)
            b.at = now
            if b.tokens >= 1.0:
                b.tokens -= 1.0
                return 0
            return max(1, math.ceil((1.0 - b.tokens) / rate)) if rate > 0 else 60

    def forget(self, keys: Iterable[tuple[int, int]]) -> None:
        with self._lock:
            for k in keys:
                self._buckets.pop(k, None)


_limiters: weakref.WeakKeyDictionary[Engine, RateLimiter] = weakref.WeakKeyDictionary()


def limiter_for(bind: Any) -> RateLimiter:
    engine: Engine = bind.engine if hasattr(bind, "engine") else bind
    lim = _limiters.get(engine)
    if lim is None:
        with _meters_lock:
            lim = _limiters.setdefault(engine, RateLimiter())
    return lim


# ---- usage for charts -------------------------------------------------------------------


def usage_report(session: Session, actor: Any, *, days: int = 30, dataset: str = "") -> dict[str, Any]:
    """Calls and rows per day (series per dataset), per consumer org and per channel over the
    last `days` local days, stored and still in memory. Scope: the bureau (data.admin) sees
    all; an org sees the use of the datasets it owns and of its own keys."""
    from civicgrid.accounts.models import Org
    from civicgrid.data.models import ApiKey, Dataset

    last = local_day()
    first = last - timedelta(days=days - 1)
    admin = actor.can("data.admin")
    stmt = (
        select(
            Usage.day,
            Usage.channel,
            Usage.dataset_id,
            ApiKey.org_id,
            func.sum(Usage.calls),
            func.sum(Usage.rows),
        )
        .join(Dataset, Dataset.id == Usage.dataset_id)
        .outerjoin(ApiKey, ApiKey.id == Usage.key_id)
        .where(Usage.day >= first, Usage.day <= last)
        .group_by(Usage.day, Usage.channel, Usage.dataset_id, ApiKey.org_id)
    )
    if not admin:
        stmt = stmt.where((Dataset.owner_org_id == actor.org_id) | (ApiKey.org_id == actor.org_id))
    if dataset:
        stmt = stmt.where(Dataset.name == dataset)
    found: list[tuple[date, str, int, int | None, int, int]] = [
        (d, ch, ds, org, int(c or 0), int(r or 0)) for d, ch, ds, org, c, r in session.execute(stmt)
    ]
    # Reads not yet flushed: the charts show them too (the meter is flushed every few seconds).
    pending = {k: v for k, v in meter_for(session.get_bind()).pending().items() if first <= k[2] <= last}
    key_orgs: dict[int, int] = {}
    if pending:
        key_ids = {k[0] for k in pending if k[0] is not None}
        rows_ = session.execute(select(ApiKey.id, ApiKey.org_id).where(ApiKey.id.in_(key_ids)))
        key_orgs = {k: o for k, o in rows_}
    ds_ids = {r[2] for r in found} | {k[1] for k in pending}
    info = {
        i: (n, t, o)
        for i, n, t, o in session.execute(
            select(Dataset.id, Dataset.name, Dataset.title, Dataset.owner_org_id).where(
                Dataset.id.in_(ds_ids)
            )
        )
    }
    for (key_id, ds_id, day, channel), (calls, rows) in pending.items():
        org = key_orgs.get(key_id) if key_id is not None else None
        meta = info.get(ds_id)
        if meta is None or (dataset and meta[0] != dataset):
            continue
        if admin or meta[2] == actor.org_id or (org is not None and org == actor.org_id):
            found.append((day, channel, ds_id, org, calls, rows))
    day_list = [first + timedelta(days=i) for i in range(days)]
    index = {d: i for i, d in enumerate(day_list)}
    series: dict[str, dict[str, Any]] = {}
    consumers: dict[int | None, list[int]] = {}
    channels: dict[str, list[int]] = {}
    total = [0, 0]
    for day, channel, ds_id, org_id, calls, rows in found:
        name, title, _owner = info[ds_id]
        s = series.setdefault(name, {"name": name, "title": title, "calls": [0] * days, "rows": [0] * days})
        s["calls"][index[day]] += calls
        s["rows"][index[day]] += rows
        for bucket in (consumers.setdefault(org_id, [0, 0]), channels.setdefault(channel, [0, 0]), total):
            bucket[0] += calls
            bucket[1] += rows
    org_rows = session.execute(select(Org.id, Org.name).where(Org.id.in_([i for i in consumers if i])))
    names = {i: n for i, n in org_rows}
    return {
        "days": [d.isoformat() for d in day_list],
        "datasets": sorted(series.values(), key=lambda s: s["name"]),
        "consumers": sorted(
            (
                {
                    "org_id": org_id,
                    "org": names.get(org_id, "") if org_id else "",
                    "calls": v[0],
                    "rows": v[1],
                }
                for org_id, v in consumers.items()
            ),
            key=lambda c: (-c["rows"], c["org"]),
        ),
        "channels": {ch: {"calls": v[0], "rows": v[1]} for ch, v in sorted(channels.items())},
        "total": {"calls": total[0], "rows": total[1]},
    }
