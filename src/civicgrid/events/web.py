"""Event pages: the report form, my reports, the dispatcher's queue, the handler's workbench, the
event page with its timeline, Chinese full-text search, and the export of every list.

Thin: reads go through `events.service` and `events.export` (the lists), writes through
`service.create_event` and `actions.act`. Step forms post with the `version` the page showed,
so a concurrent change ends in the app's 409 message instead of overwriting it. Step errors
propagate (the transaction rolls back) and the app's handler renders them into the form's
error area; the report form renders its own errors so the typed text stays in the form.
"""

from __future__ import annotations

import json
from datetime import datetime
from pathlib import Path
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Form, Request, UploadFile
from fastapi.responses import RedirectResponse, Response, StreamingResponse
from sqlalchemy.orm import Session
from sqlalchemy.orm.exc import StaleDataError
from starlette.convertors import Convertor, register_url_convertor

from civicgrid.accounts import service as accounts
from civicgrid.accounts.models import OrgKind
from civicgrid.accounts.permissions import Permission
from civicgrid.core.auth import Actor
from civicgrid.core.db import utcnow
from civicgrid.core.deps import SessionDep, requires
from civicgrid.core.errors import AppError, Invalid, NotFound
from civicgrid.core.i18n import get_locale, gettext
from civicgrid.core.pagination import PageDep, paginate
from civicgrid.core.vocab import PLATFORM_LABELS, Platform
from civicgrid.core.web import render
from civicgrid.events import actions, attachments, attachments_api, export, service
from civicgrid.events.models import OPEN_STATES, STATE_LABELS, Channel, Event, State
from civicgrid.regions import service as regions
from civicgrid.web.web import safe_next


class EventNumberConvertor(Convertor[str]):
    """Event numbers (331002-20261125-00017) in paths, so /events/<word> pages of other
    routers (imports, …) never fall into the event page's route, whatever the mounting order."""

    regex = r"[0-9]{6}-[0-9]{8}-[0-9]{5,}"

    def convert(self, value: str) -> str:
        return value

    def to_string(self, value: str) -> str:
        return value


register_url_convertor("event_number", EventNumberConvertor())
router = APIRouter(include_in_schema=False)
P = Permission
# One permission dependency per route, named by what the reader may do.
Reporter = Annotated[Actor, requires(P.events_report)]
Dispatcher = Annotated[Actor, requires(P.events_dispatch)]
Handler = Annotated[Actor, requires(P.events_handle)]
Text = Annotated[str, Form()]
OptText = Annotated[str | None, Form()]


def N_(message: str) -> str:
    """Marks a msgid for extraction; translated where it is shown."""
    return message


# Form fields of the steps (actions.PARAMS), as the forms label them.
FIELD_LABELS = {
    "reason": N_("Reason"),
    "basis": N_("Legal basis"),
    "redirect_to": N_("Where to turn instead"),
    "into_number": N_("Event to merge into"),
    "lead_org_id": N_("Lead department"),
    "assist_org_ids": N_("Assisting departments"),
    "note": N_("Note"),
    "grant": N_("Decision"),
    "hours": N_("Extra working hours"),
    "due_hours": N_("New deadline in working hours"),
    "result": N_("Result"),
    "passed": N_("Verification result"),
    "score": N_("Rating"),
    "comment": N_("Comment"),
}
ACTION_LABELS = {
    "report": N_("Report"),
    "accept": N_("Accept"),
    "reject": N_("Reject"),
    "merge": N_("Merge"),
    "absorb": N_("Took in a merged report"),
    "dispatch": N_("Dispatch"),
    "start": N_("Start handling"),
    "return": N_("Hand back"),
    "request_extension": N_("Request an extension"),
    "decide_extension": N_("Decide the extension"),
    "extension_granted": N_("Extension granted"),
    "extension_refused": N_("Extension refused"),
    "handle": N_("Report the result"),
    "verify": N_("Verify"),
    "close": N_("Close"),
    "rate": N_("Rate"),
    "archive": N_("Archive"),
    "attach": N_("Added photos or files"),
    "escalate": N_("Escalate"),
    "suspend": N_("Suspend"),
    "resume": N_("Resume"),
    "supervise": N_("Supervise (督办)"),
}
LIST_TITLES = {
    "queue": N_("Dispatch queue"),
    "work": N_("Workbench"),
    "mine": N_("My reports"),
    "search": N_("Search events"),
}
ROWS = {"queue", "work", "mine"}


