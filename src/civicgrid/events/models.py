"""The four-platform event workflow: catalogue, events, their parties and immutable timeline."""

from __future__ import annotations

import enum
from collections.abc import Iterable
from datetime import date, datetime

from sqlalchemy import (
    Date,
    Enum,
    Float,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    UniqueConstraint,
    text,
)
from sqlalchemy.orm import Mapped, mapped_column, relationship

from civicgrid.core.db import Base, TimestampMixin, utcnow
from civicgrid.core.vocab import Platform


class Severity(enum.StrEnum):
    low = "low"
    medium = "medium"
    high = "high"
    critical = "critical"


class Responsibility(enum.StrEnum):
    location_first = "location_first"  # 先属地后属主: the township's station, else the county department
    owner = "owner"  # 属主: the county department of the platform


class HandleUnit(enum.StrEnum):
    hours = "hours"
    days = "days"


class State(enum.StrEnum):
    reported = "reported"
    accepted = "accepted"
    rejected = "rejected"
    merged = "merged"
    dispatched = "dispatched"
    handling = "handling"
    handled = "handled"
    verified = "verified"
    closed = "closed"
    rated = "rated"
    archived = "archived"
    suspended = "suspended"


STATE_LABELS = {
    State.reported: "Reported",
    State.accepted: "Accepted",
    State.rejected: "Rejected",
    State.merged: "Merged",
    State.dispatched: "Dispatched",
    State.handling: "Handling",
    State.handled: "Handled",
    State.verified: "Verified",
    State.closed: "Closed",
    State.rated: "Rated",
    State.archived: "Archived",
    State.suspended: "Suspended",
}


class Level(enum.StrEnum):
    village = "village"
    township = "township"
    county = "county"


class Channel(enum.StrEnum):
    web = "web"
    api = "api"
    open311 = "open311"
    hotline = "hotline"
    risk = "risk"
    internal = "internal"


class Category(TimestampMixin, Base):
    """An entry of the event catalogue (大类 when parent_id is null, else 小类)."""

    __tablename__ = "event_category"

    id: Mapped[int] = mapped_column(primary_key=True)
    code: Mapped[str] = mapped_column(String(16), unique=True)
    name: Mapped[str] = mapped_column(String(100))
    name_en: Mapped[str] = mapped_column(String(200), default="")
    parent_id: Mapped[int | None] = mapped_column(ForeignKey("event_category.id"), index=True)
    platform: Mapped[Platform] = mapped_column(Enum(Platform, native_enum=False, length=16))
    severity: Mapped[Severity] = mapped_column(
        Enum(Severity, native_enum=False, length=16), default=Severity.medium
    )
    responsibility: Mapped[Responsibility] = mapped_column(
        Enum(Responsibility, native_enum=False, length=16), default=Responsibility.location_first
    )
    start_level: Mapped[Level] = mapped_column(
        Enum(Level, native_enum=False, length=16), default=Level.township
    )
    accept_hours: Mapped[float] = mapped_column(Float, default=2)
    handle_amount: Mapped[float] = mapped_column(Float, default=3)
    handle_unit: Mapped[HandleUnit] = mapped_column(
        Enum(HandleUnit, native_enum=False, length=8), default=HandleUnit.days
    )
    verify_hours: Mapped[float] = mapped_column(Float, default=24)
    escalate_when_overdue: Mapped[bool] = mapped_column(default=False)
    dup_radius_m: Mapped[float] = mapped_column(Float, default=100)
    dup_window_hours: Mapped[float] = mapped_column(Float, default=72)
    is_dispute: Mapped[bool] = mapped_column(default=False)
    active: Mapped[bool] = mapped_column(default=True)
    version: Mapped[int] = mapped_column(Integer, default=1)


