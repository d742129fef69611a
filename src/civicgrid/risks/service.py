"""Rules of the risk loop: raising warnings (one open warning per rule and region, new evidence
attaches, a higher level upgrades), handling them (measures, spawned events, tasks for other
orgs, feedback and closing with a verdict), rules and their precision, and the worker jobs.

The evaluation of rules over events and data lives in `evaluate.py`; rule parameters in
`rules.py`. Every write happens in the caller's transaction; nothing here commits except the
worker jobs, which own their transactions.
"""

from __future__ import annotations

import json
import logging
import uuid
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, cast

from sqlalchemy import Select, Table, and_, bindparam, exists, func, or_, select, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from civicgrid.accounts.models import Org, OrgKind
from civicgrid.accounts.permissions import Permission, Role
from civicgrid.core import audit
from civicgrid.core.auth import SYSTEM, Actor
from civicgrid.core.calendar import local_today
from civicgrid.core.db import utcnow
from civicgrid.core.errors import Conflict, Invalid, NotFound, PermissionDenied
from civicgrid.core.i18n import gettext
from civicgrid.regions import service as regions
from civicgrid.regions.models import Region
from civicgrid.risks.models import (
    LEVEL_LABELS,
    LEVEL_RANK,
    RiskRule,
    TaskState,
    Verdict,
    Warning,
    WarningEntry,
    WarningEvidence,
    WarningLevel,
    WarningState,
    WarningTask,
)

P = Permission
log = logging.getLogger("civicgrid.risks")


def N_(message: str) -> str:
    """Marks a msgid for extraction; translated where it is shown."""
    return message


EVIDENCE_KINDS = ("event", "dispute", "data")
SOURCE_MAX = 16
TITLE_MAX = 200
TEXT_MAX = 5000

# Hours to handle a warning, by level. Red runs on the calendar clock (an emergency does not
# wait for Monday); the others on the assigned org's working time (core/calendar).
DEADLINE_HOURS = {
    WarningLevel.red: 4.0,
    WarningLevel.orange: 8.0,
    WarningLevel.yellow: 24.0,
    WarningLevel.blue: 40.0,
}
CALENDAR_LEVELS = {WarningLevel.red}

# Spelled out so the translation extractor sees each one.
LEVEL_NAMES_ZH = {
    "红": WarningLevel.red,
    "橙": WarningLevel.orange,
    "黄": WarningLevel.yellow,
    "蓝": WarningLevel.blue,
}
RAISED_MESSAGES = {
    WarningLevel.red: N_("New red risk warning {number}: {title}"),
    WarningLevel.orange: N_("New orange risk warning {number}: {title}"),
    WarningLevel.yellow: N_("New yellow risk warning {number}: {title}"),
    WarningLevel.blue: N_("New blue risk warning {number}: {title}"),
}
UPGRADED_MESSAGES = {
    WarningLevel.red: N_("Risk warning {number} was upgraded to red: {title}"),
    WarningLevel.orange: N_("Risk warning {number} was upgraded to orange: {title}"),
    WarningLevel.yellow: N_("Risk warning {number} was upgraded to yellow: {title}"),
    WarningLevel.blue: N_("Risk warning {number} was upgraded to blue: {title}"),
}


def level_of(value: Any) -> WarningLevel:
    """A level from its code (red/orange/yellow/blue) or its Chinese name (红, 红色, 红色预警)."""
    text = str(value or "").strip()
    if text.lower() in WarningLevel.__members__:
        return WarningLevel(text.lower())
    if text[:1] in LEVEL_NAMES_ZH and text in (text[:1], text[:1] + "色", text[:1] + "色预警"):
        return LEVEL_NAMES_ZH[text[:1]]
    raise Invalid(
        "Unknown warning level {level}; use red, orange, yellow or blue (红/橙/黄/蓝).",
        level=text[:20],
        field="level",
    )


def level_label(level: WarningLevel | str) -> str:
    return gettext(LEVEL_LABELS[WarningLevel(level)])


def higher(a: WarningLevel, b: WarningLevel) -> WarningLevel:
    return a if LEVEL_RANK[a] >= LEVEL_RANK[b] else b


# ---- who handles and by when ----------------------------------------------------------------


def office_for(session: Session, region: Region) -> Org | None:
    """The org that handles a warning about `region` by default: the township's four-platform
    office for a township, village or grid; the county's governance centre for a county (and
    when the township has no office); for the city, its first county centre or bureau."""
    chain = [*regions.ancestors(session, region), region]
    by_level = {str(r.level): r for r in chain}
    tries: list[tuple[Region, OrgKind]] = []
    if "township" in by_level:
        tries.append((by_level["township"], OrgKind.township_office))
    if "county" in by_level:
        tries.append((by_level["county"], OrgKind.governance_centre))
    if "city" in by_level:
        tries += [(by_level["city"], OrgKind.governance_centre), (by_level["city"], OrgKind.bureau)]
    from civicgrid.accounts import service as accounts

    for r, kind in tries:
        org = accounts.find_org(session, r.id, kind)
        if org is not None:
            return org
    return None


def deadline_for(
    session: Session,
    org_id: int | None,
    level: WarningLevel,
    start: datetime,
    hours: dict[str, float] | None = None,
    clock: str | None = None,
) -> tuple[datetime, str]:
    """The handling deadline of a warning of `level` raised at `start`, and the clock it runs on."""
    from civicgrid.events import service as events

    h = float((hours or {}).get(str(level), DEADLINE_HOURS[level]))
    clock = clock or ("calendar" if level in CALENDAR_LEVELS else "working")
    if clock == "calendar":
        return start + timedelta(hours=h), clock
    return events.calendar_for(session, org_id).add_working_hours(start, h), clock


# ---- raising: one open warning per rule and region ---------------------------------------------


def dedup_key(source: str, rule_id: int | None, region_id: int) -> str | None:
    """What makes two raises the same warning while it is open. Manual raises never merge:
    a person raising a second warning means a second matter."""
    if rule_id is not None:
        return f"rule:{rule_id}:region:{region_id}"
    if source == "manual":
        return None
    return f"{source}:region:{region_id}"


def _local_day(at: datetime) -> str:
    from civicgrid.core.calendar import default_calendar

    return at.astimezone(default_calendar().tz).strftime("%Y%m%d")


def _entry(
    session: Session,
    warning: Warning,
    actor: Actor,
    action: str,
    note: str = "",
    data: dict[str, Any] | None = None,
) -> WarningEntry:
    e = WarningEntry(
        warning_id=warning.id,
        actor=actor.username,
        actor_user_id=actor.user_id or None,
        org_id=actor.org_id or None,
        action=action,
        note=note,
        data=json.dumps(data or {}, ensure_ascii=False, default=str),
    )
    session.add(e)
    return e


def _notify(session: Session, warning: Warning, key: str, message: str, org_id: int | None) -> None:
    if not org_id:
        return
    from civicgrid.events import service as events

    events.notify(
        session,
        f"risk:{warning.id}:{key}:org{org_id}",
        message=message,
        org_id=org_id,
        kind="risk_warning",
        number=warning.number,
        title=warning.title,
    )


def _insert_ignore(session: Session, rows: list[dict[str, Any]]) -> int:
    """Insert evidence rows, skipping ones already linked; returns how many were new."""
    if not rows:
        return 0
    dialect = session.get_bind().dialect.name
    ins = pg_insert(WarningEvidence) if dialect == "postgresql" else sqlite_insert(WarningEvidence)
    added = 0
    for chunk in _chunks(rows, 500):
        stmt = (
            ins.values(list(chunk))
            .on_conflict_do_nothing(index_elements=["warning_id", "kind", "ref_id"])
            .returning(WarningEvidence.id)  # rowcount is not reliable here; RETURNING lists inserted rows
        )
        added += len(session.execute(stmt).all())
    return added


def _clean_evidence(evidence: Iterable[tuple[str, int]]) -> list[tuple[str, int]]:
    out: set[tuple[str, int]] = set()
    for item in evidence:
        try:
            kind, ref = item
        except (TypeError, ValueError):
            raise Invalid("Evidence is a list of (kind, id) pairs.", field="evidence") from None
        if kind not in EVIDENCE_KINDS:
            raise Invalid(
                "Unknown evidence kind {kind}; use event, dispute or data.",
                kind=str(kind)[:20],
                field="evidence",
            )
        if isinstance(ref, bool) or not isinstance(ref, int) or ref <= 0:
            raise Invalid("Evidence ids are positive whole numbers.", field="evidence")
        out.add((kind, ref))
    return sorted(out)


