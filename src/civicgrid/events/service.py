"""Rules of the event catalogue and intake: categories, numbering, routing, duplicates,
queries. State changes live in `actions.py`."""

from __future__ import annotations

import json
import math
import threading
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, Select, create_engine, func, or_, select
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.exc import DBAPIError
from sqlalchemy.orm import Session

from civicgrid.accounts import service as accounts
from civicgrid.accounts.models import Org, OrgKind, User
from civicgrid.accounts.permissions import Permission
from civicgrid.core import audit
from civicgrid.core.auth import Actor
from civicgrid.core.calendar import WorkCalendar, build_calendar, default_calendar
from civicgrid.core.db import utcnow
from civicgrid.core.errors import Conflict, Invalid, NotFound, PermissionDenied
from civicgrid.core.vocab import Platform
from civicgrid.events.models import (
    Category,
    Channel,
    Event,
    EventSequence,
    HandleUnit,
    Level,
    Notification,
    Responsibility,
    Severity,
    State,
    TimelineEntry,
)
from civicgrid.events.text import similarity, tokens
from civicgrid.regions import service as regions

CATALOGUE = Path(__file__).resolve().parent / "data" / "catalogue.json"
P = Permission

# States in which an event is still being worked on (deadlines run, duplicates may attach).
OPEN_STATES = (
    State.reported,
    State.accepted,
    State.dispatched,
    State.handling,
    State.handled,
    State.suspended,
)
FINISHED_STATES = (State.closed, State.rated, State.archived)

# ---- catalogue --------------------------------------------------------------------------


def rules_of(category: Category) -> dict[str, Any]:
    """The rules an event keeps from its category at creation (later edits do not apply to it)."""
    return {
        "category_version": category.version,
        "severity": str(category.severity),
        "responsibility": str(category.responsibility),
        "start_level": str(category.start_level),
        "accept_hours": category.accept_hours,
        "handle_amount": category.handle_amount,
        "handle_unit": str(category.handle_unit),
        "verify_hours": category.verify_hours,
        "escalate_when_overdue": category.escalate_when_overdue,
        "dup_radius_m": category.dup_radius_m,
        "dup_window_hours": category.dup_window_hours,
        "is_dispute": category.is_dispute,
    }


def category_dict(c: Category) -> dict[str, Any]:
    return {"code": c.code, "name": c.name, "name_en": c.name_en, "platform": str(c.platform), **rules_of(c)}


def seed_catalogue(session: Session, actor: Actor) -> int:
    """Load the shipped catalogue into an empty catalogue; returns how many categories were added."""
    if session.scalar(select(func.count(Category.id))):
        return 0
    raw = json.loads(CATALOGUE.read_text(encoding="utf-8"))
    added = 0
    for cls in raw["classes"]:
        platform = Platform(cls["platform"])
        parent = Category(code=cls["code"], name=cls["name"], name_en=cls["name_en"], platform=platform)
        session.add(parent)
        session.flush()
        added += 1
        for code, name, name_en, handle, severity, options in cls["items"]:
            opts = options.split()
            radius = next((float(o.split(":")[1]) for o in opts if o.startswith("radius:")), 100.0)
            session.add(
                Category(
                    code=code,
                    name=name,
                    name_en=name_en,
                    parent_id=parent.id,
                    platform=platform,
                    severity=Severity(severity),
                    responsibility=Responsibility.owner if "owner" in opts else Responsibility.location_first,
                    start_level=Level.village if "village" in opts else Level.township,
                    accept_hours=1 if severity == "critical" else 2,
                    handle_amount=float(handle[:-1]),
                    handle_unit=HandleUnit.hours if handle.endswith("h") else HandleUnit.days,
                    verify_hours=24,
                    escalate_when_overdue="escalate" in opts,
                    dup_radius_m=radius,
                    is_dispute="dispute" in opts,
                )
            )
            added += 1
    session.flush()
    audit.record(session, actor, "catalogue.seed", "event_category", "*", extra={"added": added})
    return added


