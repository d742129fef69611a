"""Event statistics for the cockpit: 结案率, 按期结案率, handling time, 返工率, 满意率, hand-backs,
层级化解率, the funnel, the daily flow and the map — each number defined in docs/metrics.md.

Every function takes the reader and reads only their region subtree. Counts come from the
rollups (events/rollups.py: pre-aggregated per day and month, kept current on every write), so
a query reads a few thousand counter rows whatever the number of events; what depends on the
clock (due, overdue, open now) is read live from the open events only. Python turns sums into
rates and ids into names.
"""

from __future__ import annotations

import enum
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta
from typing import Any

from sqlalchemy import ColumnElement, and_, case, func, or_, select, text
from sqlalchemy.orm import Session

from civicgrid.accounts.models import Org
from civicgrid.accounts.permissions import Permission
from civicgrid.core.auth import Actor
from civicgrid.core.calendar import default_calendar, local_today
from civicgrid.core.db import utcnow
from civicgrid.core.errors import Invalid, PermissionDenied
from civicgrid.core.i18n import gettext
from civicgrid.core.vocab import PLATFORM_LABELS, Platform
from civicgrid.events import rollups
from civicgrid.events.models import NOT_DONE_PREDICATE, Category, Event, State
from civicgrid.regions import service as regions
from civicgrid.regions.models import Region, RegionLevel

DOC = "docs/metrics.md"
LOCAL_RESOLUTION_TARGET = 0.9  # the seed: at least 90% resolved at village and township level
MAX_DAYS = 3 * 366 + 1
MAX_BUCKETS = 400

FINISHED = (State.closed, State.rated, State.archived)
NOT_DONE = (State.dispatched, State.handling)  # handling not finished yet (NOT_DONE_PREDICATE in SQL)
OPEN = rollups.OPEN_STATES  # not finished, and not refused or merged away
R = rollups.TABLE.c


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
    "region_reported": N_("Events reported in the region (区域上报数)"),
    "open_now": N_("Events open now (当前在办数)"),
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
    last = last or local_today(now)
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
    """The region the numbers are about and the equality conditions that select its events
    (`where`, on the event table) and its rollup rows (`rollup_where`)."""

    region: Region | None
    where: tuple[ColumnElement[bool], ...] = field(default_factory=tuple)
    rollup_where: tuple[ColumnElement[bool], ...] = field(default_factory=tuple)

    @property
    def fine(self) -> bool:
        """A village or a grid: only the grid cube knows them."""
        return self.region is not None and RegionLevel(self.region.level) in (
            RegionLevel.village,
            RegionLevel.grid,
        )


def _require(actor: Actor) -> None:
    if not actor.can(Permission.events_read) and not (actor.via == "system" and actor.region_path == "/"):
        raise PermissionDenied("Your role does not allow this.")


def scope_of(session: Session, actor: Actor, code: str | None = None) -> Scope:
    """The reader's region subtree (or the region `code` inside it, else 404) as index-friendly
    equalities on the event's own county/township/village/grid columns."""
    _require(actor)
    _custom_plans(session)
    if code:
        region = regions.get_in_scope(session, actor, code)
    elif actor.region_id:
        region = regions.get(session, actor.region_id)
    else:
        return Scope(None)  # the system actor: everything
    return Scope(region, *_conditions(session, region))


def _custom_plans(session: Session) -> None:
    """PostgreSQL: plan each statement for its own values. psycopg prepares a statement after
    five runs, and PostgreSQL's generic plan for `accepted_at` in a range (values unknown) reads
    a year of the covering stats index instead of the few open events of `ix_event_open`:
    3.6 s instead of 16 ms for a year city-wide. For this transaction only."""
    if session.get_bind().dialect.name == "postgresql":
        session.execute(text("SET LOCAL plan_cache_mode = force_custom_plan"))


