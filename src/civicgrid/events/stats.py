"""Event statistics for the cockpit: 结案率, 按期结案率, handling time, 返工率, 满意率, hand-backs,
层级化解率, the funnel and today's flow — each number defined in docs/metrics.md under its key.

Every function takes the reader and reads only their region subtree. The database does the
counting (one aggregate query per answer, GROUP BY in SQL, read through the covering
`ix_event_stats_*` indexes); Python only turns sums into rates and ids into names.
"""

from __future__ import annotations

import enum
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta
from typing import Any

from sqlalchemy import ColumnElement, Select, and_, case, func, or_, select
from sqlalchemy.orm import Session

from civicgrid.accounts.models import Org
from civicgrid.accounts.permissions import Permission
from civicgrid.core.auth import Actor
from civicgrid.core.calendar import default_calendar
from civicgrid.core.db import utcnow
from civicgrid.core.errors import Invalid, PermissionDenied
from civicgrid.core.i18n import gettext
from civicgrid.core.vocab import PLATFORM_LABELS, Platform
from civicgrid.events.models import Category, Event, Level, State, TimelineEntry
from civicgrid.regions import service as regions
from civicgrid.regions.models import Region, RegionLevel

DOC = "docs/metrics.md"
LOCAL_RESOLUTION_TARGET = 0.9  # the seed: at least 90% resolved at village and township level
MAX_DAYS = 3 * 366 + 1
MAX_BUCKETS = 400

FINISHED = (State.closed, State.rated, State.archived)
NOT_DONE = (State.dispatched, State.handling)  # handling not finished yet


class Dimension(enum.StrEnum):
    region = "region"
    platform = "platform"
    category = "category"
    org = "org"
    period = "period"


class Period(enum.StrEnum):
    day = "day"
    week = "week"
    month = "month"


def N_(message: str) -> str:
    """Marks a msgid for extraction; it is translated where it is shown."""
    return message


# metric key → English label (msgid); the key is also the anchor in docs/metrics.md.
METRICS: dict[str, str] = {
    "accepted": N_("Events accepted (立案数)"),
    "due": N_("Events due to be closed (应结案数)"),
    "closed": N_("Events closed (结案数)"),
    "closure_rate": N_("Closure rate (结案率)"),
    "closed_on_time": N_("Events closed on time (按期结案数)"),
    "on_time_rate": N_("On-time closure rate (按期结案率)"),
    "avg_handling_hours": N_("Average handling time, working hours (平均处置时长)"),
    "reworked": N_("Events reworked (返工数)"),
    "rework_rate": N_("Rework rate (返工率)"),
    "rated": N_("Events rated (评价数)"),
    "satisfied": N_("Events rated satisfied (满意数)"),
    "satisfaction_rate": N_("Satisfaction rate (满意率)"),
    "resolved_locally": N_("Events resolved at village or township level (层级化解数)"),
    "local_resolution_rate": N_("Village and township resolution rate (层级化解率)"),
    "overdue_open": N_("Events overdue now (当前超期数)"),
    "reported_flow": N_("Events reported (上报数)"),
    "accepted_flow": N_("Events accepted in the window (受理数)"),
    "closed_flow": N_("Events closed in the window (办结数)"),
    "overdue_flow": N_("Events that went overdue (新增超期数)"),
    "handbacks": N_("Hand-backs (退回次数)"),
    "handback_events": N_("Events handed back (退回事件数)"),
    "funnel": N_("Events by state (事件漏斗)"),
}
COUNTS = (
    "accepted",
    "due_open",
    "closed",
    "closed_on_time",
    "reworked",
    "rated",
    "satisfied",
    "resolved_locally",
    "handling_hours_sum",
    "handling_hours_n",
)


def definitions(keys: Iterable[str]) -> dict[str, dict[str, str]]:
    """Label (in the reader's language) and documentation link of each metric key."""
    return {k: {"label": gettext(METRICS[k]), "doc": f"{DOC}#{k}"} for k in keys}


