"""Pre-aggregated event statistics (issue 5 part 5): counters per local day and month × region ×
category × platform × lead org × state, kept current incrementally as events change, so the
statistics (events/stats.py) and the cockpit cost the same at ten million events as at ten
thousand. Decisions: docs/decisions-rollups.md.

What is counted (a *fact*, each on the local day of its own timestamp):

- ``r`` reported — per state now (the funnel, reports per day, the map);
- ``a`` accepted — the cohort of 结案率: accepted, closed, on time, reworked, rated, satisfied,
  resolved locally, handling hours (state key ``merged`` or empty: merged events leave the cohort
  but stay in the accepted flow);
- ``c`` closed; ``l`` handled after its handling deadline (on the deadline's day);
- ``h`` hand-backs — per returning department, with the day of that department's previous
  return of the same event (``since``), so distinct events per window stay exact.

Each fact is kept in four *cubes*: ``L`` (county, township; state only — the cockpit's
default, unfiltered reads), ``P`` (township × platform × lead org), ``T`` (township × category ×
platform × lead org) and ``G`` (grid, village × category × platform × lead org: village and grid
scopes, the map below townships); a query reads the smallest cube that knows its dimensions;
and at two grains, day ``d`` and month ``m`` (a window reads whole months as month rows and
only its ragged ends as days).

Numbers that depend on the clock (due, overdue now, open now) are not rolled up: they are read
live from the open events through the small partial index ``ix_event_open``.

One place keeps the rollups current: a SQLAlchemy ``after_flush`` listener that subtracts each
changed event's old contribution (attribute history) and adds its new one, and a
``do_orm_execute`` listener for ORM bulk UPDATE/DELETE statements on events; intake, which
inserts below the ORM, counts its new reports with :func:`count_reported`. Core SQL that
bypasses the session (the demo generator's COPY) must call :func:`rebuild` afterwards.
"""

from __future__ import annotations

import time as _time
from collections import defaultdict
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import Any
from typing import cast as typed

from sqlalchemy import (
    BigInteger,
    Date,
    Index,
    Integer,
    String,
    Table,
    and_,
    any_,
    bindparam,
    case,
    cast,
    delete,
    event,
    func,
    inspect,
    literal,
    select,
    text,
    true,
    union_all,
)
from sqlalchemy.dialects.postgresql import ARRAY
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.orm import Mapped, Session, mapped_column
from sqlalchemy.orm.attributes import NO_VALUE

from civicgrid.core.calendar import default_calendar
from civicgrid.core.db import Base, insert_many
from civicgrid.events.models import Event, Level, State, TimelineEntry, state_predicate

# ---- the table -------------------------------------------------------------------------------

NO_DAY = date(1970, 1, 1)  # `since` of a first hand-back (key columns cannot be NULL)
COUNTERS = (
    "n",
    "closed",
    "closed_on_time",
    "reworked",
    "rated",
    "satisfied",
    "resolved_locally",
    "hours_n",
    "hours_cs",  # handling hours in hundredths: integers add and subtract exactly
)
KEYS = (
    "fact",
    "cube",
    "grain",
    "day",
    "county_id",
    "township_id",
    "village_id",
    "grid_id",
    "category_id",
    "platform",
    "org_id",
    "state",
    "since",
)


