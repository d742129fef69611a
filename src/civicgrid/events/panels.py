"""The events capability's cockpit panels: today's and this month's flow, the cohort rates, the
funnel, platforms and categories, the 30-day trend, overdue and due-soon lists, the department
ranking, 层级化解率 against its target, and the map.

Every number comes from `events.stats` (which reads the rollups); the two lists are list
queries limited to a few rows through `events.service.list_stmt`. Each column names its
definition in docs/metrics.md (`extra["docs"]`).
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import Select, and_, case, func, select
from sqlalchemy.orm import Session, aliased

from civicgrid.accounts.models import Org, User
from civicgrid.cockpit.registry import Column, Context, Kind, Panel, PanelData, View, register
from civicgrid.core.db import utcnow
from civicgrid.core.i18n import gettext as _
from civicgrid.core.masking import mask_name
from civicgrid.core.vocab import Platform
from civicgrid.events import export, service, stats
from civicgrid.events.models import STATE_LABELS, Category, Event, State
from civicgrid.regions import service as regions
from civicgrid.regions.models import GridAssignment, Region, RegionLevel

DOC = "docs/metrics.md"
COCKPIT_DOC = "docs/cockpit.md"
LIST_ROWS = 10  # rows of the overdue and due-soon lists
DUE_SOON_HOURS = 24  # "due soon" on the cockpit: the handling deadline within the next 24 hours
TREND_DAYS = 30
MAP_POINTS = 1500  # newest events drawn as points on the map
RANKING_ROWS = 10
RANKED_MIN = 5  # events a department needs in the period to be ranked ahead of the rest
TOP_CATEGORIES = 10
ANALYTIC = (View.analytic,)  # panels the big screen leaves out (it has room for about eight)


def N_(message: str) -> str:
    """Marks a msgid for extraction; translated where it is shown."""
    return message


def _docs(**keys: str) -> dict[str, dict[str, str]]:
    """Column key → metric definition anchor (docs/metrics.md unless a path is given)."""
    return {"docs": {col: (a if "#" in a else f"{DOC}#{a}") for col, a in keys.items()}}


def _pct(ratio: float | None) -> float | None:
    """Rates are shown and exported as percentages with one decimal (None: nothing to measure)."""
    return None if ratio is None else round(ratio * 100, 1)


def filters_of(session: Session, ctx: Context) -> stats.Filters:
    return ctx.shared(
        "events.filters",
        lambda: stats.filters(
            session,
            platform=Platform(ctx.platform) if ctx.platform else None,
            category=ctx.category,
            org=ctx.org,
        ),
    )


def _summary(session: Session, ctx: Context) -> dict[str, Any]:
    """One `summary` per context and interval, shared by the flow and the rates panels."""
    f = filters_of(session, ctx)
    return ctx.shared(
        "events.summary",
        lambda: stats.summary(session, ctx.actor, ctx.window, f, region=ctx.region.code, now=ctx.now),
    )


# ---- figures ------------------------------------------------------------------------------

FLOW = (
    ("today", "reported_flow", N_("Reported today")),
    ("today", "accepted_flow", N_("Accepted today")),
    ("today", "closed_flow", N_("Closed today")),
    ("today", "overdue_flow", N_("Went overdue today")),
    ("this_month", "reported_flow", N_("Reported this month")),
    ("this_month", "accepted_flow", N_("Accepted this month")),
    ("this_month", "closed_flow", N_("Closed this month")),
    ("this_month", "overdue_flow", N_("Went overdue this month")),
)


def flow_query(session: Session, ctx: Context) -> PanelData:
    s = _summary(session, ctx)
    columns = [Column(f"{when}_{key}", _(label), _("events")) for when, key, label in FLOW]
    row: list[Any] = [s[when][key] for when, key, _label in FLOW]
    columns.append(Column("overdue_open", _("Overdue now"), _("events")))
    row.append(s["metrics"]["overdue_open"])
    docs = {f"{when}_{key}": key for when, key, _label in FLOW}
    return PanelData(columns, [row], {**_docs(**docs, overdue_open="overdue_open"), "as_of": s["as_of"]})


RATES = (
    ("accepted", N_("Accepted in the period"), "events"),
    ("closure_rate", N_("Closure rate"), "%"),
    ("on_time_rate", N_("On-time closure rate"), "%"),
    ("satisfaction_rate", N_("Satisfaction rate"), "%"),
    ("rework_rate", N_("Rework rate"), "%"),
    ("local_resolution_rate", N_("Village and township resolution rate"), "%"),
    ("avg_handling_hours", N_("Average handling time"), "h"),
)


def rates_query(session: Session, ctx: Context) -> PanelData:
    m = _summary(session, ctx)["metrics"]
    columns = [Column(k, _(label), _(unit) if unit == "events" else unit) for k, label, unit in RATES]
    row = [_pct(m[k]) if unit == "%" else m[k] for k, _label, unit in RATES]
    return PanelData(
        columns,
        [row],
        {
            **_docs(**{k: k for k, _l, _u in RATES}),
            "from": ctx.window.first.isoformat(),
            "to": ctx.window.last.isoformat(),
        },
    )


# ---- charts -------------------------------------------------------------------------------


def trend_query(session: Session, ctx: Context) -> PanelData:
    last = ctx.window.last
    win = stats.window(last - timedelta(days=TREND_DAYS - 1), last)
    days = stats.flows(session, ctx.actor, win, filters_of(session, ctx), region=ctx.region.code, now=ctx.now)
    columns = [
        Column("date", _("Date")),
        Column("reported", _("Reported"), _("events")),
        Column("accepted", _("Accepted"), _("events")),
        Column("closed", _("Closed"), _("events")),
    ]
    rows = [[d["date"], d["reported"], d["accepted"], d["closed"]] for d in days["days"]]
    return PanelData(
        columns, rows, _docs(reported="reported_flow", accepted="accepted_flow", closed="closed_flow")
    )


STAGE_LABELS = {
    "reported": N_("Reported"),
    "accepted": N_("Accepted"),
    "dispatched": N_("Dispatched"),
    "handled": N_("Handled"),
    "closed": N_("Closed"),
    "archived": N_("Archived"),
}


def funnel_query(session: Session, ctx: Context) -> PanelData:
    fun = stats.funnel(
        session, ctx.actor, ctx.window, filters_of(session, ctx), region=ctx.region.code, now=ctx.now
    )
    rows = [[_(STAGE_LABELS[k]), n] for k, n in fun["stages"].items()]
    return PanelData(
        [Column("stage", _("Stage")), Column("events", _("Events"), _("events"))],
        rows,
        {
            **_docs(events="funnel"),
            "by_state": {_(STATE_LABELS[State(k)]): n for k, n in fun["by_state"].items()},
        },
    )


def _by(session: Session, ctx: Context, dimension: stats.Dimension, **kw: Any) -> dict[str, Any]:
    return stats.breakdown(
        session,
        ctx.actor,
        ctx.window,
        dimension,
        filters_of(session, ctx),
        parent=ctx.region.code,
        now=ctx.now,
        **kw,
    )


def platform_query(session: Session, ctx: Context) -> PanelData:
    b = _by(session, ctx, stats.Dimension.platform)
    rows = [[g["name"], g["metrics"]["accepted"], g["metrics"]["closed"]] for g in b["groups"]]
    return PanelData(
        [
            Column("platform", _("Platform")),
            Column("accepted", _("Accepted"), _("events")),
            Column("closed", _("Closed"), _("events")),
        ],
        rows,
        _docs(accepted="accepted", closed="closed"),
    )


def category_query(session: Session, ctx: Context) -> PanelData:
    b = _by(session, ctx, stats.Dimension.category, category_level="class")
    groups = sorted(b["groups"], key=lambda g: (-g["metrics"]["accepted"], g["key"]))[:TOP_CATEGORIES]
    rows = [[g["name"], g["metrics"]["accepted"], g["metrics"]["closed"]] for g in groups]
    return PanelData(
        [
            Column("category", _("Category")),
            Column("accepted", _("Accepted"), _("events")),
            Column("closed", _("Closed"), _("events")),
        ],
        rows,
        {**_docs(accepted="accepted", closed="closed"), "top": TOP_CATEGORIES},
    )


def departments_query(session: Session, ctx: Context) -> PanelData:
    """Lead departments by 按期结案率 (then 满意率), with 返工率 and hand-backs beside."""
    f = filters_of(session, ctx)
    b = _by(session, ctx, stats.Dimension.org)
    hb = stats.handbacks(session, ctx.actor, ctx.window, f, region=ctx.region.code, now=ctx.now)
    backs = {o["org"]: o for o in hb["orgs"] if o["org"]}
    rows: list[list[Any]] = []
    seen = set()
    for g in b["groups"]:
        if not g["key"]:  # events not dispatched: no department to rank
            continue
        m = g["metrics"]
        seen.add(g["key"])
        back = backs.get(g["key"], {})
        rows.append(
            [
                g["name"],
                _pct(m["on_time_rate"]),
                _pct(m["satisfaction_rate"]),
                _pct(m["rework_rate"]),
                back.get("handbacks", 0),
                m["accepted"],
            ]
        )
    for code, o in backs.items():
        if code not in seen:  # handed back everything it got: still ranked, by its hand-backs
            rows.append([o["name"], None, None, None, o["handbacks"], 0])

    def rank(r: list[Any]) -> tuple[Any, ...]:
        # A rate of one or two events says little: departments with fewer than RANKED_MIN events
        # of the period come after those with enough, each group by 按期结案率, then 满意率.
        return (r[5] < RANKED_MIN, r[1] is None, -(r[1] or 0), -(r[2] or 0), r[4], -r[5], r[0])

    rows.sort(key=rank)
    return PanelData(
        [
            Column("org", _("Department")),
            Column("on_time_rate", _("On-time closure rate"), "%"),
            Column("satisfaction_rate", _("Satisfaction rate"), "%"),
            Column("rework_rate", _("Rework rate"), "%"),
            Column("handbacks", _("Hand-backs"), _("times")),
            Column("accepted", _("Accepted"), _("events")),
        ],
        rows[:RANKING_ROWS],
        {
            **_docs(
                on_time_rate="on_time_rate",
                satisfaction_rate="satisfaction_rate",
                rework_rate="rework_rate",
                handbacks="handbacks",
                accepted="accepted",
            ),
            "total": len(rows),
        },
    )


def local_resolution_query(session: Session, ctx: Context) -> PanelData:
    """层级化解率 per child region (counties of a city, townships of a county, …) against 90%."""
    b = _by(session, ctx, stats.Dimension.region)
    rows = [
        [g["name"], _pct(g["metrics"]["local_resolution_rate"]), g["metrics"]["closed"]] for g in b["groups"]
    ]
    target = _pct(b["targets"]["local_resolution_rate"])
    return PanelData(
        [
            Column("region", _("Region")),
            Column("local_resolution_rate", _("Village and township resolution rate"), "%"),
            Column("closed", _("Closed"), _("events")),
        ],
        rows,
        {**_docs(local_resolution_rate="local_resolution_rate", closed="closed"), "target": target},
    )


def local_resolution_gauge_query(session: Session, ctx: Context) -> PanelData:
    s = _summary(session, ctx)
    return PanelData(
        [
            Column("value", _("Village and township resolution rate")),
            Column("target", _("Target value")),
        ],
        [[s["metrics"]["local_resolution_rate"], s["targets"]["local_resolution_rate"]]],
        _docs(value="local_resolution_rate", target="local_resolution_rate"),
    )


# ---- lists --------------------------------------------------------------------------------


def region_conditions(region: Region) -> list[Any]:
    """The region as equalities on the event's own region columns (indexed), not a path LIKE."""
    column = {
        RegionLevel.county: Event.county_id,
        RegionLevel.township: Event.township_id,
        RegionLevel.village: Event.village_id,
        RegionLevel.grid: Event.grid_id,
    }.get(RegionLevel(region.level))
    if column is None:  # a city: the reader's scope (visible_stmt) already limits the events
        return [Event.region_path.startswith(region.path, autoescape=True)] if region.parent_id else []
    return [column == region.id]


