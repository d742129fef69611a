"""JSON routes of the event workflow under /api/v1/events (and the inbox)."""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from functools import partial
from typing import Annotated

from fastapi import APIRouter, Query, Request, Response, status

from civicgrid.accounts.permissions import Permission
from civicgrid.core.auth import Actor
from civicgrid.core.db import Database
from civicgrid.core.deps import (
    Credentials,
    SessionDep,
    actors_of,
    authorised,
    json_body,
    json_body_doc,
    requires,
)
from civicgrid.core.errors import AppError
from civicgrid.core.groupcommit import GroupCommit
from civicgrid.core.i18n import gettext
from civicgrid.core.pagination import PageDep, paginate
from civicgrid.core.vocab import Platform
from civicgrid.events import actions, service
from civicgrid.events.models import Category, Channel, Event, Notification, State
from civicgrid.events.schemas import (
    ActionIn,
    CategoryOut,
    CategoryUpdate,
    EventDetail,
    EventIn,
    EventOut,
    EventPage,
    InternalEventIn,
    NotificationOut,
    TimelineOut,
)

router = APIRouter(prefix="/api/v1/events", tags=["events"])
# Intake alone, included before every other router (main.py): FastAPI tries routes in order, and
# the busiest route of all was found after some two dozen others (a third of the framework's
# time per report).
intake_router = APIRouter(prefix="/api/v1/events", tags=["events"])
inbox_router = APIRouter(prefix="/api/v1/inbox", tags=["inbox"])
P = Permission
log = logging.getLogger(__name__)


def category_out(session: SessionDep, c: Category) -> CategoryOut:
    parent = session.get(Category, c.parent_id) if c.parent_id else None
    return CategoryOut.model_validate(c, from_attributes=True).model_copy(
        update={"parent_code": parent.code if parent else None}
    )


def detail(session: SessionDep, actor: Actor, event: Event) -> EventDetail:
    rules = json.loads(event.rules)
    dups = (
        service.duplicate_candidates(
            session,
            category_id=event.category_id,
            lon=event.lon,
            lat=event.lat,
            text=f"{event.title} {event.description}",
            at=event.reported_at,
            rules=rules,
            exclude_id=event.id,
        )
        if event.state in (State.reported, State.accepted)
        else []
    )
    return EventDetail(
        **service.describe(session, actor, event),
        timeline=[TimelineOut.model_validate(t) for t in service.timeline(session, event)],
        actions=actions.available_actions(session, actor, event),
        duplicates=[d.event.number for d in dups],
    )


@router.get("/categories", response_model=list[CategoryOut])
def list_categories(
    session: SessionDep, actor: Annotated[Actor, requires(P.regions_read)]
) -> list[CategoryOut]:
    return [category_out(session, c) for c in service.list_categories(session)]


@router.patch("/categories/{code}", response_model=CategoryOut)
def update_category(
    code: str,
    body: CategoryUpdate,
    session: SessionDep,
    actor: Annotated[Actor, requires(P.catalogue_manage)],
) -> CategoryOut:
    c = service.update_category(session, actor, code, **body.model_dump(exclude_unset=True))
    return category_out(session, c)


async def report_event(request: Request) -> Response:
    """Report an event (bearer token or browser session with the CSRF header). Reports that
    arrive together are written in one transaction (group commit); the answer comes after the
    commit, serialised in the batch's thread (the event loop only passes the bytes on)."""
    body = json_body(EventIn, await request.body())
    state = request.app.state
    queue: GroupCommit[_Reported, Response] | None = getattr(state, "event_intake", None)
    if queue is None:
        queue = state.event_intake = GroupCommit(partial(_report_batch, state.db))
    return await queue.submit(_Reported(body, Credentials.of(request)))


# Two registrations of the one function: a plain Starlette route answers (main.py adds it
# first: FastAPI's route wrapper and dependency solving cost ≈ 0.04 ms a request on the busiest
# route, a fiftieth of a report's whole cost), and this FastAPI route, never reached, documents
# it in /docs.
intake_router.add_api_route(
    "",
    report_event,
    methods=["POST"],
    response_model=EventDetail,
    status_code=status.HTTP_201_CREATED,
    responses={401: {"description": "Not logged in"}, 403: {"description": "Not allowed"}},
    openapi_extra=json_body_doc(EventIn),
)


@dataclass(frozen=True)
class _Reported:
    body: EventIn
    credentials: Credentials