def _conditions(
    session: Session, region: Region
) -> tuple[tuple[ColumnElement[bool], ...], tuple[ColumnElement[bool], ...]]:
    level = RegionLevel(region.level)
    if level == RegionLevel.county:
        return (Event.county_id == region.id,), (R.county_id == region.id,)
    if level == RegionLevel.township:
        return (Event.township_id == region.id,), (R.township_id == region.id,)
    if level in (RegionLevel.village, RegionLevel.grid):
        # The township column leads the indexes, so name it too.
        town = next(r for r in regions.ancestors(session, region) if r.level == RegionLevel.township)
        if level == RegionLevel.village:
            return (
                (Event.township_id == town.id, Event.village_id == region.id),
                (R.township_id == town.id, R.village_id == region.id),
            )
        return (
            (Event.township_id == town.id, Event.grid_id == region.id),
            (R.township_id == town.id, R.grid_id == region.id),
        )
    roots = session.scalar(select(func.count(Region.id)).where(Region.parent_id.is_(None)))
    if region.parent_id is None and roots == 1:
        return (), ()  # the whole jurisdiction: no condition at all
    counties = select(Region.id).where(Region.parent_id == region.id)
    return (Event.county_id.in_(counties),), (R.county_id.in_(counties),)


@dataclass(frozen=True)
class Filters:
    platform: Platform | None = None
    category_ids: tuple[int, ...] = ()
    category: str | None = None
    org: str | None = None  # lead org code
    org_id: int | None = None


def filters(
    session: Session,
    *,
    platform: Platform | None = None,
    category: str | None = None,
    org: str | None = None,
) -> Filters:
    """Platform, category (a big class takes in all its sub-classes) and lead org (its code)."""
    org_id = None
    if org:
        org_id = session.scalar(select(Org.id).where(Org.code == org))
        if org_id is None:
            raise Invalid("Unknown organisation {org}.", org=org, field="org")
    if not category:
        return Filters(platform=platform, org=org or None, org_id=org_id)
    from civicgrid.events import service

    c = service.get_category(session, category)
    ids = (
        tuple(session.scalars(select(Category.id).where(Category.parent_id == c.id)))
        if c.parent_id is None
        else (c.id,)
    )
    return Filters(
        platform=platform, category_ids=ids or (c.id,), category=c.code, org=org or None, org_id=org_id
    )


def _where(scope: Scope, f: Filters) -> list[ColumnElement[bool]]:
    """Scope and filters on the event table (the live reads of open events)."""
    out = list(scope.where)
    if f.platform:
        out.append(Event.platform == f.platform)
    if f.category_ids:
        out.append(Event.category_id.in_(f.category_ids))
    if f.org_id is not None:
        out.append(Event.lead_org_id == f.org_id)
    return out


def _rollup_where(scope: Scope, f: Filters) -> list[ColumnElement[bool]]:
    out = list(scope.rollup_where)
    if f.platform:
        out.append(R.platform == str(f.platform))
    if f.category_ids:
        out.append(R.category_id.in_(f.category_ids))
    if f.org_id is not None:
        out.append(R.org_id == f.org_id)
    return out


def _cube(scope: Scope, f: Filters, *, fine: bool = False, by: str = "") -> str:
    """The smallest cube that knows every dimension the question names (filters and `by`, the
    dimension grouped by): G for villages and grids, T with categories, P with platforms or
    lead orgs, else L."""
    if fine or scope.fine:
        return "G"
    if f.category_ids or by == "category":
        return "T"
    if f.platform or f.org_id is not None or by in ("platform", "org"):
        return "P"
    return "L"


def _sums(
    session: Session,
    fact: str,
    cube: str,
    first: date,
    last: date,
    where: Sequence[ColumnElement[bool]],
    group: Sequence[Any] = (),
    columns: Sequence[Any] | None = None,
    *,
    days_only: bool = False,
) -> dict[tuple[Any, ...], list[Any]]:
    """Sums of rollup counters over the local dates first..last, per group: whole months from
    month rows, the ragged ends from day rows (every day from day rows when `days_only`)."""
    cols = list(columns) if columns is not None else [func.sum(R[c]) for c in rollups.COUNTERS]
    out: dict[tuple[Any, ...], list[Any]] = {}
    spans = [("d", first, last)] if days_only else rollups.ranges(first, last)
    for grain, lo, hi in spans:
        stmt = select(*group, *cols).where(
            R.fact == fact, R.cube == cube, R.grain == grain, R.day >= lo, R.day <= hi, *where
        )
        if group:
            stmt = stmt.group_by(*group)
        for row in session.execute(stmt):
            key = tuple(row[: len(group)])
            acc = out.setdefault(key, [0] * len(cols))
            for i, v in enumerate(row[len(group) :]):
                acc[i] += v or 0
    return out