class Rollup(Base):
    """One counter row. Dimensions a cube leaves out hold 0 or ''; `org_id` 0 is "no lead org"."""

    __tablename__ = "event_rollup"
    __table_args__ = (
        # Scopes of a township and below: their own rows, not the whole city's.
        Index("ix_event_rollup_township", "fact", "cube", "township_id", "grain", "day"),
        {"sqlite_with_rowid": False},
    )

    fact: Mapped[str] = mapped_column(String(1), primary_key=True)
    cube: Mapped[str] = mapped_column(String(1), primary_key=True)
    grain: Mapped[str] = mapped_column(String(1), primary_key=True)
    day: Mapped[date] = mapped_column(Date, primary_key=True)
    county_id: Mapped[int] = mapped_column(Integer, primary_key=True)
    township_id: Mapped[int] = mapped_column(Integer, primary_key=True)
    village_id: Mapped[int] = mapped_column(Integer, primary_key=True)
    grid_id: Mapped[int] = mapped_column(Integer, primary_key=True)
    category_id: Mapped[int] = mapped_column(Integer, primary_key=True)
    platform: Mapped[str] = mapped_column(String(16), primary_key=True)
    org_id: Mapped[int] = mapped_column(Integer, primary_key=True)
    state: Mapped[str] = mapped_column(String(16), primary_key=True)
    since: Mapped[date] = mapped_column(Date, primary_key=True)
    n: Mapped[int] = mapped_column(Integer, default=0)
    closed: Mapped[int] = mapped_column(Integer, default=0)
    closed_on_time: Mapped[int] = mapped_column(Integer, default=0)
    reworked: Mapped[int] = mapped_column(Integer, default=0)
    rated: Mapped[int] = mapped_column(Integer, default=0)
    satisfied: Mapped[int] = mapped_column(Integer, default=0)
    resolved_locally: Mapped[int] = mapped_column(Integer, default=0)
    hours_n: Mapped[int] = mapped_column(Integer, default=0)
    hours_cs: Mapped[int] = mapped_column(BigInteger, default=0)


TABLE = typed(Table, Rollup.__table__)

# Open events: the clock-dependent numbers (due, overdue, open now) read them live. A partial
# index holds only them (a few percent of all events); queries repeat the predicate literally
# so both planners see that it applies (as the deadline worker's indexes do).
OPEN_STATES = (
    State.reported,
    State.accepted,
    State.dispatched,
    State.handling,
    State.handled,
    State.verified,
    State.suspended,
)
OPEN_PREDICATE = state_predicate(OPEN_STATES)
Index(
    "ix_event_open",
    Event.township_id,
    Event.state,
    Event.handle_due_at,
    Event.accepted_at,
    Event.handled_at,
    Event.county_id,
    Event.village_id,
    Event.grid_id,
    Event.platform,
    Event.category_id,
    Event.lead_org_id,
    postgresql_where=text(OPEN_PREDICATE),
    sqlite_where=text(OPEN_PREDICATE),
)


def open_events() -> Any:
    """The condition that lets a query read the open events' partial index."""
    return text(OPEN_PREDICATE)


# ---- cubes, grains, days ---------------------------------------------------------------------


@dataclass(frozen=True)
class Cube:
    name: str
    dims: tuple[str, ...]  # which of the event's dimensions the cube keeps
    facts: str


EVENT_DIMS = ("county_id", "township_id", "village_id", "grid_id", "category_id", "platform", "org_id")
CUBES = (
    Cube("L", ("county_id", "township_id"), "racl"),
    Cube("P", ("county_id", "township_id", "platform", "org_id"), "raclh"),
    Cube("T", ("county_id", "township_id", "category_id", "platform", "org_id"), "raclh"),
    Cube("G", EVENT_DIMS, "raclh"),
)
CUBE = {c.name: c for c in CUBES}
GRAINS = ("d", "m")
EMPTY: dict[str, Any] = {
    "county_id": 0,
    "township_id": 0,
    "village_id": 0,
    "grid_id": 0,
    "category_id": 0,
    "platform": "",
    "org_id": 0,
}


def local_day(at: datetime) -> date:
    return at.astimezone(default_calendar().tz).date()


def month_of(d: date) -> date:
    return d.replace(day=1)


def _next_month(d: date) -> date:
    return (d.replace(day=28) + timedelta(days=4)).replace(day=1)


def ranges(first: date, last: date) -> list[tuple[str, date, date]]:
    """The local dates first..last as (grain, from, to) ranges of rows: the whole months inside
    as month rows, the ragged ends as day rows."""
    m1 = first if first.day == 1 else _next_month(first)
    m_end = (last + timedelta(days=1)).replace(day=1)  # the first month not wholly inside
    if m1 >= m_end:
        return [("d", first, last)]
    out = []
    if first < m1:
        out.append(("d", first, m1 - timedelta(days=1)))
    out.append(("m", m1, m_end - timedelta(days=1)))
    if m_end <= last:
        out.append(("d", m_end, last))
    return out


