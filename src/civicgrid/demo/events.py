"""Many realistic demo events in bulk, for the cockpit and the statistics benchmarks.

Every event is planned as numpy arrays: its category (weighted), its grid and a point inside
it, and the time of every workflow step in working time (a minute-grid copy of the working-time
calendar, so 1,000,000 events need no per-event calendar calls). The state is whatever the
last step before `now` leaves; timestamps, deadlines, counters and timeline entries follow
from the same plan, so they agree with each other. Rows go in with driver-level executemany
in batches; one audit record covers the whole generation.
"""

from __future__ import annotations

import json
import time as clock
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta
from typing import Any

import numpy as np
import shapely
from numpy.typing import NDArray
from sqlalchemy import func, select, text
from sqlalchemy.orm import Session

from civicgrid.accounts.models import Org, OrgKind, User
from civicgrid.core import audit
from civicgrid.core.auth import SYSTEM, Actor
from civicgrid.core.calendar import WorkCalendar, default_calendar
from civicgrid.core.db import utcnow
from civicgrid.core.errors import Invalid
from civicgrid.demo.service import _names
from civicgrid.events import service as events
from civicgrid.events.models import (
    Category,
    Event,
    EventSequence,
    Level,
    Responsibility,
    State,
)
from civicgrid.regions.models import GridAssignment, Region, RegionLevel

I64 = NDArray[np.int64]
F64 = NDArray[np.float64]
BOOL = NDArray[np.bool_]

BATCH = 10_000
MAX_COUNT = 5_000_000
MAX_DAYS = 3 * 366
HORIZON_DAYS = 400  # deadlines and late handling may run this far past `now`
ACTOR_NAME = "demo-generator"  # the actor of generated workflow steps (no real user acted)
ABSENT = -1
REBUILD_INDEXES_FROM = 100_000  # SQLite: from this many events, build the indexes after the insert

# How often each big class is reported, relative to the others (urban-management patrols
# dominate; emergencies and petitions are rare). Within a class, earlier items are commoner.
CLASS_WEIGHTS = {
    "01": 18.0, "02": 9.0, "03": 6.0, "04": 2.0, "05": 16.0, "06": 5.0,
    "10": 9.0, "11": 8.0, "12": 6.0, "13": 4.0, "14": 12.0, "15": 5.0,
}  # fmt: skip
SEVERITY_WEIGHTS = {"low": 1.0, "medium": 0.8, "high": 0.45, "critical": 0.12}
# Reporting channel: (name, share); grid workers' patrols are the main source.
CHANNELS = (("web", 0.55), ("hotline", 0.25), ("open311", 0.08), ("api", 0.07), ("risk", 0.05))

# Shares of the workflow's branches.
P_REJECT = 0.035
P_MERGE = 0.03
P_ACCEPT_LATE = 0.08
P_ESCALATE_VILLAGE = 0.25  # village-level categories handed up to the township
P_ESCALATE_COUNTY = 0.04  # of the events at township level, handed up to the county
P_HANDBACK = 0.07
P_LATE = 0.10
P_STUCK = 0.01  # very late: the long tail a cockpit must show
P_SUSPENDED = 0.03  # of the events being handled now
P_REWORK = 0.05
P_RATED = 0.65
ARCHIVE_AFTER_DAYS = 15

DESCRIPTIONS = {
    "01": [
        "{addr}有{name}，影响市容，请尽快处理",
        "{addr}附近出现{name}，居民反映强烈",
        "巡查发现{addr}{name}",
    ],
    "02": ["{addr}墙面、电杆上{name}较多", "{addr}{name}，影响街面观感", "巡查发现{addr}{name}"],
    "03": ["{addr}工地{name}，周边居民意见很大", "{addr}{name}，请相关部门到场", "巡查发现{addr}{name}"],
    "04": ["{addr}{name}，存在危险，请立即处置", "紧急：{addr}发生{name}", "{addr}{name}，已设置临时警示"],
    "05": ["{addr}{name}，影响通行", "{addr}长期{name}，多次劝导无效", "巡查发现{addr}{name}"],
    "06": ["{addr}{name}，群众反映多次", "{addr}附近{name}，请处理", "巡查发现{addr}{name}"],
    "10": ["{addr}村民之间{name}，需调解", "{addr}发生{name}，当事人情绪激动", "{addr}{name}，请求调处"],
    "11": ["{addr}{name}，存在安全风险", "检查发现{addr}{name}，需整改", "{addr}{name}，请尽快排查"],
    "12": ["{addr}商户{name}问题，请核查", "群众反映{addr}{name}", "{addr}{name}，请市场监管部门处理"],
    "13": ["{addr}{name}，周边居民反映强烈", "巡查发现{addr}{name}", "{addr}{name}，请执法部门处理"],
    "14": ["{addr}居民{name}，请协助办理", "群众来电：{name}", "{addr}{name}，需要帮助"],
    "15": ["{addr}{name}，请关注", "网格走访发现{addr}{name}", "{addr}{name}，已初步核实"],
}
ROADS = ("人民路", "解放路", "中山路", "新华路", "文化路", "建设路", "东海大道", "学院路", "工人路", "青年路")
RESULTS = ("已现场处置完毕", "已责令整改并复查到位", "已清理完毕，恢复原状", "已调解，双方达成一致",
           "已联系相关单位修复", "已答复当事人并办结")  # fmt: skip
REJECT_REASONS = (
    ("不属于本平台受理范围", "本平台事件受理规则", "请向12345政务服务热线反映"),
    ("反映事项已由司法程序处理", "本平台事件受理规则", "请向人民法院咨询"),
    ("上报内容不完整，无法核实", "本平台事件受理规则", ""),
)


# ---- working time on a minute grid ----------------------------------------------------------