# ---- the accepted cohort: 结案率 and the rates that share its events ----------------------


def _count_if(cond: ColumnElement[bool], value: Any = 1) -> Any:
    return func.count(case((cond, value)))


def _cohort_counts(sums: Sequence[Any]) -> dict[str, Any]:
    """Rollup counter sums (rollups.COUNTERS order) as the cohort's counts."""
    s = dict(zip(rollups.COUNTERS, sums, strict=True))
    return {
        "accepted": s["n"],
        "closed": s["closed"],
        "closed_on_time": s["closed_on_time"],
        "reworked": s["reworked"],
        "rated": s["rated"],
        "satisfied": s["satisfied"],
        "resolved_locally": s["resolved_locally"],
        "handling_hours_sum": s["hours_cs"] / 100,
        "handling_hours_n": s["hours_n"],
    }


def _cohort(
    session: Session, win: Window, scope: Scope, f: Filters, cube: str, group: Sequence[Any] = (), **kw: Any
) -> dict[tuple[Any, ...], dict[str, Any]]:
    """立案 in the window, less events merged since: counts per group from the rollups."""
    where = [*_rollup_where(scope, f), R.state != "merged"]
    sums = _sums(session, "a", cube, win.first, win.last, where, group, **kw)
    return {k: _cohort_counts(v) for k, v in sums.items()}


def _due_open(
    session: Session, win: Window, scope: Scope, f: Filters, now: datetime, group: Sequence[Any] = ()
) -> dict[tuple[Any, ...], int]:
    """The rest of 应结案数, read live from the open events: accepted in the window, handling
    deadline passed (a suspended clock is stopped). Merged and closed events are not open."""
    stmt = select(*group, func.count()).where(
        rollups.open_events(),
        *_where(scope, f),
        Event.accepted_at >= win.start,
        Event.accepted_at < win.end,
        Event.handle_due_at < now,
        Event.state != State.suspended,
    )
    if group:
        stmt = stmt.group_by(*group)
    return {tuple(r[: len(group)]): int(r[-1]) for r in session.execute(stmt)}


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


def _header(scope: Scope, win: Window, f: Filters, now: datetime) -> dict[str, Any]:
    region = scope.region
    return {
        "scope": {"code": region.code, "name": region.name, "level": str(region.level)} if region else None,
        "from": win.first.isoformat(),
        "to": win.last.isoformat(),
        "as_of": now.isoformat(),
        "filters": {
            "platform": str(f.platform) if f.platform else None,
            "category": f.category,
            "org": f.org,
        },
    }


def summary(
    session: Session,
    actor: Actor,
    win: Window,
    f: Filters | None = None,
    *,
    region: str | None = None,
    now: datetime | None = None,
) -> dict[str, Any]:
    """The cohort metrics of the window, today's and this month's flow, and the overdue backlog."""
    f = f or Filters()
    now = now or utcnow()
    scope = scope_of(session, actor, region)
    cube = _cube(scope, f)
    counts = _cohort(session, win, scope, f, cube).get((), {})
    counts["due_open"] = _due_open(session, win, scope, f, now).get((), 0)
    metrics = rates(counts)
    overdue = session.scalar(
        select(func.count()).where(not_done(), *_where(scope, f), Event.handle_due_at < now)
    )
    metrics["overdue_open"] = int(overdue or 0)
    month = window(now=now)
    flow_keys = ("reported_flow", "accepted_flow", "closed_flow", "overdue_flow")
    today, this_month = _flows(session, scope, f, cube, month, now)
    return {
        **_header(scope, win, f, now),
        "metrics": metrics,
        "targets": {"local_resolution_rate": LOCAL_RESOLUTION_TARGET},
        "today": today,
        "this_month": this_month,
        "definitions": definitions([*COHORT_KEYS, "overdue_open", *flow_keys]),
    }


