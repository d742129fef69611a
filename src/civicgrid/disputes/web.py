"""Mediation pages: the intake form (one window), the case page with parties, rounds, follow-up
calls and timeline, the mediator's workbench, the county overview of difficult (疑难) cases,
and the agreement PDF.

Thin: reads and writes go through `disputes.service`. Step forms post the `version` the page
showed; step errors propagate (the transaction rolls back) and the app's handler renders them
into the form's error area. The intake form renders its own errors so typed text stays.
"""

from __future__ import annotations

import contextlib
import json
from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, Form, Request
from fastapi.responses import RedirectResponse, Response
from sqlalchemy import select
from sqlalchemy.orm import Session
from starlette.convertors import Convertor, register_url_convertor

from civicgrid.accounts.models import Org
from civicgrid.accounts.permissions import Permission
from civicgrid.core.auth import Actor
from civicgrid.core.calendar import default_calendar
from civicgrid.core.db import utcnow
from civicgrid.core.deps import SessionDep, requires
from civicgrid.core.errors import AppError, Invalid, NotFound
from civicgrid.core.i18n import gettext
from civicgrid.core.pagination import PageDep, paginate
from civicgrid.core.web import render
from civicgrid.disputes import service
from civicgrid.disputes.models import Dispute, Level, Risk, State
from civicgrid.events import service as events


class DisputeNumberConvertor(Convertor[str]):
    """Case numbers (TJ331002-20261125-00017) in paths, so /disputes/<word> pages never fall
    into the case page's route, whatever the mounting order."""

    regex = r"TJ[0-9]{6}-[0-9]{8}-[0-9]{5,}"

    def convert(self, value: str) -> str:
        return value

    def to_string(self, value: str) -> str:
        return value


register_url_convertor("dispute_number", DisputeNumberConvertor())
router = APIRouter(include_in_schema=False)
P = Permission
Reader = Annotated[Actor, requires(P.disputes_read)]
Mediating = Annotated[Actor, requires(P.disputes_mediate)]
Text = Annotated[str, Form()]
OptText = Annotated[str | None, Form()]
TextList = Annotated[list[str] | None, Form()]


def N_(message: str) -> str:
    return message


ACTION_LABELS = {
    "register": N_("Registered"),
    "triage": N_("Triage"),
    "assign": N_("Assign mediators"),
    "record_round": N_("Record a mediation round"),
    "agree": N_("Record the agreement"),
    "confirm": N_("Record a party's confirmation"),
    "follow_up": N_("Record a follow-up call"),
    "close": N_("Close the case"),
    "fail": N_("Mediation failed"),
    "refer": N_("Refer on"),
    "accept_referral": N_("Referral accepted"),
    "move_up": N_("Move up a level"),
    "move_down": N_("Move down a level"),
    "withdraw": N_("Withdraw"),
    "reopen": N_("Reopened: agreement breached"),
    "warn": N_("Risk warning raised"),
    "seal": N_("Agreement sealed"),
}


def _done(request: Request, url: str) -> Response:
    if request.headers.get("hx-request"):
        return Response(status_code=204, headers={"HX-Redirect": url})
    return RedirectResponse(url, status_code=303)


def choices() -> dict[str, Any]:
    """Labels of every coded value the forms offer, in the reader's language."""

    def pairs(labels: dict[Any, str]) -> list[tuple[str, str]]:
        return [(str(k), gettext(v)) for k, v in labels.items()]

    return {
        "types": pairs(service.TYPE_LABELS),
        "sources": pairs(service.SOURCE_LABELS),
        "referring": pairs(service.REFERRING_LABELS),
        "complexities": pairs(service.COMPLEXITY_LABELS),
        "risks": pairs(service.RISK_LABELS),
        "party_roles": pairs(service.PARTY_ROLE_LABELS),
        "round_outcomes": pairs(service.ROUND_OUTCOME_LABELS),
        "targets": pairs(service.TARGET_LABELS),
        "satisfactions": pairs(service.SATISFACTION_LABELS),
        "performances": pairs(service.PERFORMANCE_LABELS),
        "levels": pairs(service.LEVEL_LABELS),
        "states": pairs(service.STATE_LABELS),
    }