class MinuteClock:
    """The calendar's working time as arrays over whole minutes since `t0` (UTC), so deadlines
    and handling hours of a million events are array look-ups. Built from the calendar's own
    days and periods (`datetime.combine` in its time zone), it gives the same answers as
    `WorkCalendar.add_working_hours`, `add_working_days` and `working_hours_between` on minutes.
    A result past the window is `size`: far after `now`, so that step has not happened yet."""

    def __init__(self, cal: WorkCalendar, start: datetime, end: datetime) -> None:
        tz = cal.tz
        first = start.astimezone(tz).date() - timedelta(days=1)
        last = end.astimezone(tz).date() + timedelta(days=2)
        self.t0 = datetime.combine(first, time(0), tz).astimezone(UTC)
        n_days = (last - first).days

        def minute(d: date, t: time) -> int:
            return int((datetime.combine(d, t, tz) - self.t0).total_seconds() // 60)

        self.day_start = np.array([minute(first + timedelta(days=i), time(0)) for i in range(n_days + 1)])
        working = np.zeros(int(self.day_start[-1]), dtype=np.bool_)
        self.day_end = np.zeros(n_days, dtype=np.int64)  # end of the last working period
        workdays = []
        for i in range(n_days):
            d = first + timedelta(days=i)
            if cal.is_workday(d):
                workdays.append(i)
                for ps, pe in cal.periods:
                    working[minute(d, ps) : minute(d, pe)] = True
                self.day_end[i] = minute(d, cal.periods[-1][1])
        self.workdays = np.array(workdays, dtype=np.int64)
        self.working = working
        self.cum = np.concatenate(
            [[0], np.cumsum(working, dtype=np.int64)]
        )  # cum[k]: working minutes before k
        self.size = len(working)

    def minutes(self, at: datetime) -> int:
        return int((at - self.t0).total_seconds() // 60)

    def add_minutes(self, t: I64, work_minutes: I64) -> I64:
        """`add_working_hours`: the instant `work_minutes` of working time after `t`
        (ABSENT stays ABSENT, so a chain of steps needs no masks)."""
        valid = t != ABSENT
        safe = np.where(valid, t, 0)
        target = self.cum[safe] + np.maximum(work_minutes, 0)
        out = np.searchsorted(self.cum, target, side="left").astype(np.int64)
        out = np.minimum(np.where(work_minutes > 0, out, safe), self.size)  # size: beyond the window
        return np.where(valid, out, ABSENT)

    def add_days(self, t: I64, days: I64) -> I64:
        """`add_working_days`: the end of the `days`-th working day after t's local day."""
        valid = t != ABSENT
        day = np.searchsorted(self.day_start, np.where(valid, t, 0), side="right") - 1
        j = np.searchsorted(self.workdays, day, side="right") + days - 1
        end = self.day_end[self.workdays[np.minimum(j, len(self.workdays) - 1)]]
        return np.where(valid, np.where(j < len(self.workdays), end, self.size), ABSENT)

    def between(self, a: I64, b: I64) -> I64:
        """`working_hours_between` in minutes (0 when b is not after a, or either is ABSENT)."""
        ok = (a != ABSENT) & (b != ABSENT) & (b > a)
        return np.where(ok, self.cum[np.where(ok, b, 0)] - self.cum[np.where(ok, a, 0)], 0)

    def local_day(self, t: I64) -> I64:
        return np.searchsorted(self.day_start, t, side="right") - 1


# ---- what the generator reads from the database ----------------------------------------------


@dataclass
class _Jurisdiction:
    grid_ids: I64
    grid_paths: list[str]
    village_ids: I64
    township_ids: I64
    county_ids: I64
    county_prefix: list[str]  # per grid: the county code's first six digits
    village_names: list[str]
    geometries: Any
    worker_ids: I64  # per grid: the first assigned grid worker (0: none)
    worker_names: dict[int, str]
    orgs: dict[tuple[int, str, str | None], int]
    org_codes: dict[int, str]


def _load_jurisdiction(session: Session) -> _Jurisdiction:
    rows = session.execute(select(Region.id, Region.parent_id, Region.level, Region.code, Region.name)).all()
    parent: dict[int, int] = {r[0]: r[1] or 0 for r in rows}
    code = {r[0]: r[3] for r in rows}
    name = {r[0]: r[4] for r in rows}
    grids = session.execute(
        select(Region.id, Region.path, Region.geometry)
        .where(Region.level == RegionLevel.grid, Region.geometry.is_not(None))
        .order_by(Region.code)
    ).all()
    if not grids:
        raise Invalid(
            "Load a jurisdiction first (civicgrid demo load): there are no grids to place events in."
        )
    gid = [g[0] for g in grids]
    vid = [parent[g] for g in gid]
    tid = [parent[v] for v in vid]
    cid = [parent[t] for t in tid]
    workers = dict(
        session.execute(
            select(GridAssignment.grid_id, func.min(GridAssignment.user_id)).group_by(GridAssignment.grid_id)
        ).all()
    )
    worker_names = (
        dict(session.execute(select(User.id, User.username).where(User.id.in_(set(workers.values())))).all())
        if workers
        else {}
    )
    orgs: dict[tuple[int, str, str | None], int] = {}
    org_codes: dict[int, str] = {}
    for oid, region_id, kind, platform, ocode in session.execute(
        select(Org.id, Org.region_id, Org.kind, Org.platform, Org.code)
        .where(Org.active.is_(True))
        .order_by(Org.id)
    ):
        orgs.setdefault((region_id, str(kind), str(platform) if platform else None), oid)
        org_codes[oid] = ocode
    return _Jurisdiction(
        grid_ids=np.array(gid, dtype=np.int64),
        grid_paths=[g[1] for g in grids],
        village_ids=np.array(vid, dtype=np.int64),
        township_ids=np.array(tid, dtype=np.int64),
        county_ids=np.array(cid, dtype=np.int64),
        county_prefix=[code[c][:6] for c in cid],
        village_names=[name[v] for v in vid],
        geometries=shapely.from_geojson([g[2] for g in grids]),
        worker_ids=np.array([workers.get(g, 0) for g in gid], dtype=np.int64),
        worker_names=worker_names,
        orgs=orgs,
        org_codes=org_codes,
    )


@dataclass
class _Catalogue:
    ids: I64
    codes: list[str]
    names: list[str]
    class_codes: list[str]
    platforms: list[str]
    rules: list[str]  # JSON, as service.rules_of writes it
    weights: F64
    accept_minutes: I64
    handle_minutes: I64  # 0 when the deadline is in days
    handle_days: I64
    verify_minutes: I64
    village_start: BOOL
    by_owner: BOOL


def _load_catalogue(session: Session) -> _Catalogue:
    cats = [c for c in events.list_categories(session) if c.parent_id is not None]
    if not cats:
        raise Invalid("The event catalogue has no sub-categories to report events in.")
    parents = {c.id: c.code for c in session.scalars(select(Category).where(Category.parent_id.is_(None)))}
    weights = []
    for c in cats:
        cls = parents.get(c.parent_id or 0, c.code[:2])
        siblings = sorted(x.code for x in cats if x.parent_id == c.parent_id)
        rank = siblings.index(c.code)
        weights.append(
            CLASS_WEIGHTS.get(cls, 3.0) * SEVERITY_WEIGHTS.get(str(c.severity), 0.5) / (1 + 0.35 * rank)
        )
    w = np.array(weights)
    rules = [events.rules_of(c) for c in cats]
    return _Catalogue(
        ids=np.array([c.id for c in cats], dtype=np.int64),
        codes=[c.code for c in cats],
        names=[c.name for c in cats],
        class_codes=[parents.get(c.parent_id or 0, c.code[:2]) for c in cats],
        platforms=[str(c.platform) for c in cats],
        rules=[json.dumps(r, ensure_ascii=False) for r in rules],
        weights=w / w.sum(),
        accept_minutes=np.array([round(r["accept_hours"] * 60) for r in rules], dtype=np.int64),
        handle_minutes=np.array(
            [round(r["handle_amount"] * 60) if r["handle_unit"] == "hours" else 0 for r in rules],
            dtype=np.int64,
        ),
        handle_days=np.array(
            [int(np.ceil(r["handle_amount"])) if r["handle_unit"] == "days" else 0 for r in rules],
            dtype=np.int64,
        ),
        verify_minutes=np.array([round(r["verify_hours"] * 60) for r in rules], dtype=np.int64),
        village_start=np.array([r["start_level"] == Level.village for r in rules]),
        by_owner=np.array([r["responsibility"] == Responsibility.owner for r in rules]),
    )


# ---- the plan ------------------------------------------------------------------------------

# Workflow steps in the order they happen; an event takes a subset of them.
STEPS = (
    # name, timeline action, from state, to state
    ("report", "report", None, State.reported),
    ("reject", "reject", State.reported, State.rejected),
    ("merge", "merge", State.reported, State.merged),
    ("accept", "accept", State.reported, State.accepted),
    ("escalate1", "escalate", State.accepted, State.accepted),
    ("escalate2", "escalate", State.accepted, State.accepted),
    ("dispatch1", "dispatch", State.accepted, State.dispatched),
    ("return", "return", State.dispatched, State.accepted),
    ("dispatch2", "dispatch", State.accepted, State.dispatched),
    ("start", "start", State.dispatched, State.handling),
    ("suspend", "suspend", State.handling, State.suspended),
    ("handle1", "handle", State.handling, State.handled),
    ("fail", "verify", State.handled, State.handling),
    ("handle2", "handle", State.handling, State.handled),
    ("verify", "verify", State.handled, State.verified),
    ("close", "close", State.verified, State.closed),
    ("rate", "rate", State.closed, State.rated),
    ("archive", "archive", State.rated, State.archived),  # from_state fixed up for unrated events
)
STEP_INDEX = {s[0]: i for i, s in enumerate(STEPS)}
STATE_CODES = list(State)


@dataclass
class _Plan:
    n: int
    now: int
    steps: dict[str, I64] = field(default_factory=dict)  # minute of each step, ABSENT when not taken
    cols: dict[str, Any] = field(default_factory=dict)


def _draw_points(rng: np.random.Generator, geoms: Any, grid_of: I64, n_grids: int) -> tuple[F64, F64]:
    """A uniform point inside each event's grid (rejection sampling in the grid's bounds)."""
    lon = np.empty(len(grid_of))
    lat = np.empty(len(grid_of))
    order = np.argsort(grid_of, kind="stable")
    bounds = np.searchsorted(grid_of[order], np.arange(n_grids + 1))
    for g in range(n_grids):
        idx = order[bounds[g] : bounds[g + 1]]
        if not len(idx):
            continue
        geom = geoms[g]
        x0, y0, x1, y1 = geom.bounds
        got_x: list[F64] = []
        got_y: list[F64] = []
        need = len(idx)
        for _ in range(100):
            k = max(16, int(need * 2.2))
            xs = rng.uniform(x0, x1, k)
            ys = rng.uniform(y0, y1, k)
            inside = shapely.contains_xy(geom, xs, ys)
            got_x.append(xs[inside][:need])
            got_y.append(ys[inside][:need])
            need -= int(min(inside.sum(), need))
            if need == 0:
                break
        else:
            c = geom.representative_point()
            got_x.append(np.full(need, c.x))
            got_y.append(np.full(need, c.y))
        lon[idx] = np.concatenate(got_x)
        lat[idx] = np.concatenate(got_y)
    return np.round(lon, 6), np.round(lat, 6)


def _report_minutes(rng: np.random.Generator, mc: MinuteClock, start: int, end: int, n: int) -> I64:
    """Mostly inside working hours (patrols, office calls); a fifth at any time from 07:00 to 22:00."""
    out = np.empty(n, dtype=np.int64)
    in_hours = rng.random(n) < 0.8
    k = int(in_hours.sum())
    lo, hi = mc.cum[start], mc.cum[end]
    if hi > lo:
        u = rng.integers(lo, hi, k)
        out[in_hours] = np.searchsorted(mc.cum, u, side="right") - 1  # the minute whose work count is u
    else:
        in_hours[:] = False
    rest = ~in_hours
    m = int(rest.sum())
    first_day = mc.local_day(np.array([start]))[0]
    last_day = mc.local_day(np.array([end - 1]))[0]
    day = rng.integers(first_day, last_day + 1, m)
    out[rest] = mc.day_start[day] + rng.integers(7 * 60, 22 * 60, m)
    return np.clip(out, start, end - 1)


def _plan(
    rng: np.random.Generator,
    mc: MinuteClock,
    jur: _Jurisdiction,
    cat: _Catalogue,
    n: int,
    now: int,
    days: int,
) -> _Plan:
    plan = _Plan(n=n, now=now)
    st = plan.steps
    n_grids = len(jur.grid_ids)

    # what, where, when
    category = rng.choice(len(cat.ids), size=n, p=cat.weights)
    activity = rng.lognormal(0.0, 0.6, n_grids)
    grid = rng.choice(n_grids, size=n, p=activity / activity.sum())
    reported = _report_minutes(rng, mc, max(now - days * 1440, 0), now, n)
    order = np.lexsort((grid, category, reported))  # ids grow with the report time
    category, grid, reported = category[order], grid[order], reported[order]
    lon, lat = _draw_points(rng, jur.geometries, grid, n_grids)

    # merges: a repeat report of the previous report of the same category within 72 hours
    by_cat = np.lexsort((np.arange(n), category))
    prev = np.full(n, -1, dtype=np.int64)
    same = category[by_cat][1:] == category[by_cat][:-1]
    prev[by_cat[1:][same]] = by_cat[:-1][same]
    safe_prev = np.maximum(prev, 0)
    candidate = (rng.random(n) < P_MERGE) & (prev >= 0) & (reported - reported[safe_prev] <= 72 * 60)
    reject = rng.random(n) < P_REJECT
    # do_merge takes only a target that is itself neither merged nor refused
    merge = candidate & ~candidate[safe_prev] & ~reject[safe_prev]
    reject &= ~merge
    target = np.where(merge, prev, -1)
    grid = np.where(merge, grid[safe_prev], grid)
    lon = np.where(merge, lon[safe_prev], lon)
    lat = np.where(merge, lat[safe_prev], lat)
    flows = ~(merge | reject)

    acc_min = cat.accept_minutes[category]
    frac = np.where(rng.random(n) < P_ACCEPT_LATE, rng.uniform(1.05, 3.0, n), rng.beta(1.5, 4.0, n))
    first_look = mc.add_minutes(reported, np.maximum(1, (frac * acc_min).astype(np.int64)))
    st["report"] = reported
    st["reject"] = np.where(reject, first_look, ABSENT)
    st["merge"] = np.where(merge, first_look, ABSENT)
    st["accept"] = np.where(flows, first_look, ABSENT)

    # levels: village-level categories may go up to the township, and on to the county; the
    # owner at each level falls back upward like service.owner_for when an office is missing
    table = _owner_table(jur)
    start_level = table[grid, np.where(cat.village_start[category], 0, 1), 1]
    esc1 = flows & (start_level < 2)
    esc1 &= np.where(start_level == 0, rng.random(n) < P_ESCALATE_VILLAGE, rng.random(n) < P_ESCALATE_COUNTY)
    level1 = table[grid, np.minimum(start_level + 1, 2), 1]
    esc2 = esc1 & (level1 < 2) & (rng.random(n) < P_ESCALATE_COUNTY / P_ESCALATE_VILLAGE)
    st["escalate1"] = np.where(esc1, mc.add_minutes(st["accept"], rng.integers(30, 480, n)), ABSENT)
    st["escalate2"] = np.where(esc2, mc.add_minutes(st["escalate1"], rng.integers(30, 480, n)), ABSENT)

    # routing: 先属地后属主, and a hand-back sends the event to the other candidate
    platform = np.array(cat.platforms, dtype=object)[category]
    t_ids = jur.township_ids[grid]
    c_ids = jur.county_ids[grid]
    station = np.array(
        [jur.orgs.get((int(t), "department", p), 0) for t, p in zip(t_ids, platform, strict=True)]
    )
    dept = np.array(
        [jur.orgs.get((int(c), "department", p), 0) for c, p in zip(c_ids, platform, strict=True)]
    )
    by_owner = cat.by_owner[category]
    first_lead = np.where(by_owner | (station == 0), dept, station)
    other = np.where(first_lead == station, dept, station)
    # no department for the platform in the county: the event waits, accepted, for a manual choice
    routed = flows & (first_lead != 0)
    last = np.where(esc2, st["escalate2"], np.where(esc1, st["escalate1"], st["accept"]))
    st["dispatch1"] = np.where(routed, mc.add_minutes(last, rng.integers(5, 90, n)), ABSENT)
    handback = routed & (rng.random(n) < P_HANDBACK) & (other != 0) & (other != first_lead)
    st["return"] = np.where(handback, mc.add_minutes(st["dispatch1"], rng.integers(30, 600, n)), ABSENT)
    st["dispatch2"] = np.where(handback, mc.add_minutes(st["return"], rng.integers(10, 240, n)), ABSENT)
    final_dispatch = np.where(handback, st["dispatch2"], st["dispatch1"])
    final_lead = np.where(handback, other, first_lead)

    def due_from(t: I64) -> I64:
        hours = cat.handle_minutes[category]
        by_hours = mc.add_minutes(t, np.maximum(hours, 1))
        by_days = mc.add_days(t, np.maximum(cat.handle_days[category], 1))
        return np.where(hours > 0, by_hours, by_days)

    due1 = due_from(st["dispatch1"])
    due2 = due_from(np.where(handback, st["dispatch2"], st["dispatch1"]))
    st["start"] = np.where(routed, mc.add_minutes(final_dispatch, rng.integers(5, 120, n)), ABSENT)

    # handling: most within the deadline, some late, a few very late
    allowed = mc.between(final_dispatch, due2)
    u = rng.random(n)
    frac = np.where(
        u < P_STUCK,
        rng.uniform(5, 40, n),
        np.where(u < P_LATE, rng.uniform(1.02, 2.5, n), rng.beta(2.0, 3.0, n) * 0.97),
    )
    need = np.maximum((frac * allowed).astype(np.int64), mc.between(final_dispatch, st["start"]) + 5)
    st["handle1"] = np.where(routed, mc.add_minutes(final_dispatch, need), ABSENT)
    rework = routed & (rng.random(n) < P_REWORK)
    st["fail"] = np.where(rework, mc.add_minutes(st["handle1"], rng.integers(30, 600, n)), ABSENT)
    due3 = due_from(np.where(rework, st["fail"], st["dispatch1"]))
    allowed3 = mc.between(st["fail"], due3)
    frac3 = np.where(rng.random(n) < P_LATE, rng.uniform(1.02, 2.0, n), rng.beta(2.0, 3.0, n) * 0.97)
    st["handle2"] = np.where(
        rework, mc.add_minutes(st["fail"], np.maximum(5, (frac3 * allowed3).astype(np.int64))), ABSENT
    )
    final_handle = np.where(rework, st["handle2"], st["handle1"])
    ver_min = cat.verify_minutes[category]
    st["verify"] = np.where(
        flows,
        mc.add_minutes(final_handle, (rng.beta(1.2, 3.0, n) * ver_min * 1.3 + 10).astype(np.int64)),
        ABSENT,
    )
    st["close"] = np.where(routed, mc.add_minutes(st["verify"], rng.integers(10, 300, n)), ABSENT)

    channel = rng.choice(len(CHANNELS), size=n, p=[c[1] for c in CHANNELS])
    reporter = np.where(channel == 0, jur.worker_ids[grid], 0)
    rated = routed & (reporter > 0) & (rng.random(n) < P_RATED)
    st["rate"] = np.where(rated, st["close"] + rng.integers(30, 3 * 1440, n), ABSENT)
    after = np.where(rated, np.maximum(st["rate"], st["close"]), st["close"])
    st["archive"] = np.where(routed, after + ARCHIVE_AFTER_DAYS * 1440 + rng.integers(0, 5 * 1440, n), ABSENT)

    # where the plan stands at `now`: steps after it have not happened (yet)
    for name in list(st):
        st[name] = np.where(st[name] <= now, st[name], ABSENT)
    done = {name: st[name] != ABSENT for name in st}
    # the chain is ordered in time, so a step happens only if every earlier step of its branch did
    handling_now = done["start"] & ~done["handle1"]
    suspend = handling_now & (rng.random(n) < P_SUSPENDED)
    st["suspend"] = np.where(
        suspend, st["start"] + (rng.random(n) * np.maximum(now - st["start"], 0)).astype(np.int64), ABSENT
    )
    done["suspend"] = suspend

    state_idx = np.zeros(n, dtype=np.int64)
    for name, _action, _frm, to in STEPS:
        state_idx = np.where(done[name], STATE_CODES.index(to), state_idx)
    state = np.array(STATE_CODES, dtype=object)[state_idx]

    lvl_names = np.array([Level.village, Level.township, Level.county], dtype=object)
    level1 = np.where(done["escalate1"], table[grid, np.minimum(start_level + 1, 2), 1], start_level)
    lvl_now = np.where(done["escalate2"], table[grid, np.minimum(level1 + 1, 2), 1], level1)
    owner = table[grid, lvl_now, 0]

    lead = np.where(done["dispatch1"], first_lead, 0)
    lead = np.where(done["return"], 0, lead)
    lead = np.where(done["dispatch2"], final_lead, lead)
    handle_due = np.where(done["dispatch1"], due1, ABSENT)
    handle_due = np.where(done["return"], ABSENT, handle_due)
    handle_due = np.where(done["dispatch2"], due2, handle_due)
    handle_due = np.where(done["fail"], due3, handle_due)
    dispatched_at = np.where(done["dispatch2"], st["dispatch2"], st["dispatch1"])
    handled_at = np.where(done["handle2"], st["handle2"], st["handle1"])
    verify_due = np.where(handled_at != ABSENT, mc.add_minutes(np.maximum(handled_at, 0), ver_min), ABSENT)
    closed = done["close"]
    handling_minutes = mc.between(reported, np.maximum(handled_at, 0))
    on_time = handled_at <= handle_due

    plan.cols = {
        "category": category,
        "grid": grid,
        "lon": lon,
        "lat": lat,
        "channel": channel,
        "reporter": reporter,
        "state": state,
        "level": lvl_names[lvl_now],
        "start_level": start_level,
        "level1": level1,
        "owner": owner,
        "first_owner": table[grid, start_level, 0],
        "owner1": table[grid, level1, 0],
        "lead": lead,
        "first_lead": first_lead,
        "final_lead": final_lead,
        "merge_target": target,
        "accept_due": mc.add_minutes(reported, acc_min),
        "handle_due": handle_due,
        "due1": due1,
        "due2": due2,
        "verify_due": verify_due,
        "dispatched_at": dispatched_at,
        "handled_at": handled_at,
        "handling_hours": np.where(closed, np.round(handling_minutes / 60.0, 2), np.nan),
        "closed_on_time": np.where(closed, on_time, False),
        "escalated_to_county": (lvl_now == 2) & done["escalate1"],
        "escalation_count": done["escalate1"].astype(np.int64) + done["escalate2"],
        "handback_count": done["return"].astype(np.int64),
        "rework_count": done["fail"].astype(np.int64),
        "rating": np.where(done["rate"], _ratings(rng, n, on_time, done["fail"]), 0),
        "suspend": suspend,
        "result": rng.integers(0, len(RESULTS), n),
        "reject_reason": rng.integers(0, len(REJECT_REASONS), n),
        "address_no": rng.integers(1, 300, n),
        "road": rng.integers(0, len(ROADS), n),
        "template": rng.integers(0, 3, n),
        "names": rng.integers(0, 1 << 30, n),
    }
    return plan


def _owner_table(jur: _Jurisdiction) -> I64:
    """Per grid and starting level (0 village, 1 township, 2 county): the owning org and its
    level, falling back upward like service.owner_for when an office is missing."""
    n = len(jur.grid_ids)
    out = np.zeros((n, 3, 2), dtype=np.int64)
    kinds = (OrgKind.village_committee, OrgKind.township_office, OrgKind.governance_centre)
    for g in range(n):
        regions = (int(jur.village_ids[g]), int(jur.township_ids[g]), int(jur.county_ids[g]))
        for start in range(3):
            for lv in range(start, 3):
                org = jur.orgs.get((regions[lv], str(kinds[lv]), None))
                if org:
                    out[g, start] = (org, lv)
                    break
            else:
                raise Invalid("No office is set up to receive events in {place}.", place=jur.village_names[g])
    return out


def _ratings(rng: np.random.Generator, n: int, on_time: BOOL, reworked: BOOL) -> I64:
    good = np.array([0.02, 0.03, 0.07, 0.18, 0.70])
    poor = np.array([0.10, 0.12, 0.23, 0.25, 0.30])
    u = rng.random(n)
    out_good = np.searchsorted(np.cumsum(good), u) + 1
    out_poor = np.searchsorted(np.cumsum(poor), u) + 1
    return np.minimum(np.where(on_time & ~reworked, out_good, out_poor), 5)


# ---- rows --------------------------------------------------------------------------------


def _stamps(mc: MinuteClock, minutes: I64, dialect: str) -> list[str | None]:
    """Timestamps as the database stores them (SQLite: SQLAlchemy's text form of UTC), None when absent."""
    base = np.datetime64(mc.t0.replace(tzinfo=None), "m")
    text_ = np.datetime_as_string(base + np.maximum(minutes, 0).astype("timedelta64[m]"), unit="s")
    text_ = np.char.replace(text_, "T", " ")
    # SQLite: SQLAlchemy's text form of the UTC time; PostgreSQL (and JSON): str(datetime).
    text_ = np.char.add(text_, ".000000" if dialect == "sqlite" else "+00:00")
    out = text_.astype(object)
    out[minutes == ABSENT] = None
    return list(out.tolist())


def _numbers(
    session: Session, mc: MinuteClock, prefixes: list[str], reported: I64
) -> tuple[list[str], list[tuple[str, date, int]]]:
    """Event numbers by the scheme of service.next_number (county code, local date, sequence),
    counted on from the sequences already handed out; returns the numbers and the new lasts."""
    offset_min = int(events.LOCAL_DAY_OFFSET.total_seconds() // 60)
    local = np.datetime64(mc.t0.replace(tzinfo=None), "m") + (reported + offset_min).astype("timedelta64[m]")
    days = local.astype("datetime64[D]")
    day_num = days.astype(np.int64)
    uniq = sorted(set(prefixes))
    lookup = {p: i for i, p in enumerate(uniq)}
    p_idx = np.array([lookup[p] for p in prefixes], dtype=np.int64)
    key = p_idx * 1_000_000 + (day_num - day_num.min())
    order = np.argsort(key, kind="stable")  # ties keep the report order
    sorted_key = key[order]
    starts = np.r_[0, np.flatnonzero(sorted_key[1:] != sorted_key[:-1]) + 1]
    counts = np.diff(np.r_[starts, len(key)])
    seq = np.empty(len(key), dtype=np.int64)
    seq[order] = np.arange(len(key)) - np.repeat(starts, counts) + 1
    epoch = date(1970, 1, 1)
    existing = dict(
        ((p, d), last)
        for p, d, last in session.execute(
            select(EventSequence.prefix, EventSequence.day, EventSequence.last).where(
                EventSequence.prefix.in_(uniq),
                EventSequence.day.between(
                    epoch + timedelta(days=int(day_num.min())), epoch + timedelta(days=int(day_num.max()))
                ),
            )
        )
    )
    lasts: list[tuple[str, date, int]] = []
    for start, c in zip(starts.tolist(), counts.tolist(), strict=True):
        i = int(order[start])
        prefix, day = uniq[int(p_idx[i])], epoch + timedelta(days=int(day_num[i]))
        before = existing.get((prefix, day), 0)
        if before:
            seq[order[start : start + c]] += before
        lasts.append((prefix, day, before + c))
    day_text = np.char.replace(np.datetime_as_string(days, unit="D"), "-", "").tolist()
    numbers = [f"{p}-{d}-{q:05d}" for p, d, q in zip(prefixes, day_text, seq.tolist(), strict=True)]
    return numbers, lasts


def _chunks(n: int, size: int = BATCH) -> Iterator[slice]:
    for start in range(0, n, size):
        yield slice(start, min(start + size, n))


def _insert(session: Session, table: str, columns: Sequence[str], rows: list[tuple[Any, ...]]) -> None:
    """Rows already in the database's form: COPY on PostgreSQL (about ten times faster than
    executemany there), driver-level executemany on SQLite."""
    conn = session.connection()
    names = ", ".join(columns)
    if conn.dialect.name == "postgresql":
        raw = conn.connection.driver_connection
        with raw.cursor() as cur, cur.copy(f"COPY {table} ({names}) FROM STDIN") as copy:  # type: ignore[union-attr]
            for row in rows:
                copy.write_row(row)
        return
    marks = ", ".join("?" * len(columns))
    conn.exec_driver_sql(f"INSERT INTO {table} ({names}) VALUES ({marks})", rows)


@dataclass(frozen=True)
class GenerationReport:
    count: int
    timeline_entries: int
    by_state: dict[str, int]
    first_number: str
    last_number: str
    seconds: float


def generate_events(
    session: Session,
    *,
    count: int,
    seed: int = 2021,
    days: int = 365,
    now: datetime | None = None,
    actor: Actor = SYSTEM,
) -> GenerationReport:
    """Generate `count` demo events reported over the last `days` days, in the caller's
    transaction. Needs a loaded jurisdiction; seeds the catalogue when it is empty. The same
    seed, `now` and database give the same events."""
    started = clock.perf_counter()
    if not 1 <= count <= MAX_COUNT:
        raise Invalid("The count must be between 1 and {max}.", max=MAX_COUNT, field="count")
    if not 1 <= days <= MAX_DAYS:
        raise Invalid("The number of days must be between 1 and {max}.", max=MAX_DAYS, field="days")
    now = (now or utcnow()).astimezone(UTC).replace(second=0, microsecond=0)
    dialect = session.get_bind().dialect.name
    if dialect == "postgresql":
        # Explicit ids and precomputed numbers: no other writer may add events meanwhile.
        session.execute(text("LOCK TABLE event, event_sequence IN SHARE ROW EXCLUSIVE MODE"))
    jur = _load_jurisdiction(session)
    events.seed_catalogue(session, actor)
    cat = _load_catalogue(session)
    mc = MinuteClock(default_calendar(), now - timedelta(days=days), now + timedelta(days=HORIZON_DAYS))
    rng = np.random.default_rng([seed, 3])
    plan = _plan(rng, mc, jur, cat, count, mc.minutes(now), days)
    base_id = (session.scalar(select(func.max(Event.id))) or 0) + 1
    cols = plan.cols
    grid = cols["grid"]
    prefixes = [jur.county_prefix[g] for g in grid.tolist()]
    numbers, lasts = _numbers(session, mc, prefixes, plan.steps["report"])
    rebuild = dialect == "sqlite" and count >= REBUILD_INDEXES_FROM
    if dialect == "sqlite":
        # Twenty indexes on the event table: random inserts need more than the default 2 MB cache.
        cache = session.connection().exec_driver_sql("PRAGMA cache_size").scalar()
        session.connection().exec_driver_sql("PRAGMA cache_size=-262144")
    indexes = _drop_indexes(session) if rebuild else []
    try:
        n_entries = _write_events(session, jur, cat, mc, plan, base_id, numbers, dialect, seed)
        for sql in indexes:
            session.connection().exec_driver_sql(sql)
    finally:
        if dialect == "sqlite":
            session.connection().exec_driver_sql(f"PRAGMA cache_size={int(cache or -2000)}")
    _write_sequences(session, lasts)
    if dialect == "postgresql":
        session.execute(
            text("SELECT setval(pg_get_serial_sequence('event', 'id'), (SELECT max(id) FROM event))")
        )
    session.execute(text("ANALYZE"))  # the planner needs to know the tables grew
    by_state = {
        str(s): int(c) for s, c in zip(*np.unique(cols["state"].astype(str), return_counts=True), strict=True)
    }
    audit.record(
        session,
        actor,
        "event.bulk_generate",
        "event",
        f"{numbers[0]}…{numbers[-1]}",
        extra={"count": count, "seed": seed, "days": days, "now": now.isoformat(), "timeline": n_entries,
               "by_state": by_state},
    )  # fmt: skip
    return GenerationReport(
        count=count,
        timeline_entries=n_entries,
        by_state=by_state,
        first_number=numbers[0],
        last_number=numbers[-1],
        seconds=round(clock.perf_counter() - started, 2),
    )


def _drop_indexes(session: Session) -> list[str]:
    """SQLite: drop the event and timeline indexes for a big bulk insert and return how to
    build them again (sorted builds beat a million random inserts into twenty b-trees). DDL is
    transactional there: other readers keep the old snapshot, indexes included, until commit."""
    conn = session.connection()
    rows = conn.exec_driver_sql(
        "SELECT name, sql FROM sqlite_master WHERE type = 'index' AND sql IS NOT NULL"
        " AND tbl_name IN ('event', 'event_timeline')"
    ).all()
    for name, _sql in rows:
        conn.exec_driver_sql(f'DROP INDEX "{name}"')
    return [sql for _name, sql in rows]


def _write_sequences(session: Session, lasts: list[tuple[str, date, int]]) -> None:
    from sqlalchemy.dialects.postgresql import insert as pg_insert
    from sqlalchemy.dialects.sqlite import insert as sqlite_insert

    dialect = session.get_bind().dialect.name
    ins = pg_insert(EventSequence) if dialect == "postgresql" else sqlite_insert(EventSequence)
    # This transaction now holds the counters' row locks: later numbers must be taken in it too.
    session.info[events.NUMBERS_IN_TRANSACTION] = True
    for part in _chunks(len(lasts), 1000):
        rows = [{"prefix": p, "day": d, "last": last} for p, d, last in lasts[part]]
        stmt = ins.values(rows)
        session.execute(
            stmt.on_conflict_do_update(index_elements=["prefix", "day"], set_={"last": stmt.excluded.last})
        )


EVENT_COLUMNS = (
    "id", "number", "category_id", "platform", "rules", "title", "description", "address", "lon", "lat",
    "grid_id", "village_id", "township_id", "county_id", "region_path", "channel", "reporter_user_id",
    "reporter_name", "reporter_phone", "external_id", "state", "state_before_suspend", "level",
    "owner_org_id", "lead_org_id", "merged_into_id", "duplicate_of_id", "reject_reason", "reject_basis",
    "redirect_to", "result", "reported_at", "accept_due_at", "handle_due_at", "verify_due_at", "accepted_at",
    "dispatched_at", "handled_at", "verified_at", "closed_at", "archived_at", "extension_requested_hours",
    "extension_reason", "rework_count", "handback_count", "escalation_count", "supervision_count", "rating",
    "rating_comment", "handling_hours", "closed_on_time", "escalated_to_county", "notices", "version",
    "created_at", "updated_at",
)  # fmt: skip
TIMELINE_COLUMNS = (
    "event_id", "seq", "at", "actor_user_id", "actor", "org_id", "action", "from_state", "to_state", "note",
    "data",
)  # fmt: skip
LEVEL_NAMES = ("village", "township", "county")
NOTICE_STAGES = (
    ("accept", {"reported"}, "accept_due"),
    ("handle", {"dispatched", "handling"}, "handle_due"),
    ("verify", {"handled"}, "verify_due"),
)


def _person(k: int) -> str:
    names = _names()
    surnames, given = names["surnames"], names["given"]
    out = surnames[k % len(surnames)] + given[(k >> 5) % len(given)]
    return out + given[(k >> 11) % len(given)] if k & 1 else out


def _write_events(
    session: Session,
    jur: _Jurisdiction,
    cat: _Catalogue,
    mc: MinuteClock,
    plan: _Plan,
    base_id: int,
    numbers: list[str],
    dialect: str,
    seed: int,
) -> int:
    if set(EVENT_COLUMNS) != {c.name for c in Event.__table__.columns}:
        raise RuntimeError("demo.events.EVENT_COLUMNS is out of date with the event table")
    st = plan.steps
    done = {name: st[name] != ABSENT for name in st}
    n_steps = sum(done[s[0]].astype(np.int64) for s in STEPS)
    last_step = np.max(np.stack([st[s[0]] for s in STEPS]), axis=0)
    written = 0
    for part in _chunks(plan.n):
        ids = np.arange(part.start, part.stop, dtype=np.int64) + base_id
        rows = _event_rows(jur, cat, mc, plan, part, ids, numbers, dialect, n_steps, last_step, base_id)
        _insert(session, "event", EVENT_COLUMNS, rows)
        entries = _timeline_rows(jur, cat, mc, plan, part, ids, numbers, dialect, base_id)
        _insert(session, "event_timeline", TIMELINE_COLUMNS, entries)
        written += len(entries)
    return written


def _event_rows(
    jur: _Jurisdiction,
    cat: _Catalogue,
    mc: MinuteClock,
    plan: _Plan,
    part: slice,
    ids: I64,
    numbers: list[str],
    dialect: str,
    n_steps: I64,
    last_step: I64,
    base_id: int,
) -> list[tuple[Any, ...]]:
    c = {k: (v[part] if isinstance(v, np.ndarray) else v) for k, v in plan.cols.items()}
    st = {k: v[part] for k, v in plan.steps.items()}
    grid, category = c["grid"].tolist(), c["category"].tolist()
    stamp = {
        "reported_at": st["report"],
        "accept_due_at": c["accept_due"],
        "handle_due_at": c["handle_due"],
        "verify_due_at": c["verify_due"],
        "accepted_at": st["accept"],
        "dispatched_at": c["dispatched_at"],
        "handled_at": c["handled_at"],
        "verified_at": st["verify"],
        "closed_at": st["close"],
        "archived_at": st["archive"],
        "updated_at": last_step[part],
    }
    s = {k: _stamps(mc, v, dialect) for k, v in stamp.items()}
    now = plan.now
    epoch_min = int(mc.t0.timestamp() // 60)
    out = []
    for j in range(part.stop - part.start):
        i = part.start + j
        g, k = grid[j], category[j]
        state = str(c["state"][j])
        channel = CHANNELS[int(c["channel"][j])][0]
        reporter = int(c["reporter"][j]) or None
        who = int(c["names"][j])
        name = _person(who) if reporter is None and channel != "risk" else ""
        phone = f"13{who % 10}{who % 99991:05d}{(who >> 7) % 1000:03d}" if channel == "hotline" else ""
        address = f"{jur.village_names[g]}{ROADS[int(c['road'][j])]}{int(c['address_no'][j])}号"
        description = DESCRIPTIONS.get(cat.class_codes[k], DESCRIPTIONS["01"])[int(c["template"][j])].format(
            addr=address, name=cat.names[k]
        )
        target = int(c["merge_target"][j])
        rejected = state == "rejected"
        reason = REJECT_REASONS[int(c["reject_reason"][j])] if rejected else ("", "", "")
        closed = st["close"][j] != ABSENT
        # Past deadlines of generated events count as already announced (deadlines.token's
        # form), so the deadline worker does not flood the inboxes with a year of history.
        notices = ""
        for stage, states, due in NOTICE_STAGES:
            if state in states and 0 <= c[due][j] < now:
                notices = f"{stage}:overdue@{epoch_min + int(c[due][j])}"
        lead = int(c["lead"][j]) or None
        rating = int(c["rating"][j]) or None
        out.append((
            int(ids[j]), numbers[i], int(cat.ids[k]), cat.platforms[k], cat.rules[k], description[:40],
            description, address, float(c["lon"][j]), float(c["lat"][j]), int(jur.grid_ids[g]),
            int(jur.village_ids[g]), int(jur.township_ids[g]), int(jur.county_ids[g]), jur.grid_paths[g],
            channel, reporter, name, phone, None, state, "handling" if state == "suspended" else None,
            str(c["level"][j]), int(c["owner"][j]), lead,
            base_id + target if target >= 0 else None, base_id + target if target >= 0 else None,
            reason[0], reason[1], reason[2],
            RESULTS[int(c["result"][j])] if c["handled_at"][j] != ABSENT else "",
            s["reported_at"][j], s["accept_due_at"][j], s["handle_due_at"][j], s["verify_due_at"][j],
            s["accepted_at"][j], s["dispatched_at"][j], s["handled_at"][j], s["verified_at"][j],
            s["closed_at"][j], s["archived_at"][j], None, "",
            int(c["rework_count"][j]), int(c["handback_count"][j]), int(c["escalation_count"][j]), 0,
            rating, "", float(c["handling_hours"][j]) if closed else None,
            bool(c["closed_on_time"][j]) if closed else None, bool(c["escalated_to_county"][j]), notices,
            int(n_steps[i]), s["reported_at"][j], s["updated_at"][j],
        ))  # fmt: skip
    return out


def _timeline_rows(
    jur: _Jurisdiction,
    cat: _Catalogue,
    mc: MinuteClock,
    plan: _Plan,
    part: slice,
    ids: I64,
    numbers: list[str],
    dialect: str,
    base_id: int,
) -> list[tuple[Any, ...]]:
    c = {k: (v[part] if isinstance(v, np.ndarray) else v) for k, v in plan.cols.items()}
    st = {k: v[part] for k, v in plan.steps.items()}
    seq = np.zeros(len(ids), dtype=np.int64)
    rows: list[tuple[Any, ...]] = []
    grid = c["grid"]
    worker = jur.worker_ids[grid]
    codes = jur.org_codes
    due1, due2 = _stamps(mc, c["due1"], "postgresql"), _stamps(mc, c["due2"], "postgresql")
    for name, action, frm, to in STEPS:
        mask = st[name] != ABSENT
        seq = seq + mask
        idx = np.flatnonzero(mask)
        if not len(idx):
            continue
        at = _stamps(mc, st[name][idx], dialect)
        for pos, j in enumerate(idx.tolist()):
            event_id = int(ids[j])
            user: int | None = None
            actor = ACTOR_NAME
            org: int | None = None
            note = ""
            data = "{}"
            frm_state = str(frm) if frm else None
            if name == "report":
                user = int(c["reporter"][j]) or None
                channel = CHANNELS[int(c["channel"][j])][0]
                actor = jur.worker_names.get(user or 0, channel)
                data = f'{{"channel": "{channel}", "generated": true}}'
            elif name in ("reject", "merge", "accept"):
                org = int(c["first_owner"][j])
                if name == "reject":
                    reason = REJECT_REASONS[int(c["reject_reason"][j])]
                    note = reason[0]
                    data = json.dumps({"basis": reason[1], "redirect_to": reason[2]}, ensure_ascii=False)
                elif name == "merge":
                    data = json.dumps({"into": numbers[int(c["merge_target"][j])]})
            elif name in ("escalate1", "escalate2"):
                frm_lv = int(c["start_level"][j] if name == "escalate1" else c["level1"][j])
                to_org = int(c["owner1"][j] if name == "escalate1" else c["owner"][j])
                org = int(c["first_owner"][j] if name == "escalate1" else c["owner1"][j])
                to_lv = LEVEL_NAMES[int(c["level1"][j])] if name == "escalate1" else str(c["level"][j])
                note = "超出本级处置能力，提请上级协调"
                data = json.dumps(
                    {"from_level": LEVEL_NAMES[frm_lv], "to_level": to_lv, "to_org": codes[to_org]}
                )
            elif name in ("dispatch1", "dispatch2"):
                org = int(c["owner"][j])
                lead = int(c["first_lead"][j] if name == "dispatch1" else c["final_lead"][j])
                due = due1[j] if name == "dispatch1" else due2[j]
                data = f'{{"lead": "{codes[lead]}", "assist": [], "due": "{due}"}}'
            elif name == "return":
                org = int(c["first_lead"][j])
                note = "不属于本单位职责，请重新派遣"
                data = f'{{"from_org": {org}}}'
            elif name in ("start", "handle1", "handle2"):
                org = int(c["final_lead"][j])
                if name != "start":
                    note = RESULTS[int(c["result"][j])]
            elif name == "suspend":
                org = int(c["owner"][j])
                note = "等待相关部门配合"
            elif name in ("fail", "verify"):
                user = int(c["reporter"][j]) or int(worker[j]) or None
                actor = jur.worker_names.get(user or 0, ACTOR_NAME)
                if name == "fail":
                    note = "复核未整改到位"
                data = '{"passed": true}' if name == "verify" else '{"passed": false}'
            elif name == "rate":
                user = int(c["reporter"][j])
                actor = jur.worker_names.get(user, ACTOR_NAME)
                data = f'{{"score": {int(c["rating"][j])}}}'
            else:  # close, archive
                org = int(c["owner"][j])
                if name == "archive" and st["rate"][j] == ABSENT:
                    frm_state = str(State.closed)
            rows.append(
                (event_id, int(seq[j]), at[pos], user, actor, org, action, frm_state, str(to), note, data)
            )
    return rows
