"""The event state machine. Every state change is one `do_*` function: it checks the actor's
role, relation to the event and the current state, changes the event, appends an immutable
timeline entry, audits, and notifies — all in the caller's transaction.

    reported ─accept→ accepted ─dispatch→ dispatched ─start→ handling ─handle→ handled
       │  └reject→ rejected        ↑  return (hand-back) ┘        ↑           │
       └merge→ merged              └──────── escalate ───────────┘   verify ok/failed
    handled ─verify→ verified ─close→ closed ─rate→ rated ─archive→ archived
    (failed verification → handling, counted as rework); suspend/resume; extension; supervision
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from civicgrid.accounts.models import Org
from civicgrid.accounts.permissions import Permission, Role
from civicgrid.core import audit
from civicgrid.core.auth import Actor
from civicgrid.core.db import utcnow
from civicgrid.core.errors import Conflict, Invalid, NotFound, PermissionDenied
from civicgrid.core.i18n import gettext
from civicgrid.core.workflow import Workflow
from civicgrid.events import service
from civicgrid.events.models import OPEN_STATES, STATE_LABELS, Event, EventOrg, Level, State
from civicgrid.regions import service as regions

P = Permission
S = State

# action → states it may start from (the single source of legal moves; the property test reads it).
ALLOWED_FROM: dict[str, tuple[State, ...]] = {
    "accept": (S.reported,),
    "reject": (S.reported,),
    "merge": (S.reported, S.accepted),
    "dispatch": (S.accepted,),
    "start": (S.dispatched,),
    "return": (S.dispatched, S.handling),
    "request_extension": (S.handling,),
    "decide_extension": (S.handling,),
    "handle": (S.handling,),
    "verify": (S.handled,),
    "close": (S.verified,),
    "rate": (S.closed,),
    "archive": (S.closed, S.rated),
    "escalate": (S.reported, S.accepted, S.dispatched, S.handling),
    "suspend": (S.dispatched, S.handling),
    "resume": (S.suspended,),
    "supervise": (S.accepted, S.dispatched, S.handling),
}


def _illegal(event: Event, action: str) -> Invalid:
    return Invalid(
        "Event {number} is {state}; this step is not possible now.",
        error_code="illegal_transition",
        number=event.number,
        state=gettext(STATE_LABELS[event.state]),
        action=action,
    )


def _check_state(event: Event, action: str) -> None:
    FLOW.check(event.state, action, lambda: _illegal(event, action))


def _need(actor: Actor, permission: Permission) -> None:
    if not actor.can(permission):
        raise PermissionDenied("Your role does not allow this.")


def _owner(actor: Actor, event: Event) -> None:
    """Dispatching steps belong to the org that owns the event (or an admin in scope)."""
    _need(actor, P.events_dispatch)
    if actor.role != Role.admin and actor.org_id != event.owner_org_id:
        raise PermissionDenied("Only the office that owns event {number} can do this.", number=event.number)


def _lead(actor: Actor, event: Event) -> None:
    _need(actor, P.events_handle)
    if actor.org_id != event.lead_org_id:
        raise PermissionDenied("Only the lead department of event {number} can do this.", number=event.number)


FIELD_LABELS = {"reason": "Reason", "basis": "Legal basis", "note": "Note", "result": "Result"}


def _required(text: str, what: str) -> str:
    text = (text or "").strip()
    if not text:
        raise Invalid("{what} is required.", what=gettext(FIELD_LABELS[what]), field=what)
    return text


def _move(
    session: Session,
    actor: Actor,
    event: Event,
    action: str,
    to: State,
    *,
    note: str = "",
    data: dict[str, Any] | None = None,
) -> None:
    before = {"state": str(event.state), "version": event.version}
    frm = event.state
    event.state = to
    event.updated_at = utcnow()
    session.flush()  # the version check happens here: a concurrent change raises StaleDataError
    service.append_timeline(session, event, actor, action, frm, to, note=note, data=data)
    audit.record(
        session,
        actor,
        f"event.{action}",
        "event",
        event.number,
        before=before,
        after={"state": str(to), "version": event.version},
        extra=data,
    )


def _notify_org(session: Session, event: Event, org_id: int | None, what: str, message: str) -> None:
    if org_id:
        service.notify(
            session,
            f"{event.id}:{what}:{event.version}:org{org_id}",
            message=message,
            event=event,
            org_id=org_id,
            kind=what,
            number=event.number,
        )


def _notify_reporters(session: Session, event: Event, what: str, message: str) -> None:
    """The reporter and the reporters of every event merged into this one hear of each step."""
    merged = session.scalars(select(Event).where(Event.merged_into_id == event.id)).all()
    for e in [event, *merged]:
        if e.reporter_user_id:
            service.notify(
                session,
                f"{event.id}:{what}:{event.version}:user{e.reporter_user_id}",
                message=message,
                event=event,
                user_id=e.reporter_user_id,
                kind=what,
                number=event.number,
            )


# ---- dispatcher steps -------------------------------------------------------------------


def do_accept(session: Session, actor: Actor, event: Event) -> Event:
    _owner(actor, event)
    _check_state(event, "accept")
    event.accepted_at = utcnow()
    _move(session, actor, event, "accept", S.accepted)
    _notify_reporters(session, event, "accepted", "Your report {number} was accepted.")
    return event


def do_reject(
    session: Session, actor: Actor, event: Event, *, reason: str, basis: str, redirect_to: str = ""
) -> Event:
    """Refuse a report: the reason and its legal basis are required; the reporter sees who
    refused and where to turn instead."""
    _owner(actor, event)
    _check_state(event, "reject")
    reason, basis = _required(reason, "reason"), _required(basis, "basis")
    event.reject_reason = reason
    event.reject_basis = basis
    event.redirect_to = redirect_to.strip()
    _move(
        session,
        actor,
        event,
        "reject",
        S.rejected,
        note=event.reject_reason,
        data={"basis": event.reject_basis, "redirect_to": event.redirect_to, "by_org": actor.org_name},
    )
    _notify_reporters(session, event, "rejected", "Your report {number} was not accepted; see the reason.")
    return event


def do_merge(session: Session, actor: Actor, event: Event, *, into_number: str) -> Event:
    _owner(actor, event)
    _check_state(event, "merge")
    target = service.get_event(session, actor, into_number)
    if target.id == event.id or target.merged_into_id is not None or target.state not in OPEN_STATES:
        raise Invalid(
            "Event {number} cannot take a merge: it is itself merged or finished.", number=target.number
        )
    if target.category_id != event.category_id:
        raise Invalid("Only events of the same category can be merged.")
    event.merged_into_id = target.id
    _move(session, actor, event, "merge", S.merged, data={"into": target.number})
    service.append_timeline(
        session, target, actor, "absorb", target.state, target.state, data={"merged": event.number}
    )
    _notify_reporters(
        session, event, "merged", "Your report {number} was merged with an earlier report of the same matter."
    )
    return event


def do_dispatch(
    session: Session,
    actor: Actor,
    event: Event,
    *,
    lead_org_id: int | None = None,
    assist_org_ids: Iterable[int] = (),
    note: str = "",
) -> Event:
    """Send to one lead org (default: the routing suggestion) with optional assisting orgs."""
    _owner(actor, event)
    _check_state(event, "dispatch")
    lead = session.get(Org, lead_org_id) if lead_org_id else service.suggest_lead(session, event)
    if lead is None:
        raise Invalid("No department could be found for this event; choose one.", field="lead_org")
    county = regions.get(session, event.county_id)
    assists = [session.get(Org, i) for i in assist_org_ids if i != lead.id]
    for org in [lead, *assists]:
        if (
            org is None
            or not org.active
            or not regions.get(session, org.region_id).path.startswith(county.path)
        ):
            raise Invalid("Events go to active organisations of the same county.", field="lead_org")
    rules = json.loads(event.rules)
    now = utcnow()
    event.lead_org_id = lead.id
    event.assists = [EventOrg(org_id=o.id) for o in assists if o is not None]
    event.dispatched_at = now
    event.handle_due_at = service.handle_due(service.calendar_for(session, lead.id), now, rules)
    event.notices = ""  # a new deadline earns new reminders
    _move(
        session,
        actor,
        event,
        "dispatch",
        S.dispatched,
        note=note,
        data={"lead": lead.code, "assist": [o.code for o in assists if o], "due": event.handle_due_at},
    )
    _notify_org(session, event, lead.id, "dispatched", "Event {number} was dispatched to you.")
    for o in assists:
        if o is not None:
            _notify_org(session, event, o.id, "assist", "You are asked to assist with event {number}.")
    return event


def do_escalate(session: Session, actor: Actor, event: Event, *, reason: str) -> Event:
    """Hand the event up a level (village → township → county); the higher office re-dispatches."""
    _owner(actor, event)
    _check_state(event, "escalate")
    reason = _required(reason, "reason")
    higher = service.higher_owner(session, event)
    if higher is None:
        raise Invalid("Event {number} is already at the highest level.", number=event.number)
    frm_level = event.level
    event.owner_org_id = higher.id
    event.level = service.LEVEL_OF_KIND[higher.kind]
    event.escalation_count += 1
    if event.level == Level.county:
        event.escalated_to_county = True
    event.lead_org_id = None
    event.assists = []
    event.handle_due_at = None
    _move(
        session,
        actor,
        event,
        "escalate",
        S.accepted,
        note=reason,
        data={"from_level": str(frm_level), "to_level": str(event.level), "to_org": higher.code},
    )
    _notify_org(session, event, higher.id, "escalated", "Event {number} was escalated to you.")
    return event


def do_decide_extension(
    session: Session, actor: Actor, event: Event, *, grant: bool, note: str = ""
) -> Event:
    _owner(actor, event)
    _check_state(event, "decide_extension")
    if event.extension_requested_hours is None:
        raise Invalid("No extension was requested for event {number}.", number=event.number)
    hours = event.extension_requested_hours
    if grant and event.handle_due_at is not None:
        event.handle_due_at = service.calendar_for(session, event.lead_org_id).add_working_hours(
            event.handle_due_at, hours
        )
        event.notices = ""  # a new deadline earns new reminders
    event.extension_requested_hours = None
    _move(
        session,
        actor,
        event,
        "extension_granted" if grant else "extension_refused",
        event.state,
        note=note,
        data={"hours": hours, "due": event.handle_due_at},
    )
    _notify_org(
        session, event, event.lead_org_id, "extension", "The extension for event {number} was decided."
    )
    return event


def do_suspend(session: Session, actor: Actor, event: Event, *, reason: str) -> Event:
    _owner(actor, event)
    _check_state(event, "suspend")
    reason = _required(reason, "reason")
    event.state_before_suspend = event.state
    _move(session, actor, event, "suspend", S.suspended, note=reason)
    return event


def do_resume(session: Session, actor: Actor, event: Event, *, note: str = "") -> Event:
    """Resume; the handling deadline moves by the working time spent suspended."""
    _owner(actor, event)
    _check_state(event, "resume")
    back = event.state_before_suspend or S.handling
    suspended_at = _last_entry_at(session, event, "suspend")
    if event.handle_due_at is not None and suspended_at is not None:
        cal = service.calendar_for(session, event.lead_org_id)
        paused = cal.working_hours_between(suspended_at, utcnow())
        event.handle_due_at = cal.add_working_hours(event.handle_due_at, paused)
    event.state_before_suspend = None
    _move(session, actor, event, "resume", back, note=note)
    return event


def do_close(session: Session, actor: Actor, event: Event, *, note: str = "") -> Event:
    _owner(actor, event)
    _check_state(event, "close")
    now = utcnow()
    event.closed_at = now
    handled = event.handled_at or now
    event.handling_hours = round(
        service.calendar_for(session, event.lead_org_id).working_hours_between(event.reported_at, handled), 2
    )
    event.closed_on_time = event.handle_due_at is None or handled <= event.handle_due_at
    _move(session, actor, event, "close", S.closed, note=note)
    _notify_reporters(
        session, event, "closed", "Your report {number} is closed. Please rate how it was handled."
    )
    return event


def do_archive(session: Session, actor: Actor, event: Event) -> Event:
    if actor.via != "system":
        _owner(actor, event)
    _check_state(event, "archive")
    event.archived_at = utcnow()
    _move(session, actor, event, "archive", S.archived)
    return event


def do_supervise(session: Session, actor: Actor, event: Event, *, note: str, due_hours: float) -> Event:
    """督办: a supervisor sets a new deadline and both the owner and the lead are told."""
    _need(actor, P.events_supervise)
    if actor.org_id == event.lead_org_id:
        raise PermissionDenied("A department cannot supervise its own event.")
    _check_state(event, "supervise")
    note = _required(note, "note")
    if not 0 < due_hours <= 24 * 30:
        raise Invalid("The new deadline must be between 1 and 720 working hours away.", field="due_hours")
    event.handle_due_at = service.calendar_for(session, event.lead_org_id).add_working_hours(
        utcnow(), due_hours
    )
    event.supervision_count += 1
    event.notices = ""
    _move(
        session,
        actor,
        event,
        "supervise",
        event.state,
        note=note,
        data={"due": event.handle_due_at, "by_org": actor.org_name},
    )
    for org_id in (event.owner_org_id, event.lead_org_id):
        _notify_org(
            session,
            event,
            org_id,
            "supervised",
            "Event {number} is under supervision (督办); see the new deadline.",
        )
    return event


# ---- department steps -------------------------------------------------------------------


def do_start(session: Session, actor: Actor, event: Event) -> Event:
    _lead(actor, event)
    _check_state(event, "start")
    _move(session, actor, event, "start", S.handling)
    return event


def do_return(session: Session, actor: Actor, event: Event, *, reason: str) -> Event:
    """Hand back ("not ours"): back to the dispatcher, counted against neither deadline nor org."""
    _lead(actor, event)
    _check_state(event, "return")
    reason = _required(reason, "reason")
    from_org = event.lead_org_id
    event.lead_org_id = None
    event.assists = []
    event.handle_due_at = None
    event.handback_count += 1
    _move(session, actor, event, "return", S.accepted, note=reason, data={"from_org": from_org})
    _notify_org(
        session, event, event.owner_org_id, "returned", "Event {number} was handed back by the department."
    )
    return event


def do_request_extension(session: Session, actor: Actor, event: Event, *, hours: float, reason: str) -> Event:
    _lead(actor, event)
    _check_state(event, "request_extension")
    if event.extension_requested_hours is not None:
        raise Conflict("An extension request for event {number} is already waiting.", number=event.number)
    if not 0 < hours <= 24 * 30:
        raise Invalid("An extension must be between 1 and 720 working hours.", field="hours")
    reason = _required(reason, "reason")
    event.extension_requested_hours = hours
    event.extension_reason = reason
    _move(
        session,
        actor,
        event,
        "request_extension",
        event.state,
        note=event.extension_reason,
        data={"hours": hours},
    )
    _notify_org(
        session, event, event.owner_org_id, "extension_request", "Event {number}: an extension is requested."
    )
    return event


def do_handle(session: Session, actor: Actor, event: Event, *, result: str) -> Event:
    _lead(actor, event)
    _check_state(event, "handle")
    result = _required(result, "result")
    event.result = result
    now = utcnow()
    event.handled_at = now
    event.extension_requested_hours = None
    event.verify_due_at = service.calendar_for(session, event.owner_org_id).add_working_hours(
        now, json.loads(event.rules)["verify_hours"]
    )
    _move(session, actor, event, "handle", S.handled, note=event.result)
    _notify_reporters(
        session, event, "handled", "Your report {number} was handled. Please check whether it is fixed."
    )
    return event


# ---- reporter and grid worker steps -----------------------------------------------------


def can_verify(session: Session, actor: Actor, event: Event) -> bool:
    if not actor.can(P.events_verify):
        return False
    if event.reporter_user_id and actor.user_id == event.reporter_user_id:
        return True
    return actor.role == Role.grid_worker and any(
        u.id == actor.user_id for u in regions.grid_workers(session, event.grid_id)
    )


def do_verify(session: Session, actor: Actor, event: Event, *, passed: bool, note: str = "") -> Event:
    """The reporter or the grid's worker checks the fix; a failure sends it back (rework)."""
    if not can_verify(session, actor, event):
        raise PermissionDenied(
            "Only the reporter or the grid worker of this grid can verify event {number}.",
            number=event.number,
        )
    _check_state(event, "verify")
    if passed:
        event.verified_at = utcnow()
        _move(session, actor, event, "verify", S.verified, note=note, data={"passed": True})
        _notify_org(
            session, event, event.owner_org_id, "verified", "Event {number} was verified; it can be closed."
        )
        return event
    note = _required(note, "note")  # checked before anything changes
    event.rework_count += 1
    rules = json.loads(event.rules)
    event.handle_due_at = service.handle_due(
        service.calendar_for(session, event.lead_org_id), utcnow(), rules
    )
    event.notices = ""
    _move(session, actor, event, "verify", S.handling, note=note, data={"passed": False})
    _notify_org(
        session, event, event.lead_org_id, "rework", "Event {number} failed verification and needs rework."
    )
    return event