# ---- intake -------------------------------------------------------------------------------


def _intake_form(
    request: Request,
    session: Session,
    actor: Actor,
    *,
    values: dict[str, Any] | None = None,
    error: str = "",
    field: str = "",
    status_code: int = 200,
) -> Response:
    values = values or {}
    event = None
    if values.get("event_number"):
        try:
            event = events.get_event(session, actor, values["event_number"])
        except NotFound:
            event = None
    parties = values.get("parties") or [
        {"role": "applicant", "kind": "person"},
        {"role": "respondent", "kind": "person"},
    ]
    return render(
        request,
        "disputes/new.html",
        status_code=status_code,
        values=values,
        parties=parties,
        event=event,
        grids=service.intake_grids(session, actor),
        error=error,
        error_field=field,
        untaken=service.untaken_dispute_events(session, actor, limit=20),
        **choices(),
    )


@router.get("/disputes/new")
def intake_page(request: Request, session: SessionDep, actor: Mediating, event: str = "") -> Response:
    values: dict[str, Any] = {"source": "event" if event else "walk_in", "event_number": event}
    return _intake_form(request, session, actor, values=values)


@router.post("/disputes/new")
def intake(
    request: Request,
    session: SessionDep,
    actor: Mediating,
    source: Text = "walk_in",
    type: Text = "",
    title: Text = "",
    description: Text = "",
    amount: Text = "",
    address: Text = "",
    grid_code: Text = "",
    event_number: Text = "",
    referred_by: Text = "",
    referred_by_name: Text = "",
    referral_ref: Text = "",
    risk: Text = "low",
    threat_of_violence: Text = "",
    risk_note: Text = "",
    complexity: Text = "",
    take: Text = "",
    party_name: TextList = None,
    party_role: TextList = None,
    party_kind: TextList = None,
    party_id_number: TextList = None,
    party_phone: TextList = None,
    party_address: TextList = None,
) -> Response:
    """Register the case; on any error the form comes back with the message and nothing is written."""
    columns = [party_name, party_role, party_kind, party_id_number, party_phone, party_address]
    n = max((len(c) for c in columns if c), default=0)

    def cell(col: list[str] | None, i: int, default: str = "") -> str:
        return col[i] if col and i < len(col) else default

    parties = [
        {
            "name": cell(party_name, i),
            "role": cell(party_role, i, "applicant"),
            "kind": cell(party_kind, i, "person"),
            "id_number": cell(party_id_number, i),
            "phone": cell(party_phone, i),
            "address": cell(party_address, i),
        }
        for i in range(n)
    ]
    # Rows the clerk left entirely empty are not parties (the form offers two blank rows).
    parties = [p for p in parties if any(p[k].strip() for k in ("name", "id_number", "phone", "address"))]
    values = {
        "source": source,
        "type": type,
        "title": title,
        "description": description,
        "amount": amount,
        "address": address,
        "grid_code": grid_code,
        "event_number": event_number.strip(),
        "referred_by": referred_by,
        "referred_by_name": referred_by_name,
        "referral_ref": referral_ref,
        "risk": risk,
        "threat_of_violence": bool(threat_of_violence),
        "risk_note": risk_note,
        "complexity": complexity,
        "take": bool(take),
        "parties": parties or None,
    }
    try:
        with session.begin_nested():
            d = service.register(
                session,
                actor,
                source=source,
                type=type or None,
                title=title,
                description=description,
                amount=amount,
                address=address,
                grid_code=grid_code or None,
                event_number=event_number.strip() or None,
                referred_by=referred_by or None,
                referred_by_name=referred_by_name,
                referral_ref=referral_ref,
                risk=risk or Risk.low,
                threat_of_violence=bool(threat_of_violence),
                risk_note=risk_note,
                complexity=complexity or None,
                take=bool(take),
                parties=parties,
            )
    except AppError as exc:
        return _intake_form(
            request,
            session,
            actor,
            values=values,
            error=exc.translated(),
            field=str(exc.params.get("field", "")),
            status_code=exc.status,
        )
    return RedirectResponse(f"/disputes/{d.number}?created=1", status_code=303)


# ---- the case page --------------------------------------------------------------------------