# ---- filters and scope ---------------------------------------------------------------------


@dataclass(frozen=True)
class Window:
    """Local calendar dates `first`..`last` (both included) as a UTC half-open interval."""

    first: date
    last: date
    start: datetime
    end: datetime


def window(first: date | None = None, last: date | None = None, *, now: datetime | None = None) -> Window:
    """The reader's period; by default the current month up to today (local dates)."""
    tz = default_calendar().tz
    today = (now or utcnow()).astimezone(tz).date()
    last = last or today
    first = first or last.replace(day=1)
    if first > last:
        raise Invalid(
            "The start date {first} is after the end date {last}.", first=first, last=last, field="from"
        )
    if (last - first).days >= MAX_DAYS:
        raise Invalid("Statistics cover at most {days} days at a time.", days=MAX_DAYS, field="from")
    start = datetime.combine(first, time(0), tz).astimezone(UTC)
    end = datetime.combine(last + timedelta(days=1), time(0), tz).astimezone(UTC)
    return Window(first, last, start, end)


@dataclass(frozen=True)
class Scope:
    """The region the numbers are about and the equality conditions that select its events."""

    region: Region | None
    where: tuple[ColumnElement[bool], ...] = field(default_factory=tuple)


def _require(actor: Actor) -> None:
    if not actor.can(Permission.events_read) and not (actor.via == "system" and actor.region_path == "/"):
        raise PermissionDenied("Your role does not allow this.")


def scope_of(session: Session, actor: Actor, code: str | None = None) -> Scope:
    """The reader's region subtree (or the region `code` inside it) as index-friendly equalities
    on the event's own county/township/village/grid columns."""
    _require(actor)
    if code:
        region = regions.get_in_scope(session, actor, code)
    elif actor.region_id:
        region = regions.get(session, actor.region_id)
    else:
        return Scope(None)  # the system actor: everything
    return Scope(region, _conditions(session, region))


def _conditions(session: Session, region: Region) -> tuple[ColumnElement[bool], ...]:
    level = RegionLevel(region.level)
    if level == RegionLevel.county:
        return (Event.county_id == region.id,)
    if level == RegionLevel.township:
        return (Event.township_id == region.id,)
    if level in (RegionLevel.village, RegionLevel.grid):
        # The township column leads the stats indexes, so name it too.
        town = next(r for r in regions.ancestors(session, region) if r.level == RegionLevel.township)
        col = Event.village_id if level == RegionLevel.village else Event.grid_id
        return (Event.township_id == town.id, col == region.id)
    roots = session.scalar(select(func.count(Region.id)).where(Region.parent_id.is_(None)))
    if region.parent_id is None and roots == 1:
        return ()  # the whole jurisdiction: no condition at all
    counties = select(Region.id).where(Region.parent_id == region.id)
    return (Event.county_id.in_(counties),)


@dataclass(frozen=True)
class Filters:
    platform: Platform | None = None
    category_ids: tuple[int, ...] = ()
    category: str | None = None


def filters(session: Session, *, platform: Platform | None = None, category: str | None = None) -> Filters:
    """Platform and category (a big class takes in all its sub-classes)."""
    if not category:
        return Filters(platform=platform)
    from civicgrid.events import service

    c = service.get_category(session, category)
    ids = (
        tuple(session.scalars(select(Category.id).where(Category.parent_id == c.id)))
        if c.parent_id is None
        else (c.id,)
    )
    return Filters(platform=platform, category_ids=ids or (c.id,), category=c.code)


def _where(scope: Scope, f: Filters) -> list[ColumnElement[bool]]:
    out = list(scope.where)
    if f.platform:
        out.append(Event.platform == f.platform)
    if f.category_ids:
        out.append(Event.category_id.in_(f.category_ids))
    return out


# ---- the accepted cohort: 结案率 and the rates that share its events ----------------------


def _count_if(cond: ColumnElement[bool], value: Any = 1) -> Any:
    return func.count(case((cond, value)))