# ---- one event's contribution ----------------------------------------------------------------

TRACKED = (
    "state",
    "reported_at",
    "accepted_at",
    "closed_at",
    "handled_at",
    "handle_due_at",
    "closed_on_time",
    "rework_count",
    "rating",
    "level",
    "handling_hours",
    "county_id",
    "township_id",
    "village_id",
    "grid_id",
    "category_id",
    "platform",
    "lead_org_id",
)
Key = tuple[Any, ...]
Delta = dict[Key, list[int]]


def _str(v: Any) -> str:
    return str(v.value if hasattr(v, "value") else v)


def _facts(e: Mapping[str, Any]) -> Iterator[tuple[str, date, str, date, list[int]]]:
    """(fact, day, state key, since, counters) of one event's values."""
    state = _str(e["state"])
    yield "r", local_day(e["reported_at"]), state, NO_DAY, [1, 0, 0, 0, 0, 0, 0, 0, 0]
    if e["accepted_at"] is not None:
        closed = e["closed_on_time"] is not None
        hours = e["handling_hours"]
        rating = e["rating"]
        yield (
            "a",
            local_day(e["accepted_at"]),
            "merged" if state == State.merged else "",
            NO_DAY,
            [
                1,
                int(closed),
                int(e["closed_on_time"] is True or e["closed_on_time"] == 1),
                int(closed and (e["rework_count"] or 0) > 0),
                int(rating is not None),
                int(rating is not None and rating >= 4),
                int(closed and _str(e["level"]) != Level.county),
                int(hours is not None),
                round(hours * 100) if hours is not None else 0,
            ],
        )
    if e["closed_at"] is not None:
        yield "c", local_day(e["closed_at"]), "", NO_DAY, [1, 0, 0, 0, 0, 0, 0, 0, 0]
    handled, due = e["handled_at"], e["handle_due_at"]
    if handled is not None and due is not None and handled > due:
        yield "l", local_day(due), "", NO_DAY, [1, 0, 0, 0, 0, 0, 0, 0, 0]


def _dims(e: Mapping[str, Any]) -> dict[str, Any]:
    return {
        "county_id": e["county_id"],
        "township_id": e["township_id"],
        "village_id": e["village_id"],
        "grid_id": e["grid_id"],
        "category_id": e["category_id"],
        "platform": _str(e["platform"]),
        "org_id": e["lead_org_id"] or 0,
    }


def _spread(
    delta: Delta,
    fact: str,
    day: date,
    dims: Mapping[str, Any],
    state: str,
    since: date,
    counters: list[int],
    sign: int,
) -> None:
    # Runs for every event of every write: only the counters that change are touched.
    changes = [(i, sign * v) for i, v in enumerate(counters) if v]
    if not changes:
        return
    days = {"d": day, "m": month_of(day)}
    for cube in CUBES:
        if fact not in cube.facts:
            continue
        kept = tuple(dims[d] if d in cube.dims else EMPTY[d] for d in EVENT_DIMS)
        for grain in GRAINS:
            key = (fact, cube.name, grain, days[grain], *kept, state, since)
            acc = delta.get(key)
            if acc is None:
                acc = delta[key] = [0] * len(COUNTERS)
            for i, v in changes:
                acc[i] += v


def add_event(delta: Delta, values: Mapping[str, Any] | None, sign: int) -> None:
    """Add (sign 1) or take away (sign -1) an event's contribution, given its column values."""
    if values is None or values.get("reported_at") is None:
        return
    dims = _dims(values)
    for fact, day, state, since, counters in _facts(values):
        _spread(delta, fact, day, dims, state, since, counters, sign)


def add_handback(
    delta: Delta, e: Mapping[str, Any], at: datetime, org_id: int | None, prev: datetime | None
) -> None:
    """A hand-back (a timeline `return` entry) by `org_id` at `at`; `prev` is the same
    department's previous return of the same event."""
    dims = {**_dims(e), "org_id": org_id or 0}
    since = local_day(prev) if prev is not None else NO_DAY
    _spread(delta, "h", local_day(at), dims, "", since, [1, 0, 0, 0, 0, 0, 0, 0, 0], 1)