def not_done() -> Any:
    """Events still being handled (NOT_DONE), written as `ix_event_not_done_due`'s predicate so
    that both databases read that small index: SQLite matches a partial index only by the
    predicate's own text, and PostgreSQL, given the open-events predicate as well, misjudged the
    rows and read 80,000 events of the state index (0.2 s at 10 M)."""
    return text(NOT_DONE_PREDICATE)


FLOW_FACTS = {"reported_flow": "r", "accepted_flow": "a", "closed_flow": "c", "overdue_flow": "l"}


def _flows(
    session: Session, scope: Scope, f: Filters, cube: str, month: Window, now: datetime
) -> tuple[dict[str, int], dict[str, int]]:
    """What happened today and this month: reported, accepted, closed, and deadlines missed.
    Day rows of the month, one query per fact; the deadlines still running late are live."""
    where = _rollup_where(scope, f)
    today: dict[str, int] = {}
    this_month: dict[str, int] = {}
    for key, fact in FLOW_FACTS.items():
        sums = _sums(
            session, fact, cube, month.first, month.last, where, [R.day], [func.sum(R.n)], days_only=True
        )
        this_month[key] = int(sum(v[0] for v in sums.values()))
        today[key] = int(sum(v[0] for k, v in sums.items() if _as_date(k[0]) == month.last))
    # Events overdue and not handled yet (handled late ones are the rollup's `l` rows).
    day_start = window(month.last, month.last).start
    due = Event.handle_due_at
    row = session.execute(
        select(func.count(), _count_if(due >= day_start)).where(
            not_done(),
            *_where(scope, f),
            due >= month.start,
            due < min(month.end, now),
            or_(Event.handled_at.is_(None), Event.handled_at <= due),
        )
    ).one()
    this_month["overdue_flow"] += int(row[0] or 0)
    today["overdue_flow"] += int(row[1] or 0)
    return today, this_month


def _as_date(value: Any) -> date:
    return value if isinstance(value, date) else date.fromisoformat(str(value)[:10])


# ---- breakdowns ----------------------------------------------------------------------------

CHILD_COLUMN = {
    RegionLevel.city: Event.county_id,
    RegionLevel.county: Event.township_id,
    RegionLevel.township: Event.village_id,
    RegionLevel.village: Event.grid_id,
}
CHILD_ROLLUP = {
    RegionLevel.city: R.county_id,
    RegionLevel.county: R.township_id,
    RegionLevel.township: R.village_id,
    RegionLevel.village: R.grid_id,
}
CHILD_LEVEL = {
    RegionLevel.city: RegionLevel.county,
    RegionLevel.county: RegionLevel.township,
    RegionLevel.township: RegionLevel.village,
    RegionLevel.village: RegionLevel.grid,
}


@dataclass
class _Group:
    key: str
    name: str
    counts: dict[str, Any] = field(default_factory=dict)

    def add(self, row: dict[str, Any]) -> None:
        for k in COUNTS:
            self.counts[k] = (self.counts.get(k) or 0) + (row.get(k) or 0)