def _done(request: Request, url: str) -> Response:
    """After a successful post: htmx follows HX-Redirect, a plain form a 303."""
    if request.headers.get("hx-request"):
        return Response(status_code=204, headers={"HX-Redirect": url})
    return RedirectResponse(url, status_code=303)


# ---- shared page data ---------------------------------------------------------------------


def _name(obj: Any) -> str:
    return str(obj.name_en if get_locale() == "en" and obj.name_en else obj.name)


def category_groups(session: Session) -> list[dict[str, Any]]:
    """The catalogue as 大类 groups of 小类 (label 大类 › 小类), in code order, with the text the
    picker's search box matches (codes, Chinese and English names of both levels)."""
    cats = service.list_categories(session)
    groups: dict[int, dict[str, Any]] = {
        c.id: {"name": _name(c), "code": c.code, "items": [], "search": f"{c.name} {c.name_en}"}
        for c in cats
        if c.parent_id is None
    }
    for c in cats:
        group = groups.get(c.parent_id) if c.parent_id else None
        if group is None:
            continue
        group["items"].append(
            {
                "code": c.code,
                "label": f"{group['name']} › {_name(c)}",
                "search": f"{c.code} {c.name} {c.name_en} {group['search']}".lower(),
            }
        )
    return [g for g in groups.values() if g["items"]]


def filter_choices() -> dict[str, Any]:
    return {
        "states": [(str(s), gettext(STATE_LABELS[s])) for s in State],
        "platforms": [(str(p), gettext(PLATFORM_LABELS[p])) for p in Platform],
    }


def queue_row(session: Session, actor: Actor, event: Event, now: datetime | None = None) -> dict[str, Any]:
    """A queue row: the event, where routing would send it, and a suggested duplicate."""
    r = export.row_of(session, actor, event, now)
    lead = service.suggest_lead(session, event) if event.state == State.accepted else None
    r["suggested_lead"] = _name(lead) if lead else ""
    try:
        dup = service.get_event(session, actor, r["duplicate_of"]) if r["duplicate_of"] else None
    except NotFound:  # the earlier report lies outside the reader's scope
        dup = None
    r["duplicate"] = (
        {"number": dup.number, "title": dup.title, "state": gettext(STATE_LABELS[dup.state])}
        if dup is not None and dup.state in OPEN_STATES and event.state in (State.reported, State.accepted)
        else None
    )
    r["actions"] = actions.available_actions(session, actor, event)
    return r


def list_row(session: Session, actor: Actor, name: str, event: Event, now: datetime) -> dict[str, Any]:
    if name == "queue":
        return queue_row(session, actor, event, now)
    r = export.row_of(session, actor, event, now)
    r["actions"] = actions.available_actions(session, actor, event)
    return r


def list_context(
    session: Session, actor: Actor, name: str, filters: export.Filters, page: Any
) -> dict[str, Any]:
    stmt = export.list_stmt(actor, name, filters)
    events, total = paginate(session, stmt, page)
    now = utcnow()
    params = filters.params()
    return {
        "list_name": name,
        "title": gettext(LIST_TITLES[name]),
        "rows": [list_row(session, actor, name, e, now) for e in events],
        "total": total,
        "page": page.page,
        "size": page.size,
        "filters": filters,
        "base_params": {**params, "size": page.size} if page.size != 50 else params,
        "export_params": params,
        "export_cap": export.EXPORT_CAP,
        "category_groups": category_groups(session),
        **filter_choices(),
    }


def list_filters(
    state: str = "", platform: str = "", category: str = "", q: str = "", since: str = "", until: str = ""
) -> export.Filters:
    """The filters every event list and its export take from the query string."""
    return export.Filters.parse(
        state=state, platform=platform, category=category, q=q, since=since, until=until
    )


ListFilters = Annotated[export.Filters, Depends(list_filters)]


# ---- report form --------------------------------------------------------------------------


def _report_form(
    request: Request,
    session: Session,
    actor: Actor,
    *,
    values: dict[str, str] | None = None,
    error: str = "",
    field: str = "",
    status_code: int = 200,
) -> Response:
    region = regions.get(session, actor.region_id)
    return render(
        request,
        "events/new.html",
        status_code=status_code,
        category_groups=category_groups(session),
        values=values or {},
        error=error,
        error_field=field,
        map_region=region.code,
    )


