"""Mediation statistics: 调解成功率, 化解率, 回访满意率, average duration in working days and
镇村化解率 (target ≥ 90%), in total and per region, org, mediator, type, level or period — each
number defined in docs/metrics.md under its key.

The window and periods are the events statistics' (`events.stats.window`, `Period`); the cohort
is the disputes *registered* in the window (local dates, `Dispute.registered_day`), so every rate
of one answer is about the same cases and the groups of a breakdown add up to the total.
"""

from __future__ import annotations

import enum
from collections.abc import Iterable
from datetime import date, datetime
from typing import Any

from sqlalchemy import ColumnElement, and_, case, func, select
from sqlalchemy.orm import Session

from civicgrid.accounts.models import Org, User
from civicgrid.accounts.permissions import Permission
from civicgrid.core.auth import Actor
from civicgrid.core.db import utcnow
from civicgrid.core.errors import Invalid, PermissionDenied
from civicgrid.core.i18n import gettext
from civicgrid.disputes.models import (
    Dispute,
    DisputeType,
    FollowUp,
    Level,
    Outcome,
    Satisfaction,
)
from civicgrid.disputes.service import LEVEL_LABELS, OPEN_STATES, TYPE_LABELS
from civicgrid.events import stats as event_stats
from civicgrid.events.stats import Period, Window
from civicgrid.regions import service as regions
from civicgrid.regions.models import Region, RegionLevel

DOC = "docs/metrics.md"
LOCAL_RESOLUTION_TARGET = 0.9  # the seed: at least 90% settled at village and township level
AGREEMENTS = (Outcome.agreement_full, Outcome.agreement_partial)
LOCAL_LEVELS = (Level.village, Level.township)
SATISFIED = (Satisfaction.satisfied, Satisfaction.basically)


def N_(message: str) -> str:
    return message


METRICS: dict[str, str] = {
    "registered": N_("Disputes registered (受理数)"),
    "withdrawn": N_("Disputes withdrawn (撤回数)"),
    "concluded": N_("Disputes concluded (调结数)"),
    "agreed": N_("Disputes settled by agreement (调解成功数)"),
    "failed": N_("Mediations failed (调解不成数)"),
    "mediation_success_rate": N_("Mediation success rate (调解成功率)"),
    "resolution_rate": N_("Resolution rate (化解率)"),
    "resolved_locally": N_("Settled at village or township level (镇村化解数)"),
    "local_resolution_rate": N_("Village and township resolution rate (镇村化解率)"),
    "avg_duration_days": N_("Average duration, working days (平均调处时长)"),
    "level_ups": N_("Moves up a level (上移次数)"),
    "reopened": N_("Reopened after a breached agreement (反悔重启数)"),
    "follow_ups_done": N_("Follow-up calls made (回访数)"),
    "follow_ups_satisfied": N_("Follow-up calls satisfied (回访满意数)"),
    "follow_up_satisfaction_rate": N_("Follow-up satisfaction rate (回访满意率)"),
    "open_now": N_("Disputes open now (在调数)"),
    "follow_ups_overdue": N_("Follow-up calls overdue now (逾期未回访数)"),
}
COUNTS = (
    "registered",
    "withdrawn",
    "agreed",
    "failed",
    "resolved_locally",
    "duration_sum",
    "duration_n",
    "level_ups",
    "reopened",
    "follow_ups_done",
    "follow_ups_satisfied",
)


class Dimension(enum.StrEnum):
    region = "region"
    org = "org"
    mediator = "mediator"
    type = "type"
    level = "level"
    period = "period"


def definitions(keys: Iterable[str]) -> dict[str, dict[str, str]]:
    return {k: {"label": gettext(METRICS[k]), "doc": anchor(k)} for k in keys}


def anchor(key: str) -> str:
    """Where a metric is defined; prefixed, because events use some of the same keys."""
    return f"{DOC}#disputes-{key}"


def _ratio(a: float, b: float, digits: int = 4) -> float | None:
    return round(a / b, digits) if b else None