def _children(session: Session, scope: Scope) -> tuple[Region, RegionLevel, dict[Any, _Group]]:
    region = scope.region or _single_root(session)
    level = RegionLevel(region.level)
    if level not in CHILD_COLUMN:
        raise Invalid("{region} is a grid: it has no smaller regions to compare.", region=region.code)
    children = session.execute(
        select(Region.id, Region.code, Region.name).where(Region.parent_id == region.id).order_by(Region.code)
    ).all()
    return region, level, {rid: _Group(code, name) for rid, code, name in children}


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
    groups: dict[Any, _Group]
    days_only = False
    if dimension == Dimension.region:
        _, level, groups = _children(session, scope)
        rollup_col: Any = CHILD_ROLLUP[level]
        event_col: Any = CHILD_COLUMN[level]
        cube = _cube(scope, f, fine=level in (RegionLevel.township, RegionLevel.village))
    elif dimension == Dimension.platform:
        rollup_col, event_col = R.platform, Event.platform
        groups = {str(p): _Group(str(p), gettext(PLATFORM_LABELS[p])) for p in Platform}
        cube = _cube(scope, f, by="platform")
    elif dimension == Dimension.category:
        rollup_col, event_col = R.category_id, Event.category_id
        groups = {}
        cube = _cube(scope, f, by="category")
    elif dimension == Dimension.org:
        rollup_col, event_col = R.org_id, Event.lead_org_id
        groups = {}
        cube = _cube(scope, f, by="org")
    else:
        rollup_col, event_col = R.day, _hour_bucket(session)
        groups = {b: _Group(b, b) for b in _buckets(win, period)}
        cube = _cube(scope, f)
        days_only = period != Period.month  # weeks cross months: days only
    rows: dict[Any, dict[str, Any]] = defaultdict(dict)
    for (k,), counts in _cohort(session, win, scope, f, cube, [rollup_col], days_only=days_only).items():
        rows[_group_key(dimension, k, period)] = _add(rows[_group_key(dimension, k, period)], counts)
    for (k,), n in _due_open(session, win, scope, f, now, [event_col]).items():
        key = _event_key(dimension, k, period)
        rows[key] = _add(rows[key], {"due_open": n})
    if dimension == Dimension.category:
        groups, mapping = _category_groups(session, list(rows), category_level)
        folded: dict[Any, dict[str, Any]] = defaultdict(dict)
        for k, counts in rows.items():
            folded[mapping.get(k, k)] = _add(folded[mapping.get(k, k)], counts)
        rows = folded
    elif dimension == Dimension.org:
        groups = _org_groups(session, list(rows))
    for k, counts in rows.items():
        if k not in groups:
            groups[k] = _Group(str(k), str(k))
        groups[k].add(counts)
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


def _add(acc: dict[str, Any], counts: dict[str, Any]) -> dict[str, Any]:
    for k, v in counts.items():
        acc[k] = (acc.get(k) or 0) + (v or 0)
    return acc


def _group_key(dimension: Dimension, k: Any, period: Period) -> Any:
    """A rollup row's group value as the group key (org 0 is "not dispatched": None)."""
    if dimension == Dimension.period:
        return _label(_as_date(k), period)
    if dimension == Dimension.org:
        return k or None
    return k


def _event_key(dimension: Dimension, k: Any, period: Period) -> Any:
    if dimension == Dimension.period:
        return _bucket_of(k, period)
    return k.value if isinstance(k, enum.Enum) else k


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


def _hour_bucket(session: Session, col: Any = Event.accepted_at) -> Any:
    """The UTC hour of a timestamp as a cheap group key; Python folds hours into local periods
    (the zone's offset is whole hours, so every UTC hour lies inside one local day)."""
    if session.get_bind().dialect.name == "sqlite":
        return func.substr(col, 1, 13)  # stored as 'YYYY-MM-DD HH:MM:SS.ffffff' (UTC)
    return func.date_trunc("hour", func.timezone("UTC", col))


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
    session: Session,
    actor: Actor,
    win: Window,
    f: Filters | None = None,
    *,
    region: str | None = None,
    now: datetime | None = None,
) -> dict[str, Any]:
    """Hand-backs ("not ours") made in the window, per department that handed back (the
    timeline's `return` entries, rolled up). `org` filters the department that handed back.
    A department's return counts as a distinct event unless it returned the same event
    earlier in the window (`since`, the day of its previous return, is inside the window)."""
    f = f or Filters()
    now = now or utcnow()
    scope = scope_of(session, actor, region)
    cube = _cube(scope, f, by="org")
    sums = _sums(
        session,
        "h",
        cube,
        win.first,
        win.last,
        _rollup_where(scope, f),
        [R.org_id],
        [func.sum(R.n), func.sum(case((R.since < win.first, R.n), else_=0))],
    )
    ids = [k[0] for k, v in sums.items() if v[0]]
    orgs = {o.id: o for o in session.scalars(select(Org).where(Org.id.in_([i for i in ids if i])))}
    items = [
        {
            "org": orgs[k[0]].code if k[0] in orgs else None,
            "name": orgs[k[0]].name if k[0] in orgs else gettext("Unknown"),
            "handbacks": int(v[0]),
            "handback_events": int(v[1]),
        }
        for k, v in sums.items()
        if v[0]
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
    session: Session,
    actor: Actor,
    win: Window,
    f: Filters | None = None,
    *,
    region: str | None = None,
    now: datetime | None = None,
) -> dict[str, Any]:
    """Events reported in the window by their state now, and how far they got."""
    f = f or Filters()
    now = now or utcnow()
    scope = scope_of(session, actor, region)
    sums = _sums(
        session,
        "r",
        _cube(scope, f),
        win.first,
        win.last,
        _rollup_where(scope, f),
        [R.state],
        [func.sum(R.n)],
    )
    by_state = {str(s): 0 for s in State}
    for (state,), (n,) in sums.items():
        by_state[str(state)] += int(n)
    return {
        **_header(scope, win, f, now),
        "by_state": by_state,
        "stages": {name: sum(by_state[str(s)] for s in states) for name, states in STAGES.items()},
        "definitions": definitions(["funnel"]),
    }


