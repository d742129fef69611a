"""Rules of the event catalogue and intake: categories, numbering, routing, duplicates,
queries. State changes live in `actions.py`."""

from __future__ import annotations

import json
import math
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, Select, create_engine, func, literal, or_, select, text, union_all
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.exc import DBAPIError
from sqlalchemy.orm import Session
from sqlalchemy.sql import Subquery

from civicgrid.accounts import service as accounts
from civicgrid.accounts.models import Org, OrgKind, User
from civicgrid.accounts.permissions import Permission
from civicgrid.core import audit
from civicgrid.core.auth import Actor
from civicgrid.core.calendar import WorkCalendar, build_calendar, default_calendar
from civicgrid.core.db import insert_rows, new_ids, one_of, utcnow
from civicgrid.core.errors import AppError, Conflict, Invalid, NotFound, PermissionDenied
from civicgrid.core.vocab import Platform
from civicgrid.events import rollups
from civicgrid.events.models import (
    OPEN_PREDICATE,
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
    """Readable number: county code, local date, sequence — e.g. 331082-20261125-00017."""
    return take_numbers(session, {(prefix, local_date(at)): 1})[(prefix, local_date(at))][0]


def take_numbers(session: Session, wanted: dict[tuple[str, date], int]) -> dict[tuple[str, date], list[str]]:
    """Consecutive numbers for each (county prefix, local day): `wanted` says how many. One
    atomic upsert of the counters for all of them (a batch of reports takes its numbers at
    once), rows in key order so that concurrent writers lock them in the same order.

    On PostgreSQL the upsert runs on a connection of its own and commits at once, so the
    counters' row locks last one statement instead of the rest of the intake (they were the
    writers' queue: 60 % of the backends' time under load was waiting for them). The price: a
    number taken by an intake that then fails is not reused (a gap), never repeated. On SQLite
    the database serialises writers anyway and a second connection would wait for this
    transaction's own write lock, so the upsert stays in the transaction (no gaps). The same
    holds on PostgreSQL for a session that already wrote counters in its open transaction (the
    demo generator marks it with `NUMBERS_IN_TRANSACTION`): a second connection would wait for
    our own row locks forever."""
    if not wanted:
        return {}
    keys = sorted(wanted)
    if session.get_bind().dialect.name == "postgresql":
        # One statement text whatever the number of counters (prepared once per connection;
        # a multi-row VALUES was a new statement to build and compile for every batch).
        params = {
            "prefixes": [p for p, _ in keys],
            "days": [d for _, d in keys],
            "counts": [wanted[k] for k in keys],
        }
        if session.info.get(NUMBERS_IN_TRANSACTION):
            rows = [tuple(r) for r in session.execute(_TAKE_NUMBERS_PG, params)]
        else:
            rows = _take_numbers(_numbering_engine(session), params)
    else:
        ins = sqlite_insert(EventSequence)
        stmt = (
            ins.values([{"prefix": p, "day": d, "last": wanted[(p, d)]} for p, d in keys])
            .on_conflict_do_update(
                index_elements=["prefix", "day"], set_={"last": EventSequence.last + ins.excluded.last}
            )
            .returning(EventSequence.prefix, EventSequence.day, EventSequence.last)
        )
        rows = [tuple(r) for r in session.execute(stmt)]
    out = {}
    for prefix, day, last in rows:
        count = wanted[(prefix, day)]
        out[(prefix, day)] = [f"{prefix}-{day:%Y%m%d}-{seq:05d}" for seq in range(last - count + 1, last + 1)]
    return out


# Rows in the order given (sorted keys), so concurrent writers lock the counters in one order.
_TAKE_NUMBERS_PG = text(
    "INSERT INTO event_sequence (prefix, day, last) SELECT prefix, day, last FROM unnest("
    "CAST(:prefixes AS varchar[]), CAST(:days AS date[]), CAST(:counts AS int[])) WITH ORDINALITY "
    "AS u(prefix, day, last, k) ORDER BY k "
    "ON CONFLICT (prefix, day) DO UPDATE SET last = event_sequence.last + excluded.last "
    "RETURNING prefix, day, last"
)


def _take_numbers(engine: Engine, params: dict[str, Any]) -> list[tuple[Any, ...]]:
    # No pre-ping (a round trip per number): a connection found dead is replaced and the
    # upsert tried once more (if the first one did commit, those numbers become a gap).
    for attempt in (1, 2):
        try:
            with engine.connect() as conn:
                return [tuple(r) for r in conn.execute(_TAKE_NUMBERS_PG, params)]
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
    found = places_of(session, [(lon, lat)])[0]
    if isinstance(found, Invalid):
        raise found
    return found


def places_of(session: Session, points: Sequence[tuple[float, float]]) -> list[Place | Invalid]:
    """`place_of` of several points at once (one grid-index query); an Invalid for a point
    outside the jurisdiction."""
    out: list[Place | Invalid] = []
    for chain in regions.locate_many(session, points):
        if isinstance(chain, Invalid):
            out.append(chain)
            continue
        by_level = {str(r.level): r for r in chain}
        out.append(Place(by_level["grid"], by_level["village"], by_level["township"], by_level["county"]))
    return out


def owner_for(session: Session, place: Place, start_level: Level) -> Org:
    """The org that dispatches a new event: the village committee for village-level categories,
    else the township's four-platform office, else the county centre."""
    found = owners_for(session, [(place, start_level)])[0]
    if isinstance(found, Invalid):
        raise found
    return found


def owners_for(session: Session, wanted: Sequence[tuple[Place, Level]]) -> list[Org | Invalid]:
    """`owner_for` of several places in one query for all their candidates (read fresh: a new
    or closed office takes effect at once); an Invalid where no office is set up."""
    choices: list[list[tuple[int, OrgKind]]] = []
    for place, start_level in wanted:
        candidates: list[tuple[int, OrgKind]] = []
        if start_level == Level.village:
            candidates.append((place.village.id, OrgKind.village_committee))
        candidates += [
            (place.township.id, OrgKind.township_office),
            (place.county.id, OrgKind.governance_centre),
        ]
        choices.append(candidates)
    pairs = {pair for candidates in choices for pair in candidates}
    if not pairs:
        return []
    # The regions' active offices of the kinds asked for (a superset of the pairs: a few rows,
    # and a statement whose shape does not grow with the batch).
    orgs = session.scalars(
        select(Org)
        .where(
            Org.active.is_(True),
            one_of(session, Org.region_id, sorted({r for r, _ in pairs})),
            one_of(session, Org.kind, sorted({k for _, k in pairs})),
        )
        .order_by(Org.id)
    ).all()
    first: dict[tuple[int, OrgKind], Org] = {}
    for o in orgs:  # the lowest id when several sit there, as accounts.find_org picks
        first.setdefault((o.region_id, OrgKind(o.kind)), o)
    out: list[Org | Invalid] = []
    for (place, _level), candidates in zip(wanted, choices, strict=True):
        org = next((first[c] for c in candidates if c in first), None)
        out.append(
            org
            if org is not None
            else Invalid("No office is set up to receive events in {place}.", place=place.township.name)
        )
    return out


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


@dataclass
class Probe:
    """What a duplicate search compares: a report's category, place, text and time."""

    category_id: int
    lon: float
    lat: float
    text: str
    at: datetime
    rules: dict[str, Any]
    exclude_id: int | None = None


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
    Chinese text is similar (jieba tokens); most similar, then nearest first."""
    probe = Probe(category_id, lon, lat, text, at, rules, exclude_id)
    return duplicates_of(session, [probe], limit=limit)[0]


def duplicates_of(
    session: Session, probes: Sequence[Probe], limit: int = 5
) -> list[list[DuplicateCandidate]]:
    """`duplicate_candidates` of several reports in one query (a UNION ALL of each one's
    search), reading only the columns it compares (it runs on every intake)."""
    boxes = []  # (probe, category, since, lat0, lat1, lon0, lon1, excluded id)
    for k, probe in enumerate(probes):
        radius = probe.rules["dup_radius_m"]
        if radius <= 0:
            continue
        dlat = radius / 111_320.0
        dlon = radius / (111_320.0 * max(math.cos(math.radians(probe.lat)), 0.01))
        since = probe.at - timedelta(hours=probe.rules["dup_window_hours"])
        lats, lons = (probe.lat - dlat, probe.lat + dlat), (probe.lon - dlon, probe.lon + dlon)
        boxes.append((k, probe.category_id, since, *lats, *lons, probe.exclude_id or 0))
    found: list[list[DuplicateCandidate]] = [[] for _ in probes]
    if not boxes:
        return found
    if session.get_bind().dialect.name == "postgresql":
        # One statement whatever the number of probes (prepared once per connection).
        columns = list(zip(*boxes, strict=True))
        rows = session.execute(
            _DUPLICATES_PG, {name: list(col) for name, col in zip(_BOX, columns, strict=True)}
        )
    else:
        rows = session.execute(union_all(*(select(_duplicate_search(*box)) for box in boxes)))
    for row in rows:
        k = row.probe
        hit = _similar(probes[k], EventRef(row.id, row.number), row.lon, row.lat, row.title, row.description)
        if hit is not None:
            found[k].append(hit)
    for hits in found:
        hits.sort(key=lambda c: (-c.similarity, c.distance_m))
        del hits[limit:]
    return found


_BOX = ("k", "cat", "since", "lat0", "lat1", "lon0", "lon1", "excl")
_DUPLICATES_PG = text(
    f"""
SELECT p.k AS probe, e.id, e.number, e.title, e.description, e.lon, e.lat
FROM unnest(CAST(:k AS int[]), CAST(:cat AS int[]), CAST(:since AS timestamptz[]), CAST(:lat0 AS float8[]),
            CAST(:lat1 AS float8[]), CAST(:lon0 AS float8[]), CAST(:lon1 AS float8[]), CAST(:excl AS int[]))
     AS p(k, cat, since, lat0, lat1, lon0, lon1, excl)
CROSS JOIN LATERAL (
  SELECT id, number, title, description, lon, lat FROM event
  WHERE category_id = p.cat AND {OPEN_PREDICATE} AND reported_at >= p.since
    AND lat BETWEEN p.lat0 AND p.lat1 AND lon BETWEEN p.lon0 AND p.lon1 AND id <> p.excl
  ORDER BY id DESC LIMIT 200
) AS e"""
)


def _duplicate_search(
    k: int, category_id: int, since: datetime, lat0: float, lat1: float, lon0: float, lon1: float, excl: int
) -> Subquery:
    """One probe's search, for the databases without LATERAL (SQLite): the newest 200 open
    events of the category in the box and the time window."""
    return (
        select(
            literal(k).label("probe"),
            Event.id,
            Event.number,
            Event.title,
            Event.description,
            Event.lon,
            Event.lat,
        )
        .where(
            Event.category_id == category_id,
            text(OPEN_PREDICATE),
            Event.reported_at >= since,
            Event.lat.between(lat0, lat1),
            Event.lon.between(lon0, lon1),
            Event.id != excl,
        )
        .order_by(Event.id.desc())
        .limit(200)
        .subquery()
    )


def _similar(
    probe: Probe, ref: EventRef, lon: float, lat: float, title: str, description: str
) -> DuplicateCandidate | None:
    """The candidate, when the event lies within the radius and its text is similar enough.
    Texts are tokenised only here, for a candidate within the radius (`tokens` keeps them):
    most reports have none, and jieba was a tenth of intake's Python."""
    d = distance_m(probe.lon, probe.lat, lon, lat)
    if d > probe.rules["dup_radius_m"]:
        return None
    mine = tokens(probe.text)
    sim = similarity(mine, tokens(f"{title} {description}"))
    if mine and sim < DUPLICATE_TEXT_THRESHOLD:
        return None
    return DuplicateCandidate(ref, d, sim)


# ---- intake -----------------------------------------------------------------------------

TITLE_MAX = 200
DESCRIPTION_MAX = 5000


@dataclass
class Report:
    """One report as any intake channel hands it in: who reports, and what and where."""

    actor: Actor
    category_code: str
    lon: float
    lat: float
    description: str
    channel: Channel
    title: str = ""
    address: str = ""
    reporter_name: str = ""
    reporter_phone: str = ""
    external_id: str | None = None
    reported_at: datetime | None = None


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
    """Every intake channel ends here (see `receive_events`); returns the new event."""
    return receive_event(
        session,
        Report(
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
        ),
    ).event


def receive_event(session: Session, report: Report) -> Intake:
    """`receive_events` of one report; its error is raised."""
    result = receive_events(session, [report])[0]
    if isinstance(result, AppError):
        raise result
    return result


@dataclass
class _Checked:
    """A report that passed every check, with what the checks found."""

    slot: int  # the report's place in the batch (and in the result)
    report: Report
    category: Category
    rules: dict[str, Any]
    place: Place
    owner: Org
    at: datetime
    title: str
    description: str
    duplicates: list[DuplicateCandidate]

    @classmethod
    def of(
        cls, slot: int, report: Report, category: Category, rules: dict[str, Any], place: Place
    ) -> _Checked:
        description = (report.description or "").strip()
        title = (report.title or description[:40]).strip()
        at = report.reported_at or utcnow()
        owner: Org = None  # type: ignore[assignment]  # found for the whole batch next
        return cls(slot, report, category, rules, place, owner, at, title, description, [])

    def probe(self) -> Probe:
        r = self.report
        return Probe(self.category.id, r.lon, r.lat, f"{self.title} {self.description}", self.at, self.rules)

    def counter(self) -> tuple[str, date]:
        """Whose numbers it takes: its county's, for its local day."""
        return self.place.county.code[:6], local_date(self.at)


def _check_report(report: Report, categories: dict[str, Category]) -> Category | AppError:
    """Everything about one report that needs neither a query nor its place: permission,
    category, text. Returns its category."""
    try:
        if not report.actor.can(P.events_report):
            raise PermissionDenied("Your role does not allow this.")
        category = categories.get(report.category_code)
        if category is None:
            raise Invalid("Unknown event category {code}.", code=report.category_code, field="category")
        if category.parent_id is None:
            raise Invalid("Choose a sub-category of {name}.", name=category.name, field="category")
        if not category.active:
            raise Invalid("The category {name} is no longer in use.", name=category.name, field="category")
        description = (report.description or "").strip()
        if not description:
            raise Invalid("Describe what is wrong.", field="description")
        if len(description) > DESCRIPTION_MAX or len(report.title) > TITLE_MAX:
            raise Invalid("The title or description is too long.", field="description")
    except AppError as exc:
        return exc
    return category


def _checked(results: Sequence[object]) -> list[_Checked]:
    return [c for c in results if isinstance(c, _Checked)]


def _batch_duplicates(
    checked: _Checked, earlier: Sequence[tuple[_Checked, EventRef]]
) -> list[DuplicateCandidate]:
    """Duplicate candidates among the reports of the same category taken in before this one
    in the same batch (not yet visible to the query): the same test as `duplicates_of`."""
    probe = checked.probe()
    if probe.rules["dup_radius_m"] <= 0:
        return []
    since = probe.at - timedelta(hours=probe.rules["dup_window_hours"])
    found = []
    for other, ref in earlier:
        if not (since <= other.at <= checked.at):
            continue
        o = other.report
        hit = _similar(probe, ref, o.lon, o.lat, other.title, other.description)
        if hit is not None:
            found.append(hit)
    return found


def receive_events(session: Session, reports: Sequence[Report]) -> list[Intake | AppError]:
    """Take in reports, each on its own terms: locate, route to its owner, check duplicates,
    set the acceptance deadline, number, write the event, its first timeline entry and the
    audit record. A report that fails a check gets its error in its place in the result and
    writes nothing; the others go on.

    Several reports at once (the API's group commit, imports) share every statement: one
    query for the categories, one for the owners, one counter upsert per county and day, one
    INSERT each for the events, timeline entries, rollups and audit records — so a report's
    cost is mostly its own duplicate query. The order keeps the locks short: everything that
    only reads comes first; the numbers, the audit chain's lock and the rollups' rows come
    last."""
    codes = {r.category_code for r in reports}
    categories = {
        c.code: c for c in session.scalars(select(Category).where(one_of(session, Category.code, codes)))
    }
    rules = {c.id: rules_of(c) for c in categories.values()}  # one dict per category, read only
    found = [_check_report(r, categories) for r in reports]
    passed = [k for k, f in enumerate(found) if isinstance(f, Category)]
    points = [(reports[k].lon, reports[k].lat) for k in passed]
    places = dict(zip(passed, places_of(session, points), strict=True))
    results: list[Intake | AppError | _Checked] = []
    for k, (report, category) in enumerate(zip(reports, found, strict=True)):
        if isinstance(category, AppError):
            results.append(category)
            continue
        place = places[k]  # or outside the jurisdiction
        results.append(
            place
            if isinstance(place, Invalid)
            else _Checked.of(k, report, category, rules[category.id], place)
        )
    located = _checked(results)
    owners = owners_for(session, [(c.place, Level(c.rules["start_level"])) for c in located])
    for c, owner in zip(located, owners, strict=True):
        if isinstance(owner, Invalid):
            results[c.slot] = owner
        else:
            c.owner = owner
    checked = _checked(results)
    for c, dups in zip(checked, duplicates_of(session, [c.probe() for c in checked]), strict=True):
        c.duplicates = dups
    # Numbers per county and day, in the reports' order.
    wanted: dict[tuple[str, date], int] = {}
    for c in checked:
        wanted[c.counter()] = wanted.get(c.counter(), 0) + 1
    numbers = {key: list(reversed(taken)) for key, taken in take_numbers(session, wanted).items()}
    event_ids, entry_ids = new_ids(session, [Event.__table__, TimelineEntry.__table__], len(checked))  # type: ignore[list-item]
    rules_json = {k: json.dumps(r, ensure_ascii=False) for k, r in rules.items()}
    rows: list[dict[str, Any]] = []
    made: list[tuple[_Checked, EventRef]] = []
    by_category: dict[int, list[tuple[_Checked, EventRef]]] = {}
    for c, event_id in zip(checked, event_ids, strict=True):
        number = numbers[c.counter()].pop()
        same = by_category.setdefault(c.category.id, [])
        in_batch = _batch_duplicates(c, same)
        c.duplicates = sorted(c.duplicates + in_batch, key=lambda d: (-d.similarity, d.distance_m))[:5]
        r = c.report
        cal = calendar_for(session, c.owner.id)
        rows.append(
            {
                "id": event_id,
                "number": number,
                "category_id": c.category.id,
                "platform": c.category.platform,
                "rules": rules_json[c.category.id],
                "title": c.title,
                "description": c.description,
                "address": r.address.strip(),
                "lon": r.lon,
                "lat": r.lat,
                "grid_id": c.place.grid.id,
                "village_id": c.place.village.id,
                "township_id": c.place.township.id,
                "county_id": c.place.county.id,
                "region_path": c.place.grid.path,
                "channel": r.channel,
                "reporter_user_id": r.actor.user_id or None,
                "reporter_name": r.reporter_name,
                "reporter_phone": r.reporter_phone,
                "external_id": r.external_id,
                "state": State.reported,
                "level": LEVEL_OF_KIND[c.owner.kind],
                "owner_org_id": c.owner.id,
                "reported_at": c.at,
                "accept_due_at": cal.add_working_hours(c.at, c.rules["accept_hours"]),
                "duplicate_of_id": c.duplicates[0].event.id if c.duplicates else None,
            }
        )
        made.append((c, EventRef(event_id, number)))
        same.append(made[-1])
    events = insert_rows(session, Event, rows)
    entries = insert_rows(
        session,
        TimelineEntry,
        [
            first_entry(entry_id, ref.id, c.report.actor, c.report.channel, c.duplicates)
            for entry_id, (c, ref) in zip(entry_ids, made, strict=True)
        ],
    )
    audit.record_many(
        session,
        [
            audit.Entry(
                c.report.actor,
                "event.report",
                "event",
                ref.number,
                after={
                    "category": c.category.code,
                    "channel": str(c.report.channel),
                    "grid": c.place.grid.code,
                },
            )
            for c, ref in made
        ],
    )
    # Last: other writers wait for the rollups' rows until this transaction commits.
    rollups.count_reported(session, event_ids)
    intakes = {
        id(c): Intake(event, entry, c.duplicates, c.place.grid.code, c.category, c.owner)
        for c, event, entry in zip(checked, events, entries, strict=True)
    }
    return [intakes[id(r)] if isinstance(r, _Checked) else r for r in results]


# ---- timeline and notices ---------------------------------------------------------------


def first_entry(
    entry_id: int, event_id: int, actor: Actor, channel: Channel, duplicates: Sequence[DuplicateCandidate]
) -> dict[str, Any]:
    """The report itself, the first entry of every timeline, as a row for `insert_rows`."""
    data: dict[str, Any] = {"channel": str(channel)}
    if duplicates:
        data["possible_duplicate"] = duplicates[0].event.number
    return {"id": entry_id, **_entry(event_id, 1, actor, "report", None, State.reported, "", data)}


def _entry(
    event_id: int,
    seq: int,
    actor: Actor,
    action: str,
    from_state: State | None,
    to_state: State,
    note: str,
    data: dict[str, Any] | None,
) -> dict[str, Any]:
    """A timeline entry's columns."""
    return {
        "event_id": event_id,
        "seq": seq,
        "at": utcnow(),
        "actor_user_id": actor.user_id or None,
        "actor": actor.username,
        "org_id": actor.org_id or None,
        "action": action,
        "from_state": str(from_state) if from_state else None,
        "to_state": str(to_state),
        "note": note,
        "data": json.dumps(data or {}, ensure_ascii=False, default=str),
    }


def append_timeline(
    session: Session,
    event: Event,
    actor: Actor,
    action: str,
    from_state: State,
    to_state: State,
    note: str = "",
    data: dict[str, Any] | None = None,
) -> TimelineEntry:
    """A step after the report (whose entry `receive_events` writes with the event)."""
    seq = (
        session.scalar(select(func.max(TimelineEntry.seq)).where(TimelineEntry.event_id == event.id)) or 0
    ) + 1
    entry = TimelineEntry(**_entry(event.id, seq, actor, action, from_state, to_state, note, data))
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
    reporters: dict[int, tuple[str, str]] | None = None,
) -> dict[str, Any]:
    """Display fields of an event for this reader: names resolved, reporter masked unless
    the reader dispatches it (they must be able to call the reporter back) or reported it.
    A caller that already knows the grid's code, other events' numbers or the reporters
    (`reporters_of`) passes them (the rest are identity-map hits right after intake)."""
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
        known = reporters or {}
        who, phone = (
            known.get(event.reporter_user_id)
            or reporters_of(session, [event.reporter_user_id])[event.reporter_user_id]
        )
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


def reporters_of(session: Session, user_ids: Sequence[int]) -> dict[int, tuple[str, str]]:
    """Name and phone of reporting users, for `describe` (one query for a batch of events)."""
    rows = session.execute(
        select(User.id, User.display_name, User.phone).where(one_of(session, User.id, set(user_ids)))
    )
    return {r.id: (r.display_name, r.phone or "") for r in rows}


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
