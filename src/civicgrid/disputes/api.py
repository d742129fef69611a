"""JSON routes of mediation cases under /api/v1/disputes, and their statistics under
/api/v1/stats/disputes (definitions in docs/metrics.md)."""

from __future__ import annotations

import json
from datetime import date
from typing import Annotated, Any

from fastapi import APIRouter, Query, status
from fastapi.responses import Response
from sqlalchemy.orm import Session

from civicgrid.accounts.permissions import Permission
from civicgrid.core.auth import Actor
from civicgrid.core.deps import SessionDep, requires
from civicgrid.core.pagination import PageDep, paginate
from civicgrid.disputes import service, stats
from civicgrid.disputes.models import Complexity, Dispute, DisputeType, Level, State
from civicgrid.disputes.schemas import (
    ActionIn,
    DisputeDetail,
    DisputeIn,
    DisputeOut,
    DisputePage,
    FollowUpOut,
    MediatorOut,
    PartyOut,
    RoundOut,
    TimelineOut,
)
from civicgrid.events import stats as event_stats

router = APIRouter(prefix="/api/v1/disputes", tags=["disputes"])
stats_router = APIRouter(prefix="/api/v1/stats/disputes", tags=["statistics"])
P = Permission
Reader = Annotated[Actor, requires(P.disputes_read)]
Mediator = Annotated[Actor, requires(P.disputes_mediate)]


def out(session: Session, actor: Actor, d: Dispute) -> DisputeOut:
    return DisputeOut.model_validate(service.describe(session, actor, d))


def detail(session: Session, actor: Actor, d: Dispute) -> DisputeDetail:
    info = service.describe(session, actor, d)
    parties, mediators = info.pop("parties"), info.pop("mediators")
    return DisputeDetail(
        **info,
        parties=[PartyOut.model_validate(p) for p in parties],
        mediators=[MediatorOut.model_validate(m) for m in mediators],
        rounds=[
            RoundOut(
                seq=r.seq,
                held_at=r.held_at,
                place=r.place,
                attendees=r.attendees,
                minutes=r.minutes,
                outcome=str(r.outcome),
            )
            for r in service.rounds(session, d)
        ],
        follow_ups=[
            FollowUpOut(
                agreement_no=f.agreement_no,
                kind=str(f.kind),
                due_on=f.due_on,
                done_at=f.done_at,
                satisfaction=str(f.satisfaction) if f.satisfaction else None,
                performance=str(f.performance) if f.performance else None,
                note=f.note,
                cancelled=f.cancelled,
            )
            for f in service.follow_ups(session, d)
        ],
        timeline=[
            TimelineOut(
                seq=t.seq,
                at=t.at,
                actor=t.actor,
                action=t.action,
                from_state=t.from_state,
                to_state=t.to_state,
                note=t.note,
                data=json.loads(t.data),
            )
            for t in service.timeline(session, d)
        ],
        actions=service.available_actions(session, actor, d),
    )


@router.post("", response_model=DisputeDetail, status_code=status.HTTP_201_CREATED)
def register(body: DisputeIn, session: SessionDep, actor: Mediator) -> DisputeDetail:
    """Take a case at the one window: from an event (`event_number`), a walk-in visit, a hotline
    call or a referral (`referred_by`, `referred_by_name`). Parties need names; ID numbers and
    phones are checked. With `complexity` the case is triaged at once."""
    d = service.register(
        session,
        actor,
        **body.model_dump(exclude={"parties"}),
        parties=[p.model_dump() for p in body.parties],
    )
    return detail(session, actor, d)


@router.get("", response_model=DisputePage)
def list_disputes(
    session: SessionDep,
    actor: Reader,
    page: PageDep,
    state: State | None = None,
    level: Level | None = None,
    complexity: Complexity | None = None,
    type: DisputeType | None = None,
    mine: bool = False,
    q: Annotated[str, Query(max_length=100)] = "",
) -> DisputePage:
    stmt = service.list_stmt(
        actor,
        state=state,
        level=level,
        complexity=complexity,
        type=type,
        mediator_id=actor.user_id if mine else None,
        q=q,
    )
    rows, total = paginate(session, stmt, page)
    return DisputePage(
        items=[out(session, actor, d) for d in rows], total=total, page=page.page, size=page.size
    )


@router.get("/{number}", response_model=DisputeDetail)
def get_dispute(number: str, session: SessionDep, actor: Reader) -> DisputeDetail:
    return detail(session, actor, service.get_dispute(session, actor, number))


@router.get(
    "/{number}/agreement.pdf",
    response_class=Response,
    responses={200: {"content": {"application/pdf": {}}}},
)
def agreement_pdf(number: str, session: SessionDep, actor: Reader) -> Response:
    """The 人民调解协议书 of the current agreement (for the mediating org only: it names the parties)."""
    d = service.get_dispute(session, actor, number)
    pdf = service.agreement_pdf(session, actor, d)
    return Response(
        pdf,
        media_type="application/pdf",
        headers={"Content-Disposition": f'inline; filename="agreement-{d.number}.pdf"'},
    )


@router.post("/{number}/{action}", response_model=DisputeDetail)
def act(number: str, action: str, body: ActionIn, session: SessionDep, actor: Mediator) -> DisputeDetail:
    """Take one step: triage, assign, record_round, agree, confirm, fail, refer, accept_referral,
    follow_up, close, move_up, move_down, withdraw. Send the `version` you saw: if someone else
    acted first you get 409 and nothing changes."""
    params = service.params_for(action, body.model_dump())
    d = service.act(session, actor, number, action, version=body.version, **params)
    return detail(session, actor, d)


# ---- statistics -----------------------------------------------------------------------------

From = Annotated[
    date | None, Query(alias="from", description="First local date (default: the 1st of this month).")
]
To = Annotated[date | None, Query(alias="to", description="Last local date, included (default: today).")]
OrgCode = Annotated[str | None, Query(max_length=64, description="Handling org code.")]
MediatorName = Annotated[str | None, Query(max_length=64, description="Lead mediator's username.")]
RegionCode = Annotated[str | None, Query(max_length=24, description="A region inside your area.")]


@stats_router.get("/summary")
def summary(
    session: SessionDep,
    actor: Reader,
    first: From = None,
    last: To = None,
    type: DisputeType | None = None,
    level: Level | None = None,
    org: OrgCode = None,
    mediator: MediatorName = None,
    region: RegionCode = None,
) -> dict[str, Any]:
    """调解成功率, 化解率, 回访满意率, average duration and 镇村化解率 of the disputes registered in
    the period; cases open and follow-up calls overdue now."""
    f = stats.filters(session, type=type, org=org, mediator=mediator, level=level)
    return stats.summary(session, actor, event_stats.window(first, last), f, region=region)


@stats_router.get("/by")
def by(
    session: SessionDep,
    actor: Reader,
    dimension: stats.Dimension,
    first: From = None,
    last: To = None,
    type: DisputeType | None = None,
    level: Level | None = None,
    org: OrgCode = None,
    mediator: MediatorName = None,
    parent: RegionCode = None,
    period: event_stats.Period = event_stats.Period.month,
) -> dict[str, Any]:
    """The same metrics per region (children of `parent`), handling org, lead mediator, type,
    level or period (day, week, month of registration)."""
    f = stats.filters(session, type=type, org=org, mediator=mediator, level=level)
    return stats.breakdown(
        session, actor, event_stats.window(first, last), dimension, f, parent=parent, period=period
    )