def do_rate(session: Session, actor: Actor, event: Event, *, score: int, comment: str = "") -> Event:
    if not event.reporter_user_id or actor.user_id != event.reporter_user_id:
        raise PermissionDenied("Only the reporter can rate event {number}.", number=event.number)
    _check_state(event, "rate")
    if score not in (1, 2, 3, 4, 5):
        raise Invalid("The rating must be a whole number from 1 to 5.", field="score")
    event.rating = score
    event.rating_comment = comment.strip()[:1000]
    _move(session, actor, event, "rate", S.rated, note=event.rating_comment, data={"score": score})
    return event


# ---- helpers ----------------------------------------------------------------------------


def _last_entry_at(session: Session, event: Event, action: str) -> Any:
    from civicgrid.events.models import TimelineEntry

    return session.scalar(
        select(TimelineEntry.at)
        .where(TimelineEntry.event_id == event.id, TimelineEntry.action == action)
        .order_by(TimelineEntry.seq.desc())
        .limit(1)
    )


ACTIONS = {
    "accept": do_accept,
    "reject": do_reject,
    "merge": do_merge,
    "dispatch": do_dispatch,
    "escalate": do_escalate,
    "decide_extension": do_decide_extension,
    "suspend": do_suspend,
    "resume": do_resume,
    "close": do_close,
    "archive": do_archive,
    "supervise": do_supervise,
    "start": do_start,
    "return": do_return,
    "request_extension": do_request_extension,
    "handle": do_handle,
    "verify": do_verify,
    "rate": do_rate,
}