def _check_events_exist(session: Session, actor: Actor, ids: Sequence[int]) -> None:
    if not ids:
        return
    from civicgrid.events import service as events
    from civicgrid.events.models import Event

    stmt = events.visible_stmt(actor) if not _is_system(actor) else select(Event)
    found = set(session.scalars(stmt.with_only_columns(Event.id).where(Event.id.in_(ids))))
    missing = sorted(set(ids) - found)
    if missing:
        raise Invalid("No event with id {id}.", id=missing[0], field="evidence")


def raise_warning(
    session: Session,
    *,
    actor: Actor,
    source: str,
    region_id: int,
    level: str,
    title: str,
    evidence: list[tuple[str, int]],
    rule_id: int | None = None,
) -> Warning:
    """Raise a warning, or add to the open one: while a warning of the same rule (or, without a
    rule, the same machine source) and region is open, new evidence attaches to it and a higher
    level upgrades it (never down). Manual raises (source "manual") need `risks.raise` and a
    region in the actor's scope; other capabilities (e.g. "disputes") are trusted callers.

    Evidence: ("event", event id), ("dispute", dispute id), ("data", risk_data_row id).
    With a rule, evidence that a closed warning of that rule and region already covers does not
    raise a new warning (the re-evaluation of old findings is idempotent); the covering closed
    warning is returned then."""
    source = (source or "").strip()
    if not source or len(source) > SOURCE_MAX:
        raise Invalid("The source of a warning is a short name such as manual or disputes.", field="source")
    lvl = level_of(level)
    title = (title or "").strip()
    if not title:
        raise Invalid("Give the warning a title.", field="title")
    if len(title) > TITLE_MAX:
        raise Invalid("The title is longer than {max} characters.", max=TITLE_MAX, field="title")
    items = _clean_evidence(evidence)
    region = session.get(Region, region_id) if isinstance(region_id, int) else None
    if region is None:
        raise Invalid("No region with this id.", field="region")
    if source == "manual":
        if not actor.can(P.risks_raise) and not _is_system(actor):
            raise PermissionDenied("Your role does not allow this.")
        if not actor.in_scope(region.path):
            raise NotFound("No region with code {region}.", region=region.code)
        _check_events_exist(session, actor, [i for k, i in items if k == "event"])
    rule = None
    if rule_id is not None:
        rule = session.get(RiskRule, rule_id)
        if rule is None:
            raise Invalid("No risk rule with id {id}.", id=rule_id, field="rule")
    warning = _raise(session, actor, source, region, lvl, title, items, rule)
    if warning is None:  # every piece of evidence is already covered by a closed warning
        covering = _covering_closed(session, rule_id, region.id, items)
        if covering is None:
            raise Conflict("This finding was already handled.")
        return covering
    return warning


def _covering_closed(
    session: Session, rule_id: int | None, region_id: int, items: Sequence[tuple[str, int]]
) -> Warning | None:
    stmt = (
        select(Warning)
        .where(
            Warning.rule_id == rule_id, Warning.region_id == region_id, Warning.state == WarningState.closed
        )
        .order_by(Warning.id.desc())
        .limit(1)
    )
    return session.scalar(stmt)


def _already_covered(
    session: Session, rule_id: int, region_id: int, items: Sequence[tuple[str, int]]
) -> bool:
    """True when every piece of evidence is linked to a closed warning of this rule and region."""
    if not items:
        return True
    covered: set[tuple[str, int]] = set()
    for kind in {k for k, _ in items}:
        ids = [i for k, i in items if k == kind]
        for chunk in _chunks(ids, 900):
            covered.update(
                (kind, ref)
                for ref in session.scalars(
                    select(WarningEvidence.ref_id)
                    .join(Warning, Warning.id == WarningEvidence.warning_id)
                    .where(
                        Warning.rule_id == rule_id,
                        Warning.region_id == region_id,
                        WarningEvidence.kind == kind,
                        WarningEvidence.ref_id.in_(chunk),
                    )
                )
            )
    return all(i in covered for i in items)


def _chunks(items: Sequence[Any], size: int) -> Iterable[Sequence[Any]]:
    for i in range(0, len(items), size):
        yield items[i : i + size]


def _open_for_update(session: Session, key: str) -> Warning | None:
    return session.scalar(
        select(Warning)
        .where(Warning.dedup_key == key, Warning.state != WarningState.closed)
        .with_for_update()
        .execution_options(populate_existing=True)
    )


def _raise(
    session: Session,
    actor: Actor,
    source: str,
    region: Region,
    level: WarningLevel,
    title: str,
    items: Sequence[tuple[str, int]],
    rule: RiskRule | None,
) -> Warning | None:
    """The dedup/upgrade core shared by raise_warning and the rule evaluation. Returns the open
    warning, or None when a rule's finding is already covered by closed warnings."""
    return _raise_status(session, actor, source, region, level, title, items, rule)[0]


def _raise_status(
    session: Session,
    actor: Actor,
    source: str,
    region: Region,
    level: WarningLevel,
    title: str,
    items: Sequence[tuple[str, int]],
    rule: RiskRule | None,
) -> tuple[Warning | None, str]:
    """`_raise` with what happened: "created", "updated", "unchanged" or "covered"."""
    key = dedup_key(source, rule.id if rule else None, region.id)
    now = utcnow()
    warning = _open_for_update(session, key) if key else None
    if warning is None:
        machine = rule is not None and rule.kind != "manual"
        if machine and rule is not None and _already_covered(session, rule.id, region.id, items):
            return None, "covered"
        try:
            with session.begin_nested():
                warning = _create(session, actor, source, region, level, title, items, rule, key, now)
            return warning, "created"
        except IntegrityError:
            # Another worker opened the same warning between our read and insert: join it.
            warning = _open_for_update(session, key) if key else None
            if warning is None:
                raise
    changed = _add_to(session, actor, warning, level, items, _rule_options(rule), now)
    return warning, "updated" if changed else "unchanged"


def _rule_options(rule: RiskRule | None) -> tuple[dict[str, float] | None, str | None]:
    if rule is None:
        return None, None
    params = json.loads(rule.params or "{}")
    return params.get("deadline_hours"), params.get("clock")


def _create(
    session: Session,
    actor: Actor,
    source: str,
    region: Region,
    level: WarningLevel,
    title: str,
    items: Sequence[tuple[str, int]],
    rule: RiskRule | None,
    key: str | None,
    now: datetime,
) -> Warning:
    org_id = rule.assign_org_id if rule and rule.assign_org_id else None
    if org_id is None:
        org = office_for(session, region)
        org_id = org.id if org else None
    hours, clock = _rule_options(rule)
    due, clock = deadline_for(session, org_id, level, now, hours, clock)
    warning = Warning(
        number=f"tmp-{uuid.uuid4().hex[:24]}",
        title=title,
        source="rule" if rule is not None else source,
        rule_id=rule.id if rule else None,
        region_id=region.id,
        region_path=region.path,
        level=level,
        state=WarningState.open,
        dedup_key=key,
        assigned_org_id=org_id,
        clock=clock,
        due_at=due,
        raised_at=now,
        raised_by=actor.username,
        raised_by_user_id=actor.user_id or None,
        last_evidence_at=now if items else None,
        evidence_count=len(items),
    )
    session.add(warning)
    session.flush()
    warning.number = f"YJ-{_local_day(now)}-{warning.id:05d}"
    _insert_ignore(session, [{"warning_id": warning.id, "kind": k, "ref_id": i} for k, i in items])
    _entry(
        session,
        warning,
        actor,
        "raise",
        data={"level": str(level), "source": warning.source, "evidence": len(items)},
    )
    session.flush()
    audit.record(
        session,
        actor,
        "warning.raise",
        "risk_warning",
        warning.number,
        after={
            "level": str(level),
            "source": warning.source,
            "rule": rule.id if rule else None,
            "region": region.code,
            "assigned_org": org_id,
            "evidence": len(items),
        },
    )
    _notify(session, warning, "raise", RAISED_MESSAGES[level], org_id)
    return warning