def _list_stmt(session: Session, ctx: Context) -> Select[Any]:
    """Events of the context through the shared list helper: scope, platform, category, org."""
    f = filters_of(session, ctx)
    stmt = service.list_stmt(
        ctx.actor, platform=f.platform, category=f.category or None, lead_org_id=f.org_id
    ).where(*region_conditions(ctx.region))
    return stmt


def _event_rows(session: Session, ctx: Context, events: Select[Any]) -> list[list[Any]]:
    """The first rows of an event list: number, title, category, department (lead, else the office
    that dispatches it), handling deadline and the time left, in one query (no per-row lookups)."""
    now = ctx.now or utcnow()
    lead, owner = aliased(Org), aliased(Org)
    stmt = (
        events.order_by(None)
        .order_by(Event.handle_due_at, Event.id)
        .limit(LIST_ROWS)
        .with_only_columns(
            Event.number, Event.title, Category.name, lead.name, owner.name, Event.handle_due_at
        )
        .outerjoin(Category, Category.id == Event.category_id)
        .outerjoin(lead, lead.id == Event.lead_org_id)
        .outerjoin(owner, owner.id == Event.owner_org_id)
    )
    rows = []
    for number, title, category, lead_name, owner_name, due in session.execute(stmt):
        left = export.Deadline("handle", due, (due - now).total_seconds() / 3600) if due else None
        rows.append(
            [
                number,
                title,
                category or "",
                lead_name or owner_name or "",
                export.local_text(due),
                left.text() if left else "",
                f"/events/{number}",
            ]
        )
    return rows