@router.get("/events/new")
def report_page(request: Request, session: SessionDep, actor: Reporter, category: str = "") -> Response:
    return _report_form(request, session, actor, values={"category": category})


def _coordinate(value: str, low: float, high: float) -> float:
    try:
        number = float(value)
    except ValueError:
        raise Invalid(
            "Choose the place on the map or use your device's location.", field="location"
        ) from None
    if not low <= number <= high:
        raise Invalid("Choose the place on the map or use your device's location.", field="location")
    return number


@router.post("/events/new")
def report(
    request: Request,
    session: SessionDep,
    actor: Reporter,
    category: Text = "",
    lon: Text = "",
    lat: Text = "",
    address: Text = "",
    description: Text = "",
    photos: Annotated[list[UploadFile] | None, Form()] = None,
) -> Response:
    """Create the event (channel web) and store its photos, all or nothing: on any error the
    form comes back with the message in the reader's language and nothing is written."""
    values = {"category": category, "lon": lon, "lat": lat, "address": address, "description": description}
    try:
        with session.begin_nested():
            if not category.strip():
                raise Invalid("Choose a category.", field="category")
            event = service.create_event(
                session,
                actor,
                category_code=category.strip(),
                lon=_coordinate(lon, -180, 180),
                lat=_coordinate(lat, -90, 90),
                description=description,
                address=address[:300],
                channel=Channel.web,
            )
            store_photos(request, session, actor, event, photos or [])
    except AppError as exc:
        field = "location" if exc.code == "outside_jurisdiction" else str(exc.params.get("field", ""))
        return _report_form(
            request,
            session,
            actor,
            values=values,
            error=exc.translated(),
            field=field,
            status_code=exc.status,
        )
    return RedirectResponse(f"/events/{event.number}?created=1", status_code=303)


def store_photos(
    request: Request, session: Session, actor: Actor, event: Event, photos: list[UploadFile]
) -> int:
    """Photos sent with a form, stored as the event's attachments in the same transaction (one
    refused file refuses the whole post); returns how many were sent."""
    files = [p for p in photos if p.filename]
    if not files:
        return 0
    # Read one byte past the limit: enough for attachments.clean to refuse a file that is too big.
    read = [(f.filename or "photo", f.file.read(attachments.MAX_BYTES + 1)) for f in files]
    attachments.add_attachments(
        session, actor, event, read, data_dir=Path(request.app.state.settings.data_dir)
    )
    return len(files)


# ---- lists --------------------------------------------------------------------------------


@router.get("/events/mine")
def mine_page(
    request: Request,
    session: SessionDep,
    actor: Reporter,
    page: PageDep,
    f: ListFilters,
) -> Response:
    return render(request, "events/mine.html", **list_context(session, actor, "mine", f, page))


@router.get("/events/queue")
def queue_page(
    request: Request,
    session: SessionDep,
    actor: Dispatcher,
    page: PageDep,
    f: ListFilters,
) -> Response:
    return render(request, "events/queue.html", **list_context(session, actor, "queue", f, page), results=[])


@router.post("/events/queue/dispatch")
def bulk_dispatch(
    request: Request,
    session: SessionDep,
    actor: Dispatcher,
    page: PageDep,
    pick: Annotated[list[str] | None, Form()] = None,
) -> Response:
    """Dispatch each selected event to its suggested lead. Each event is its own savepoint: one
    failure (a conflict, no department found) is reported and does not undo the others."""
    picked = [p for p in (pick or []) if p]
    if not picked:
        raise Invalid("Select at least one event.")
    results = []
    for item in picked[:200]:
        number, _sep, raw_version = item.partition("@")
        try:
            version = int(raw_version) if raw_version else None
        except ValueError:
            version = None
        try:
            with session.begin_nested():
                event = actions.act(session, actor, number, "dispatch", version=version)
                lead = accounts.get_org(session, event.lead_org_id) if event.lead_org_id else None
            results.append({"number": number, "ok": True, "message": _name(lead) if lead else ""})
        except AppError as exc:
            results.append({"number": number, "ok": False, "message": exc.translated()})
        except StaleDataError:
            message = gettext("Someone else changed this a moment ago. Reload and try again.")
            results.append({"number": number, "ok": False, "message": message})
    ctx = list_context(session, actor, "queue", export.Filters(), page)
    if request.headers.get("hx-request"):
        return render(request, "events/_bulk_results.html", results=results, **ctx)
    return render(request, "events/queue.html", results=results, **ctx)