def list_categories(session: Session, *, include_inactive: bool = False) -> list[Category]:
    stmt = select(Category).order_by(Category.code)
    if not include_inactive:
        stmt = stmt.where(Category.active.is_(True))
    return list(session.scalars(stmt))


def get_category(session: Session, code: str) -> Category:
    c = session.scalar(select(Category).where(Category.code == code))
    if c is None:
        raise Invalid("Unknown event category {code}.", code=code, field="category")
    return c


def update_category(session: Session, actor: Actor, code: str, **changes: Any) -> Category:
    """Admins edit the catalogue; each edit bumps the version.
    Events keep the rules they were created with."""
    if not actor.can(P.catalogue_manage):
        raise PermissionDenied("Your role does not allow this.")
    c = get_category(session, code)
    before = category_dict(c)
    for key, value in changes.items():
        if value is None:
            continue
        if not hasattr(c, key) or key in ("id", "code", "parent_id", "version"):
            raise Invalid("The field {field} cannot be changed.", field=key)
        setattr(c, key, value)
    _check_category(c)
    c.version += 1
    session.flush()
    audit.record(
        session, actor, "category.update", "event_category", c.code, before=before, after=category_dict(c)
    )
    return c


def _check_category(c: Category) -> None:
    if c.accept_hours <= 0 or c.handle_amount <= 0 or c.verify_hours <= 0:
        raise Invalid("Deadlines must be positive.")
    if c.dup_radius_m < 0 or c.dup_window_hours < 0:
        raise Invalid("The duplicate radius and window cannot be negative.")


# ---- working time -----------------------------------------------------------------------


def parse_working_hours(text: str) -> list[tuple[time, time]]:
    periods = []
    for part in filter(None, (p.strip() for p in text.split(","))):
        try:
            a, b = part.split("-")
            periods.append((time.fromisoformat(a.strip()), time.fromisoformat(b.strip())))
        except ValueError:
            raise Invalid("Working hours must look like 08:30-12:00,13:30-17:30.") from None
    return periods


def calendar_for(session: Session, org_id: int | None) -> WorkCalendar:
    """The working-time calendar of an org: the installation's days with the org's own hours."""
    org = session.get(Org, org_id) if org_id else None
    if org is None or not org.working_hours:
        return default_calendar()
    return _calendar_with(org.working_hours)


_calendars: dict[str, WorkCalendar] = {}


def _calendar_with(hours: str) -> WorkCalendar:
    if hours not in _calendars:
        _calendars[hours] = build_calendar(periods=parse_working_hours(hours))
    return _calendars[hours]


def handle_due(cal: WorkCalendar, start: datetime, rules: dict[str, Any]) -> datetime:
    if rules["handle_unit"] == HandleUnit.hours:
        return cal.add_working_hours(start, rules["handle_amount"])
    return cal.add_working_days(start, math.ceil(rules["handle_amount"]))


# ---- numbering --------------------------------------------------------------------------

LOCAL_DAY_OFFSET = timedelta(hours=8)  # event numbers use the China Standard Time date
NUMBERS_IN_TRANSACTION = "civicgrid.numbers_in_transaction"  # session.info flag, see next_number