LIST_COLUMNS = (
    ("number", N_("Event number")),
    ("title", N_("Title")),
    ("category", N_("Category")),
    ("org", N_("Department")),
    ("due", N_("Due")),
    ("deadline", N_("Deadline")),
    ("url", N_("Link")),
)


LIST_WIDE = ["title", "category", "due"]  # columns the big screen leaves out


def overdue_query(session: Session, ctx: Context) -> PanelData:
    now = ctx.now or utcnow()
    base = _list_stmt(session, ctx).where(stats.not_done(), Event.handle_due_at < now)
    total = _summary(session, ctx)["metrics"]["overdue_open"]
    return PanelData(
        [Column(k, _(label)) for k, label in LIST_COLUMNS],
        _event_rows(session, ctx, base),
        {**_docs(number="overdue_open"), "total": total, "limit": LIST_ROWS, "wide": LIST_WIDE},
    )


def due_soon_query(session: Session, ctx: Context) -> PanelData:
    now = ctx.now or utcnow()
    base = _list_stmt(session, ctx).where(
        stats.not_done(),
        Event.handle_due_at >= now,
        Event.handle_due_at < now + timedelta(hours=DUE_SOON_HOURS),
    )
    return PanelData(
        [Column(k, _(label)) for k, label in LIST_COLUMNS],
        _event_rows(session, ctx, base),
        {
            **_docs(number=f"{COCKPIT_DOC}#due_soon"),
            "hours": DUE_SOON_HOURS,
            "limit": LIST_ROWS,
            "wide": LIST_WIDE,
        },
    )