def rates(counts: dict[str, Any]) -> dict[str, Any]:
    """The metrics of one group from its sums (a rate is None when its denominator is 0)."""
    c = {k: int(counts.get(k) or 0) for k in COUNTS if k != "duration_sum"}
    concluded = c["agreed"] + c["failed"]
    return {
        "registered": c["registered"],
        "withdrawn": c["withdrawn"],
        "concluded": concluded,
        "agreed": c["agreed"],
        "failed": c["failed"],
        "mediation_success_rate": _ratio(c["agreed"], concluded),
        "resolution_rate": _ratio(c["agreed"], c["registered"] - c["withdrawn"]),
        "resolved_locally": c["resolved_locally"],
        "local_resolution_rate": _ratio(c["resolved_locally"], concluded),
        "avg_duration_days": _ratio(float(counts.get("duration_sum") or 0.0), c["duration_n"], 2),
        "level_ups": c["level_ups"],
        "reopened": c["reopened"],
        "follow_ups_done": c["follow_ups_done"],
        "follow_ups_satisfied": c["follow_ups_satisfied"],
        "follow_up_satisfaction_rate": _ratio(c["follow_ups_satisfied"], c["follow_ups_done"]),
    }


COHORT_KEYS = tuple(rates({}))


# ---- scope and filters ----------------------------------------------------------------------


def _require(actor: Actor) -> None:
    if not actor.can(Permission.disputes_read) and not (actor.via == "system" and actor.region_path == "/"):
        raise PermissionDenied("Your role does not allow this.")


def scope_of(session: Session, actor: Actor, code: str | None = None) -> tuple[Region | None, list[Any]]:
    """The reader's region (or `code` inside it) as equalities on the case's own region columns."""
    _require(actor)
    if code:
        region = regions.get_in_scope(session, actor, code)
    elif actor.region_id:
        region = regions.get(session, actor.region_id)
    else:
        return None, []
    level = RegionLevel(region.level)
    col = {
        RegionLevel.county: Dispute.county_id,
        RegionLevel.township: Dispute.township_id,
        RegionLevel.village: Dispute.village_id,
        RegionLevel.grid: Dispute.grid_id,
    }.get(level)
    if col is not None:
        return region, [col == region.id]
    if (
        region.parent_id is None
        and session.scalar(select(func.count(Region.id)).where(Region.parent_id.is_(None))) == 1
    ):
        return region, []
    return region, [Dispute.county_id.in_(select(Region.id).where(Region.parent_id == region.id))]


def filters(
    session: Session,
    *,
    type: DisputeType | None = None,
    org: str | None = None,
    mediator: str | None = None,
    level: Level | None = None,
) -> dict[str, Any]:
    """Type, handling org (code), lead mediator (username) and level; unknown names are a 422."""
    out: dict[str, Any] = {
        "type": type,
        "level": level,
        "org": None,
        "org_id": None,
        "mediator": None,
        "mediator_id": None,
    }
    if org:
        out["org_id"] = session.scalar(select(Org.id).where(Org.code == org))
        if out["org_id"] is None:
            raise Invalid("Unknown organisation {org}.", org=org, field="org")
        out["org"] = org
    if mediator:
        out["mediator_id"] = session.scalar(select(User.id).where(User.username == mediator))
        if out["mediator_id"] is None:
            raise Invalid("Unknown mediator {name}.", name=mediator, field="mediator")
        out["mediator"] = mediator
    return out


def _where(scope: list[Any], f: dict[str, Any], win: Window | None) -> list[ColumnElement[bool]]:
    """The scope, the filters and (unless None) the cohort: registered within the window."""
    out = list(scope)
    if win is not None:
        out += [Dispute.registered_day >= win.first, Dispute.registered_day <= win.last]
    if f.get("type"):
        out.append(Dispute.type == f["type"])
    if f.get("level"):
        out.append(Dispute.level == f["level"])
    if f.get("org_id"):
        out.append(Dispute.handling_org_id == f["org_id"])
    if f.get("mediator_id"):
        out.append(Dispute.lead_mediator_id == f["mediator_id"])
    return out


def _cohort_columns() -> list[Any]:
    agreed = Dispute.outcome.in_(AGREEMENTS)
    return [
        func.count().label("registered"),
        func.count(case((Dispute.outcome == Outcome.withdrawn, 1))).label("withdrawn"),
        func.count(case((agreed, 1))).label("agreed"),
        func.count(case((Dispute.outcome == Outcome.failed, 1))).label("failed"),
        func.count(case((and_(agreed, Dispute.resolved_level.in_(LOCAL_LEVELS)), 1))).label(
            "resolved_locally"
        ),
        func.sum(case((Dispute.outcome != Outcome.withdrawn, Dispute.duration_days))).label("duration_sum"),
        func.count(case((Dispute.outcome != Outcome.withdrawn, Dispute.duration_days))).label("duration_n"),
        func.coalesce(func.sum(Dispute.level_up_count), 0).label("level_ups"),
        func.count(case((Dispute.reopen_count > 0, 1))).label("reopened"),
    ]