def _add_to(
    session: Session,
    actor: Actor,
    warning: Warning,
    level: WarningLevel,
    items: Sequence[tuple[str, int]],
    options: tuple[dict[str, float] | None, str | None],
    now: datetime,
    fresh: Sequence[tuple[str, int]] | None = None,
) -> bool:
    """Attach what is new and upgrade; False when nothing changed (nothing is written then).
    `fresh`: the evidence already known not to be linked (saves the read)."""
    if fresh is None:
        fresh = _not_linked(session, warning.id, items)
    added = _insert_ignore(session, [{"warning_id": warning.id, "kind": k, "ref_id": i} for k, i in fresh])
    upgraded = LEVEL_RANK[level] > LEVEL_RANK[warning.level]
    if not added and not upgraded:
        return False  # nothing new: idempotent re-evaluation writes nothing
    warning.updated_at = now
    if added:
        warning.evidence_count += added
        warning.last_evidence_at = now
        _entry(session, warning, actor, "evidence", data={"added": added})
    if upgraded:
        before = warning.level
        warning.level = level
        warning.upgraded_at = now
        hours, clock = options
        due, clock = deadline_for(session, warning.assigned_org_id, level, now, hours, clock)
        # A higher level can only shorten the time left, never extend it.
        if warning.due_at is None or due < warning.due_at:
            warning.due_at, warning.clock = due, clock
        _entry(session, warning, actor, "upgrade", data={"from": str(before), "to": str(level)})
        session.flush()
        audit.record(
            session,
            actor,
            "warning.upgrade",
            "risk_warning",
            warning.number,
            before={"level": str(before)},
            after={"level": str(level)},
        )
        _notify(session, warning, f"upgrade:{level}", UPGRADED_MESSAGES[level], warning.assigned_org_id)
    session.flush()
    return True


def _not_linked(session: Session, warning_id: int, items: Sequence[tuple[str, int]]) -> list[tuple[str, int]]:
    """The evidence not yet linked to the warning (read first, so a re-evaluation writes nothing)."""
    if not items:
        return []
    linked: set[tuple[str, int]] = set()
    for kind in {k for k, _ in items}:
        ids = [i for k, i in items if k == kind]
        for chunk in _chunks(ids, 900):
            linked.update(
                (kind, ref)
                for ref in session.scalars(
                    select(WarningEvidence.ref_id).where(
                        WarningEvidence.warning_id == warning_id,
                        WarningEvidence.kind == kind,
                        WarningEvidence.ref_id.in_(chunk),
                    )
                )
            )
    return [i for i in items if i not in linked]


# ---- scope and reading warnings ------------------------------------------------------------------


def _is_system(actor: Actor) -> bool:
    return actor.via == "system" and actor.user_id == 0


def _need(actor: Actor, permission: Permission) -> None:
    if not _is_system(actor) and not actor.can(permission):
        raise PermissionDenied("Your role does not allow this.")


def visible_stmt(actor: Actor) -> Select[Any]:
    """Warnings the actor may read: inside their region subtree, assigned to their org, or with a
    task for their org."""
    stmt = select(Warning)
    if _is_system(actor):
        return stmt
    tasked = exists().where(WarningTask.warning_id == Warning.id, WarningTask.org_id == actor.org_id)
    return stmt.where(
        or_(
            Warning.region_path.startswith(actor.region_path), Warning.assigned_org_id == actor.org_id, tasked
        )
    )


def get_warning(session: Session, actor: Actor, number: str) -> Warning:
    _need(actor, P.risks_read)
    warning = session.scalar(visible_stmt(actor).where(Warning.number == number))
    if warning is None:
        raise NotFound("No warning with number {number}.", number=number)
    return warning


def list_stmt(
    session: Session,
    actor: Actor,
    *,
    level: WarningLevel | None = None,
    state: WarningState | None = None,
    open_only: bool = False,
    region_code: str | None = None,
    rule_id: int | None = None,
    mine: bool = False,
) -> Select[Any]:
    """The warning board's list: newest first, filtered, inside the reader's scope."""
    _need(actor, P.risks_read)
    stmt = visible_stmt(actor)
    if level:
        stmt = stmt.where(Warning.level == level)
    if state:
        stmt = stmt.where(Warning.state == state)
    elif open_only:
        stmt = stmt.where(Warning.state != WarningState.closed)
    if region_code:
        region = regions.get_in_scope(session, actor, region_code)
        stmt = stmt.where(Warning.region_path.startswith(region.path))
    if rule_id is not None:
        stmt = stmt.where(Warning.rule_id == rule_id)
    if mine:
        stmt = stmt.where(Warning.assigned_org_id == actor.org_id)
    return stmt.order_by(Warning.id.desc())


@dataclass
class BoardCell:
    region: Region
    counts: dict[str, int]

    @property
    def total(self) -> int:
        return sum(self.counts.values())


def board(session: Session, actor: Actor, region_code: str | None = None) -> tuple[Region, list[BoardCell]]:
    """Open warnings by level for each child region of the shown region (default: the reader's)."""
    _need(actor, P.risks_read)
    region = (
        regions.get_in_scope(session, actor, region_code)
        if region_code
        else regions.get(session, actor.region_id)
    )
    children = list(
        session.scalars(select(Region).where(Region.parent_id == region.id).order_by(Region.code))
    )
    cells = []
    rows = session.execute(
        select(Warning.region_path, Warning.level, func.count())
        .where(Warning.state != WarningState.closed, Warning.region_path.startswith(region.path))
        .group_by(Warning.region_path, Warning.level)
    ).all()
    for child in [region, *children]:
        counts = {str(lv): 0 for lv in WarningLevel}
        for path, level, n in rows:
            if child is region:
                if path == region.path:  # warnings about the shown region itself
                    counts[str(level)] += n
            elif path.startswith(child.path):
                counts[str(level)] += n
        cells.append(BoardCell(child, counts))
    return region, cells


def open_counts(session: Session, actor: Actor) -> dict[str, int]:
    """Open warnings in the reader's scope by level."""
    rows = session.execute(
        visible_stmt(actor)
        .with_only_columns(Warning.level, func.count())
        .where(Warning.state != WarningState.closed)
        .group_by(Warning.level)
    ).all()
    out = {str(lv): 0 for lv in WarningLevel}
    out.update({str(lv): int(n) for lv, n in rows})
    return out


def evidence_of(session: Session, actor: Actor, warning: Warning, limit: int = 500) -> list[dict[str, Any]]:
    """The evidence as the reader may see it: events with number, title, time and place (only
    those the reader can read), disputes with their number, data rows with their values."""
    from civicgrid.events import service as events
    from civicgrid.events.models import Category, Event

    rows = session.execute(
        select(WarningEvidence.kind, WarningEvidence.ref_id, WarningEvidence.added_at)
        .where(WarningEvidence.warning_id == warning.id)
        .order_by(WarningEvidence.kind, WarningEvidence.ref_id.desc())
        .limit(limit)
    ).all()
    out: list[dict[str, Any]] = []
    event_ids = [r.ref_id for r in rows if r.kind == "event"]
    seen: dict[int, Any] = {}
    if event_ids:
        stmt = (
            (events.visible_stmt(actor) if not _is_system(actor) else select(Event))
            .with_only_columns(
                Event.id,
                Event.number,
                Event.title,
                Event.reported_at,
                Event.lon,
                Event.lat,
                Event.state,
                Event.address,
                Category.name.label("category"),
            )
            .join(Category, Category.id == Event.category_id)
            .where(Event.id.in_(event_ids))
        )
        seen = {r.id: r for r in session.execute(stmt)}
    dispute_numbers: dict[int, str] = {}
    dispute_ids = [r.ref_id for r in rows if r.kind == "dispute"]
    if dispute_ids:
        try:
            from civicgrid.disputes.models import Dispute

            dispute_numbers = {
                i: n
                for i, n in session.execute(
                    select(Dispute.id, Dispute.number).where(Dispute.id.in_(dispute_ids))
                )
            }
        except ImportError:
            pass
    data_rows: dict[int, Any] = {}
    data_ids = [r.ref_id for r in rows if r.kind == "data"]
    if data_ids:
        from civicgrid.risks.models import DataRow

        data_rows = {d.id: d for d in session.scalars(select(DataRow).where(DataRow.id.in_(data_ids)))}
    for r in rows:
        item: dict[str, Any] = {"kind": r.kind, "id": r.ref_id, "added_at": r.added_at}
        if r.kind == "event":
            e = seen.get(r.ref_id)
            if e is None:
                item["hidden"] = True
            else:
                item.update(
                    number=e.number,
                    title=e.title,
                    category=e.category,
                    at=e.reported_at,
                    lon=e.lon,
                    lat=e.lat,
                    state=str(e.state),
                    url=f"/events/{e.number}",
                )
        elif r.kind == "dispute":
            number = dispute_numbers.get(r.ref_id)
            item.update(number=number or f"#{r.ref_id}", url=f"/disputes/{number}" if number else "")
        else:
            d = data_rows.get(r.ref_id)
            item.update(values=json.loads(d.values) if d else {}, version=d.data_version if d else None)
        out.append(item)
    return out


def timeline(session: Session, warning: Warning) -> list[WarningEntry]:
    return list(
        session.scalars(
            select(WarningEntry).where(WarningEntry.warning_id == warning.id).order_by(WarningEntry.id)
        )
    )