def next_number(session: Session, prefix: str, at: datetime) -> str:
    """Readable number: county code, local date, sequence — e.g. 331082-20261125-00017.
    One atomic upsert of the county's counter for the day.

    On PostgreSQL the upsert runs on a connection of its own and commits at once, so the
    counter's row lock lasts one statement instead of the rest of the intake (it was the
    writers' queue: 60 % of the backends' time under load was waiting for it). The price: a
    number taken by an intake that then fails is not reused (a gap), never repeated. On SQLite
    the database serialises writers anyway and a second connection would wait for this
    transaction's own write lock, so the upsert stays in the transaction (no gaps). The same
    holds on PostgreSQL for a session that already wrote counters in its open transaction (the
    demo generator marks it with `NUMBERS_IN_TRANSACTION`): a second connection would wait for
    our own row locks forever."""
    day = (at + LOCAL_DAY_OFFSET).date()
    dialect = session.get_bind().dialect.name
    ins = pg_insert(EventSequence) if dialect == "postgresql" else sqlite_insert(EventSequence)
    stmt = (
        ins.values(prefix=prefix, day=day, last=1)
        .on_conflict_do_update(index_elements=["prefix", "day"], set_={"last": EventSequence.last + 1})
        .returning(EventSequence.last)
    )
    if dialect == "postgresql" and not session.info.get(NUMBERS_IN_TRANSACTION):
        seq = _take_number(_numbering_engine(session), stmt)
    else:
        seq = session.execute(stmt).scalar_one()
    return f"{prefix}-{day:%Y%m%d}-{seq:05d}"


def _take_number(engine: Engine, stmt: Any) -> int:
    # No pre-ping (a round trip per number): a connection found dead is replaced and the
    # upsert tried once more (if the first one did commit, that number becomes a gap).
    for attempt in (1, 2):
        try:
            with engine.connect() as conn:
                return int(conn.execute(stmt).scalar_one())
        except DBAPIError as exc:
            if attempt == 2 or not exc.connection_invalidated:
                raise
    raise AssertionError("unreachable")


_numbering: dict[str, Engine] = {}
_numbering_lock = threading.Lock()


def _numbering_engine(session: Session) -> Engine:
    """A small autocommit pool per PostgreSQL database for taking numbers. Its commits are
    asynchronous (`synchronous_commit=off`): the event's own synchronous commit, which comes
    later, flushes the WAL up to and past the counter's update, so a committed event's number
    is never handed out again after a crash."""
    url = session.get_bind().engine.url
    key = url.render_as_string(hide_password=False)
    engine = _numbering.get(key)
    if engine is None:
        with _numbering_lock:
            engine = _numbering.get(key)
            if engine is None:
                engine = create_engine(
                    url,
                    isolation_level="AUTOCOMMIT",
                    pool_size=4,
                    max_overflow=36,
                    connect_args={"options": "-c synchronous_commit=off"},
                )
                _numbering[key] = engine
                while len(_numbering) > 8:  # e.g. a test run opening many databases
                    _numbering.pop(next(iter(_numbering))).dispose()
    return engine


# ---- routing ----------------------------------------------------------------------------

LEVEL_OF_KIND = {
    OrgKind.village_committee: Level.village,
    OrgKind.township_office: Level.township,
    OrgKind.governance_centre: Level.county,
}


@dataclass
class Place:
    grid: Any
    village: Any
    township: Any
    county: Any


def place_of(session: Session, lon: float, lat: float) -> Place:
    """The grid and its village, township and county (cached references: `id`, `code`,
    `name`, `level`, `path`), or a 422 outside the jurisdiction."""
    by_level = {str(r.level): r for r in regions.locate(session, lon, lat)}
    return Place(by_level["grid"], by_level["village"], by_level["township"], by_level["county"])


def owner_for(session: Session, place: Place, start_level: Level) -> Org:
    """The org that dispatches a new event: the village committee for village-level categories,
    else the township's four-platform office, else the county centre. One query for all the
    candidates (read fresh: a new or closed office takes effect at once)."""
    candidates: list[tuple[int, OrgKind]] = []
    if start_level == Level.village:
        candidates.append((place.village.id, OrgKind.village_committee))
    candidates += [(place.township.id, OrgKind.township_office), (place.county.id, OrgKind.governance_centre)]
    orgs = session.scalars(
        select(Org)
        .where(Org.active.is_(True), or_(*((Org.region_id == r) & (Org.kind == k) for r, k in candidates)))
        .order_by(Org.id)
    ).all()
    for region_id, kind in candidates:
        # the lowest id when several sit there, as accounts.find_org picks
        org = next((o for o in orgs if o.region_id == region_id and o.kind == kind), None)
        if org is not None:
            return org
    raise Invalid("No office is set up to receive events in {place}.", place=place.township.name)