def timeline_rows(session: Session, d: Dispute) -> list[dict[str, Any]]:
    entries = service.timeline(session, d)
    ids = {t.org_id for t in entries if t.org_id}
    orgs = dict(session.execute(select(Org.id, Org.name).where(Org.id.in_(ids))).all()) if ids else {}
    out = []
    for t in entries:
        data = json.loads(t.data)
        extra = []
        if data.get("from_level") and data.get("to_level") and data["from_level"] != data["to_level"]:
            extra.append(
                f"{gettext(service.LEVEL_LABELS[Level(data['from_level'])])} → "
                f"{gettext(service.LEVEL_LABELS[Level(data['to_level'])])}"
            )
        if data.get("event"):
            extra.append(gettext("event {number}", number=data["event"]))
        if data.get("round"):
            extra.append(gettext("round {n}", n=data["round"]))
        if data.get("body"):
            extra.append(str(data["body"]))
        out.append(
            {
                "action": gettext(ACTION_LABELS.get(t.action, t.action)),
                "code": t.action,
                "to_state": gettext(service.STATE_LABELS[State(t.to_state)])
                if t.to_state in State.__members__
                else "",
                "at": service.local_time(t.at),
                "actor": t.actor,
                "org": orgs.get(t.org_id, "") if t.org_id else "",
                "note": t.note,
                "extra": " · ".join(extra),
            }
        )
    return out


def _case_context(session: Session, actor: Actor, d: Dispute) -> dict[str, Any]:
    r = service.describe(session, actor, d)
    names = service.user_names(session, [x.recorded_by for x in service.rounds(session, d)])
    r["registered_local"] = service.local_time(d.registered_at)
    r["agreed_local"] = service.local_time(d.agreed_at)
    # Linked, not copied: a case taken from an event shows the event's own description.
    r["event_description"] = ""
    if r["event_number"]:
        with contextlib.suppress(NotFound):  # the reader may not see the event (outside their scope)
            r["event_description"] = events.get_event(session, actor, r["event_number"]).description
    return {
        "r": r,
        "rounds": [
            {
                "seq": x.seq,
                "held_at": service.local_time(x.held_at),
                "place": x.place,
                "attendees": x.attendees,
                "minutes": x.minutes,
                "outcome": gettext(service.ROUND_OUTCOME_LABELS[x.outcome]),
                "by": names.get(x.recorded_by or 0, ""),
            }
            for x in service.rounds(session, d)
        ],
        "follow_ups": [
            {
                "kind": str(f.kind),
                "agreement_no": f.agreement_no,
                "due_on": f.due_on.isoformat(),
                "overdue": f.done_at is None and not f.cancelled and f.due_on < events.local_date(utcnow()),
                "done": service.local_time(f.done_at),
                "satisfaction": gettext(service.SATISFACTION_LABELS[f.satisfaction])
                if f.satisfaction
                else "",
                "performance": gettext(service.PERFORMANCE_LABELS[f.performance]) if f.performance else "",
                "note": f.note,
                "cancelled": f.cancelled,
            }
            for f in service.follow_ups(session, d)
        ],
        "pending_kinds": [str(f.kind) for f in service.pending_follow_ups(session, d)],
        "timeline": timeline_rows(session, d),
        "steps": service.available_actions(session, actor, d),
        "mediator_choices": service.mediator_candidates(session, d.handling_org_id),
        "leader_choices": service.leader_candidates(session, d),
        "now_local": datetime.now(tz=default_calendar().tz).strftime("%Y-%m-%dT%H:%M"),
        **choices(),
    }


@router.get("/disputes/{number:dispute_number}")
def case_page(
    request: Request, session: SessionDep, actor: Reader, number: str, created: int = 0
) -> Response:
    d = service.get_dispute(session, actor, number)
    ctx = _case_context(session, actor, d)
    return render(request, "disputes/case.html", created=bool(created), ctx=ctx, **ctx)


@router.get("/disputes/{number:dispute_number}/agreement.pdf")
def agreement(session: SessionDep, actor: Reader, number: str) -> Response:
    d = service.get_dispute(session, actor, number)
    return Response(
        service.agreement_pdf(session, actor, d),
        media_type="application/pdf",
        headers={"Content-Disposition": f'inline; filename="agreement-{d.number}.pdf"'},
    )