class Event(TimestampMixin, Base):
    __tablename__ = "event"
    __table_args__ = (
        Index("ix_event_state_handle_due", "state", "handle_due_at"),
        Index("ix_event_region_path_state", "region_path", "state"),
        Index("ix_event_category_reported", "category_id", "reported_at"),
        # A reporter's events by time ("my reports", the cockpit's grid-worker panels), covering
        # the grid so that "the worker's last report in their grid" never reads the table.
        Index("ix_event_reporter_reported", "reporter_user_id", "reported_at", "grid_id"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    number: Mapped[str] = mapped_column(String(32), unique=True)
    category_id: Mapped[int] = mapped_column(ForeignKey("event_category.id"))
    platform: Mapped[Platform] = mapped_column(Enum(Platform, native_enum=False, length=16))
    rules: Mapped[str] = mapped_column(Text)  # JSON: the category's rules in force at creation
    title: Mapped[str] = mapped_column(String(200))
    description: Mapped[str] = mapped_column(Text, default="")
    address: Mapped[str] = mapped_column(String(300), default="")
    lon: Mapped[float] = mapped_column(Float)
    lat: Mapped[float] = mapped_column(Float)
    grid_id: Mapped[int] = mapped_column(ForeignKey("region.id"), index=True)
    village_id: Mapped[int] = mapped_column(ForeignKey("region.id"))
    township_id: Mapped[int] = mapped_column(ForeignKey("region.id"), index=True)
    county_id: Mapped[int] = mapped_column(ForeignKey("region.id"), index=True)
    region_path: Mapped[str] = mapped_column(String(255))  # the grid's path: scope filter
    channel: Mapped[Channel] = mapped_column(Enum(Channel, native_enum=False, length=16))
    reporter_user_id: Mapped[int | None] = mapped_column(ForeignKey("user_account.id"))
    reporter_name: Mapped[str] = mapped_column(String(100), default="")
    reporter_phone: Mapped[str] = mapped_column(String(32), default="")
    external_id: Mapped[str | None] = mapped_column(String(64), index=True)
    state: Mapped[State] = mapped_column(Enum(State, native_enum=False, length=16), index=True)
    state_before_suspend: Mapped[State | None] = mapped_column(Enum(State, native_enum=False, length=16))
    level: Mapped[Level] = mapped_column(Enum(Level, native_enum=False, length=16))
    owner_org_id: Mapped[int] = mapped_column(ForeignKey("org.id"), index=True)  # who dispatches
    lead_org_id: Mapped[int | None] = mapped_column(ForeignKey("org.id"), index=True)  # who handles
    merged_into_id: Mapped[int | None] = mapped_column(ForeignKey("event.id"))
    duplicate_of_id: Mapped[int | None] = mapped_column(ForeignKey("event.id"))  # suggested merge target
    reject_reason: Mapped[str] = mapped_column(Text, default="")
    reject_basis: Mapped[str] = mapped_column(String(300), default="")
    redirect_to: Mapped[str] = mapped_column(String(300), default="")
    result: Mapped[str] = mapped_column(Text, default="")
    reported_at: Mapped[datetime] = mapped_column(default=utcnow)
    accept_due_at: Mapped[datetime]
    handle_due_at: Mapped[datetime | None]
    verify_due_at: Mapped[datetime | None]
    accepted_at: Mapped[datetime | None]
    dispatched_at: Mapped[datetime | None]
    handled_at: Mapped[datetime | None]
    verified_at: Mapped[datetime | None]
    closed_at: Mapped[datetime | None]
    archived_at: Mapped[datetime | None]
    extension_requested_hours: Mapped[float | None] = mapped_column(Float)
    extension_reason: Mapped[str] = mapped_column(Text, default="")
    rework_count: Mapped[int] = mapped_column(Integer, default=0)
    handback_count: Mapped[int] = mapped_column(Integer, default=0)
    escalation_count: Mapped[int] = mapped_column(Integer, default=0)
    supervision_count: Mapped[int] = mapped_column(Integer, default=0)
    rating: Mapped[int | None] = mapped_column(Integer)
    rating_comment: Mapped[str] = mapped_column(Text, default="")
    # Set at close, so statistics never recompute working time over millions of rows.
    handling_hours: Mapped[float | None] = mapped_column(Float)
    closed_on_time: Mapped[bool | None]
    escalated_to_county: Mapped[bool] = mapped_column(default=False)
    # Deadline notices already sent, e.g. "handle:soon,handle:overdue": the worker never repeats one.
    notices: Mapped[str] = mapped_column(String(255), default="")
    version: Mapped[int] = mapped_column(Integer, default=1)

    __mapper_args__ = {"version_id_col": version}  # noqa: RUF012  optimistic locking

    assists: Mapped[list[EventOrg]] = relationship(cascade="all, delete-orphan")


class EventOrg(Base):
    """An assisting org of an event (the lead is Event.lead_org_id)."""

    __tablename__ = "event_org"
    __table_args__ = (UniqueConstraint("event_id", "org_id", name="uq_event_org_event_org"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    event_id: Mapped[int] = mapped_column(ForeignKey("event.id", ondelete="CASCADE"), index=True)
    org_id: Mapped[int] = mapped_column(ForeignKey("org.id"))


class TimelineEntry(Base):
    """One immutable step of an event's life (the database refuses UPDATE and DELETE)."""

    __tablename__ = "event_timeline"
    __table_args__ = (UniqueConstraint("event_id", "seq", name="uq_event_timeline_event_seq"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    event_id: Mapped[int] = mapped_column(ForeignKey("event.id"), index=True)
    seq: Mapped[int] = mapped_column(Integer)
    at: Mapped[datetime] = mapped_column(default=utcnow)
    actor_user_id: Mapped[int | None] = mapped_column(ForeignKey("user_account.id"))
    actor: Mapped[str] = mapped_column(String(64))
    org_id: Mapped[int | None] = mapped_column(ForeignKey("org.id"))
    action: Mapped[str] = mapped_column(String(32))
    from_state: Mapped[str | None] = mapped_column(String(16))
    to_state: Mapped[str] = mapped_column(String(16))
    note: Mapped[str] = mapped_column(Text, default="")
    data: Mapped[str] = mapped_column(Text, default="{}")


class EventSequence(Base):
    """Per county and day, the last number handed out (readable event numbers)."""

    __tablename__ = "event_sequence"
    __table_args__ = (UniqueConstraint("prefix", "day", name="uq_event_sequence_prefix_day"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    prefix: Mapped[str] = mapped_column(String(16))
    day: Mapped[date] = mapped_column(Date)
    last: Mapped[int] = mapped_column(Integer, default=0)


class Attachment(Base):
    """A file of an event, stored content-addressed under the data dir."""

    __tablename__ = "event_attachment"

    id: Mapped[int] = mapped_column(primary_key=True)
    event_id: Mapped[int] = mapped_column(ForeignKey("event.id"), index=True)
    timeline_seq: Mapped[int | None] = mapped_column(Integer)
    sha256: Mapped[str] = mapped_column(String(64), index=True)
    filename: Mapped[str] = mapped_column(String(200))
    mime: Mapped[str] = mapped_column(String(64))
    size: Mapped[int] = mapped_column(Integer)
    has_thumbnail: Mapped[bool] = mapped_column(default=False)
    uploaded_by: Mapped[int | None] = mapped_column(ForeignKey("user_account.id"))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class Notification(Base):
    """The in-app inbox. `key` makes each notice unique, so a restarted worker never repeats one."""

    __tablename__ = "notification"

    id: Mapped[int] = mapped_column(primary_key=True)
    key: Mapped[str] = mapped_column(String(128), unique=True)
    user_id: Mapped[int | None] = mapped_column(ForeignKey("user_account.id"), index=True)
    org_id: Mapped[int | None] = mapped_column(ForeignKey("org.id"), index=True)
    event_id: Mapped[int | None] = mapped_column(ForeignKey("event.id"))
    kind: Mapped[str] = mapped_column(String(32))
    message: Mapped[str] = mapped_column(Text)  # English msgid; params in `params`
    params: Mapped[str] = mapped_column(Text, default="{}")
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    read_at: Mapped[datetime | None]


# The deadline worker (deadlines.py) reads each stage's candidates through a small partial
# index: the open events of the stage without an overdue notice for it yet, so finished
# events and notified backlog are never read. deadlines.py queries with the same predicate
# text (both planners must see that the query implies it).
DEADLINE_STAGE_STATES = {
    "accept": ("reported",),
    "handle": ("dispatched", "handling"),
    "verify": ("handled",),
}


def state_predicate(states: Iterable[str]) -> str:
    """`state IN ('a', 'b', …)` as literal SQL, for a partial index and the queries that must
    repeat its predicate word for word (so that both planners see that the index applies)."""
    return "state IN (" + ", ".join(f"'{s}'" for s in states) + ")"


def deadline_pending_predicate(stage: str) -> str:
    return f"{state_predicate(DEADLINE_STAGE_STATES[stage])} AND notices NOT LIKE '%{stage}:overdue%'"


# States in which an event is still being worked on (deadlines run, duplicates may attach).
OPEN_STATES = (
    State.reported,
    State.accepted,
    State.dispatched,
    State.handling,
    State.handled,
    State.suspended,
)
OPEN_PREDICATE = state_predicate(OPEN_STATES)

# The duplicate search on every report (events/service.py, duplicates_of): open events of the
# category in a thin band of latitude, the longitude and the time window checked in the index.
# By (category, reported_at) it read every open event of the category in the window, which on
# a busy category is thousands of rows for the few nearby: a quarter of intake's database time.
Index(
    "ix_event_open_near",
    Event.category_id,
    Event.lat,
    Event.lon,
    Event.reported_at,
    postgresql_where=text(OPEN_PREDICATE),
    sqlite_where=text(OPEN_PREDICATE),
)

for _stage, _due in (
    ("accept", Event.accept_due_at),
    ("handle", Event.handle_due_at),
    ("verify", Event.verify_due_at),
):
    _pending = text(deadline_pending_predicate(_stage))
    Index(f"ix_event_{_stage}_due_pending", _due, Event.id, postgresql_where=_pending, sqlite_where=_pending)


class ImportStatus(enum.StrEnum):
    """Where a hotline (12345) import stands; see events/hotline.py."""

    mapping = "mapping"  # the file's columns do not yet cover the required fields
    validating = "validating"
    validated = "validated"  # the dry-run report is ready
    committing = "committing"
    committed = "committed"
    failed = "failed"  # the file could not be read, or the import stopped


class ImportJob(TimestampMixin, Base):
    """One uploaded hotline spreadsheet: its mapping, progress, dry-run report and result.
    Progress lives here so every page refresh and every server process sees it."""

    __tablename__ = "event_import"

    id: Mapped[int] = mapped_column(primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("user_account.id"), index=True)
    membership_id: Mapped[int] = mapped_column(Integer)  # the role the importer acted in
    org_id: Mapped[int] = mapped_column(ForeignKey("org.id"))
    region_path: Mapped[str] = mapped_column(String(255), index=True)  # the importer's scope
    filename: Mapped[str] = mapped_column(String(200))
    file_type: Mapped[str] = mapped_column(String(8))
    encoding: Mapped[str] = mapped_column(String(16), default="")
    size: Mapped[int] = mapped_column(Integer)
    sha256: Mapped[str] = mapped_column(String(64))
    # The file itself until it is committed (kept in the database so any process can commit it).
    content: Mapped[bytes] = mapped_column(deferred=True, default=b"")
    headers: Mapped[str] = mapped_column(Text, default="[]")  # JSON list, in file order
    header_line: Mapped[int] = mapped_column(Integer, default=1)
    mapping: Mapped[str] = mapped_column(Text, default="{}")  # JSON header → field
    status: Mapped[ImportStatus] = mapped_column(Enum(ImportStatus, native_enum=False, length=16))
    phase: Mapped[str] = mapped_column(String(16), default="")
    done: Mapped[int] = mapped_column(Integer, default=0)
    total: Mapped[int] = mapped_column(Integer, default=0)
    rows: Mapped[int] = mapped_column(Integer, default=0)
    ok_rows: Mapped[int] = mapped_column(Integer, default=0)
    bad_rows: Mapped[int] = mapped_column(Integer, default=0)
    skipped_rows: Mapped[int] = mapped_column(Integer, default=0)
    created_rows: Mapped[int] = mapped_column(Integer, default=0)
    # JSON [{"line", "ticket", "skipped", "reasons": [[msgid, params], ...]}]: translated when shown.
    problems: Mapped[str] = mapped_column(Text, deferred=True, default="[]")
    created: Mapped[str] = mapped_column(Text, deferred=True, default="[]")  # JSON [[line, number]]
    error: Mapped[str] = mapped_column(Text, default="")  # English msgid
    error_params: Mapped[str] = mapped_column(Text, default="{}")
    committed_at: Mapped[datetime | None]


# Statistics (events/stats.py, docs/metrics.md): covering indexes, so every aggregate reads
# one index range and never the wide event rows. One family leads with the time column (the
# whole jurisdiction, a county), the other with the township (a township, village or grid).
# The columns every cohort row reads come first: SQLite decodes a record only up to the last
# column it needs.
_STATS_COHORT = (
    Event.state,
    Event.closed_on_time,
    Event.rating,
    Event.handling_hours,
    Event.rework_count,
    Event.level,
    Event.handle_due_at,
)
_STATS_GROUPS = (Event.village_id, Event.grid_id, Event.platform, Event.category_id, Event.lead_org_id)
Index(
    "ix_event_stats_accepted",
    Event.accepted_at,
    *_STATS_COHORT,
    Event.county_id,
    Event.township_id,
    *_STATS_GROUPS,
)
Index("ix_event_stats_town_accepted", Event.township_id, Event.accepted_at, *_STATS_COHORT, *_STATS_GROUPS)
_STATS_SCOPE = (Event.village_id, Event.grid_id, Event.platform, Event.category_id)
# The id last: the scope's event ids come from the index alone (hand-backs' semi-join).
Index(
    "ix_event_stats_reported",
    Event.reported_at,
    Event.state,
    Event.county_id,
    Event.township_id,
    *_STATS_SCOPE,
    Event.id,
)
Index(
    "ix_event_stats_town_reported", Event.township_id, Event.reported_at, Event.state, *_STATS_SCOPE, Event.id
)
Index("ix_event_stats_closed", Event.closed_at, Event.county_id, Event.township_id, *_STATS_SCOPE)
# Overdue and due-soon lists (queue, cockpit): events still being handled, in deadline order, so
# "the first 20 overdue" stops after 20 entries instead of walking every past deadline of the
# history (1.3 s → 0.3 ms at 10 M events on PostgreSQL). The region columns filter in the index.
NOT_DONE_PREDICATE = "state IN ('dispatched', 'handling')"  # queries name it as written here
Index(
    "ix_event_not_done_due",
    Event.handle_due_at,
    Event.id,
    Event.county_id,
    Event.township_id,
    Event.village_id,
    Event.grid_id,
    postgresql_where=text(NOT_DONE_PREDICATE),
    sqlite_where=text(NOT_DONE_PREDICATE),
)
Index(
    "ix_event_stats_due",
    Event.handle_due_at,
    Event.state,
    Event.handled_at,
    Event.county_id,
    Event.township_id,
    *_STATS_SCOPE,
)
Index(
    "ix_event_timeline_action_at",
    TimelineEntry.action,
    TimelineEntry.at,
    TimelineEntry.org_id,
    TimelineEntry.event_id,
)