def higher_owner(session: Session, event: Event) -> Org | None:
    """Where an escalation goes: village → township office → county centre."""
    if event.level == Level.village:
        org = accounts.find_org(session, event.township_id, OrgKind.township_office)
        if org is not None:
            return org
    if event.level in (Level.village, Level.township):
        return accounts.find_org(session, event.county_id, OrgKind.governance_centre)
    return None


def suggest_lead(session: Session, event: Event) -> Org | None:
    """先属地后属主: the platform's station in the event's township, else the county department;
    categories handled by owner go to the county department directly."""
    rules = json.loads(event.rules)
    places = (
        [event.county_id]
        if rules["responsibility"] == Responsibility.owner
        else [event.township_id, event.county_id]
    )
    for region_id in places:
        org = accounts.find_org(session, region_id, OrgKind.department, event.platform)
        if org is not None:
            return org
    return None


# ---- duplicates -------------------------------------------------------------------------

DUPLICATE_TEXT_THRESHOLD = 0.25
EARTH_RADIUS_M = 6_371_000.0


def distance_m(lon1: float, lat1: float, lon2: float, lat2: float) -> float:
    p1, p2 = math.radians(lat1), math.radians(lat2)
    dp, dl = p2 - p1, math.radians(lon2 - lon1)
    a = math.sin(dp / 2) ** 2 + math.cos(p1) * math.cos(p2) * math.sin(dl / 2) ** 2
    return 2 * EARTH_RADIUS_M * math.asin(math.sqrt(a))


@dataclass(frozen=True)
class EventRef:
    id: int
    number: str


@dataclass
class DuplicateCandidate:
    event: EventRef
    distance_m: float
    similarity: float


def duplicate_candidates(
    session: Session,
    *,
    category_id: int,
    lon: float,
    lat: float,
    text: str,
    at: datetime,
    rules: dict[str, Any],
    exclude_id: int | None = None,
    limit: int = 5,
) -> list[DuplicateCandidate]:
    """Open events of the same category within the category's radius and time window whose
    Chinese text is similar (jieba tokens); most similar, then nearest first. Reads only the
    columns it compares (it runs on every intake)."""
    radius = rules["dup_radius_m"]
    if radius <= 0:
        return []
    dlat = radius / 111_320.0
    dlon = radius / (111_320.0 * max(math.cos(math.radians(lat)), 0.01))
    since = at - timedelta(hours=rules["dup_window_hours"])
    stmt = select(Event.id, Event.number, Event.title, Event.description, Event.lon, Event.lat).where(
        Event.category_id == category_id,
        Event.state.in_(OPEN_STATES),
        Event.reported_at >= since,
        Event.lat.between(lat - dlat, lat + dlat),
        Event.lon.between(lon - dlon, lon + dlon),
    )
    if exclude_id is not None:
        stmt = stmt.where(Event.id != exclude_id)
    mine = tokens(text)
    found = []
    for row in session.execute(stmt.order_by(Event.id.desc()).limit(200)):
        d = distance_m(lon, lat, row.lon, row.lat)
        if d > radius:
            continue
        sim = similarity(mine, tokens(f"{row.title} {row.description}"))
        if mine and sim < DUPLICATE_TEXT_THRESHOLD:
            continue
        found.append(DuplicateCandidate(EventRef(row.id, row.number), d, sim))
    found.sort(key=lambda c: (-c.similarity, c.distance_m))
    return found[:limit]


# ---- intake -----------------------------------------------------------------------------

TITLE_MAX = 200
DESCRIPTION_MAX = 5000


@dataclass
class Intake:
    """A new event and what its creation already knows, so the reply needs no further query."""

    event: Event
    entry: TimelineEntry
    duplicates: list[DuplicateCandidate]
    grid_code: str
    # Held so they stay in the session's identity map (it keeps only weak references), where
    # describe() finds them without a query.
    category: Category
    owner: Org