def _cohort_columns(now: datetime) -> list[Any]:
    """One pass over the cohort. `closed_on_time` is set exactly when an event is closed
    (actions.do_close), so "closed" is `closed_on_time IS NOT NULL`: cheaper per row than
    comparing the state with three names, which matters over a million rows."""
    closed = Event.closed_on_time
    return [
        func.count().label("accepted"),
        func.count(closed).label("closed"),
        # the rest of 应结案数: still open, handling deadline passed (a suspended clock is stopped)
        _count_if(and_(closed.is_(None), Event.handle_due_at < now, Event.state != State.suspended)).label(
            "due_open"
        ),
        _count_if(closed.is_(True)).label("closed_on_time"),
        _count_if(Event.rework_count > 0, closed).label("reworked"),
        func.count(Event.rating).label("rated"),
        _count_if(Event.rating >= 4).label("satisfied"),
        _count_if(Event.level != Level.county, closed).label("resolved_locally"),
        func.sum(Event.handling_hours).label("handling_hours_sum"),
        func.count(Event.handling_hours).label("handling_hours_n"),
    ]


def _cohort_where(win: Window, scope: Scope, f: Filters) -> list[ColumnElement[bool]]:
    """立案 in the window: accepted, and not merged into another event afterwards."""
    return [
        *_where(scope, f),
        Event.accepted_at >= win.start,
        Event.accepted_at < win.end,
        Event.state != State.merged,
    ]


def _ratio(a: float, b: float, digits: int = 4) -> float | None:
    return round(a / b, digits) if b else None


def rates(counts: dict[str, Any]) -> dict[str, Any]:
    """The metrics of one group from its sums (rates are None when the denominator is 0)."""
    c = {k: int(counts.get(k) or 0) for k in COUNTS if k != "handling_hours_sum"}
    c["due"] = c["closed"] + c["due_open"]
    hours = float(counts.get("handling_hours_sum") or 0.0)
    return {
        "accepted": c["accepted"],
        "due": c["due"],
        "closed": c["closed"],
        "closure_rate": _ratio(c["closed"], c["due"]),
        "closed_on_time": c["closed_on_time"],
        "on_time_rate": _ratio(c["closed_on_time"], c["due"]),
        "avg_handling_hours": _ratio(hours, c["handling_hours_n"], 2),
        "reworked": c["reworked"],
        "rework_rate": _ratio(c["reworked"], c["closed"]),
        "rated": c["rated"],
        "satisfied": c["satisfied"],
        "satisfaction_rate": _ratio(c["satisfied"], c["rated"]),
        "resolved_locally": c["resolved_locally"],
        "local_resolution_rate": _ratio(c["resolved_locally"], c["closed"]),
    }


COHORT_KEYS = tuple(rates({}))


def _row_dict(row: Any) -> dict[str, Any]:
    return dict(row._mapping)


def _header(scope: Scope, win: Window, f: Filters, now: datetime) -> dict[str, Any]:
    region = scope.region
    return {
        "scope": {"code": region.code, "name": region.name, "level": str(region.level)} if region else None,
        "from": win.first.isoformat(),
        "to": win.last.isoformat(),
        "as_of": now.isoformat(),
        "filters": {"platform": str(f.platform) if f.platform else None, "category": f.category},
    }


def summary(
    session: Session, actor: Actor, win: Window, f: Filters | None = None, *, now: datetime | None = None
) -> dict[str, Any]:
    """The cohort metrics of the window, today's and this month's flow, and the overdue backlog."""
    f = f or Filters()
    now = now or utcnow()
    scope = scope_of(session, actor)
    row = session.execute(select(*_cohort_columns(now)).where(*_cohort_where(win, scope, f))).one()
    metrics = rates(_row_dict(row))
    overdue = session.scalar(
        select(func.count()).where(*_where(scope, f), Event.state.in_(NOT_DONE), Event.handle_due_at < now)
    )
    metrics["overdue_open"] = int(overdue or 0)
    month = window(now=now)
    flow_keys = ("reported_flow", "accepted_flow", "closed_flow", "overdue_flow")
    today, this_month = _flows(session, scope, f, month, now)
    return {
        **_header(scope, win, f, now),
        "metrics": metrics,
        "targets": {"local_resolution_rate": LOCAL_RESOLUTION_TARGET},
        "today": today,
        "this_month": this_month,
        "definitions": definitions([*COHORT_KEYS, "overdue_open", *flow_keys]),
    }