@router.post("/disputes/{number:dispute_number}/act/{action}")
def act(
    request: Request,
    session: SessionDep,
    actor: Mediating,
    number: str,
    action: str,
    version: Annotated[int | None, Form()] = None,
    complexity: OptText = None,
    leader_id: OptText = None,
    mediator_ids: TextList = None,
    note: OptText = None,
    reason: OptText = None,
    held_at: OptText = None,
    place: OptText = None,
    attendees: OptText = None,
    minutes: OptText = None,
    outcome: OptText = None,
    kind: OptText = None,
    facts: OptText = None,
    terms: OptText = None,
    performance_deadline: OptText = None,
    party_seq: OptText = None,
    target: OptText = None,
    receiving_body: OptText = None,
    referred_on: OptText = None,
    accepted_on: OptText = None,
    satisfaction: OptText = None,
    performance: OptText = None,
) -> Response:
    """Take one step on a case from a form."""
    if action not in service.PARAMS:
        raise NotFound("Unknown step {action}.", action=action)
    given: dict[str, Any] = {
        "complexity": complexity,
        "leader_id": leader_id or None,
        "mediator_ids": [m for m in (mediator_ids or []) if m] or None,
        "note": note,
        "reason": reason,
        "held_at": held_at,
        "place": place,
        "attendees": attendees,
        "minutes": minutes,
        "outcome": outcome,
        "kind": kind,
        "facts": facts,
        "terms": terms,
        "performance_deadline": performance_deadline or None,
        "party_seq": party_seq,
        "target": target,
        "receiving_body": receiving_body,
        "referred_on": referred_on or None,
        "accepted_on": accepted_on or None,
        "satisfaction": satisfaction,
        "performance": performance,
    }
    for name in service.PARAMS[action][0]:
        if given.get(name) is None or (isinstance(given[name], str) and not given[name].strip()):
            raise Invalid("{what} is required.", what=service.label(name), field=name)
    d = service.act(session, actor, number, action, version=version, **service.params_for(action, given))
    return _done(request, f"/disputes/{d.number}")


# ---- workbench and overview -------------------------------------------------------------------


def row(session: Session, actor: Actor, d: Dispute) -> dict[str, Any]:
    r = service.describe(session, actor, d)
    r["registered_local"] = service.local_time(d.registered_at)
    r["age_days"] = (utcnow() - d.registered_at).days
    return r


@router.get("/disputes/work")
def workbench(request: Request, session: SessionDep, actor: Mediating, page: PageDep) -> Response:
    """My cases, my org's cases waiting for triage or a mediator, follow-up calls due, and dispute
    events in my area that nobody has taken yet."""
    mine_stmt = service.list_stmt(actor, mediator_id=actor.user_id, open_only=True)
    mine, total = paginate(session, mine_stmt, page)
    waiting = session.scalars(
        service.list_stmt(actor, org_id=actor.org_id).where(
            Dispute.state.in_((State.registered, State.triaged))
        )
    ).all()
    calls = service.due_follow_ups(session, actor, org_id=actor.org_id)
    today = events.local_date(utcnow())
    return render(
        request,
        "disputes/work.html",
        mine=[row(session, actor, d) for d in mine],
        total=total,
        page=page,
        waiting=[row(session, actor, d) for d in waiting],
        calls=[
            {
                "number": d.number,
                "title": d.title,
                "kind": str(f.kind),
                "due_on": f.due_on.isoformat(),
                "overdue": f.due_on < today,
            }
            for f, d in calls
        ],
        untaken=service.untaken_dispute_events(session, actor, limit=20),
    )


@router.get("/disputes/difficult")
def difficult(request: Request, session: SessionDep, actor: Reader) -> Response:
    """The county overview: open difficult (疑难) cases at county level with their leaders in charge."""
    cases = [row(session, actor, d) for d in service.difficult_cases(session, actor)]
    by_leader: dict[str, int] = {}
    for c in cases:
        by_leader[c["leader"] or "—"] = by_leader.get(c["leader"] or "—", 0) + 1
    return render(request, "disputes/difficult.html", cases=cases, by_leader=sorted(by_leader.items()))