def create_event(
    session: Session,
    actor: Actor,
    *,
    category_code: str,
    lon: float,
    lat: float,
    description: str,
    channel: Channel,
    title: str = "",
    address: str = "",
    reporter_name: str = "",
    reporter_phone: str = "",
    external_id: str | None = None,
    reported_at: datetime | None = None,
) -> Event:
    """Every intake channel ends here (see `receive_event`); returns the new event."""
    return receive_event(
        session,
        actor,
        category_code=category_code,
        lon=lon,
        lat=lat,
        description=description,
        channel=channel,
        title=title,
        address=address,
        reporter_name=reporter_name,
        reporter_phone=reporter_phone,
        external_id=external_id,
        reported_at=reported_at,
    ).event


def receive_event(
    session: Session,
    actor: Actor,
    *,
    category_code: str,
    lon: float,
    lat: float,
    description: str,
    channel: Channel,
    title: str = "",
    address: str = "",
    reporter_name: str = "",
    reporter_phone: str = "",
    external_id: str | None = None,
    reported_at: datetime | None = None,
) -> Intake:
    """Locate, route to its owner, check duplicates, set the acceptance deadline, number,
    write the event, its first timeline entry and the audit record.

    The order keeps the locks short: everything that only reads comes first; the number
    (a row lock on the county's day counter) and the audit chain's lock are taken last and
    held only for the few inserts before the commit."""
    if not actor.can(P.events_report):
        raise PermissionDenied("Your role does not allow this.")
    category = get_category(session, category_code)
    if category.parent_id is None:
        raise Invalid("Choose a sub-category of {name}.", name=category.name, field="category")
    if not category.active:
        raise Invalid("The category {name} is no longer in use.", name=category.name, field="category")
    description = (description or "").strip()
    if not description:
        raise Invalid("Describe what is wrong.", field="description")
    if len(description) > DESCRIPTION_MAX or len(title) > TITLE_MAX:
        raise Invalid("The title or description is too long.", field="description")
    place = place_of(session, lon, lat)
    rules = rules_of(category)
    now = utcnow()
    at = reported_at or now
    owner = owner_for(session, place, Level(rules["start_level"]))
    cal = calendar_for(session, owner.id)
    title = (title or description[:40]).strip()
    dups = duplicate_candidates(
        session,
        category_id=category.id,
        lon=lon,
        lat=lat,
        text=f"{title} {description}",
        at=at,
        rules=rules,
    )
    event = Event(
        number=next_number(session, place.county.code[:6], at),
        category_id=category.id,
        platform=category.platform,
        rules=json.dumps(rules, ensure_ascii=False),
        title=title,
        description=description,
        address=address.strip(),
        lon=lon,
        lat=lat,
        grid_id=place.grid.id,
        village_id=place.village.id,
        township_id=place.township.id,
        county_id=place.county.id,
        region_path=place.grid.path,
        channel=channel,
        reporter_user_id=actor.user_id or None,
        reporter_name=reporter_name,
        reporter_phone=reporter_phone,
        external_id=external_id,
        state=State.reported,
        level=LEVEL_OF_KIND[owner.kind],
        owner_org_id=owner.id,
        reported_at=at,
        accept_due_at=cal.add_working_hours(at, rules["accept_hours"]),
        duplicate_of_id=dups[0].event.id if dups else None,
    )
    session.add(event)
    session.flush()
    data: dict[str, Any] = {"channel": str(channel)}
    if dups:
        data["possible_duplicate"] = dups[0].event.number
    entry = append_timeline(session, event, actor, "report", None, State.reported, data=data)
    audit.record(
        session,
        actor,
        "event.report",
        "event",
        event.number,
        after={"category": category.code, "channel": str(channel), "grid": place.grid.code},
    )
    return Intake(event, entry, dups, place.grid.code, category, owner)


# ---- timeline and notices ---------------------------------------------------------------


