"""Metering of data reads and per-key rate limits, kept off the query path's critical cost.

Counts live in memory (one `Meter` per database engine, guarded by a lock) and are flushed
in batches to `Usage` with an upsert every few seconds — by the embedded worker's job, or,
when the worker runs as its own process (which cannot see this process's memory), by a
`Flusher` thread the app starts — and once more from the app's lifespan shutdown, so a clean
stop loses nothing. A failed flush puts its counts back.
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import threading
import time
import weakref
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from typing import Any

from sqlalchemy import Engine, func, select, update
from sqlalchemy.orm import Session

from civicgrid.core.calendar import default_calendar, local_today
from civicgrid.core.db import utcnow
from civicgrid.data.models import Usage

log = logging.getLogger("civicgrid.data.metering")

CHANNELS = ("api", "ckan", "sandbox")
#: Seconds a process trusts its cached stored total of a key's rows before reading it again:
#: with several workers, a quota can be overrun by what the others served in about this long.
STORED_TTL = 5.0
# (key_id, dataset_id, day, channel); key_id None for reads without a key (sandbox, CKAN by session).
CounterKey = tuple[int | None, int, date, str]


def local_day(at: datetime | None = None) -> date:
    """The jurisdiction's calendar day: quotas and usage days turn over at local midnight."""
    return local_today(at)


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
        # Rows already stored per (key, dataset, day), all channels, and when that was learnt
        # (from a flush or a read). Re-read after STORED_TTL seconds: other processes of the
        # deployment flush their reads too, and the quota must see them.
        self._stored: dict[tuple[int, int, date], tuple[int, float]] = {}

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
        now = time.monotonic()
        with self._lock:
            known = self._stored.get(sk)
            unflushed = self._pending_rows.get(sk, 0) + self._inflight_rows.get(sk, 0)
        if known is not None and now - known[1] <= STORED_TTL:
            return known[0] + unflushed
        # One indexed SUM per key and dataset every STORED_TTL seconds at most.
        stored = int(
            session.scalar(
                select(func.coalesce(func.sum(Usage.rows), 0)).where(
                    Usage.key_id == key_id, Usage.dataset_id == dataset_id, Usage.day == day
                )
            )
            or 0
        )
        with self._lock:
            current = self._stored.get(sk)
            if current is None or current[1] < now:
                self._stored[sk] = (stored, now)
            unflushed = self._pending_rows.get(sk, 0) + self._inflight_rows.get(sk, 0)
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
            at = time.monotonic()
            with self._lock:
                for sk, rows in totals.items():
                    self._stored[sk] = (rows, at)
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


#: Seconds between two flushes of a `Flusher` (the worker's job runs as often).
FLUSH_EVERY = 5.0


class Flusher:
    """Flushes a database's meter every `FLUSH_EVERY` seconds from a daemon thread, and once
    more when stopped: the app's own flusher when no embedded worker runs in its process."""

    def __init__(self, bind: Any, every: float | None = None) -> None:
        self.engine: Engine = bind.engine if hasattr(bind, "engine") else bind
        self._every = every
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="civicgrid-usage-flusher", daemon=True)

    def start(self) -> Flusher:
        self._thread.start()
        return self

    def stop(self, timeout: float = 10.0) -> int:
        """Stop the thread and flush what is left; returns the counters of that last flush."""
        self._stop.set()
        self._thread.join(timeout)
        return flush(self.engine)

    def _run(self) -> None:
        while not self._stop.wait(FLUSH_EVERY if self._every is None else self._every):
            try:
                flush(self.engine)
            except Exception:  # the counts were put back; the next round retries them
                log.exception("usage flush failed")


def start_flusher(bind: Any) -> Flusher:
    return Flusher(bind).start()


# ---- rate limits ------------------------------------------------------------------------
#
# Decision (docs/decisions-data-speed.md): with CIVICGRID_REDIS_URL set, every process of a
# deployment takes its tokens from the same buckets in Redis (one atomic script call: a
# round trip, 0.27 ms median on loopback), so N uvicorn workers do not multiply a key's limit
# by N. Without it, buckets live in the process — right for the default single-process
# `civicgrid serve`. If Redis cannot be reached, a call falls back to the process's own
# buckets (limits then hold per process) rather than refusing requests; the failure is logged
# at most once a minute.

REDIS_URL_ENV = "CIVICGRID_REDIS_URL"
BucketKey = tuple[Any, ...]


@dataclass
class _Bucket:
    tokens: float
    at: float