def tasks_of(session: Session, warning: Warning) -> list[WarningTask]:
    return list(
        session.scalars(
            select(WarningTask).where(WarningTask.warning_id == warning.id).order_by(WarningTask.id)
        )
    )


# ---- handling: measures, spawned events, tasks, feedback ------------------------------------------


def can_handle(actor: Actor, warning: Warning) -> bool:
    """The assigned org's staff with risks.handle (or an admin in scope) act on a warning."""
    if warning.state == WarningState.closed or not actor.can(P.risks_handle):
        return False
    if actor.role == Role.admin and actor.in_scope(warning.region_path):
        return True
    return warning.assigned_org_id is not None and actor.org_id == warning.assigned_org_id


def _handler(session: Session, actor: Actor, number: str) -> Warning:
    warning = get_warning(session, actor, number)
    warning = (
        session.scalar(
            select(Warning)
            .where(Warning.id == warning.id)
            .with_for_update()
            .execution_options(populate_existing=True)
        )
        or warning
    )
    if warning.state == WarningState.closed:
        raise Invalid("Warning {number} is closed; nothing more can be done on it.", number=warning.number)
    _need(actor, P.risks_handle)
    if not can_handle(actor, warning):
        raise PermissionDenied(
            "Only the org assigned to warning {number} can do this.", number=warning.number
        )
    return warning


def _text(value: str | None, what: str, field: str, required: bool = True) -> str:
    text = (value or "").strip()
    if required and not text:
        raise Invalid("{what} is required.", what=gettext(what), field=field)
    if len(text) > TEXT_MAX:
        raise Invalid(
            "{what} is longer than {max} characters.", what=gettext(what), max=TEXT_MAX, field=field
        )
    return text


FIELD_MEASURE = N_("The measure taken")
FIELD_FEEDBACK = N_("What was done")
FIELD_OUTCOME = N_("The outcome")
FIELD_TASK = N_("The task")
FIELD_DESCRIPTION = N_("The description")
FIELD_RESULT = N_("The result")


def _touch(warning: Warning) -> None:
    warning.updated_at = utcnow()
    if warning.state == WarningState.open:
        warning.state = WarningState.handling


def record_measure(session: Session, actor: Actor, number: str, note: str) -> Warning:
    warning = _handler(session, actor, number)
    note = _text(note, FIELD_MEASURE, "note")
    _touch(warning)
    _entry(session, warning, actor, "measure", note=note)
    session.flush()
    audit.record(
        session, actor, "warning.measure", "risk_warning", warning.number, extra={"note": note[:200]}
    )
    return warning


def spawn_event(
    session: Session,
    actor: Actor,
    number: str,
    *,
    category_code: str,
    description: str,
    lon: float | None = None,
    lat: float | None = None,
    address: str = "",
) -> Any:
    """Create an event for the four platforms from a warning (channel `risk`), linked both ways:
    the event is evidence-free work, the warning's timeline names the event."""
    from civicgrid.events import service as events
    from civicgrid.events.models import Channel, Event

    warning = _handler(session, actor, number)
    description = _text(description, FIELD_DESCRIPTION, "description")
    if lon is None or lat is None:
        lon, lat = _default_point(session, warning)
    spawned = (
        session.scalar(
            select(func.count())
            .select_from(WarningEntry)
            .where(WarningEntry.warning_id == warning.id, WarningEntry.action == "event")
        )
        or 0
    )
    external_id = f"{warning.number}/{spawned + 1}"
    existing = events.find_by_external_id(session, Channel.risk, external_id)
    event: Event = existing or events.create_event(
        session,
        actor,
        category_code=category_code,
        lon=lon,
        lat=lat,
        description=description,
        address=address,
        title=f"[{warning.number}] {description[:40]}",
        channel=Channel.risk,
        external_id=external_id,
    )
    _touch(warning)
    _entry(
        session, warning, actor, "event", note=description, data={"event": event.number, "event_id": event.id}
    )
    session.flush()
    audit.record(
        session, actor, "warning.spawn_event", "risk_warning", warning.number, extra={"event": event.number}
    )
    return event


def _default_point(session: Session, warning: Warning) -> tuple[float, float]:
    """Where a spawned event is placed without a point: the newest evidence event, else the
    warning region's centre."""
    from civicgrid.events.models import Event

    row = session.execute(
        select(Event.lon, Event.lat)
        .join(WarningEvidence, and_(WarningEvidence.ref_id == Event.id, WarningEvidence.kind == "event"))
        .where(WarningEvidence.warning_id == warning.id)
        .order_by(Event.id.desc())
        .limit(1)
    ).first()
    if row is not None:
        return float(row.lon), float(row.lat)
    region = session.get(Region, warning.region_id)
    if region is None or region.centroid_lon is None or region.centroid_lat is None:
        raise Invalid("Give the place of the event (longitude and latitude).", field="lon")
    return float(region.centroid_lon), float(region.centroid_lat)


def create_task(
    session: Session,
    actor: Actor,
    number: str,
    *,
    org_code: str,
    description: str,
    due_hours: float | None = None,
) -> WarningTask:
    """Hand part of the work to another org; it sees the warning and must report back."""
    from civicgrid.accounts import service as accounts

    warning = _handler(session, actor, number)
    description = _text(description, FIELD_TASK, "description")
    try:
        org = accounts.get_org_by_code(session, (org_code or "").strip())
    except NotFound:
        raise Invalid("No organisation with code {code}.", code=(org_code or "")[:64], field="org") from None
    region = session.get(Region, org.region_id)
    if region is None or not (actor.in_scope(region.path) or region.path in warning.region_path):
        raise Invalid("No organisation with code {code}.", code=org.code, field="org")
    if org.id == warning.assigned_org_id:
        raise Invalid("The task must go to another organisation than the assigned one.", field="org")
    due = None
    if due_hours is not None:
        if not 0.25 <= due_hours <= 24 * 90:
            raise Invalid("The task's time limit must be between 0.25 and 2160 hours.", field="due_hours")
        from civicgrid.events import service as events

        due = events.calendar_for(session, org.id).add_working_hours(utcnow(), due_hours)
    task = WarningTask(
        warning_id=warning.id, org_id=org.id, description=description, due_at=due, created_by=actor.username
    )
    session.add(task)
    _touch(warning)
    session.flush()
    _entry(session, warning, actor, "task", note=description, data={"task": task.id, "org": org.code})
    audit.record(
        session,
        actor,
        "warning.task",
        "risk_warning",
        warning.number,
        extra={"task": task.id, "org": org.code},
    )
    _notify(
        session, warning, f"task{task.id}", N_("A task for you on risk warning {number}: {title}"), org.id
    )
    return task


def complete_task(session: Session, actor: Actor, task_id: int, result: str) -> WarningTask:
    """The tasked org reports what it did."""
    _need(actor, P.risks_handle)
    task = session.get(WarningTask, task_id)
    warning = session.get(Warning, task.warning_id) if task else None
    if (
        task is None
        or warning is None
        or session.scalar(visible_stmt(actor).where(Warning.id == warning.id)) is None
    ):
        raise NotFound("No task with this id.")
    if task.org_id != actor.org_id:
        raise PermissionDenied("Only the org given this task can report on it.")
    if task.state == TaskState.done:
        raise Invalid("This task is already done.")
    result = _text(result, FIELD_RESULT, "result")
    task.state, task.done_at, task.done_by, task.result = TaskState.done, utcnow(), actor.username, result
    _entry(session, warning, actor, "task_done", note=result, data={"task": task.id})
    session.flush()
    audit.record(session, actor, "warning.task_done", "risk_warning", warning.number, extra={"task": task.id})
    return task


def close_warning(
    session: Session, actor: Actor, number: str, *, feedback: str, outcome: str, verdict: str
) -> Warning:
    """Close the loop: what was done, what came of it, and whether the risk was real."""
    warning = _handler(session, actor, number)
    feedback = _text(feedback, FIELD_FEEDBACK, "feedback")
    outcome = _text(outcome, FIELD_OUTCOME, "outcome")
    try:
        v = Verdict(verdict)
    except ValueError:
        raise Invalid("Say whether the warning was a real risk or a false alarm.", field="verdict") from None
    pending = session.scalar(
        select(func.count())
        .select_from(WarningTask)
        .where(WarningTask.warning_id == warning.id, WarningTask.state == TaskState.open)
    )
    if pending:
        raise Invalid("{n} task(s) of this warning are still open; they must report back first.", n=pending)
    before = {"state": str(warning.state)}
    now = utcnow()
    warning.state = WarningState.closed
    warning.feedback, warning.outcome, warning.verdict = feedback, outcome, v
    warning.closed_at, warning.closed_by_user_id, warning.updated_at = now, actor.user_id or None, now
    _entry(session, warning, actor, "close", note=feedback, data={"outcome": outcome, "verdict": str(v)})
    session.flush()
    audit.record(
        session,
        actor,
        "warning.close",
        "risk_warning",
        warning.number,
        before=before,
        after={"state": "closed", "verdict": str(v)},
    )
    return warning