def append_timeline(
    session: Session,
    event: Event,
    actor: Actor,
    action: str,
    from_state: State | None,
    to_state: State,
    note: str = "",
    data: dict[str, Any] | None = None,
) -> TimelineEntry:
    if from_state is None:
        seq = 1  # the report itself: no earlier entry can exist
    else:
        seq = (
            session.scalar(select(func.max(TimelineEntry.seq)).where(TimelineEntry.event_id == event.id)) or 0
        ) + 1
    entry = TimelineEntry(
        event_id=event.id,
        seq=seq,
        actor_user_id=actor.user_id or None,
        actor=actor.username,
        org_id=actor.org_id or None,
        action=action,
        from_state=str(from_state) if from_state else None,
        to_state=str(to_state),
        note=note,
        data=json.dumps(data or {}, ensure_ascii=False, default=str),
    )
    session.add(entry)
    session.flush()
    return entry


def timeline(session: Session, event: Event) -> list[TimelineEntry]:
    return list(
        session.scalars(
            select(TimelineEntry).where(TimelineEntry.event_id == event.id).order_by(TimelineEntry.seq)
        )
    )


def notify(
    session: Session,
    key: str,
    *,
    message: str,
    event: Event | None = None,
    user_id: int | None = None,
    org_id: int | None = None,
    kind: str = "info",
    **params: Any,
) -> bool:
    """Put a notice in a user's or an org's inbox once: a second call with the same key does nothing."""
    if session.scalar(select(Notification.id).where(Notification.key == key)) is not None:
        return False
    session.add(
        Notification(
            key=key[:128],
            user_id=user_id,
            org_id=org_id,
            event_id=event.id if event else None,
            kind=kind,
            message=message,
            params=json.dumps(params, ensure_ascii=False, default=str),
        )
    )
    session.flush()
    return True


def inbox_stmt(actor: Actor, *, unread_only: bool = False) -> Select[Any]:
    stmt = (
        select(Notification)
        .where(or_(Notification.user_id == actor.user_id, Notification.org_id == actor.org_id))
        .order_by(Notification.id.desc())
    )
    if unread_only:
        stmt = stmt.where(Notification.read_at.is_(None))
    return stmt


def mark_read(session: Session, actor: Actor, notification_id: int) -> Notification:
    n = session.get(Notification, notification_id)
    if n is None or (n.user_id != actor.user_id and n.org_id != actor.org_id):
        raise NotFound("No notice with this id.")
    n.read_at = n.read_at or utcnow()
    return n


# ---- queries ----------------------------------------------------------------------------


def event_number(session: Session, event_id: int | None) -> str | None:
    return session.scalar(select(Event.number).where(Event.id == event_id)) if event_id else None


def visible_stmt(actor: Actor) -> Select[Any]:
    """Events the actor may read: inside their region subtree, or reported by them."""
    stmt = select(Event)
    if actor.can(P.events_read):
        return stmt.where(
            or_(Event.region_path.startswith(actor.region_path), Event.reporter_user_id == actor.user_id)
        )
    return stmt.where(Event.reporter_user_id == actor.user_id)


def get_event(session: Session, actor: Actor, number: str) -> Event:
    event = session.scalar(visible_stmt(actor).where(Event.number == number))
    if event is None:
        raise NotFound("No event with number {number}.", number=number)
    return event


def check_version(event: Event, version: int | None) -> None:
    """Optimistic locking: the client says which version it saw; someone else's change wins."""
    if version is not None and version != event.version:
        raise Conflict(
            "Someone else changed event {number} a moment ago. Reload it and try again.", number=event.number
        )


def local_date(at: datetime) -> date:
    return (at + LOCAL_DAY_OFFSET).date()


# ---- presentation data shared by the API and the pages ----------------------------------