def _flows(
    session: Session, scope: Scope, f: Filters, month: Window, now: datetime
) -> tuple[dict[str, int], dict[str, int]]:
    """What happened today and this month: reported, accepted, closed, and deadlines missed.
    One query per timestamp answers both (today lies inside the month)."""
    base = _where(scope, f)
    day_start = window(month.last, month.last).start

    def count(col: Any, until: datetime, *cond: ColumnElement[bool]) -> tuple[int, int]:
        row = session.execute(
            select(func.count(), _count_if(col >= day_start)).where(
                *base, col >= month.start, col < until, *cond
            )
        ).one()
        return int(row[1] or 0), int(row[0] or 0)

    late = or_(Event.state.in_(NOT_DONE), Event.handled_at > Event.handle_due_at)
    pairs = {
        "reported_flow": count(Event.reported_at, month.end),
        "accepted_flow": count(Event.accepted_at, month.end),
        "closed_flow": count(Event.closed_at, month.end),
        "overdue_flow": count(Event.handle_due_at, min(month.end, now), late),
    }
    return {k: v[0] for k, v in pairs.items()}, {k: v[1] for k, v in pairs.items()}


# ---- breakdowns ----------------------------------------------------------------------------

CHILD_COLUMN = {
    RegionLevel.city: Event.county_id,
    RegionLevel.county: Event.township_id,
    RegionLevel.township: Event.village_id,
    RegionLevel.village: Event.grid_id,
}


@dataclass
class _Group:
    key: str
    name: str
    counts: dict[str, Any] = field(default_factory=dict)

    def add(self, row: dict[str, Any]) -> None:
        for k in COUNTS:
            self.counts[k] = (self.counts.get(k) or 0) + (row.get(k) or 0)


def breakdown(
    session: Session,
    actor: Actor,
    win: Window,
    dimension: Dimension,
    f: Filters | None = None,
    *,
    parent: str | None = None,
    period: Period = Period.day,
    category_level: str = "sub",
    now: datetime | None = None,
) -> dict[str, Any]:
    """The cohort metrics per group: the children of a region, platforms, categories (sub-class
    or big class), lead orgs, or days/weeks/months. Groups partition the cohort, so their
    counts add up to the total."""
    f = f or Filters()
    now = now or utcnow()
    scope = scope_of(session, actor, parent)
    where = _cohort_where(win, scope, f)
    groups: dict[Any, _Group]
    if dimension == Dimension.region:
        region = scope.region or _single_root(session)
        level = RegionLevel(region.level)
        if level not in CHILD_COLUMN:
            raise Invalid("{region} is a grid: it has no smaller regions to compare.", region=region.code)
        key_col: Any = CHILD_COLUMN[level]
        children = session.execute(
            select(Region.id, Region.code, Region.name)
            .where(Region.parent_id == region.id)
            .order_by(Region.code)
        ).all()
        groups = {rid: _Group(code, name) for rid, code, name in children}
    elif dimension == Dimension.platform:
        key_col = Event.platform
        groups = {str(p): _Group(str(p), gettext(PLATFORM_LABELS[p])) for p in Platform}
    elif dimension == Dimension.category:
        key_col = Event.category_id
        groups = {}
    elif dimension == Dimension.org:
        key_col = Event.lead_org_id
        groups = {}
    else:
        key_col = _hour_bucket(session)
        buckets = _buckets(win, period)
        groups = {b: _Group(b, b) for b in buckets}
    stmt: Select[Any] = select(key_col.label("k"), *_cohort_columns(now)).where(*where).group_by(key_col)
    rows = [_row_dict(r) for r in session.execute(stmt)]
    for r in rows:
        r["k"] = r["k"].value if isinstance(r["k"], enum.Enum) else r["k"]
    if dimension == Dimension.category:
        groups, mapping = _category_groups(session, [r["k"] for r in rows], category_level)
        rows = [{**r, "k": mapping.get(r["k"], r["k"])} for r in rows]
    elif dimension == Dimension.org:
        groups = _org_groups(session, [r["k"] for r in rows])
    elif dimension == Dimension.period:
        rows = [{**r, "k": _bucket_of(r["k"], period)} for r in rows]
    for r in rows:
        if r["k"] not in groups:
            groups[r["k"]] = _Group(str(r["k"]), str(r["k"]))
        groups[r["k"]].add(r)
    total = _Group("total", gettext("Total"))
    for g in groups.values():
        total.add(g.counts)
    return {
        **_header(scope, win, f, now),
        "dimension": str(dimension),
        "period": str(period) if dimension == Dimension.period else None,
        "groups": [{"key": g.key, "name": g.name, "metrics": rates(g.counts)} for g in groups.values()],
        "total": rates(total.counts),
        "targets": {"local_resolution_rate": LOCAL_RESOLUTION_TARGET},
        "definitions": definitions(COHORT_KEYS),
    }