def available_steps(actor: Actor, warning: Warning) -> list[str]:
    return ["measure", "event", "task", "close"] if can_handle(actor, warning) else []


# ---- rules -----------------------------------------------------------------------------------------


def rules_stmt(actor: Actor) -> Select[Any]:
    stmt = select(RiskRule).order_by(RiskRule.active.desc(), RiskRule.id)
    if _is_system(actor):
        return stmt
    return stmt.where(RiskRule.region_path.startswith(actor.region_path))


def get_rule(session: Session, actor: Actor, rule_id: int) -> RiskRule:
    _need(actor, P.risks_read)
    rule = session.scalar(rules_stmt(actor).where(RiskRule.id == rule_id))
    if rule is None:
        raise NotFound("No risk rule with id {id}.", id=rule_id)
    return rule


def rule_dict(rule: RiskRule) -> dict[str, Any]:
    return {
        "name": rule.name,
        "description": rule.description,
        "kind": str(rule.kind),
        "params": json.loads(rule.params or "{}"),
        "region_id": rule.region_id,
        "assign_org_id": rule.assign_org_id,
        "active": rule.active,
    }


@dataclass
class RuleInput:
    """What the editor (page or API) sends; validated by `check_rule`."""

    name: str
    kind: str
    params: Any
    region_code: str
    description: str = ""
    assign_org_code: str = ""
    active: bool = True


def check_rule(
    session: Session, actor: Actor, data: RuleInput
) -> tuple[Any, Region, Org | None, dict[str, Any]]:
    """Validate a rule without writing: its spec, region (in the actor's scope) and org."""
    from civicgrid.accounts import service as accounts
    from civicgrid.risks import rules as rule_kinds

    name = (data.name or "").strip()
    if not name:
        raise Invalid("Give the rule a name.", field="name")
    if len(name) > 100:
        raise Invalid("The name is longer than {max} characters.", max=100, field="name")
    if len(data.description or "") > TEXT_MAX:
        raise Invalid("The description is longer than {max} characters.", max=TEXT_MAX, field="description")
    code = (data.region_code or "").strip()
    if not code:
        raise Invalid("Choose the region the rule watches.", field="region")
    try:
        region = (
            regions.get_in_scope(session, actor, code)
            if not _is_system(actor)
            else regions.get_by_code(session, code)
        )
    except NotFound:
        raise Invalid("No region with code {region}.", region=code[:24], field="region") from None
    raw = rule_kinds.load_json(data.params)
    spec = rule_kinds.parse(session, data.kind, raw, region, actor)
    org = None
    if data.assign_org_code:
        try:
            org = accounts.get_org_by_code(session, data.assign_org_code.strip())
        except NotFound:
            org = None
        org_region = session.get(Region, org.region_id) if org else None
        if org is None or org_region is None or not (actor.in_scope(org_region.path) or _is_system(actor)):
            raise Invalid(
                "No organisation with code {code}.", code=data.assign_org_code[:64], field="assign_org"
            )
    return spec, region, org, raw


def create_rule(session: Session, actor: Actor, data: RuleInput) -> RiskRule:
    _need(actor, P.risks_manage)
    from civicgrid.risks import rules as rule_kinds

    spec, region, org, raw = check_rule(session, actor, data)
    rule = RiskRule(
        name=data.name.strip(),
        description=(data.description or "").strip(),
        kind=spec.kind,
        params=rule_kinds.params_text(raw),
        region_id=region.id,
        region_path=region.path,
        assign_org_id=org.id if org else None,
        active=bool(data.active),
        created_by_user_id=actor.user_id or None,
    )
    session.add(rule)
    session.flush()
    _RULES_CHANGED[0] += 1
    audit.record(session, actor, "risk_rule.create", "risk_rule", rule.id, after=rule_dict(rule))
    return rule


def update_rule(
    session: Session, actor: Actor, rule_id: int, data: RuleInput, version: int | None = None
) -> RiskRule:
    _need(actor, P.risks_manage)
    from civicgrid.risks import rules as rule_kinds

    rule = get_rule(session, actor, rule_id)
    if version is not None and version != rule.version:
        raise Conflict("Someone else changed this rule a moment ago. Reload it and try again.")
    spec, region, org, raw = check_rule(session, actor, data)
    if spec.kind != rule.kind:
        raise Invalid("A rule's kind cannot change; create a new rule instead.", field="kind")
    before = rule_dict(rule)
    rule.name, rule.description = data.name.strip(), (data.description or "").strip()
    rule.params = rule_kinds.params_text(raw)
    rule.region_id, rule.region_path = region.id, region.path
    rule.assign_org_id = org.id if org else None
    rule.active = bool(data.active)
    rule.updated_at = utcnow()
    session.flush()
    _RULES_CHANGED[0] += 1
    audit.record(
        session, actor, "risk_rule.update", "risk_rule", rule.id, before=before, after=rule_dict(rule)
    )
    return rule


_SPECS: dict[tuple[Any, ...], tuple[float, Any]] = {}
SPEC_TTL_S = 60.0


def spec_of(session: Session, rule: RiskRule) -> Any:
    """The parsed parameters of a stored rule (cached a minute per rule version: category ids
    can change with the catalogue)."""
    import time

    from civicgrid.risks import rules as rule_kinds

    key = (str(session.get_bind().engine.url), rule.id, rule.version, rule.created_at, rule.updated_at)
    hit = _SPECS.get(key)
    if hit is not None and time.monotonic() - hit[0] < SPEC_TTL_S:
        return hit[1]
    region = session.get(Region, rule.region_id)
    assert region is not None
    spec = rule_kinds.parse(session, rule.kind, rule_kinds.load_json(rule.params), region)
    if len(_SPECS) > 2000:
        _SPECS.clear()
    _SPECS[key] = (time.monotonic(), spec)
    return spec


@dataclass
class Precision:
    """Closed warnings of a rule by verdict; precision = real / closed (None with none closed)."""

    real: int = 0
    false_alarm: int = 0

    @property
    def closed(self) -> int:
        return self.real + self.false_alarm

    @property
    def rate(self) -> float | None:
        return round(self.real / self.closed, 4) if self.closed else None


def precision(session: Session, rule_ids: Sequence[int] | None = None) -> dict[int, Precision]:
    """Each rule's precision over all its closed warnings."""
    stmt = (
        select(Warning.rule_id, Warning.verdict, func.count())
        .where(Warning.rule_id.is_not(None), Warning.state == WarningState.closed)
        .group_by(Warning.rule_id, Warning.verdict)
    )
    if rule_ids is not None:
        stmt = stmt.where(Warning.rule_id.in_(list(rule_ids)))
    out: dict[int, Precision] = {}
    for rule_id, verdict, n in session.execute(stmt):
        p = out.setdefault(int(rule_id or 0), Precision())
        if verdict == Verdict.real:
            p.real += int(n)
        elif verdict == Verdict.false_alarm:
            p.false_alarm += int(n)
    return out


def precision_by_month(session: Session, rule_id: int) -> list[tuple[str, Precision]]:
    """Precision over time: per local month of closing, oldest first."""
    rows = session.execute(
        select(Warning.closed_at, Warning.verdict).where(
            Warning.rule_id == rule_id, Warning.state == WarningState.closed
        )
    ).all()
    from civicgrid.core.calendar import default_calendar

    tz = default_calendar().tz
    months: dict[str, Precision] = {}
    for closed_at, verdict in rows:
        if closed_at is None:
            continue
        p = months.setdefault(closed_at.astimezone(tz).strftime("%Y-%m"), Precision())
        if verdict == Verdict.real:
            p.real += 1
        else:
            p.false_alarm += 1
    return sorted(months.items())


def warning_counts(session: Session, rule_ids: Sequence[int]) -> dict[int, tuple[int, int]]:
    """(open, all) warnings per rule."""
    rows = session.execute(
        select(
            Warning.rule_id,
            func.count(),
            func.count().filter(Warning.state != WarningState.closed),
        )
        .where(Warning.rule_id.in_(list(rule_ids)))
        .group_by(Warning.rule_id)
    ).all()
    return {int(r[0] or 0): (int(r[2]), int(r[1])) for r in rows}


# ---- dry run ---------------------------------------------------------------------------------------

DRY_RUN_MAX_DAYS = 92


@dataclass
class SimulatedWarning:
    region: Region
    level: WarningLevel
    first_at: datetime
    last_at: datetime
    evidence: int
    samples: list[str]  # event numbers (or row summaries for data rules)


