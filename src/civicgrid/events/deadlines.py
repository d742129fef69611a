"""Deadlines at work: the worker job that reminds before a stage's deadline, warns when it has
passed, and escalates overdue events whose category says so (docs/events-deadlines.md).

Idempotent: each notice has a stable key (unique in `notification`) and is recorded in
`Event.notices` with the deadline it was about, so a rerun, a restart or a second worker never
repeats one, and a changed deadline earns new ones. On PostgreSQL the rows are locked with
SKIP LOCKED, so several workers split the work; SQLite serialises writers instead.
"""

from __future__ import annotations

import json
import logging
import math
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import Row, Select, select, text, tuple_, update
from sqlalchemy.exc import IntegrityError, OperationalError
from sqlalchemy.orm import InstrumentedAttribute, Session
from sqlalchemy.orm.attributes import set_committed_value
from sqlalchemy.orm.exc import StaleDataError

from civicgrid.accounts.models import Org
from civicgrid.accounts.permissions import Permission
from civicgrid.core.auth import SYSTEM, Actor
from civicgrid.core.calendar import WorkCalendar, default_calendar
from civicgrid.core.db import utcnow
from civicgrid.core.errors import AppError
from civicgrid.core.i18n import DEFAULT_LOCALE, gettext, reset_locale, set_locale
from civicgrid.events import actions, service
from civicgrid.events.models import (
    DEADLINE_STAGE_STATES,
    Event,
    HandleUnit,
    Level,
    State,
    deadline_pending_predicate,
)

log = logging.getLogger("civicgrid.deadlines")


def N_(message: str) -> str:
    """Marks a msgid for extraction; it is translated when the inbox shows it."""
    return message


# "Due soon" starts when less than 20% of the stage's working time is left, but never later
# than 2 working hours before the deadline; it never covers more than half of a short stage
# and never starts more than 16 working hours (two working days) early.
SOON_SHARE = 0.2
SOON_MIN_HOURS = 2.0
SOON_MAX_HOURS = 16.0
# Candidate rows: due within SOON_MAX_HOURS working hours of the default calendar (an org
# with shorter working days is reminded a little later, never after its deadline) and
# without an overdue notice for the stage yet, read through a partial index per stage
# (models.py), so finished events and notified backlog are never read.
HORIZON_WORKING_HOURS = SOON_MAX_HOURS
BATCH = 200
NOTICES_MAX = 255  # Event.notices column length


def _states(stage: str) -> tuple[State, ...]:
    return tuple(State(s) for s in DEADLINE_STAGE_STATES[stage])


@dataclass(frozen=True)
class Stage:
    name: str
    states: tuple[State, ...]
    due: InstrumentedAttribute[datetime | None]
    soon_message: str
    overdue_message: str

    def responsible(self, owner_org_id: int, lead_org_id: int | None) -> int | None:
        """The org whose turn it is: the lead department while handling, else the owner."""
        return lead_org_id if self.name == "handle" else owner_org_id


STAGES: tuple[Stage, ...] = (
    Stage(
        "accept",
        _states("accept"),
        Event.accept_due_at,
        N_("Reminder: {org} must accept event {number} by {due}."),
        N_("Overdue: {org} was due to accept event {number} by {due}."),
    ),
    Stage(
        "handle",
        _states("handle"),
        Event.handle_due_at,
        N_("Reminder: {org} must handle event {number} by {due}."),
        N_("Overdue: {org} was due to handle event {number} by {due}."),
    ),
    Stage(
        "verify",
        _states("verify"),
        Event.verify_due_at,
        N_("Reminder: event {number} handled by {org} must be verified by {due}."),
        N_("Overdue: event {number} handled by {org} was due to be verified by {due}."),
    ),
)
# The note of an automatic escalation, per stage (stored in the installation's language).
ESCALATION_NOTES = {
    "accept": N_("Escalated automatically: the acceptance deadline ({due}) has passed."),
    "handle": N_("Escalated automatically: the handling deadline ({due}) has passed."),
}


# ---- when is a stage due soon ---------------------------------------------------------------