def act(
    session: Session, actor: Actor, number: str, action: str, *, version: int | None = None, **params: Any
) -> Event:
    """Run one named step on an event the actor can see (the API and pages call this)."""
    fn = ACTIONS.get(action)
    if fn is None:
        raise NotFound("Unknown step {action}.", action=action)
    event = service.get_event(session, actor, number)
    service.check_version(event, version)
    return fn(session, actor, event, **params)  # type: ignore[operator]


# ---- what a reader may do now, and the parameters each step takes -----------------------

# action → (required parameters, optional parameters)
PARAMS: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {
    "accept": ((), ()),
    "reject": (("reason", "basis"), ("redirect_to",)),
    "merge": (("into_number",), ()),
    "dispatch": ((), ("lead_org_id", "assist_org_ids", "note")),
    "escalate": (("reason",), ()),
    "decide_extension": (("grant",), ("note",)),
    "suspend": (("reason",), ()),
    "resume": ((), ("note",)),
    "close": ((), ("note",)),
    "archive": ((), ()),
    "supervise": (("note", "due_hours"), ()),
    "start": ((), ()),
    "return": (("reason",), ()),
    "request_extension": (("hours", "reason"), ()),
    "handle": (("result",), ()),
    "verify": (("passed",), ("note",)),
    "rate": (("score",), ("comment",)),
}