class RateLimiter:
    """Token buckets in this process: `per_minute` calls, refilled evenly over the minute."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._buckets: dict[BucketKey, _Bucket] = {}

    def take(self, key_id: int, dataset_id: int, per_minute: int, now: float | None = None) -> int:
        """0 when a keyed call on a dataset may go ahead, else the seconds to wait (Retry-After)."""
        return self.take_bucket((key_id, dataset_id), per_minute, now)

    def take_bucket(self, bucket: BucketKey, per_minute: int, now: float | None = None) -> int:
        """The same for any bucket (e.g. ("ckan-anonymous", address))."""
        now = time.monotonic() if now is None else now
        rate = per_minute / 60.0
        with self._lock:
            b = self._buckets.get(bucket)
            if b is None:
                b = self._buckets[bucket] = _Bucket(float(per_minute), now)
            b.tokens = min(float(per_minute), b.tokens + (now - b.at) * rate)
            b.at = now
            if b.tokens >= 1.0:
                b.tokens -= 1.0
                return 0
            if len(self._buckets) > 100_000:
                self._prune(now)
            return max(1, math.ceil((1.0 - b.tokens) / rate)) if rate > 0 else 60

    def _prune(self, now: float) -> None:
        """Forget buckets idle for over a minute (full again anyway): anonymous addresses
        would otherwise grow the map without bound."""
        for k in [k for k, b in self._buckets.items() if now - b.at > 60]:
            del self._buckets[k]

    def forget(self, keys: Iterable[BucketKey]) -> None:
        with self._lock:
            for k in keys:
                self._buckets.pop(k, None)


# KEYS[1] bucket; ARGV[1] capacity (= per minute), ARGV[2] refill per second. Redis's own
# clock, so workers on different machines agree. Returns 0, or the seconds to wait.
_TOKEN_BUCKET_LUA = """
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
local cap = tonumber(ARGV[1])
local rate = tonumber(ARGV[2])
local b = redis.call('HMGET', KEYS[1], 'tokens', 'at')
local tokens = tonumber(b[1])
local at = tonumber(b[2])
if tokens == nil then tokens = cap; at = now end
tokens = math.min(cap, tokens + (now - at) * rate)
local wait = 0
if tokens >= 1 then
  tokens = tokens - 1
elseif rate > 0 then
  wait = math.max(1, math.ceil((1 - tokens) / rate))
else
  wait = 60
end
redis.call('HSET', KEYS[1], 'tokens', tostring(tokens), 'at', tostring(now))
redis.call('EXPIRE', KEYS[1], 120)
return wait
"""


class RedisRateLimiter(RateLimiter):
    """Token buckets shared by every process through Redis; the in-process buckets it
    inherits are the fallback while Redis cannot be reached."""

    PREFIX = "civicgrid:ratelimit:"

    def __init__(self, url: str) -> None:
        super().__init__()
        import redis  # only deployments with CIVICGRID_REDIS_URL need the client

        self.url = url
        # Short timeouts: a slow Redis must not hold a request for long before the fallback.
        self._redis = redis.Redis.from_url(url, socket_timeout=0.25, socket_connect_timeout=0.25)
        self._script = self._redis.register_script(_TOKEN_BUCKET_LUA)
        self._warned = 0.0

    def take_bucket(self, bucket: BucketKey, per_minute: int, now: float | None = None) -> int:
        if now is not None:  # tests drive the clock: the in-process buckets honour it
            return super().take_bucket(bucket, per_minute, now)
        name = self.PREFIX + ":".join(str(part) for part in bucket)
        try:
            return int(self._script(keys=[name], args=[int(per_minute), per_minute / 60.0]))
        except Exception as exc:  # redis.RedisError, OSError: fall back, do not fail the call
            if time.monotonic() - self._warned > 60:
                self._warned = time.monotonic()
                log.warning("rate limits held per process: Redis unavailable (%s)", type(exc).__name__)
            return super().take_bucket(bucket, per_minute)

    def forget(self, keys: Iterable[BucketKey]) -> None:
        keys = list(keys)
        super().forget(keys)
        with contextlib.suppress(Exception):
            names = [self.PREFIX + ":".join(str(p) for p in k) for k in keys]
            if names:
                self._redis.delete(*names)


_limiters: weakref.WeakKeyDictionary[Engine, RateLimiter] = weakref.WeakKeyDictionary()
_shared_limiters: dict[str, RedisRateLimiter] = {}


def redis_url() -> str:
    return os.environ.get(REDIS_URL_ENV, "").strip()


def limiter_for(bind: Any) -> RateLimiter:
    """The rate limiter: shared through Redis when CIVICGRID_REDIS_URL is set, else the
    database's in-process one."""
    url = redis_url()
    if url:
        lim = _shared_limiters.get(url)
        if lim is None:
            with _meters_lock:
                lim = _shared_limiters.get(url) or _shared_limiters.setdefault(url, RedisRateLimiter(url))
        return lim
    engine: Engine = bind.engine if hasattr(bind, "engine") else bind
    local = _limiters.get(engine)
    if local is None:
        with _meters_lock:
            local = _limiters.setdefault(engine, RateLimiter())
    return local


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