# ---- the map ------------------------------------------------------------------------------


def map_query(session: Session, ctx: Context) -> PanelData:
    """The children of the context's region shaded by events (a grid: its village's grids, the
    grid itself in focus), the newest events of the window as points, and the breadcrumbs."""
    region = ctx.region
    f = filters_of(session, ctx)
    focus = ""
    parent = region
    if region.level == RegionLevel.grid:
        village = regions.get_by_code(session, regions.parent_code(region) or "")
        if ctx.actor.in_scope(village.path):
            parent, focus = village, region.code
    if parent.level == RegionLevel.grid:  # a grid worker's own grid without its village: no shading
        groups: list[dict[str, Any]] = []
        level = "grid"
    else:
        c = stats.counts_by_region(session, ctx.actor, ctx.window, f, parent=parent.code, now=ctx.now)
        groups, level = c["groups"], c["level"]
    rows = [[g["key"], g["name"], g["reported"], g["open"], g["overdue"]] for g in groups]
    if focus:
        rows = [r for r in rows if r[0] == focus]
    stmt = (
        _list_stmt(session, ctx)
        .where(Event.reported_at >= ctx.window.start, Event.reported_at < ctx.window.end)
        .with_only_columns(Event.lon, Event.lat, Event.number, Event.state)
        .limit(MAP_POINTS)
    )
    points = [
        [round(lon, 5), round(lat, 5), number, str(state)]
        for lon, lat, number, state in session.execute(stmt)
    ]
    chain = [*regions.ancestors(session, region), region]
    crumbs = [
        {"code": r.code, "name": r.name, "name_en": r.name_en, "level": str(r.level)}
        for r in chain
        if ctx.actor.in_scope(r.path)
    ]
    return PanelData(
        [
            Column("code", _("Region code")),
            Column("name", _("Region")),
            Column("reported", _("Reported"), _("events")),
            Column("open", _("Open now"), _("events")),
            Column("overdue", _("Overdue now"), _("events")),
        ],
        rows,
        {
            **_docs(reported="region_reported", open="open_now", overdue="overdue_open"),
            "level": level,
            "parent": parent.code,
            "focus": focus,
            "region": {"code": region.code, "name": region.name, "level": str(region.level)},
            "crumbs": crumbs,
            "points": points,
            "points_limit": MAP_POINTS,
        },
    )