FLOW = Workflow(ALLOWED_FROM, PARAMS)  # the shared mechanism (core/workflow.py) over this machine


def params_for(action: str, given: dict[str, Any]) -> dict[str, Any]:
    """The keyword arguments of a step from a request body; a missing one is a clear 422."""
    return FLOW.params_for(action, given)


def _may(actor: Actor, event: Event, action: str, session: Session) -> bool:
    try:
        if action in (
            "accept",
            "reject",
            "merge",
            "dispatch",
            "escalate",
            "decide_extension",
            "suspend",
            "resume",
            "close",
            "archive",
        ):
            _owner(actor, event)
        elif action in ("start", "return", "request_extension", "handle"):
            _lead(actor, event)
        elif action == "verify":
            return can_verify(session, actor, event)
        elif action == "rate":
            return bool(event.reporter_user_id) and actor.user_id == event.reporter_user_id
        elif action == "supervise":
            _need(actor, P.events_supervise)
            return actor.org_id != event.lead_org_id
    except PermissionDenied:
        return False
    return True


def available_actions(session: Session, actor: Actor, event: Event) -> list[str]:
    """Steps this reader may take on the event in its current state (for buttons and the API)."""
    out = []
    for action in FLOW.offered(event.state, lambda a: _may(actor, event, a, session)):
        if action == "decide_extension" and event.extension_requested_hours is None:
            continue
        if action == "request_extension" and event.extension_requested_hours is not None:
            continue
        if action == "escalate" and event.level == Level.county:
            continue
        out.append(action)
    return out