# ---- writing deltas --------------------------------------------------------------------------


def apply(session: Session, delta: Delta) -> int:
    """Add the non-zero deltas to their rows (created when missing), in key order so concurrent
    writers lock rows in the same order. Returns the rows touched."""
    rows = [
        {**dict(zip(KEYS, k, strict=True)), **dict(zip(COUNTERS, v, strict=True))}
        for k, v in sorted(delta.items())
        if any(v)
    ]
    if not rows:
        return 0
    insert_many(session.connection(), TABLE, rows, add_on_conflict=COUNTERS)
    return len(rows)


# ---- the listeners: every ORM write of an event ----------------------------------------------


def _old_values(obj: Event) -> dict[str, Any] | None:
    """The event's values before this flush, from attribute history; None if nothing counted changed."""
    st = inspect(obj)
    old: dict[str, Any] = {}
    changed = False
    for name in TRACKED:
        h = st.attrs[name].history
        if h.deleted:
            old[name] = h.deleted[0]
            changed = True
        elif h.added:
            changed = True
            old[name] = None  # was unset (NO_VALUE cannot occur: active history loads it)
        elif h.unchanged:
            old[name] = h.unchanged[0]
        else:
            old[name] = getattr(obj, name)  # not loaded: unchanged, so the stored value
    return old if changed else None


def _new_values(obj: Event) -> dict[str, Any]:
    return {name: getattr(obj, name) for name in TRACKED}


def count_reported(session: Session, event_ids: Sequence[int]) -> None:
    """What `_after_flush` does for new events, for events just reported and inserted below the
    ORM (intake's `insert_rows`): their one fact, ``r``, counted by the database from the
    inserted rows in one upsert (`rebuild`'s expressions) — building each report's eight
    rollup keys in Python and sending them as JSON cost a seventh of intake's Python."""
    if session.info.get("rollups_off") or not event_ids:
        return
    conn = session.connection()
    dialect = conn.dialect.name
    if dialect not in _REPORTED:
        _REPORTED[dialect] = _reported_upsert(dialect)
    conn.execute(_REPORTED[dialect], {"ids": list(event_ids)})


_REPORTED: dict[str, Any] = {}


def _reported_upsert(dialect: str) -> Any:
    e = Event.__table__.c
    pairs = [(c.name, g) for c in CUBES if "r" in c.facts for g in GRAINS]
    # (cube, grain) pairs as a UNION ALL of constants: SQLite knows no column list on VALUES.
    cg = union_all(*(select(literal(c).label("cube"), literal(g).label("grain")) for c, g in pairs)).subquery(
        "cg"
    )
    fact, day, state, counters, _where = next(f for f in _fact_selects(dialect) if f[0] == "r")
    when = case((cg.c.grain == "d", day), else_=_month_expr(dialect, day))
    source = _event_dims()
    dims = [
        case((cg.c.cube.in_([c.name for c in CUBES if d in c.dims]), source[d]), else_=literal(EMPTY[d]))
        for d in EVENT_DIMS
    ]
    ids = (
        e.id == any_(bindparam("ids", type_=ARRAY(Integer)))
        if dialect == "postgresql"
        else e.id.in_(bindparam("ids", expanding=True))
    )
    group = [cg.c.cube, cg.c.grain, when, *dims, state]
    sel = (
        select(literal(fact), cg.c.cube, cg.c.grain, when, *dims, state, literal(NO_DAY), *counters)
        .select_from(Event.__table__.join(cg, true()))
        .where(ids)
        .group_by(*group)
        .order_by(*group)  # key order, as `apply` takes row locks
    )
    upsert = pg_insert if dialect == "postgresql" else sqlite_insert
    ins = upsert(TABLE).from_select([*KEYS, *COUNTERS], sel)
    return ins.on_conflict_do_update(index_elements=list(KEYS), set_={"n": TABLE.c.n + ins.excluded.n})