def hours_per_day(cal: WorkCalendar) -> float:
    return sum(
        (datetime.combine(datetime.min, e) - datetime.combine(datetime.min, s)).total_seconds() / 3600
        for s, e in cal.periods
    )


def stage_hours(stage: Stage, rules: dict[str, Any], cal: WorkCalendar) -> float:
    """The stage's working time from the rules the event kept at creation."""
    if stage.name == "accept":
        return float(rules["accept_hours"])
    if stage.name == "verify":
        return float(rules["verify_hours"])
    if rules["handle_unit"] == HandleUnit.hours:
        return float(rules["handle_amount"])
    return math.ceil(rules["handle_amount"]) * hours_per_day(cal)


def soon_threshold(total_hours: float) -> float:
    """Working hours before the deadline at which the stage counts as due soon."""
    return min(max(SOON_SHARE * total_hours, SOON_MIN_HOURS), total_hours / 2, SOON_MAX_HOURS)


EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def stamp(due: datetime) -> int:
    """The deadline in microseconds since 1970, exactly: two deadlines set at different
    moments (a re-dispatch a few seconds later) never share a notice."""
    return (due - EPOCH) // timedelta(microseconds=1)


def token(stage: Stage, kind: str, due: datetime) -> str:
    """How Event.notices records a notice: its stage, kind and the deadline it was about."""
    return f"{stage.name}:{kind}@{stamp(due)}"


class Lookups:
    """What a run reads about orgs (calendar, name, the office one level up), read once per run."""

    def __init__(self, session: Session) -> None:
        self.session = session
        self._calendars: dict[int | None, WorkCalendar] = {}
        self._names: dict[int | None, str] = {}
        self._higher: dict[tuple[str, int, int], int | None] = {}

    def calendar(self, org_id: int | None) -> WorkCalendar:
        if org_id not in self._calendars:
            self._calendars[org_id] = service.calendar_for(self.session, org_id)
        return self._calendars[org_id]

    def name(self, org_id: int | None) -> str:
        if org_id not in self._names:
            org = self.session.get(Org, org_id) if org_id else None
            self._names[org_id] = org.name if org else ""
        return self._names[org_id]

    def higher(self, event: Event) -> int | None:
        key = (str(event.level), event.township_id, event.county_id)
        if key not in self._higher:
            org = service.higher_owner(self.session, event)
            self._higher[key] = org.id if org else None
        return self._higher[key]


def due_kind(
    lookups: Lookups, stage: Stage, row: Any, due: datetime | None, now: datetime
) -> tuple[str, WorkCalendar] | None:
    """ "overdue", "soon" or None for this stage of the event, and the responsible org's calendar."""
    if due is None or row.state not in stage.states:
        return None
    cal = lookups.calendar(stage.responsible(row.owner_org_id, row.lead_org_id))
    if due <= now:
        return "overdue", cal
    threshold = soon_threshold(stage_hours(stage, json.loads(row.rules), cal))
    if cal.working_hours_between(now, due) < threshold:
        return "soon", cal
    return None


def pending(lookups: Lookups, stage: Stage, row: Any, due: datetime | None, now: datetime) -> str | None:
    """The notice this event still needs for the stage, or None."""
    if due is not None and due > now and token(stage, "soon", due) in _tokens(row.notices):
        return None  # reminded already; nothing more until the deadline passes
    found = due_kind(lookups, stage, row, due, now)
    if found is None or due is None:
        return None
    kind = found[0]
    return None if token(stage, kind, due) in _tokens(row.notices) else kind


def _tokens(notices: str) -> set[str]:
    return {t for t in (notices or "").split(",") if t}


# ---- the job ---------------------------------------------------------------------------------