def _follow_up_columns() -> list[Any]:
    return [
        func.count(FollowUp.done_at).label("follow_ups_done"),
        func.count(
            case((and_(FollowUp.done_at.is_not(None), FollowUp.satisfaction.in_(SATISFIED)), 1))
        ).label("follow_ups_satisfied"),
    ]


def _header(region: Region | None, win: Window, f: dict[str, Any], now: datetime) -> dict[str, Any]:
    return {
        "scope": {"code": region.code, "name": region.name, "level": str(region.level)} if region else None,
        "from": win.first.isoformat(),
        "to": win.last.isoformat(),
        "as_of": now.isoformat(),
        "filters": {
            "type": str(f["type"]) if f.get("type") else None,
            "level": str(f["level"]) if f.get("level") else None,
            "org": f.get("org"),
            "mediator": f.get("mediator"),
        },
    }


def summary(
    session: Session,
    actor: Actor,
    win: Window,
    f: dict[str, Any] | None = None,
    *,
    region: str | None = None,
    now: datetime | None = None,
) -> dict[str, Any]:
    """The cohort's metrics, plus the cases open now and the follow-up calls overdue now."""
    f = f or {}
    now = now or utcnow()
    reg, scope = scope_of(session, actor, region)
    where = _where(scope, f, win)
    counts = dict(session.execute(select(*_cohort_columns()).where(*where)).one()._mapping)
    fu = session.execute(
        select(*_follow_up_columns()).join(Dispute, Dispute.id == FollowUp.dispute_id).where(*where)
    ).one()
    counts.update(fu._mapping)
    metrics = rates(counts)
    base = _where(scope, f, None)
    metrics["open_now"] = int(
        session.scalar(select(func.count()).select_from(Dispute).where(*base, Dispute.state.in_(OPEN_STATES)))
        or 0
    )
    metrics["follow_ups_overdue"] = overdue_follow_ups(session, scope, now)
    return {
        **_header(reg, win, f, now),
        "metrics": metrics,
        "targets": {"local_resolution_rate": LOCAL_RESOLUTION_TARGET},
        "definitions": definitions([*COHORT_KEYS, "open_now", "follow_ups_overdue"]),
    }


def overdue_follow_ups(session: Session, scope: list[Any], now: datetime) -> int:
    today = event_stats.window(now=now).last
    return int(
        session.scalar(
            select(func.count())
            .select_from(FollowUp)
            .join(Dispute, Dispute.id == FollowUp.dispute_id)
            .where(*scope, FollowUp.done_at.is_(None), FollowUp.cancelled.is_(False), FollowUp.due_on < today)
        )
        or 0
    )


CHILD_COLUMN = {
    RegionLevel.city: Dispute.county_id,
    RegionLevel.county: Dispute.township_id,
    RegionLevel.township: Dispute.village_id,
    RegionLevel.village: Dispute.grid_id,
}