# ---- grid workers ---------------------------------------------------------------------------

ACTIVITY_WEEKS = 4
IDLE_DAYS = 7
IDLE_LOOKBACK_DAYS = 90
WORKER_ROWS = 200


def _grid_workers(session: Session, region: Region) -> list[tuple[int, str, str, str]]:
    """(user id, display name, grid code, grid name) of every active grid worker assignment in
    the region's subtree."""
    stmt = (
        select(GridAssignment.user_id, User.display_name, Region.code, Region.name)
        .join(Region, Region.id == GridAssignment.grid_id)
        .join(User, User.id == GridAssignment.user_id)
        .where(Region.path.startswith(region.path, autoescape=True), User.active.is_(True))
        .order_by(Region.code)
    )
    return [(int(u), str(n), str(c), str(g)) for u, n, c, g in session.execute(stmt)]


def worker_activity(session: Session, ctx: Context) -> dict[str, Any]:
    """Events each grid worker of the region reported per week (Monday to Sunday, local time),
    the last four weeks up to the period's last day; least active first."""
    last = ctx.window.last
    monday = last - timedelta(days=last.weekday())
    weeks = [monday - timedelta(weeks=i) for i in range(ACTIVITY_WEEKS - 1, -1, -1)]
    bounds = [stats.window(w, w).start for w in weeks] + [stats.window(last, last).end]
    workers = _grid_workers(session, ctx.region)
    by_user: dict[int, dict[str, Any]] = {}
    for uid, name, _code, grid in workers:
        w = by_user.setdefault(uid, {"name": mask_name(name), "grids": []})
        w["grids"].append(grid)
    counts: dict[int, list[int]] = {}
    if by_user:
        # A worker's reports wherever they made them (a grid worker reports in their own grid;
        # the rare one across a border still counts as their work): read from the covering
        # index ix_event_reporter_reported, never the region's events.
        cols = [
            func.count(case((and_(Event.reported_at >= bounds[i], Event.reported_at < bounds[i + 1]), 1)))
            for i in range(ACTIVITY_WEEKS)
        ]
        stmt = (
            select(Event.reporter_user_id, *cols)
            .where(
                Event.reporter_user_id.in_(list(by_user)),
                Event.reported_at >= bounds[0],
                Event.reported_at < bounds[-1],
            )
            .group_by(Event.reporter_user_id)
        )
        counts = {int(r[0] or 0): [int(n) for n in r[1:]] for r in session.execute(stmt)}
    rows = []
    for uid, w in by_user.items():
        c = counts.get(uid, [0] * ACTIVITY_WEEKS)
        grids = (
            w["grids"][0]
            if len(w["grids"]) == 1
            else _("{grid} and {n} more", grid=w["grids"][0], n=len(w["grids"]) - 1)
        )
        rows.append([w["name"], grids, *c, sum(c)])
    rows.sort(key=lambda r: (r[-1], r[1]))
    total = sum(r[-1] for r in rows)
    return {
        "weeks": [w.isoformat() for w in weeks],
        "rows": rows,
        "workers": len(rows),
        "reports": total,
        "per_worker_week": round(total / (len(rows) * ACTIVITY_WEEKS), 2) if rows else None,
    }