def check_deadlines(session: Session, *, now: datetime | None = None, batch: int = BATCH) -> dict[str, int]:
    """Send due-soon and overdue notices and escalate where the rules say so.

    Commits after each batch (each batch is one transaction); returns what it did:
    events reminded (`soon`), warned (`overdue`), `escalated`, `notices` written, and
    events that `failed` (logged; retried on the next run)."""
    now = now or utcnow()
    lookups = Lookups(session)
    counts: Counter[str] = Counter()
    for stage in STAGES:
        ids = [
            row.id
            for row in candidates(session, stage, now)
            if pending(lookups, stage, row, _due(stage, row), now)
        ]
        session.commit()  # end the read; each batch below is its own transaction
        for chunk in _chunks(ids, batch):
            counts.update(_run_batch(lookups, stage, chunk, now))
    return {k: counts.get(k, 0) for k in ("soon", "overdue", "escalated", "notices", "failed")}


def _due(stage: Stage, row: Any) -> datetime | None:
    value: datetime | None = getattr(row, stage.due.key)
    return value


def candidates(session: Session, stage: Stage, now: datetime, page: int = 1000) -> list[Row[Any]]:
    """Rows of the stage that may need a notice, read in pages of the partial index's order."""
    rows: list[Row[Any]] = []
    after: tuple[datetime, int] | None = None
    while True:
        got = session.execute(candidate_query(stage, now, after=after).limit(page)).all()
        rows += got
        if len(got) < page:
            return rows
        after = (_due(stage, got[-1]) or now, got[-1].id)


def candidate_query(
    stage: Stage, now: datetime, *, after: tuple[datetime, int] | None = None
) -> Select[*tuple[Any, ...]]:
    """Events of the stage due before the horizon without an overdue notice for the stage,
    read through the stage's partial index on (due, id) (models.py): the few open events due
    in the next working days and the overdue ones not yet warned (a worker that was down
    catches up). The predicate is the index's own text, literal, so both planners see that
    the query implies it; ordering by the index keeps them on it whatever their estimates."""
    horizon = default_calendar().add_working_hours(now, HORIZON_WORKING_HOURS)
    stmt = (
        select(
            Event.id,
            Event.state,
            Event.level,
            Event.owner_org_id,
            Event.lead_org_id,
            Event.rules,
            Event.notices,
            stage.due,
        )
        .where(text(deadline_pending_predicate(stage.name)), stage.due <= horizon)
        .order_by(stage.due, Event.id)
    )
    if after is not None:
        stmt = stmt.where(tuple_(stage.due, Event.id) > tuple_(*after))
    return stmt


def _chunks(items: Sequence[int], size: int) -> Iterable[Sequence[int]]:
    for i in range(0, len(items), size):
        yield items[i : i + size]


RETRYABLE = (IntegrityError, StaleDataError, OperationalError)


def _run_batch(lookups: Lookups, stage: Stage, ids: Sequence[int], now: datetime) -> Counter[str]:
    """One transaction for the batch; if it fails (a unique-key race, a concurrent change, a
    busy database) each event is retried in a transaction of its own, so one bad row never
    holds back the others."""
    session = lookups.session
    try:
        done = _process(lookups, stage, ids, now)
        session.commit()
        return done
    except RETRYABLE:
        session.rollback()
    done = Counter()
    for event_id in ids:
        try:
            one = _process(lookups, stage, [event_id], now)
            session.commit()
            done.update(one)
        except RETRYABLE:
            session.rollback()
            log.warning("deadline check of event id %s failed; retried next run", event_id, exc_info=True)
            done["failed"] += 1
    return done


def _process(lookups: Lookups, stage: Stage, ids: Sequence[int], now: datetime) -> Counter[str]:
    session = lookups.session
    done: Counter[str] = Counter()
    # Re-read under a row lock: another worker holding a row has it (SKIP LOCKED); a row it
    # finished meanwhile comes back with its notices recorded, and nothing is repeated.
    events = session.scalars(
        select(Event)
        .where(Event.id.in_(ids), Event.state.in_(list(stage.states)))
        .order_by(Event.id)
        # FOR NO KEY UPDATE: rows merely referenced by another transaction (a new timeline
        # entry or notice takes KEY SHARE on its event) are not skipped.
        .with_for_update(skip_locked=True, key_share=True)
    ).all()
    for event in events:
        due = _due(stage, event)
        found = due_kind(lookups, stage, event, due, now)
        if found is None or due is None:
            continue
        kind, cal = found
        mark = token(stage, kind, due)
        if mark in _tokens(event.notices):
            continue
        done["notices"] += _notify(lookups, stage, event, kind, due, cal)
        _record(session, event, mark)
        done[kind] += 1
        if kind == "overdue" and _escalate(session, stage, event, due, cal):
            done["escalated"] += 1
    return done