@dataclass
class DryRun:
    kind: str
    first: Any
    last: Any
    warnings: list[SimulatedWarning]
    note: str = ""  # e.g. "data rules are checked against the current data only"


def dry_run(session: Session, actor: Actor, data: RuleInput, first: Any = None, last: Any = None) -> DryRun:
    """The warnings a rule (saved or not) would have raised over a past period; writes nothing."""
    from civicgrid.events.models import Event
    from civicgrid.events.stats import window
    from civicgrid.risks import evaluate
    from civicgrid.risks.models import RuleKind

    _need(actor, P.risks_manage)
    spec, region, _org, _raw = check_rule(session, actor, data)
    win = (
        window(first, last) if (first or last) else window(local_today() - timedelta(days=30), local_today())
    )
    if (win.last - win.first).days >= DRY_RUN_MAX_DAYS:
        raise Invalid("A dry run covers at most {days} days.", days=DRY_RUN_MAX_DAYS, field="from")
    if spec.kind == RuleKind.manual:
        return DryRun(
            str(spec.kind), win.first, win.last, [], N_("Manual rules raise nothing by themselves.")
        )
    if spec.kind == RuleKind.data:
        found = _data_findings(session, actor, None, spec, region, write=False)
        note = N_("Data rules are checked against the dataset's current version only.")
        return DryRun(str(spec.kind), win.first, win.last, _simulated(session, found, {}), note)
    scope = evaluate.scope_for(session, region)
    found = evaluate.dry_run(session, spec, scope, win.start, win.end)
    ids = sorted({i for f in found for k, i in f.evidence[:5] if k == "event"})
    numbers = (
        {i: n for i, n in session.execute(select(Event.id, Event.number).where(Event.id.in_(ids)))}
        if ids
        else {}
    )
    return DryRun(str(spec.kind), win.first, win.last, _simulated(session, found, numbers))


def _simulated(session: Session, found: Sequence[Any], numbers: dict[int, str]) -> list[SimulatedWarning]:
    from civicgrid.risks import evaluate

    regions_by_id = {
        r.id: r for r in session.scalars(select(Region).where(Region.id.in_({f.region_id for f in found})))
    }
    out = []
    for f in found:
        region = regions_by_id.get(f.region_id)
        if region is None:
            continue
        samples = [numbers.get(i, "") for k, i in f.evidence[:5] if k == "event"]
        if getattr(f, "samples", None):
            samples = f.samples
        out.append(
            SimulatedWarning(
                region,
                f.level,
                evaluate.from_unix(f.first_t),
                evaluate.from_unix(f.last_t),
                len(f.evidence),
                [s for s in samples if s],
            )
        )
    return out


# ---- data rules --------------------------------------------------------------------------------

_ENGINE_OPS = {
    "eq": "=",
    "ne": "!=",
    "lt": "<",
    "lte": "<=",
    "gt": ">",
    "gte": ">=",
    "in": "in",
    "between": "between",
    "like": "like",
    "is_null": "is null",
    "not_null": "is not null",
}
SHOWN_FIELDS_MAX = 12


def _data_findings(
    session: Session, actor: Actor, rule: RiskRule | None, spec: Any, region: Region, *, write: bool
) -> list[Any]:
    """Rows of the dataset's current version that meet the rule's conditions, counted per region
    (the region_field's codes inside the rule's region, else the rule's region). Reads through the
    data service's query engine; only non-personal fields are kept; the read is audited."""
    import hashlib

    from civicgrid.data import access
    from civicgrid.data import service as data
    from civicgrid.data.engine import Filter, QueryPlan
    from civicgrid.risks import evaluate
    from civicgrid.risks.models import DataRow

    ds = data.get_dataset(session, spec.dataset)
    dv = data.current_version(session, ds)
    if dv is None:
        return []
    shown = [f.name for f in ds.fields if not access.is_protected(f)][:SHOWN_FIELDS_MAX]
    if spec.region_field and spec.region_field not in shown:
        shown.insert(0, spec.region_field)
    plan = QueryPlan(
        fields=shown,
        filters=[Filter(c["field"], _ENGINE_OPS[c["op"]], c.get("value")) for c in spec.conditions],
        limit=spec.max_rows + 1,
        with_total=True,
    )
    result = data.query(session, ds, plan)
    audit.record(
        session,
        actor,
        "data.read",
        "dataset",
        ds.name,
        extra={"channel": "risk", "rows": len(result.rows), "rule": rule.id if rule else None},
    )
    if (result.total or 0) > spec.max_rows:
        raise Invalid(
            "The condition matches {n} rows, more than the rule's limit of {max}; narrow it.",
            n=result.total,
            max=spec.max_rows,
            field="conditions",
        )
    records = result.records()
    groups: dict[int, list[dict[str, Any]]] = {}
    if spec.region_field:
        codes = {str(r.get(spec.region_field) or "") for r in records}
        found = {
            r.code: r
            for r in session.scalars(
                select(Region).where(Region.code.in_(codes), Region.path.startswith(region.path))
            )
        }
        for rec in records:
            hit = found.get(str(rec.get(spec.region_field) or ""))
            if hit is not None:
                groups.setdefault(hit.id, []).append(rec)
    elif records:
        groups[region.id] = records
    out = []
    now_s = evaluate.to_unix(utcnow())
    for region_id, recs in sorted(groups.items()):
        level = spec.level_for(len(recs))
        if level is None:
            continue
        samples = ["; ".join(f"{k}={v}" for k, v in list(rec.items())[:4]) for rec in recs[:5]]
        if not write or rule is None:
            evidence = [("data", i + 1) for i in range(len(recs))]
        else:
            ids = []
            for rec in recs:
                text = json.dumps(rec, ensure_ascii=False, sort_keys=True, default=str)
                digest = hashlib.sha256(text.encode()).hexdigest()
                row_id = session.scalar(
                    select(DataRow.id).where(
                        DataRow.rule_id == rule.id,
                        DataRow.dataset_id == ds.id,
                        DataRow.data_version == dv.version,
                        DataRow.row_hash == digest,
                    )
                )
                if row_id is None:
                    row = DataRow(
                        rule_id=rule.id,
                        dataset_id=ds.id,
                        data_version=dv.version,
                        row_hash=digest,
                        values=text,
                    )
                    session.add(row)
                    session.flush()
                    row_id = row.id
                ids.append(row_id)
            evidence = [("data", i) for i in sorted(set(ids))]
        out.append(evaluate.Finding(region_id, level, evidence, now_s, now_s, samples))
    return out


# ---- the worker: incremental evaluation, full pass, deadlines ----------------------------------

BATCH = 2000
MAX_BATCHES = 50
GAP_GRACE_S = 60  # a missing id younger than this may still commit: wait for it
FULL_PASS_LOCK = 727_275  # PostgreSQL advisory lock: one full pass at a time
EVENT_KINDS = ("threshold", "cluster", "trend", "repeat")


@dataclass
class ActiveRule:
    """An active rule as the evaluation needs it (no ORM object: cached across sessions)."""

    rule_id: int
    spec: Any
    scope: Any
    region_id: int


def active_rules(session: Session, kinds: Iterable[str] = EVENT_KINDS) -> list[ActiveRule]:
    from civicgrid.risks import evaluate

    out = []
    for rule in session.scalars(
        select(RiskRule).where(RiskRule.active.is_(True), RiskRule.kind.in_(list(kinds)))
    ):
        try:
            spec = spec_of(session, rule)
        except (Invalid, NotFound):  # e.g. a category left the catalogue: skip the rule, not the job
            log.warning("risk rule %s cannot be parsed any more; skipped", rule.id)
            continue
        region = session.get(Region, rule.region_id)
        assert region is not None
        out.append(ActiveRule(rule.id, spec, evaluate.scope_for(session, region), region.id))
    return out


def _cursor_table() -> Table:
    from civicgrid.risks.models import Cursor

    return cast(Table, Cursor.__table__)


def _cursor_lock_stmt(dialect: str) -> Any:
    table = _cursor_table()
    if dialect == "sqlite":
        return (
            update(table)
            .where(table.c.name == bindparam("cursor"))
            .values(updated_at=table.c.updated_at)
            .returning(table.c.last_id)
        )
    return (
        select(table.c.last_id).where(table.c.name == bindparam("cursor")).with_for_update(skip_locked=True)
    )


def _cursor_move_stmt() -> Any:
    table = _cursor_table()
    return (
        update(table)
        .where(table.c.name == bindparam("cursor"))
        .values(last_id=bindparam("last_id"), updated_at=bindparam("at"))
    )