def worker_activity_query(session: Session, ctx: Context) -> PanelData:
    a = worker_activity(session, ctx)
    columns = [Column("worker", _("Grid worker")), Column("grid", _("Grid"))]
    columns += [Column(f"week_{w}", _("Week of {date}", date=w[5:]), _("events")) for w in a["weeks"]]
    columns.append(Column("total", _("Total"), _("events")))
    return PanelData(
        columns,
        a["rows"][:WORKER_ROWS],
        {
            "docs": {"total": f"{COCKPIT_DOC}#worker_reports"},
            "workers": a["workers"],
            "reports": a["reports"],
            "per_worker_week": a["per_worker_week"],
            "limit": WORKER_ROWS,
        },
    )


def idle_grids(session: Session, ctx: Context) -> dict[str, Any]:
    """Grids of the region whose own grid workers reported no event in the last 7 days, with the
    days since their last such report (looked back 90 days)."""
    now = ctx.now or utcnow()
    since = now - timedelta(days=IDLE_LOOKBACK_DAYS)
    village = aliased(Region)
    grids = session.execute(
        select(Region.id, Region.code, Region.name, village.name)
        .join(village, village.id == Region.parent_id)
        .where(Region.path.startswith(ctx.region.path, autoescape=True), Region.level == RegionLevel.grid)
        .order_by(Region.code)
    ).all()
    # Per assignment, the worker's newest report in that grid: one backward step through the
    # covering index ix_event_reporter_reported (a worker reports almost only in their grid).
    newest = (
        select(Event.reported_at)
        .where(
            Event.reporter_user_id == GridAssignment.user_id,
            Event.grid_id == GridAssignment.grid_id,
            Event.reported_at >= since,
        )
        .order_by(Event.reported_at.desc())
        .limit(1)
        .correlate(GridAssignment)
        .scalar_subquery()
    )
    last_report: dict[int, Any] = {}
    for gid, at in session.execute(
        select(GridAssignment.grid_id, newest)
        .join(Region, Region.id == GridAssignment.grid_id)
        .where(Region.path.startswith(ctx.region.path, autoescape=True))
    ):
        if isinstance(at, str):  # SQLite returns a datetime from a scalar subquery as text
            at = datetime.fromisoformat(at).replace(tzinfo=UTC)
        if at is not None and (last_report.get(gid) is None or at > last_report[gid]):
            last_report[gid] = at
    idle: list[list[Any]] = []
    for gid, code, name, village_name in grids:
        last = last_report.get(gid)
        days = (now - last).days if last is not None else None
        if days is None or days >= IDLE_DAYS:
            idle.append([name, village_name, days, f"/regions/map?code={code}"])
    idle.sort(key=lambda r: (r[2] is not None, -(r[2] or 0), r[0]))
    return {"rows": idle, "idle": len(idle), "grids": len(grids)}