def _single_root(session: Session) -> Region:
    roots = list(session.scalars(select(Region).where(Region.parent_id.is_(None)).limit(2)))
    if len(roots) != 1:
        raise Invalid("Choose the region to compare (parent).", field="parent")
    return roots[0]


def _category_groups(
    session: Session, ids: Sequence[Any], level: str
) -> tuple[dict[Any, _Group], dict[Any, str]]:
    """Groups by sub-class code, or by big-class code (level "class"), and category id → code."""
    cats = {c.id: c for c in session.scalars(select(Category))}
    groups: dict[Any, _Group] = {}
    mapping: dict[Any, str] = {}
    for cid in sorted((i for i in ids if i in cats), key=lambda i: cats[i].code):
        c = cats[cid]
        if level == "class" and c.parent_id is not None:
            c = cats[c.parent_id]
        mapping[cid] = c.code
        groups.setdefault(c.code, _Group(c.code, c.name))
    return dict(sorted(groups.items())), mapping


def _org_groups(session: Session, ids: Sequence[Any]) -> dict[Any, _Group]:
    orgs = {
        o.id: o for o in session.scalars(select(Org).where(Org.id.in_([i for i in ids if i is not None])))
    }
    groups: dict[Any, _Group] = {
        oid: _Group(o.code, o.name) for oid, o in sorted(orgs.items(), key=lambda kv: kv[1].code)
    }
    if None in ids:
        groups[None] = _Group("", gettext("Not dispatched"))
    return groups


def _hour_bucket(session: Session) -> Any:
    """The UTC hour of acceptance as a cheap group key; Python folds hours into local periods
    (the zone's offset is whole hours, so every UTC hour lies inside one local day)."""
    if session.get_bind().dialect.name == "sqlite":
        return func.substr(Event.accepted_at, 1, 13)  # stored as 'YYYY-MM-DD HH:MM:SS.ffffff' (UTC)
    return func.date_trunc("hour", func.timezone("UTC", Event.accepted_at))


def _bucket_of(hour: Any, period: Period) -> str:
    at = hour if isinstance(hour, datetime) else datetime.strptime(str(hour), "%Y-%m-%d %H")
    local = at.replace(tzinfo=UTC).astimezone(default_calendar().tz).date()
    return _label(local, period)


def _label(d: date, period: Period) -> str:
    if period == Period.month:
        return f"{d:%Y-%m}"
    if period == Period.week:
        return (d - timedelta(days=d.weekday())).isoformat()  # the Monday of its week
    return d.isoformat()