def _lock_cursor(session: Session, name: str) -> int | None:
    """Lock the stream's cursor row for this transaction and return its position; None when
    another worker holds it (PostgreSQL: FOR UPDATE SKIP LOCKED; SQLite: the UPDATE takes the
    database's write lock, so a second worker waits instead of working twice)."""
    from civicgrid.risks import evaluate
    from civicgrid.risks.models import Cursor

    dialect = session.get_bind().dialect.name
    for attempt in range(2):
        stmt = evaluate.prepared(session, "cursor_lock", _cursor_lock_stmt, dialect)
        last = evaluate.run(session, stmt, {"cursor": name}).scalar()
        if last is not None:
            return int(last)
        if attempt or (
            dialect == "postgresql" and session.scalar(select(Cursor.name).where(Cursor.name == name))
        ):
            return None  # the row exists: another worker holds it
        ins = pg_insert(Cursor) if dialect == "postgresql" else sqlite_insert(Cursor)
        session.execute(
            ins.values(name=name, last_id=0, updated_at=utcnow()).on_conflict_do_nothing(
                index_elements=["name"]
            )
        )
    return None


def _lock_and_load(session: Session, batch: int) -> tuple[int, list[Any]] | None:
    """Lock the events cursor and read the batch after it; None when another worker holds it."""
    from civicgrid.risks import evaluate

    if session.get_bind().dialect.name == "postgresql":
        got = evaluate.lock_and_load(session, _cursor_table(), "events", batch)
        if got is not None:
            return got
    last = _lock_cursor(session, "events")  # also tells a held cursor from a missing one
    if last is None:
        return None
    return last, evaluate.load_new(session, last, batch)


def _contiguous(rows: Sequence[Any], last: int, now: datetime) -> list[int]:
    """Ids to process now: in order, stopping before a gap whose successor is recent (a
    transaction holding the missing id may still commit). Older gaps are rolled-back ids."""
    out = []
    expected = last + 1
    for row in rows:
        if row.id != expected and row.created_at > now - timedelta(seconds=GAP_GRACE_S):
            break
        out.append(int(row.id))
        expected = row.id + 1
    return out


def _title(rule: RiskRule, region: Region) -> str:
    return f"{rule.name}（{region.name}）"[:TITLE_MAX]


def _concurrent(session: Session) -> bool:
    """PostgreSQL may run several workers: evidence read before the lock is read again under it.
    SQLite has one writer at a time (the worker holds the write lock from the cursor on)."""
    return session.get_bind().dialect.name == "postgresql"


def raise_findings(
    session: Session,
    rule_id: int,
    found: Sequence[Any],
    stats: dict[str, int],
    options: tuple[dict[str, float] | None, str | None] = (None, None),
) -> None:
    """Raise a rule's findings. Findings its open warnings already hold (same or lower level, no
    new evidence) are recognised from two reads per rule and cost nothing more: a full pass over
    a quiet day writes and locks nothing."""
    from civicgrid.risks import evaluate

    merged = evaluate.merge(found)
    if not merged:
        return
    open_rows = session.execute(
        select(Warning.id, Warning.region_id, Warning.level).where(
            Warning.rule_id == rule_id, Warning.state != WarningState.closed
        )
    ).all()
    wanted = {f.region_id for f in merged}
    open_by_region = {r.region_id: r for r in open_rows if r.region_id in wanted}
    # Only the findings' own evidence is looked up (a long-open warning may hold thousands).
    linked: dict[int, set[tuple[str, int]]] = {r.id: set() for r in open_by_region.values()}
    refs = sorted({ref for f in merged if f.region_id in open_by_region for _k, ref in f.evidence})
    for chunk in _chunks(refs, 900):
        for wid, kind, ref in session.execute(
            select(WarningEvidence.warning_id, WarningEvidence.kind, WarningEvidence.ref_id).where(
                WarningEvidence.warning_id.in_(list(linked)), WarningEvidence.ref_id.in_(chunk)
            )
        ):
            linked[wid].add((kind, ref))
    rule: RiskRule | None = None
    for f in merged:
        o = open_by_region.get(f.region_id)
        if o is not None:
            fresh = [e for e in f.evidence if e not in linked[o.id]]
            if not fresh and LEVEL_RANK[f.level] <= LEVEL_RANK[WarningLevel(o.level)]:
                stats["unchanged"] = stats.get("unchanged", 0) + 1
                continue
            warning = session.scalar(
                select(Warning)
                .where(Warning.id == o.id, Warning.state != WarningState.closed)
                .with_for_update()
                .execution_options(populate_existing=True)
            )
            if warning is not None:  # still open under the lock: attach (the common case)
                if fresh:
                    fresh = _not_linked(session, warning.id, fresh) if _concurrent(session) else fresh
                changed = _add_to(session, SYSTEM, warning, f.level, f.evidence, options, utcnow(), fresh)
                status = "updated" if changed else "unchanged"
                stats[status] = stats.get(status, 0) + 1
                continue
        rule = rule or session.get(RiskRule, rule_id)
        region = session.get(Region, f.region_id)
        if rule is None or region is None:
            continue
        _w, status = _raise_status(
            session, SYSTEM, "rule", region, f.level, _title(rule, region), f.evidence, rule
        )
        stats[status] = stats.get(status, 0) + 1


def _subject_insert(session: Session) -> Any:
    from civicgrid.risks.models import Subject

    ins = pg_insert(Subject) if session.get_bind().dialect.name == "postgresql" else sqlite_insert(Subject)
    return ins.on_conflict_do_nothing(index_elements=["source", "ref_id", "kind"])


def _index_subjects(session: Session, rows: Sequence[Any]) -> dict[tuple[str, int], dict[str, str]]:
    """Store the address and party keys of new events; returns {("event", id): {kind: key}}."""
    from civicgrid.risks import evaluate

    keys: dict[tuple[str, int], dict[str, str]] = {}
    values = []
    for r in rows:
        mine = {}
        for kind, raw in (("address", r.address), ("party", r.reporter_phone)):
            key = evaluate.subject_key(kind, raw)
            if key:
                mine[kind] = key
                values.append(
                    {"kind": kind, "key": key, "source": "event", "ref_id": r.id, "at": r.reported_at}
                )
        keys[("event", int(r.id))] = mine
    if values:
        evaluate.run(session, evaluate.prepared(session, "subject_insert", _subject_insert, session), values)
    return keys


def evaluate_events(session: Session, rows: Sequence[Any], now: datetime, stats: dict[str, int]) -> None:
    """Check new events (rows of `evaluate.load_new`) against the rules they could trigger and
    raise what they find."""
    from civicgrid.risks import evaluate

    keys = _index_subjects(session, rows)
    new = evaluate.new_events(rows)
    stats["events"] = stats.get("events", 0) + len(rows)
    if not len(new):
        return
    active = _cached_active(session)
    index = _rule_index(session, active)
    specs = {a.rule_id: a.spec for a in active}
    subject_keys = {(evaluate.EVENT, i): k for (_src, i), k in keys.items()}
    for rule_id, found in evaluate.incremental(session, index, new, now, subject_keys).items():
        if found:
            stats["findings"] = stats.get("findings", 0) + len(found)
            spec = specs[rule_id]
            raise_findings(session, rule_id, found, stats, (spec.deadline_hours or None, spec.clock))


_INDEX: dict[str, tuple[list[ActiveRule], Any]] = {}


def _rule_index(session: Session, active: list[ActiveRule]) -> Any:
    """The active rules indexed by category, built once per set of active rules."""
    from civicgrid.risks import evaluate

    key = str(session.get_bind().engine.url)
    hit = _INDEX.get(key)
    if hit is not None and hit[0] is active:
        return hit[1]
    index = evaluate.RuleIndex([evaluate.Watch(a.rule_id, a.spec, a.scope) for a in active])
    _INDEX[key] = (active, index)
    return index


_ACTIVE: dict[str, tuple[float, tuple[Any, ...], int, list[ActiveRule]]] = {}
_RULES_CHANGED = [0]  # bumped by rule writes in this process: their effect is immediate here
RULES_RECHECK_S = 10.0  # other processes' rule edits are seen within this many seconds


def _cached_active(session: Session) -> list[ActiveRule]:
    """Active event rules. Re-read when this process changed a rule, else checked against a
    cheap stamp query at most every RULES_RECHECK_S (and fully re-read after the spec TTL)."""
    import time

    key = str(session.get_bind().engine.url)
    hit = _ACTIVE.get(key)
    now = time.monotonic()
    if hit is not None and hit[2] == _RULES_CHANGED[0] and now - hit[0] < RULES_RECHECK_S:
        return hit[3]
    stamp = tuple(
        session.execute(
            select(
                func.count(RiskRule.id),
                func.max(RiskRule.updated_at),
                func.min(RiskRule.created_at),
                func.sum(RiskRule.version),
            ).where(RiskRule.active.is_(True))
        ).one()
    )
    if hit is not None and hit[1] == stamp and hit[2] == _RULES_CHANGED[0] and now - hit[0] < SPEC_TTL_S:
        _ACTIVE[key] = (now, *hit[1:])
        return hit[3]
    rules = active_rules(session)
    _ACTIVE[key] = (time.monotonic(), stamp, _RULES_CHANGED[0], rules)
    return rules