def idle_grids_query(session: Session, ctx: Context) -> PanelData:
    g = idle_grids(session, ctx)
    return PanelData(
        [
            Column("grid", _("Grid")),
            Column("village", _("Village")),
            Column("days", _("Days since the last patrol report")),
            Column("url", _("Link")),
        ],
        g["rows"][:WORKER_ROWS],
        {
            "docs": {"days": f"{COCKPIT_DOC}#idle_grids"},
            "idle": g["idle"],
            "grids": g["grids"],
            "days": IDLE_DAYS,
            "limit": WORKER_ROWS,
            "note": _("— : no patrol report in the last {days} days", days=IDLE_LOOKBACK_DAYS),
        },
    )


# ---- registration -------------------------------------------------------------------------

register(
    Panel(
        "events.flow",
        N_("Today and this month"),
        Kind.number,
        flow_query,
        order=10,
        width=3,
        doc=f"{DOC}#reported_flow",
    )
)
register(
    Panel(
        "events.rates",
        N_("Rates of the period"),
        Kind.number,
        rates_query,
        order=20,
        width=3,
        doc=f"{DOC}#closure_rate",
    )
)
register(
    Panel(
        "events.map",
        N_("Events on the map"),
        Kind.map,
        map_query,
        order=25,
        width=2,
        doc=f"{DOC}#region_reported",
    )
)
register(
    Panel(
        "events.trend",
        N_("Intake and closing, last 30 days"),
        Kind.line,
        trend_query,
        order=30,
        width=2,
        doc=f"{DOC}#reported_flow",
    )
)
register(
    Panel(
        "events.funnel",
        N_("Where the period's events are"),
        Kind.funnel,
        funnel_query,
        order=40,
        doc=f"{DOC}#funnel",
    )
)
register(
    Panel("events.platform", N_("By platform"), Kind.pie, platform_query, order=50, doc=f"{DOC}#accepted")
)
register(
    Panel(
        "events.category",
        N_("By category (top 10)"),
        Kind.bar,
        category_query,
        order=55,
        doc=f"{DOC}#accepted",
        views=ANALYTIC,
    )
)
register(
    Panel(
        "events.departments",
        N_("Department ranking"),
        Kind.ranking,
        departments_query,
        order=60,
        width=2,
        doc=f"{DOC}#on_time_rate",
    )
)
register(
    Panel(
        "events.local_resolution_total",
        N_("Village and township resolution"),
        Kind.gauge,
        local_resolution_gauge_query,
        order=65,
        doc=f"{DOC}#local_resolution_rate",
        views=ANALYTIC,
    )
)
register(
    Panel(
        "events.local_resolution",
        N_("Village and township resolution by region"),
        Kind.bar,
        local_resolution_query,
        order=66,
        width=2,
        doc=f"{DOC}#local_resolution_rate",
    )
)
register(
    Panel(
        "events.overdue",
        N_("Overdue events"),
        Kind.table,
        overdue_query,
        order=70,
        width=2,
        doc=f"{DOC}#overdue_open",
    )
)
register(
    Panel(
        "events.worker_activity",
        N_("Grid-worker reports per week"),
        Kind.table,
        worker_activity_query,
        order=80,
        width=2,
        doc=f"{COCKPIT_DOC}#worker_reports",
        views=ANALYTIC,
    )
)
register(
    Panel(
        "events.idle_grids",
        N_("Grids without a patrol report for 7 days"),
        Kind.table,
        idle_grids_query,
        order=82,
        doc=f"{COCKPIT_DOC}#idle_grids",
    )
)
register(
    Panel(
        "events.due_soon",
        N_("Due within 24 hours"),
        Kind.table,
        due_soon_query,
        order=75,
        width=2,
        doc=f"{COCKPIT_DOC}#due_soon",
        views=ANALYTIC,
    )
)