def describe(
    session: Session,
    actor: Actor,
    event: Event,
    *,
    grid_code: str | None = None,
    numbers: dict[int, str] | None = None,
) -> dict[str, Any]:
    """Display fields of an event for this reader: names resolved, reporter masked unless
    the reader dispatches it (they must be able to call the reporter back) or reported it.
    A caller that already knows the grid's code or other events' numbers passes them (the
    rest are identity-map hits right after intake)."""
    from civicgrid.core.masking import mask_name, mask_phone

    numbers = numbers or {}
    category = session.get(Category, event.category_id)
    if grid_code is None:
        grid = session.get(regions.Region, event.grid_id)
        grid_code = grid.code if grid else ""
    owner = session.get(Org, event.owner_org_id)
    lead = session.get(Org, event.lead_org_id) if event.lead_org_id else None
    clear = actor.can(P.events_dispatch) or actor.user_id == event.reporter_user_id
    who = event.reporter_name
    phone = event.reporter_phone
    if event.reporter_user_id and not who:
        user = session.execute(
            select(User.display_name, User.phone).where(User.id == event.reporter_user_id)
        ).one()
        who, phone = user.display_name, user.phone or ""
    reporter = (
        f"{who} {phone}".strip()
        if clear
        else f"{mask_name(who)} {mask_phone(phone) if phone else ''}".strip()
    )
    return {
        "number": event.number,
        "state": event.state,
        "category": category.code if category else "",
        "category_name": category.name if category else "",
        "platform": event.platform,
        "title": event.title,
        "description": event.description,
        "address": event.address,
        "lon": event.lon,
        "lat": event.lat,
        "grid_code": grid_code,
        "level": event.level,
        "channel": event.channel,
        "reporter": reporter,
        "owner_org": owner.name if owner else "",
        "lead_org": lead.name if lead else None,
        "reported_at": event.reported_at,
        "accept_due_at": event.accept_due_at,
        "handle_due_at": event.handle_due_at,
        "verify_due_at": event.verify_due_at,
        "closed_at": event.closed_at,
        "result": event.result,
        "reject_reason": event.reject_reason,
        "reject_basis": event.reject_basis,
        "redirect_to": event.redirect_to,
        "rating": event.rating,
        "rework_count": event.rework_count,
        "handback_count": event.handback_count,
        "duplicate_of": numbers.get(event.duplicate_of_id or 0)
        or event_number(session, event.duplicate_of_id),
        "merged_into": numbers.get(event.merged_into_id or 0) or event_number(session, event.merged_into_id),
        "version": event.version,
    }


def list_stmt(
    actor: Actor,
    *,
    state: State | None = None,
    category: str | None = None,
    platform: Platform | None = None,
    lead_org_id: int | None = None,
    owner_org_id: int | None = None,
    mine: bool = False,
    q: str = "",
    order: str = "newest",
) -> Select[Any]:
    """The filtered event list every page and the API use, inside the reader's scope."""
    stmt = visible_stmt(actor)
    if state:
        stmt = stmt.where(Event.state == state)
    if category:
        stmt = stmt.where(
            Event.category_id.in_(select(Category.id).where(Category.code.startswith(category)))
        )
    if platform:
        stmt = stmt.where(Event.platform == platform)
    if lead_org_id:
        stmt = stmt.where(Event.lead_org_id == lead_org_id)
    if owner_org_id:
        stmt = stmt.where(Event.owner_org_id == owner_org_id)
    if mine:
        stmt = stmt.where(Event.reporter_user_id == actor.user_id)
    if q:
        like = f"%{q.strip()}%"
        stmt = stmt.where(
            or_(
                Event.number.like(like),
                Event.title.like(like),
                Event.description.like(like),
                Event.address.like(like),
            )
        )
    if order == "due":
        return stmt.order_by(Event.handle_due_at.is_(None), Event.handle_due_at, Event.id)
    return stmt.order_by(Event.id.desc())


def find_by_external_id(session: Session, channel: Channel, external_id: str) -> Event | None:
    return session.scalar(select(Event).where(Event.channel == channel, Event.external_id == external_id))