@router.get("/events/work")
def work_page(
    request: Request,
    session: SessionDep,
    actor: Handler,
    page: PageDep,
    f: ListFilters,
) -> Response:
    return render(request, "events/work.html", **list_context(session, actor, "work", f, page))


@router.get("/events/search")
def search_page(
    request: Request,
    session: SessionDep,
    actor: Reporter,
    page: PageDep,
    f: ListFilters,
) -> Response:
    ctx = list_context(session, actor, "search", f, page)
    return render(request, "events/search.html", terms=export.search_terms(f.q), **ctx)


# ---- export -------------------------------------------------------------------------------


def _export(
    request: Request, session: Session, actor: Actor, name: str, fmt: str, filters: export.Filters
) -> Response:
    if fmt not in export.FORMATS:
        raise NotFound("Not found.")
    stmt = export.list_stmt(actor, name, filters)
    export.check_exportable(session, stmt)
    make = export.csv_chunks if fmt == "csv" else export.xlsx_chunks
    body = export.in_locale(get_locale(), make(request.app.state.db, actor, stmt))
    filename = f"events-{name}-{service.local_date(utcnow()):%Y%m%d}.{fmt}"
    return StreamingResponse(
        body,
        media_type=export.FORMATS[fmt],
        headers={"Content-Disposition": f'attachment; filename="{filename}"'},
    )


@router.get("/events/queue/export.{fmt}")
def export_queue(
    request: Request,
    session: SessionDep,
    actor: Dispatcher,
    fmt: str,
    f: ListFilters,
) -> Response:
    return _export(request, session, actor, "queue", fmt, f)


@router.get("/events/work/export.{fmt}")
def export_work(
    request: Request,
    session: SessionDep,
    actor: Handler,
    fmt: str,
    f: ListFilters,
) -> Response:
    return _export(request, session, actor, "work", fmt, f)


@router.get("/events/mine/export.{fmt}")
def export_mine(
    request: Request,
    session: SessionDep,
    actor: Reporter,
    fmt: str,
    f: ListFilters,
) -> Response:
    return _export(request, session, actor, "mine", fmt, f)


@router.get("/events/search/export.{fmt}")
def export_search(
    request: Request,
    session: SessionDep,
    actor: Reporter,
    fmt: str,
    f: ListFilters,
) -> Response:
    return _export(request, session, actor, "search", fmt, f)


# ---- the event page -----------------------------------------------------------------------


def lead_choices(session: Session, event: Event) -> list[dict[str, Any]]:
    """Departments a dispatcher may choose: each platform's station in the event's township and
    department in its county (the routing suggestion comes first)."""
    suggested = service.suggest_lead(session, event)
    out: list[dict[str, Any]] = []
    seen: set[int] = set()
    candidates = [suggested] + [
        accounts.find_org(session, region_id, OrgKind.department, platform)
        for region_id in (event.township_id, event.county_id)
        for platform in Platform
    ]
    for org in candidates:
        if org is not None and org.id not in seen:
            seen.add(org.id)
            out.append(
                {
                    "id": org.id,
                    "name": _name(org),
                    "suggested": suggested is not None and org.id == suggested.id,
                }
            )
    return out


def timeline_rows(session: Session, event: Event) -> list[dict[str, Any]]:
    """Timeline entries for display: time, who, their org, the step in the reader's language."""
    rows = []
    orgs: dict[int, str] = {}
    for t in service.timeline(session, event):
        if t.org_id and t.org_id not in orgs:
            try:
                orgs[t.org_id] = _name(accounts.get_org(session, t.org_id))
            except NotFound:
                orgs[t.org_id] = ""
        data = json.loads(t.data or "{}")
        # The reporter's own steps name their role, not the person (no name or phone here).
        by_reporter = t.actor_user_id is not None and t.actor_user_id == event.reporter_user_id
        who = gettext("Reporter") if by_reporter else t.actor
        extra = ""
        if "passed" in data:
            extra = gettext("Passed") if data["passed"] else gettext("Not passed")
        elif "score" in data:
            extra = "★" * int(data["score"])
        elif data.get("into"):
            extra = gettext("into {number}", number=data["into"])
        elif data.get("attachments"):
            extra = gettext("{count} files", count=len(data["attachments"]))
        elif data.get("possible_duplicate"):
            extra = gettext("possibly the same as {number}", number=data["possible_duplicate"])
        rows.append(
            {
                "at": export.local_text(t.at),
                "actor": who,
                "org": orgs.get(t.org_id, "") if t.org_id else "",
                "action": gettext(ACTION_LABELS[t.action]) if t.action in ACTION_LABELS else t.action,
                "to_state": gettext(STATE_LABELS[State(t.to_state)])
                if t.to_state in State.__members__ and t.to_state != t.from_state
                else "",
                "note": t.note,
                "extra": extra,
            }
        )
    return rows