def _after_flush(session: Session, _ctx: Any) -> None:
    if session.info.get("rollups_off"):
        return
    delta: Delta = {}
    for obj in session.new:
        if isinstance(obj, Event):
            add_event(delta, _new_values(obj), 1)
    for obj in session.dirty:
        if isinstance(obj, Event):
            old = _old_values(obj)
            if old is not None:
                add_event(delta, old, -1)
                add_event(delta, _new_values(obj), 1)
    for obj in session.deleted:
        if isinstance(obj, Event):
            st = inspect(obj)
            add_event(delta, {n: _committed(st, n) for n in TRACKED}, -1)
    returns = [o for o in session.new if isinstance(o, TimelineEntry) and o.action == "return"]
    if returns:
        _add_returns(session, delta, returns)
    apply(session, delta)


def _committed(st: Any, name: str) -> Any:
    h = st.attrs[name].history
    if h.deleted:
        return h.deleted[0]
    if h.unchanged:
        return h.unchanged[0]
    value = st.attrs[name].loaded_value
    return None if value is NO_VALUE else value


def _add_returns(session: Session, delta: Delta, entries: Sequence[TimelineEntry]) -> None:
    conn = session.connection()
    for entry in entries:
        ev = conn.execute(
            select(*[Event.__table__.c[n] for n in TRACKED]).where(Event.id == entry.event_id)
        ).one()
        prev = conn.execute(
            select(func.max(TimelineEntry.at)).where(
                TimelineEntry.event_id == entry.event_id,
                TimelineEntry.action == "return",
                TimelineEntry.org_id.is_(None)
                if entry.org_id is None
                else TimelineEntry.org_id == entry.org_id,
                TimelineEntry.seq < entry.seq,
            )
        ).scalar()
        add_handback(delta, dict(ev._mapping), entry.at, entry.org_id, _aware(prev))


def _aware(at: datetime | None) -> datetime | None:
    if at is None or at.tzinfo is not None:
        return at
    return at.replace(tzinfo=UTC)  # a Core read on SQLite gives the stored naive UTC value


def _event_rows(session: Session, where: Any) -> dict[int, dict[str, Any]]:
    cols = [Event.__table__.c[n] for n in TRACKED]
    rows = session.execute(select(Event.__table__.c.id, *cols).where(where)).all()
    return {r[0]: dict(zip(TRACKED, r[1:], strict=True)) for r in rows}


def _bulk_statement(orm_execute_state: Any) -> Any:
    """ORM bulk UPDATE/DELETE on events that touch counted columns: take the rows' old
    contributions away before, add the new ones after (the statement may name any rows)."""
    if not (orm_execute_state.is_update or orm_execute_state.is_delete):
        return None
    if orm_execute_state.session.info.get("rollups_off"):
        return None
    mapper = orm_execute_state.bind_mapper
    if mapper is None or mapper.class_ is not Event:
        return None
    stmt = orm_execute_state.statement
    params = orm_execute_state.parameters
    if orm_execute_state.is_update:
        keys = list(getattr(stmt, "_values", None) or {})
        keys += [k for k, _ in (getattr(stmt, "_ordered_values", None) or ())]
        if isinstance(params, list):
            keys += [k for p in params for k in p]
        elif isinstance(params, dict):
            keys += list(params)
        names = {getattr(k, "key", getattr(k, "name", str(k))) for k in keys}
        if names and not names & set(TRACKED):
            return None  # e.g. the deadline worker's notices: nothing counted changes
    session = orm_execute_state.session
    if isinstance(params, list) and params and "id" in params[0]:
        where = Event.__table__.c.id.in_([p["id"] for p in params])
    else:
        where = stmt.whereclause if stmt.whereclause is not None else literal(True)  # type: ignore[assignment]
    ids = list(_event_rows(session, where))
    id_where = Event.__table__.c.id.in_(ids)
    before = _event_rows(session, id_where) if ids else {}
    result = orm_execute_state.invoke_statement()
    after = _event_rows(session, id_where) if ids else {}
    delta: Delta = {}
    for values in before.values():
        add_event(delta, values, -1)
    for values in after.values():
        add_event(delta, values, 1)
    apply(session, delta)
    return result