def evaluate_new(
    session: Session, now: datetime | None = None, *, batch: int = BATCH, max_batches: int = MAX_BATCHES
) -> dict[str, int]:
    """Worker job: events newer than the cursor, in id order, a batch per transaction. Restart-
    safe (the cursor moves in the same transaction as the warnings), idempotent, and one worker at
    a time per stream (the cursor row is locked FOR UPDATE SKIP LOCKED on PostgreSQL)."""
    from civicgrid.risks import evaluate

    stats: dict[str, int] = {}
    for _ in range(max_batches):
        at = now or utcnow()
        fetched = _lock_and_load(session, batch)
        if fetched is None:
            stats["busy"] = 1
            break
        last, rows = fetched
        ids = _contiguous(rows, last, at)
        if ids:
            evaluate_events(session, rows[: len(ids)], at, stats)
            move = evaluate.prepared(session, "cursor_move", _cursor_move_stmt)
            evaluate.run(session, move, {"cursor": "events", "last_id": ids[-1], "at": at})
        session.commit()
        if len(ids) < batch:
            break
    return stats


def full_pass(session: Session, now: datetime | None = None) -> dict[str, int]:
    """Worker job: every active rule over the current horizon, raising what incremental runs
    missed (data rules, edited rules, events of transactions that committed late). Idempotent:
    findings already linked change nothing."""
    from civicgrid.events.models import Event
    from civicgrid.risks import evaluate

    now = now or utcnow()
    stats: dict[str, int] = {}
    if session.get_bind().dialect.name == "postgresql" and not session.scalar(
        select(func.pg_try_advisory_xact_lock(FULL_PASS_LOCK))
    ):
        return {"busy": 1}
    rules = active_rules(session)
    plain = [a for a in rules if a.spec.kind != "repeat"]
    if plain:
        since = now - timedelta(seconds=max(a.spec.horizon_s + a.spec.lookback_s for a in plain))
        snapshot = evaluate.load_events(session, Event.reported_at >= since)
        stats["events_read"] = len(snapshot)
        for a in plain:
            found = evaluate.evaluate_now(session, a.spec, a.scope, now, snapshot)
            raise_findings(session, a.rule_id, found, stats, (a.spec.deadline_hours or None, a.spec.clock))
    for key in ("address", "party"):  # one read per subject kind, shared by its repeat rules
        repeats = [a for a in rules if a.spec.kind == "repeat" and a.spec.key == key]
        if not repeats:
            continue
        since = now - timedelta(seconds=max(a.spec.horizon_s + a.spec.lookback_s for a in repeats))
        least = min(evaluate.least(a.spec) for a in repeats)
        disputes = any(a.spec.include_disputes for a in repeats)
        shared = evaluate.subject_events(session, key, since, disputes, least)
        stats["events_read"] = stats.get("events_read", 0) + len(shared)
        for a in repeats:
            found = evaluate.evaluate_now(session, a.spec, a.scope, now, shared)
            raise_findings(session, a.rule_id, found, stats, (a.spec.deadline_hours or None, a.spec.clock))
    for a in active_rules(session, ("data",)):
        try:
            with session.begin_nested():
                rule = session.get(RiskRule, a.rule_id)
                found = _data_findings(
                    session, SYSTEM, rule, a.spec, regions.get(session, a.region_id), write=True
                )
                raise_findings(
                    session, a.rule_id, found, stats, (a.spec.deadline_hours or None, a.spec.clock)
                )
        except Exception:  # one broken data rule must not stop the others
            log.exception("data rule %s failed", a.rule_id)
            stats["failed"] = stats.get("failed", 0) + 1
    return stats


OVERDUE_MESSAGE = N_("Risk warning {number} is overdue: {title}")


def check_deadlines(session: Session, now: datetime | None = None) -> dict[str, int]:
    """Worker job: tell the assigned org (and the office above it) once when a warning is overdue."""
    from civicgrid.events.models import Notification

    now = now or utcnow()
    rows = session.scalars(
        select(Warning)
        .where(Warning.state != WarningState.closed, Warning.due_at < now)
        .order_by(Warning.due_at)
        .limit(1000)
    ).all()
    if not rows:
        return {"overdue": 0}
    keys = {
        f"risk:{w.id}:overdue:{int(w.due_at.timestamp())}:org{w.assigned_org_id}": w for w in rows if w.due_at
    }
    sent = set(session.scalars(select(Notification.key).where(Notification.key.in_(list(keys)))))
    n = 0
    for key, w in keys.items():
        if key in sent or not w.assigned_org_id:
            continue
        _notify(
            session,
            w,
            f"overdue:{int(w.due_at.timestamp()) if w.due_at else 0}",
            OVERDUE_MESSAGE,
            w.assigned_org_id,
        )
        n += 1
    return {"overdue": n}


# ---- presentation data shared by the API and the pages -------------------------------------------


def describe(session: Session, warning: Warning, now: datetime | None = None) -> dict[str, Any]:
    """Display fields of a warning: names resolved, overdue computed."""
    now = now or utcnow()
    region = session.get(Region, warning.region_id)
    org = session.get(Org, warning.assigned_org_id) if warning.assigned_org_id else None
    rule = session.get(RiskRule, warning.rule_id) if warning.rule_id else None
    return {
        "number": warning.number,
        "title": warning.title,
        "level": warning.level,
        "state": warning.state,
        "source": warning.source,
        "rule_id": warning.rule_id,
        "rule_name": rule.name if rule else None,
        "region_code": region.code if region else "",
        "region_name": region.name if region else "",
        "assigned_org": org.name if org else None,
        "assigned_org_id": warning.assigned_org_id,
        "due_at": warning.due_at,
        "clock": warning.clock,
        "overdue": bool(warning.due_at and warning.state != WarningState.closed and warning.due_at < now),
        "raised_at": warning.raised_at,
        "evidence_count": warning.evidence_count,
        "verdict": str(warning.verdict) if warning.verdict else None,
        "closed_at": warning.closed_at,
        "feedback": warning.feedback,
        "outcome": warning.outcome,
    }


def rule_summary(session: Session, rules: Sequence[RiskRule]) -> list[dict[str, Any]]:
    """Rules with their region, org, warning counts and precision, for lists."""
    ids = [r.id for r in rules]
    prec = precision(session, ids) if ids else {}
    counts = warning_counts(session, ids) if ids else {}
    out = []
    for r in rules:
        region = session.get(Region, r.region_id)
        org = session.get(Org, r.assign_org_id) if r.assign_org_id else None
        open_n, all_n = counts.get(r.id, (0, 0))
        out.append(
            {
                "rule": r,
                "params": json.loads(r.params or "{}"),
                "region": region,
                "org": org,
                "open": open_n,
                "total": all_n,
                "precision": prec.get(r.id, Precision()),
            }
        )
    return out


def raise_manual(
    session: Session,
    actor: Actor,
    *,
    region_code: str,
    level: str,
    title: str,
    note: str = "",
    event_numbers: Sequence[str] = (),
    rule_id: int | None = None,
) -> Warning:
    """A person raises a warning (page and API): events named by number become its evidence."""
    from civicgrid.events import service as events

    _need(actor, P.risks_raise)
    try:
        region = regions.get_in_scope(session, actor, (region_code or "").strip())
    except NotFound:
        raise Invalid(
            "No region with code {region}.", region=(region_code or "")[:24], field="region"
        ) from None
    ids = []
    for number in dict.fromkeys(n.strip() for n in event_numbers if n and n.strip()):
        try:
            ids.append(events.get_event(session, actor, number).id)
        except NotFound:
            raise Invalid("No event with number {number}.", number=number[:32], field="events") from None
    if rule_id is not None:
        rule = get_rule(session, actor, rule_id)
        if rule.kind != "manual":
            raise Invalid("Only manual rules take warnings raised by hand.", field="rule")
    warning = raise_warning(
        session,
        actor=actor,
        source="manual",
        region_id=region.id,
        level=level,
        title=title,
        evidence=[("event", i) for i in ids],
        rule_id=rule_id,
    )
    note = (note or "").strip()
    if note:
        _entry(session, warning, actor, "note", note=note[:TEXT_MAX])
        session.flush()
    return warning