def breakdown(
    session: Session,
    actor: Actor,
    win: Window,
    dimension: Dimension,
    f: dict[str, Any] | None = None,
    *,
    parent: str | None = None,
    period: Period = Period.month,
    now: datetime | None = None,
) -> dict[str, Any]:
    """The cohort metrics per group; the groups partition the cohort, so they add up to the total."""
    f = f or {}
    now = now or utcnow()
    reg, scope = scope_of(session, actor, parent)
    where = _where(scope, f, win)
    names: dict[Any, tuple[str, str]] = {}
    if dimension == Dimension.region:
        region = reg or _single_root(session)
        level = RegionLevel(region.level)
        if level not in CHILD_COLUMN:
            raise Invalid("{region} is a grid: it has no smaller regions to compare.", region=region.code)
        key: Any = CHILD_COLUMN[level]
        for rid, code, name in session.execute(
            select(Region.id, Region.code, Region.name)
            .where(Region.parent_id == region.id)
            .order_by(Region.code)
        ):
            names[rid] = (code, name)
    elif dimension == Dimension.org:
        key = Dispute.handling_org_id
    elif dimension == Dimension.mediator:
        key = Dispute.lead_mediator_id
    elif dimension == Dimension.type:
        key = Dispute.type
        names = {str(t): (str(t), gettext(TYPE_LABELS[t])) for t in DisputeType}
    elif dimension == Dimension.level:
        key = Dispute.level
        names = {str(lv): (str(lv), gettext(LEVEL_LABELS[lv])) for lv in Level}
    else:
        key = Dispute.registered_day
        names = {b: (b, b) for b in event_stats._buckets(win, period)}
    rows: dict[Any, dict[str, Any]] = {}
    for r in session.execute(select(key.label("k"), *_cohort_columns()).where(*where).group_by(key)):
        rows[_key(r.k, dimension, period)] = _add(rows.get(_key(r.k, dimension, period)), dict(r._mapping))
    fu_stmt = (
        select(key.label("k"), *_follow_up_columns())
        .join(Dispute, Dispute.id == FollowUp.dispute_id)
        .where(*where)
        .group_by(key)
    )
    for r in session.execute(fu_stmt):
        rows[_key(r.k, dimension, period)] = _add(rows.get(_key(r.k, dimension, period)), dict(r._mapping))
    if dimension == Dimension.org:
        names = {
            oid: (code, name)
            for oid, code, name in session.execute(
                select(Org.id, Org.code, Org.name).where(Org.id.in_([k for k in rows if k]))
            )
        }
    elif dimension == Dimension.mediator:
        names = {
            uid: (username, name)
            for uid, username, name in session.execute(
                select(User.id, User.username, User.display_name).where(User.id.in_([k for k in rows if k]))
            )
        }
        if None in rows:
            names[None] = ("", gettext("No mediator yet"))
    groups = []
    for k, (code, name) in names.items():
        groups.append({"key": code, "name": name, "metrics": rates(rows.get(k, {}))})
    for k, counts in rows.items():
        if k not in names:
            groups.append({"key": str(k), "name": str(k), "metrics": rates(counts)})
    total: dict[str, Any] = {}
    for counts in rows.values():
        total = _add(total, counts)
    return {
        **_header(reg, win, f, now),
        "dimension": str(dimension),
        "period": str(period) if dimension == Dimension.period else None,
        "groups": groups,
        "total": rates(total),
        "targets": {"local_resolution_rate": LOCAL_RESOLUTION_TARGET},
        "definitions": definitions(COHORT_KEYS),
    }


def _key(k: Any, dimension: Dimension, period: Period) -> Any:
    if isinstance(k, enum.Enum):
        return k.value
    if dimension == Dimension.period:
        day = k if isinstance(k, date) else date.fromisoformat(str(k))
        return event_stats._label(day, period)
    return k


def _add(acc: dict[str, Any] | None, row: dict[str, Any]) -> dict[str, Any]:
    out = dict(acc or {})
    for k in COUNTS:
        if k in row:
            out[k] = (out.get(k) or 0) + (row[k] or 0)
    return out


def _single_root(session: Session) -> Region:
    roots = list(session.scalars(select(Region).where(Region.parent_id.is_(None)).limit(2)))
    if len(roots) != 1:
        raise Invalid("Choose the region to compare (parent).", field="parent")
    return roots[0]


def open_by_level(session: Session, actor: Actor, *, region: str | None = None) -> dict[str, int]:
    """Cases open now per level (village, township, county) in the reader's area."""
    _, scope = scope_of(session, actor, region)
    out = {str(lv): 0 for lv in Level}
    for lv, n in session.execute(
        select(Dispute.level, func.count())
        .where(*scope, Dispute.state.in_(OPEN_STATES))
        .group_by(Dispute.level)
    ):
        out[str(lv.value if isinstance(lv, enum.Enum) else lv)] = int(n)
    return out


def overdue_by_org(
    session: Session, actor: Actor, *, region: str | None = None, now: datetime | None = None
) -> list[dict[str, Any]]:
    """Follow-up calls overdue now, per calling org, most first."""
    now = now or utcnow()
    _, scope = scope_of(session, actor, region)
    today = event_stats.window(now=now).last
    rows = session.execute(
        select(Org.code, Org.name, func.count(), func.min(FollowUp.due_on))
        .select_from(FollowUp)
        .join(Dispute, Dispute.id == FollowUp.dispute_id)
        .join(Org, Org.id == FollowUp.org_id)
        .where(*scope, FollowUp.done_at.is_(None), FollowUp.cancelled.is_(False), FollowUp.due_on < today)
        .group_by(Org.code, Org.name)
    ).all()
    items: list[dict[str, Any]] = [
        {
            "org": code,
            "name": name,
            "overdue": int(n),
            "oldest_due": oldest,
            "days_late": (today - oldest).days,
        }
        for code, name, n, oldest in rows
    ]
    items.sort(key=lambda i: (-i["overdue"], i["org"]))
    return items