def _recipients(lookups: Lookups, stage: Stage, event: Event, kind: str) -> list[int]:
    """The responsible org; for handling also the owner who dispatched it; when overdue below
    the county, also the office one level up (village → township office, township → county centre)."""
    orgs = [stage.responsible(event.owner_org_id, event.lead_org_id)]
    if stage.name == "handle":
        orgs.append(event.owner_org_id)
    if kind == "overdue" and event.level != Level.county:
        orgs.append(lookups.higher(event))
    return list(dict.fromkeys(o for o in orgs if o))


def _notify(lookups: Lookups, stage: Stage, event: Event, kind: str, due: datetime, cal: WorkCalendar) -> int:
    responsible = lookups.name(stage.responsible(event.owner_org_id, event.lead_org_id))
    message = stage.soon_message if kind == "soon" else stage.overdue_message
    sent = 0
    for org_id in _recipients(lookups, stage, event, kind):
        sent += service.notify(
            lookups.session,
            notice_key(event.id, stage.name, kind, due, org_id),
            message=message,
            event=event,
            org_id=org_id,
            kind=f"deadline_{kind}",
            number=event.number,
            org=responsible,
            due=local_time(due, cal),
        )
    return sent


def notice_key(event_id: int, stage: str, kind: str, due: datetime, org_id: int) -> str:
    """Stable and unique per event, stage, kind, deadline and recipient."""
    return f"deadline:{event_id}:{stage}:{kind}:{stamp(due)}:org{org_id}"


def local_time(at: datetime, cal: WorkCalendar) -> str:
    return at.astimezone(cal.tz).strftime("%Y-%m-%d %H:%M")


def _record(session: Session, event: Event, mark: str | None) -> None:
    """Add the notice to Event.notices, dropping marks about deadlines that have since changed.
    Written without bumping the version: a reminder is not a change a user's edit conflicts with."""
    current = {s.name: _due(s, event) for s in STAGES}
    kept = []
    for t in _tokens(event.notices):
        name, _, rest = t.partition(":")
        due = current.get(name)
        if due is not None and rest.endswith(f"@{stamp(due)}"):
            kept.append(t)
    new = [mark] if mark else []
    value = ",".join(sorted([*kept, *new]))
    while len(value) > NOTICES_MAX and kept:
        kept.pop(0)
        value = ",".join(sorted([*kept, *new]))
    session.execute(
        update(Event)
        .where(Event.id == event.id)
        .values(notices=value)
        .execution_options(synchronize_session=False)
    )
    set_committed_value(event, "notices", value)


def system_actor_for(event: Event) -> Actor:
    """The system acting for the event's owner office, so `do_escalate` runs its full checks
    (state, level, timeline, audit, notice) unchanged; audit and timeline show the actor "system"."""
    return replace(
        SYSTEM, org_id=event.owner_org_id, permissions=frozenset({str(Permission.events_dispatch)})
    )


def _escalate(session: Session, stage: Stage, event: Event, due: datetime, cal: WorkCalendar) -> bool:
    rules = json.loads(event.rules)
    if not rules.get("escalate_when_overdue"):
        return False
    if stage.name not in ESCALATION_NOTES or event.level == Level.county:
        return False
    token_ = set_locale(DEFAULT_LOCALE)  # the note is stored once, in the installation's language
    try:
        note = gettext(ESCALATION_NOTES[stage.name], due=local_time(due, cal))
    finally:
        reset_locale(token_)
    try:
        actions.do_escalate(session, system_actor_for(event), event, reason=note)
    except AppError:
        log.warning("event %s could not be escalated automatically", event.number, exc_info=True)
        return False
    _record(session, event, None)  # the deadline is gone: its marks must not hide the next one
    return True