def _report_batch(db: Database, items: Sequence[_Reported]) -> list[Response | Exception]:
    """POST /api/v1/events for several requests at once: their actors in one query, their
    reports through one `receive_events`, one commit; an answer or an error for each."""
    answers: dict[int, Response | Exception] = {}
    with db.session() as session:
        found = actors_of(session, [i.credentials for i in items])
        reports: dict[int, service.Report] = {}
        for k, (item, who) in enumerate(zip(items, found, strict=True)):
            try:
                actor = authorised(who, item.credentials, P.events_report)
            except AppError as exc:
                answers[k] = exc
                continue
            reports[k] = report_of(actor, item.body, Channel.api if actor.via == "token" else Channel.web)
        names = service.reporters_of(session, [r.actor.user_id for r in reports.values() if r.actor.user_id])
        results = service.receive_events(session, list(reports.values()))
        # Commit first, then write the answers (from what intake already holds, no query): the
        # rollups' row locks, which other batches wait for, last no longer than the commit.
        session.commit()
        for (k, report), result in zip(reports.items(), results, strict=True):
            if isinstance(result, AppError):
                answers[k] = result
                continue
            try:
                detail = intake_detail(session, report.actor, result, names)
            except Exception as exc:  # written: this answer fails, not the batch (no retry)
                log.exception("the answer to a report that was written failed")
                answers[k] = exc
                continue
            answers[k] = Response(detail.model_dump_json(), status_code=201, media_type="application/json")
    return [answers[k] for k in range(len(items))]


def report_of(
    actor: Actor, body: EventIn, channel: Channel, external_id: str | None = None
) -> service.Report:
    return service.Report(
        actor,
        category_code=body.category,
        lon=body.lon,
        lat=body.lat,
        description=body.description,
        title=body.title,
        address=body.address,
        reporter_name=body.reporter_name,
        reporter_phone=body.reporter_phone,
        channel=channel,
        external_id=external_id,
    )


def intake_detail(
    session: SessionDep,
    actor: Actor,
    intake: service.Intake,
    reporters: dict[int, tuple[str, str]] | None = None,
) -> EventDetail:
    """`detail` of an event just created, from what its creation already knows: the one
    timeline entry, the duplicate candidates it found, the grid — no further query."""
    event = intake.event
    return EventDetail(
        **service.describe(
            session,
            actor,
            event,
            grid_code=intake.grid_code,
            numbers={d.event.id: d.event.number for d in intake.duplicates},
            reporters=reporters,
        ),
        timeline=[TimelineOut.model_validate(intake.entry)],
        actions=actions.available_actions(session, actor, event),
        duplicates=[d.event.number for d in intake.duplicates],
    )


@router.post("/internal", response_model=EventDetail, status_code=status.HTTP_201_CREATED)
def report_internal(
    body: InternalEventIn, session: SessionDep, actor: Annotated[Actor, requires(P.events_report)]
) -> EventDetail:
    """For risk rules and other systems; repeating a call with the same external_id is harmless."""
    existing = service.find_by_external_id(session, body.channel, body.external_id)
    if existing is not None:
        return detail(session, actor, existing)
    intake = service.receive_event(session, report_of(actor, body, body.channel, body.external_id))
    return intake_detail(session, actor, intake)


@router.get("", response_model=EventPage)
def list_events(
    session: SessionDep,
    actor: Annotated[Actor, requires(P.events_report)],
    page: PageDep,
    state: State | None = None,
    category: str | None = None,
    platform: Platform | None = None,
    mine: bool = False,
    q: Annotated[str, Query(max_length=100)] = "",
    order: Annotated[str, Query(pattern="^(newest|due)$")] = "newest",
) -> EventPage:
    stmt = service.list_stmt(
        actor, state=state, category=category, platform=platform, mine=mine, q=q, order=order
    )
    rows, total = paginate(session, stmt, page)
    return EventPage(
        items=[EventOut(**service.describe(session, actor, e)) for e in rows],
        total=total,
        page=page.page,
        size=page.size,
    )


@router.get("/{number}", response_model=EventDetail)
def get_event(
    number: str, session: SessionDep, actor: Annotated[Actor, requires(P.events_report)]
) -> EventDetail:
    return detail(session, actor, service.get_event(session, actor, number))


@router.post("/{number}/{action}", response_model=EventDetail)
def act(
    number: str,
    action: str,
    body: ActionIn,
    session: SessionDep,
    actor: Annotated[Actor, requires(P.events_report)],
) -> EventDetail:
    """Take one step (accept, reject, merge, dispatch, start, return, request_extension,
    decide_extension, handle, verify, close, rate, archive, escalate, suspend, resume, supervise).
    Send the `version` you saw: if someone else acted first you get 409 and nothing changes."""
    params = actions.params_for(action, body.model_dump())
    event = actions.act(session, actor, number, action, version=body.version, **params)
    return detail(session, actor, event)


@inbox_router.get("", response_model=list[NotificationOut])
def inbox(
    session: SessionDep, actor: Annotated[Actor, requires(P.tokens_own)], unread: bool = False
) -> list[NotificationOut]:
    rows = session.scalars(service.inbox_stmt(actor, unread_only=unread).limit(200)).all()
    return [notification_out(session, n) for n in rows]


@inbox_router.post("/{notification_id}/read", response_model=NotificationOut)
def mark_read(
    notification_id: int, session: SessionDep, actor: Annotated[Actor, requires(P.tokens_own)]
) -> NotificationOut:
    return notification_out(session, service.mark_read(session, actor, notification_id))


def notification_out(session: SessionDep, n: Notification) -> NotificationOut:
    return NotificationOut(
        id=n.id,
        kind=n.kind,
        message=gettext(n.message, **json.loads(n.params)),
        event_number=service.event_number(session, n.event_id),
        created_at=n.created_at,
        read_at=n.read_at,
    )