# ---- daily flow and the map ----------------------------------------------------------------


def flows(
    session: Session,
    actor: Actor,
    win: Window,
    f: Filters | None = None,
    *,
    region: str | None = None,
    now: datetime | None = None,
) -> dict[str, Any]:
    """Per local day of the window: events reported, accepted and closed that day (the 30-day
    trend of intake and closing). Every day is listed, also those with nothing."""
    f = f or Filters()
    now = now or utcnow()
    scope = scope_of(session, actor, region)
    cube = _cube(scope, f)
    where = _rollup_where(scope, f)
    days: dict[str, dict[str, Any]] = {
        d: {"date": d, "reported": 0, "accepted": 0, "closed": 0} for d in _buckets(win, Period.day)
    }
    for key, fact in (("reported", "r"), ("accepted", "a"), ("closed", "c")):
        sums = _sums(
            session, fact, cube, win.first, win.last, where, [R.day], [func.sum(R.n)], days_only=True
        )
        for (day,), (n,) in sums.items():
            days[_as_date(day).isoformat()][key] += int(n)
    return {
        **_header(scope, win, f, now),
        "days": list(days.values()),
        "definitions": definitions(["reported_flow", "accepted_flow", "closed_flow"]),
    }


def counts_by_region(
    session: Session,
    actor: Actor,
    win: Window,
    f: Filters | None = None,
    *,
    parent: str | None = None,
    now: datetime | None = None,
) -> dict[str, Any]:
    """Per child region of `parent` (default: the reader's region), down to grids: events
    reported in the window, and events open and overdue now (the cockpit's choropleth)."""
    f = f or Filters()
    now = now or utcnow()
    scope = scope_of(session, actor, parent)
    _, level, children = _children(session, scope)
    groups: dict[Any, dict[str, Any]] = {
        rid: {"key": g.key, "name": g.name, "reported": 0, "open": 0, "overdue": 0}
        for rid, g in children.items()
    }
    cube = _cube(scope, f, fine=level in (RegionLevel.township, RegionLevel.village))
    reported = _sums(
        session,
        "r",
        cube,
        win.first,
        win.last,
        _rollup_where(scope, f),
        [CHILD_ROLLUP[level]],
        [func.sum(R.n)],
    )
    for (rid,), (n,) in reported.items():
        if rid in groups:
            groups[rid]["reported"] += int(n)
    col = CHILD_COLUMN[level]
    stmt = (
        select(col, func.count(), _count_if(and_(Event.state.in_(NOT_DONE), Event.handle_due_at < now)))
        .where(rollups.open_events(), *_where(scope, f))
        .group_by(col)
    )
    for rid, n_open, n_overdue in session.execute(stmt):
        if rid in groups:
            groups[rid]["open"] = int(n_open)
            groups[rid]["overdue"] = int(n_overdue or 0)
    return {
        **_header(scope, win, f, now),
        "level": str(CHILD_LEVEL[level]),
        "groups": list(groups.values()),
        "definitions": definitions(["region_reported", "open_now", "overdue_open"]),
    }