def attachment_rows(session: Session, event: Event) -> list[dict[str, Any]]:
    """The event's photos and files with the attachments API's download and thumbnail links."""
    return [attachments_api.out(a).model_dump() for a in attachments.list_for_event(session, event)]


@router.get("/events/{number:event_number}")
def event_page(request: Request, session: SessionDep, actor: Reporter, number: str) -> Response:
    event = service.get_event(session, actor, number)
    r = export.row_of(session, actor, event)
    steps = actions.available_actions(session, actor, event)
    grid = regions.get(session, event.grid_id)
    duplicates = []
    if "merge" in steps:
        rules = json.loads(event.rules)
        duplicates = [
            c.event.number
            for c in service.duplicate_candidates(
                session,
                category_id=event.category_id,
                lon=event.lon,
                lat=event.lat,
                text=f"{event.title} {event.description}",
                at=event.reported_at,
                rules=rules,
                exclude_id=event.id,
            )
        ]
    return render(
        request,
        "events/event.html",
        r=r,
        steps=steps,
        timeline=timeline_rows(session, event),
        attachments=attachment_rows(session, event),
        leads=lead_choices(session, event) if "dispatch" in steps else [],
        duplicates=duplicates,
        grid_name=_name(grid),
        grid_geometry=(grid.geometry or "null").replace("</", "<\\/"),
        created=request.query_params.get("created") == "1",
        field_labels=FIELD_LABELS,
        action_labels=ACTION_LABELS,
    )


# ---- steps --------------------------------------------------------------------------------


@router.post("/events/{number:event_number}/act/{action}")
def act(
    request: Request,
    session: SessionDep,
    actor: Reporter,
    number: str,
    action: str,
    version: Annotated[int | None, Form()] = None,
    reason: OptText = None,
    basis: OptText = None,
    redirect_to: OptText = None,
    into_number: OptText = None,
    lead_org_id: Annotated[int | None, Form()] = None,
    assist_org_ids: Annotated[list[int] | None, Form()] = None,
    note: OptText = None,
    grant: Annotated[bool | None, Form()] = None,
    hours: Annotated[float | None, Form()] = None,
    due_hours: Annotated[float | None, Form()] = None,
    result: OptText = None,
    passed: Annotated[bool | None, Form()] = None,
    score: Annotated[int | None, Form()] = None,
    comment: OptText = None,
    photos: Annotated[list[UploadFile] | None, Form()] = None,
    row: Text = "",
    next: Text = "",
) -> Response:
    """Take one step on an event from a form; `row` asks for the updated list row (htmx)."""
    if action not in actions.PARAMS:
        raise NotFound("Unknown step {action}.", action=action)
    given: dict[str, Any] = {
        "reason": reason,
        "basis": basis,
        "redirect_to": redirect_to,
        "into_number": into_number.strip() if into_number else into_number,
        "lead_org_id": lead_org_id,
        "assist_org_ids": assist_org_ids,
        "note": note,
        "grant": grant,
        "hours": hours,
        "due_hours": due_hours,
        "result": result,
        "passed": passed,
        "score": score,
        "comment": comment,
    }
    for name in actions.PARAMS[action][0]:
        if given.get(name) is None or given[name] == "":
            raise Invalid("{what} is required.", what=gettext(FIELD_LABELS[name]), field=name)
    event = actions.act(session, actor, number, action, version=version, **actions.params_for(action, given))
    if action == "handle":
        store_photos(request, session, actor, event, photos or [])
    if request.headers.get("hx-request") and row in ROWS:
        session.flush()
        r = list_row(session, actor, row, event, utcnow())
        return render(request, f"events/_{row}_row.html", r=r, done=gettext(ACTION_LABELS[action]))
    target = safe_next(next) if next else f"/events/{event.number}"
    return _done(request, target)