def _load_old_on_set(target: Any, value: Any, oldvalue: Any, initiator: Any) -> Any:
    return value


_installed = False


def install() -> None:
    """Register the listeners once (imported with the models, so every process has them)."""
    global _installed
    if _installed:
        return
    _installed = True
    event.listen(Session, "after_flush", _after_flush)
    event.listen(Session, "do_orm_execute", _bulk_statement)
    for name in TRACKED:
        # Setting an expired attribute must load the value it replaces: the old contribution.
        event.listen(getattr(Event, name), "set", _load_old_on_set, active_history=True, retval=True)


install()


# ---- rebuild from scratch --------------------------------------------------------------------


def _day_expr(dialect: str, col: Any) -> Any:
    tz = default_calendar().tz
    if dialect == "postgresql":
        return cast(func.timezone(str(tz), col), Date)
    offset = tz.utcoffset(datetime(2000, 1, 1))
    summer = tz.utcoffset(datetime(2000, 7, 1))
    if offset != summer or offset is None:
        raise RuntimeError(f"SQLite rollups need a zone without daylight saving time, not {tz}")
    minutes = int(offset.total_seconds() // 60)
    return func.date(col, f"{minutes:+d} minutes")


def _month_expr(dialect: str, col: Any) -> Any:
    if dialect == "postgresql":
        return cast(func.date_trunc("month", col), Date)
    return func.date(col, "start of month")


def _count_if(cond: Any) -> Any:
    return func.count(case((cond, 1)))


def _fact_selects(dialect: str) -> Iterator[tuple[str, Any, Any, list[Any], list[Any]]]:
    """(fact, day expression, state key, counter expressions, conditions) over `event`."""
    e = Event.__table__.c
    one = [func.count()] + [literal(0)] * (len(COUNTERS) - 1)
    closed = e.closed_on_time.is_not(None)
    yield "r", _day_expr(dialect, e.reported_at), e.state, one, []
    yield (
        "a",
        _day_expr(dialect, e.accepted_at),
        case((e.state == State.merged.value, "merged"), else_=""),
        [
            func.count(),
            func.count(e.closed_on_time),
            _count_if(e.closed_on_time.is_(True)),
            _count_if(and_(closed, e.rework_count > 0)),
            func.count(e.rating),
            _count_if(e.rating >= 4),
            _count_if(and_(closed, e.level != Level.county.value)),
            func.count(e.handling_hours),
            func.coalesce(func.sum(cast(func.round(e.handling_hours * 100), BigInteger)), 0),
        ],
        [e.accepted_at.is_not(None)],
    )
    yield "c", _day_expr(dialect, e.closed_at), literal(""), one, [e.closed_at.is_not(None)]
    yield "l", _day_expr(dialect, e.handle_due_at), literal(""), one, [e.handled_at > e.handle_due_at]


def _event_dims() -> dict[str, Any]:
    """The rollup dimensions (`EVENT_DIMS`) as expressions over `event`."""
    e = Event.__table__.c
    return {
        "county_id": e.county_id,
        "township_id": e.township_id,
        "village_id": e.village_id,
        "grid_id": e.grid_id,
        "category_id": e.category_id,
        "platform": e.platform,
        "org_id": func.coalesce(e.lead_org_id, 0),
    }


def _dim_exprs(cube: Cube, source: Mapping[str, Any]) -> list[Any]:
    return [source[d] if d in cube.dims else literal(EMPTY[d]) for d in EVENT_DIMS]


def rebuild(session: Session, cubes: Iterable[str] | None = None) -> dict[str, Any]:
    """Recompute every rollup row (or those of some cubes) from the events and timeline, in the
    caller's transaction (readers keep seeing the old rows until it commits). Returns rows per
    fact and seconds."""
    started = _time.perf_counter()
    dialect = session.get_bind().dialect.name
    conn = session.connection()
    table = TABLE
    chosen = [c for c in CUBES if cubes is None or c.name in set(cubes)]
    names = [c.name for c in chosen]
    conn.execute(delete(table).where(table.c.cube.in_(names)))
    event_dims = _event_dims()
    for fact, day, state, counters, where in _fact_selects(dialect):
        for cube in chosen:
            if fact not in cube.facts:
                continue
            dims = _dim_exprs(cube, event_dims)
            keys = [literal(fact), literal(cube.name), literal("d"), day, *dims, state, literal(NO_DAY)]
            group = [day, *[d for d, name in zip(dims, EVENT_DIMS, strict=True) if name in cube.dims], state]
            sel = select(*keys, *counters).select_from(Event.__table__).where(*where).group_by(*group)
            conn.execute(table.insert().from_select([*KEYS, *COUNTERS], sel))
    _rebuild_handbacks(conn, dialect, chosen)
    # Month rows from the day rows.
    r = table.c
    month = _month_expr(dialect, r.day)
    keys = [r.fact, r.cube, literal("m"), month, *[r[d] for d in EVENT_DIMS], r.state, r.since]
    sel = (
        select(*keys, *[func.sum(r[c]) for c in COUNTERS])
        .where(r.grain == "d", r.cube.in_(names))
        .group_by(r.fact, r.cube, month, *[r[d] for d in EVENT_DIMS], r.state, r.since)
    )
    conn.execute(table.insert().from_select([*KEYS, *COUNTERS], sel))
    counts: dict[str, int] = {
        f: int(n) for f, n in conn.execute(select(r.fact, func.count()).group_by(r.fact))
    }
    return {"rows": {k: int(v) for k, v in sorted(counts.items())}, "seconds": time_since(started)}


def time_since(started: float) -> float:
    return round(_time.perf_counter() - started, 3)


def _rebuild_handbacks(conn: Any, dialect: str, chosen: Sequence[Cube]) -> None:
    t = TimelineEntry.__table__.c
    e = Event.__table__.c
    prev = (
        func.lag(t.at)
        .over(partition_by=(t.event_id, func.coalesce(t.org_id, 0)), order_by=t.seq)
        .label("prev")
    )
    returns = (
        select(t.event_id, t.at, func.coalesce(t.org_id, 0).label("org"), prev)
        .where(t.action == "return")
        .subquery()
    )
    day = _day_expr(dialect, returns.c.at)
    since = func.coalesce(_day_expr(dialect, returns.c.prev), literal(NO_DAY))
    source = {**_event_dims(), "org_id": returns.c.org}  # the returning department
    table = TABLE
    one = [func.count()] + [literal(0)] * (len(COUNTERS) - 1)
    for cube in chosen:
        if "h" not in cube.facts:
            continue
        dims = _dim_exprs(cube, source)
        keys = [literal("h"), literal(cube.name), literal("d"), day, *dims, literal(""), since]
        group = [day, *[d for d, name in zip(dims, EVENT_DIMS, strict=True) if name in cube.dims], since]
        sel = (
            select(*keys, *one)
            .select_from(returns.join(Event.__table__, e.id == returns.c.event_id))
            .group_by(*group)
        )
        conn.execute(table.insert().from_select([*KEYS, *COUNTERS], sel))


def snapshot(session: Session) -> dict[Key, tuple[int, ...]]:
    """Every non-zero row (tests compare an incremental state with a rebuild)."""
    r = TABLE.c
    out: dict[Key, tuple[int, ...]] = {}
    for row in session.execute(select(*[r[k] for k in KEYS], *[r[c] for c in COUNTERS])):
        counters = tuple(int(x) for x in row[len(KEYS) :])
        if any(counters):
            key = tuple(_norm(x) for x in row[: len(KEYS)])
            out[key] = counters
    return out


def _norm(x: Any) -> Any:
    return x.isoformat() if isinstance(x, date) else x


def delta_of(values: Iterable[Mapping[str, Any]]) -> Delta:
    """The rows a set of events adds up to (tests)."""
    delta: Delta = defaultdict(lambda: [0] * len(COUNTERS))
    for v in values:
        add_event(delta, v, 1)
    return dict(delta)