def _buckets(win: Window, period: Period) -> list[str]:
    out: list[str] = []
    d = win.first
    while d <= win.last:
        label = _label(d, period)
        if not out or out[-1] != label:
            out.append(label)
        d += timedelta(days=1)
    if len(out) > MAX_BUCKETS:
        raise Invalid(
            "That is {n} periods; choose a shorter range or a longer period (at most {max}).",
            n=len(out),
            max=MAX_BUCKETS,
            field="period",
        )
    return out


# ---- hand-backs ----------------------------------------------------------------------------


def handbacks(
    session: Session, actor: Actor, win: Window, f: Filters | None = None, *, now: datetime | None = None
) -> dict[str, Any]:
    """Hand-backs ("not ours") made in the window, per department that handed back: the
    timeline's `return` entries, whose org is the lead that returned the event."""
    f = f or Filters()
    now = now or utcnow()
    scope = scope_of(session, actor)
    stmt = (
        select(
            TimelineEntry.org_id,
            func.count().label("handbacks"),
            func.count(func.distinct(TimelineEntry.event_id)).label("handback_events"),
        )
        .where(TimelineEntry.action == "return", TimelineEntry.at >= win.start, TimelineEntry.at < win.end)
        .group_by(TimelineEntry.org_id)
    )
    where = _where(scope, f)
    if where and session.get_bind().dialect.name == "postgresql":
        # a hash semi-join: the scope's event ids from an index alone, then the period's returns
        stmt = stmt.where(TimelineEntry.event_id.in_(select(Event.id).where(*where)))
    elif where:
        # SQLite probes each return's event by primary key (an IN list would probe the timeline
        # once per event of the scope instead)
        stmt = stmt.join(Event, Event.id == TimelineEntry.event_id).where(*where)
    rows = session.execute(stmt).all()
    orgs = {o.id: o for o in session.scalars(select(Org).where(Org.id.in_([r[0] for r in rows if r[0]])))}
    items = [
        {
            "org": orgs[r[0]].code if r[0] in orgs else None,
            "name": orgs[r[0]].name if r[0] in orgs else gettext("Unknown"),
            "handbacks": int(r[1]),
            "handback_events": int(r[2]),
        }
        for r in rows
    ]
    items.sort(key=lambda i: (-int(str(i["handbacks"])), str(i["org"] or "")))
    return {
        **_header(scope, win, f, now),
        "orgs": items,
        "total": {
            "handbacks": sum(i["handbacks"] for i in items),
            "handback_events": sum(i["handback_events"] for i in items),
        },
        "definitions": definitions(["handbacks", "handback_events"]),
    }


# ---- the funnel ----------------------------------------------------------------------------

# Stages of the funnel: an event counts at a stage when its state is that stage or later.
STAGES: dict[str, tuple[State, ...]] = {
    "reported": tuple(State),
    "accepted": tuple(s for s in State if s not in (State.reported, State.rejected, State.merged)),
    "dispatched": (
        State.dispatched,
        State.handling,
        State.suspended,
        State.handled,
        State.verified,
        *FINISHED,
    ),
    "handled": (State.handled, State.verified, *FINISHED),
    "closed": FINISHED,
    "archived": (State.archived,),
}


def funnel(
    session: Session, actor: Actor, win: Window, f: Filters | None = None, *, now: datetime | None = None
) -> dict[str, Any]:
    """Events reported in the window by their state now, and how far they got."""
    f = f or Filters()
    now = now or utcnow()
    scope = scope_of(session, actor)
    stmt = (
        select(Event.state, func.count())
        .where(*_where(scope, f), Event.reported_at >= win.start, Event.reported_at < win.end)
        .group_by(Event.state)
    )
    by_state = {str(s): 0 for s in State}
    for state, n in session.execute(stmt):
        by_state[str(state.value if isinstance(state, enum.Enum) else state)] = int(n)
    return {
        **_header(scope, win, f, now),
        "by_state": by_state,
        "stages": {name: sum(by_state[str(s)] for s in states) for name, states in STAGES.items()},
        "definitions": definitions(["funnel"]),
    }
