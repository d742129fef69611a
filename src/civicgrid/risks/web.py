"""Risk pages: the warning board (by level and region), the warning page with its evidence on the
map and the handling forms, raising a warning by hand, and the rules list and editor with a dry
run. Thin: every read and write goes through `risks.service`; service errors propagate so the
transaction rolls back and the app's handler shows them in the form's error area."""

from __future__ import annotations

import json
from datetime import date, datetime
from typing import Annotated, Any

from fastapi import APIRouter, Form, Query, Request
from fastapi.responses import RedirectResponse, Response
from sqlalchemy import select
from starlette.convertors import Convertor, register_url_convertor

from civicgrid.accounts.models import Org
from civicgrid.accounts.permissions import Permission
from civicgrid.core.auth import Actor
from civicgrid.core.calendar import default_calendar
from civicgrid.core.db import utcnow
from civicgrid.core.deps import SessionDep, requires
from civicgrid.core.errors import Invalid
from civicgrid.core.i18n import gettext
from civicgrid.core.pagination import PageDep, paginate
from civicgrid.core.web import render
from civicgrid.regions import service as regions
from civicgrid.regions.models import Region, RegionLevel
from civicgrid.risks import rules as rule_kinds
from civicgrid.risks import service
from civicgrid.risks.models import (
    RiskRule,
    RuleKind,
    TaskState,
    Warning,
    WarningLevel,
    WarningState,
    WarningTask,
)


class WarningNumberConvertor(Convertor[str]):
    """Warning numbers (YJ-20261125-00017) in paths, so /risks/rules and /risks/new never match."""

    regex = r"YJ-[0-9]{8}-[0-9]{5,}"

    def convert(self, value: str) -> str:
        return value

    def to_string(self, value: str) -> str:
        return value


register_url_convertor("warning_number", WarningNumberConvertor())
router = APIRouter(include_in_schema=False)
P = Permission
Reader = Annotated[Actor, requires(P.risks_read)]
Raiser = Annotated[Actor, requires(P.risks_raise)]
Handler = Annotated[Actor, requires(P.risks_handle)]
Manager = Annotated[Actor, requires(P.risks_manage)]
Text = Annotated[str, Form()]
OptText = Annotated[str, Form()]


def N_(message: str) -> str:
    """Marks a msgid for extraction; translated where it is shown."""
    return message


ENTRY_LABELS = {
    "raise": N_("Raised"),
    "evidence": N_("New evidence"),
    "upgrade": N_("Upgraded"),
    "note": N_("Note"),
    "measure": N_("Measure"),
    "event": N_("Event created"),
    "task": N_("Task handed out"),
    "task_done": N_("Task done"),
    "close": N_("Handled and closed"),
}
KIND_LABELS = {
    RuleKind.threshold: N_("Threshold"),
    RuleKind.cluster: N_("Cluster in space and time"),
    RuleKind.trend: N_("Trend"),
    RuleKind.repeat: N_("Repeat (same address or party)"),
    RuleKind.data: N_("Data condition"),
    RuleKind.manual: N_("Manual"),
}
KIND_EXAMPLES: dict[RuleKind, dict[str, Any]] = {
    RuleKind.threshold: {
        "categories": ["01"],
        "window_days": 7,
        "per": "township",
        "levels": {"yellow": 20, "red": 40},
    },
    RuleKind.cluster: {
        "categories": ["11"],
        "radius_m": 200,
        "days": 3,
        "per": "village",
        "levels": {"yellow": 3, "orange": 5},
    },
    RuleKind.trend: {
        "categories": ["1101"],
        "min_count": 5,
        "per": "township",
        "levels": {"yellow": 50, "orange": 100},
    },
    RuleKind.repeat: {
        "key": "address",
        "days": 90,
        "categories": ["10"],
        "include_disputes": True,
        "levels": {"yellow": 3, "orange": 5},
    },
    RuleKind.data: {
        "dataset": "water-levels",
        "conditions": [{"field": "level_m", "op": "gte", "value": 3.5}],
        "region_field": "region_code",
        "levels": {"orange": 1, "red": 3},
    },
    RuleKind.manual: {"level": "yellow"},
}


def local(dt: datetime | None) -> str:
    """China Standard Time to the minute (the installation's day)."""
    if dt is None:
        return ""
    return dt.astimezone(default_calendar().tz).strftime("%Y-%m-%d %H:%M")


def time_left(due: datetime | None, now: datetime) -> str:
    if due is None:
        return ""
    seconds = (due - now).total_seconds()
    hours = abs(seconds) / 3600
    amount = (
        gettext("{n} h", n=round(hours, 1)) if hours < 48 else gettext("{n} days", n=round(hours / 24, 1))
    )
    return gettext("{time} overdue", time=amount) if seconds < 0 else gettext("{time} left", time=amount)


def _done(request: Request, url: str) -> Response:
    """After a successful post: htmx follows HX-Redirect, a plain form a 303."""
    if request.headers.get("hx-request"):
        return Response(status_code=204, headers={"HX-Redirect": url})
    return RedirectResponse(url, status_code=303)


def _shown(session: SessionDep, w: Warning) -> dict[str, Any]:
    now = utcnow()
    d = service.describe(session, w, now)
    d["raised_local"] = local(w.raised_at)
    d["due_local"] = local(w.due_at)
    d["left"] = time_left(w.due_at, now) if w.state != WarningState.closed else ""
    d["closed_local"] = local(w.closed_at)
    return d


# ---- the board --------------------------------------------------------------------------------


@router.get("/risks")
def board_page(
    request: Request,
    session: SessionDep,
    actor: Reader,
    page: PageDep,
    level: WarningLevel | None = None,
    state: Annotated[str, Query(pattern="^(open|closed|all)$")] = "open",
    region: Annotated[str, Query(max_length=24)] = "",
    mine: bool = False,
) -> Response:
    shown, cells = service.board(session, actor, region or None)
    stmt = service.list_stmt(
        session,
        actor,
        level=level,
        state=WarningState.closed if state == "closed" else None,
        open_only=state == "open",
        region_code=region or None,
        mine=mine,
    )
    rows, total = paginate(session, stmt, page)
    tasks = session.scalars(
        select(WarningTask).where(WarningTask.org_id == actor.org_id, WarningTask.state == TaskState.open)
    ).all()
    task_rows = [(t, session.get(Warning, t.warning_id)) for t in tasks]
    return render(
        request,
        "risks/board.html",
        region=shown,
        ancestors=[*regions.ancestors(session, shown), shown] if actor.in_scope(shown.path) else [shown],
        cells=cells,
        levels=list(reversed(list(WarningLevel))),
        warnings=[_shown(session, w) for w in rows],
        total=total,
        page=page.page,
        size=page.size,
        filters={"level": level or "", "state": state, "region": region, "mine": "1" if mine else ""},
        tasks=task_rows,
        counts=service.open_counts(session, actor),
    )


# ---- raising by hand --------------------------------------------------------------------------


def _raise_regions(session: SessionDep, actor: Actor) -> list[Region]:
    """Townships and villages of the reader's scope, for the raise form (at most 500)."""
    stmt = (
        select(Region)
        .where(
            Region.path.startswith(actor.region_path),
            Region.level.in_([RegionLevel.county, RegionLevel.township, RegionLevel.village]),
        )
        .order_by(Region.path)
        .limit(500)
    )
    own = session.get(Region, actor.region_id)
    found = list(session.scalars(stmt))
    return ([own] if own is not None and own not in found else []) + found


@router.get("/risks/new")
def raise_form(request: Request, session: SessionDep, actor: Raiser, event: str = "") -> Response:
    return render(
        request,
        "risks/new.html",
        regions=_raise_regions(session, actor),
        levels=list(reversed(list(WarningLevel))),
        event=event[:32],
    )


@router.post("/risks/new")
def raise_post(
    request: Request,
    session: SessionDep,
    actor: Raiser,
    region_code: Text,
    level: Text,
    title: Text,
    note: OptText = "",
    events: OptText = "",
) -> Response:
    numbers = [n for n in events.replace("，", ",").replace("\n", ",").split(",") if n.strip()]
    w = service.raise_manual(
        session, actor, region_code=region_code, level=level, title=title, note=note, event_numbers=numbers
    )
    return _done(request, f"/risks/{w.number}")


# ---- the warning page ------------------------------------------------------------------------------


def _region_geometry(session: SessionDep, w: Warning) -> str:
    region = session.get(Region, w.region_id)
    return region.geometry if region is not None and region.geometry else "null"


@router.get("/risks/{number:warning_number}")
def warning_page(request: Request, session: SessionDep, actor: Reader, number: str) -> Response:
    w = service.get_warning(session, actor, number)
    evidence = service.evidence_of(session, actor, w)
    for e in evidence:
        e["at_local"] = local(e.get("at"))
    points = [
        {"lon": e["lon"], "lat": e["lat"], "number": e["number"], "title": e["title"], "url": e["url"]}
        for e in evidence
        if e["kind"] == "event" and not e.get("hidden") and e.get("lon") is not None
    ]
    entries = []
    for entry in service.timeline(session, w):
        org = session.get(Org, entry.org_id) if entry.org_id else None
        entries.append(
            {
                "action": gettext(ENTRY_LABELS.get(entry.action, entry.action)),
                "at": local(entry.at),
                "actor": entry.actor,
                "org": org.name if org else "",
                "note": entry.note,
                "data": json.loads(entry.data or "{}"),
            }
        )
    tasks = []
    for t in service.tasks_of(session, w):
        org = session.get(Org, t.org_id)
        tasks.append(
            {
                "task": t,
                "org": org.name if org else "",
                "due": local(t.due_at),
                "done": local(t.done_at),
                "mine": t.org_id == actor.org_id and t.state == TaskState.open and actor.can(P.risks_handle),
            }
        )
    rule = session.get(RiskRule, w.rule_id) if w.rule_id else None
    return render(
        request,
        "risks/warning.html",
        w=_shown(session, w),
        warning=w,
        rule=rule,
        evidence=evidence,
        points=json.dumps(points, ensure_ascii=False),
        region_geometry=_region_geometry(session, w),
        timeline=entries,
        tasks=tasks,
        steps=service.available_steps(actor, w),
    )


@router.post("/risks/{number:warning_number}/measure")
def measure_post(request: Request, session: SessionDep, actor: Handler, number: str, note: Text) -> Response:
    service.record_measure(session, actor, number, note)
    return _done(request, f"/risks/{number}")


@router.post("/risks/{number:warning_number}/event")
def event_post(
    request: Request,
    session: SessionDep,
    actor: Handler,
    number: str,
    category: Text,
    description: Text,
    address: OptText = "",
) -> Response:
    event = service.spawn_event(
        session, actor, number, category_code=category, description=description, address=address
    )
    return _done(request, f"/risks/{number}?event={event.number}")


@router.post("/risks/{number:warning_number}/task")
def task_post(
    request: Request,
    session: SessionDep,
    actor: Handler,
    number: str,
    org_code: Text,
    description: Text,
    due_hours: OptText = "",
) -> Response:
    hours = None
    if due_hours.strip():
        try:
            hours = float(due_hours)
        except ValueError:
            raise Invalid("The task's time limit must be a number of hours.", field="due_hours") from None
    service.create_task(session, actor, number, org_code=org_code, description=description, due_hours=hours)
    return _done(request, f"/risks/{number}")


@router.post("/risks/{number:warning_number}/close")
def close_post(
    request: Request,
    session: SessionDep,
    actor: Handler,
    number: str,
    feedback: Text,
    outcome: Text,
    verdict: OptText = "",
) -> Response:
    service.close_warning(session, actor, number, feedback=feedback, outcome=outcome, verdict=verdict)
    return _done(request, f"/risks/{number}")


@router.post("/risks/tasks/{task_id}/done")
def task_done_post(
    request: Request, session: SessionDep, actor: Handler, task_id: int, result: Text
) -> Response:
    task = service.complete_task(session, actor, task_id, result)
    w = session.get(Warning, task.warning_id)
    return _done(request, f"/risks/{w.number}" if w else "/risks")


# ---- rules -------------------------------------------------------------------------------------


@router.get("/risks/rules")
def rules_page(request: Request, session: SessionDep, actor: Reader) -> Response:
    rows = service.rule_summary(session, list(session.scalars(service.rules_stmt(actor))))
    return render(request, "risks/rules.html", rules=rows, kind_labels=KIND_LABELS)


def _editor(
    request: Request, session: SessionDep, actor: Actor, rule: RiskRule | None, status_code: int = 200
) -> Response:
    region = session.get(Region, rule.region_id) if rule else session.get(Region, actor.region_id)
    org = session.get(Org, rule.assign_org_id) if rule and rule.assign_org_id else None
    months = service.precision_by_month(session, rule.id) if rule else []
    summary = service.rule_summary(session, [rule])[0] if rule else None
    return render(
        request,
        "risks/rule.html",
        status_code=status_code,
        rule=rule,
        summary=summary,
        months=months,
        form={
            "name": rule.name if rule else "",
            "description": rule.description if rule else "",
            "kind": str(rule.kind) if rule else "threshold",
            "params": rule.params if rule else rule_kinds.params_text(KIND_EXAMPLES[RuleKind.threshold]),
            "region_code": region.code if region else "",
            "assign_org_code": org.code if org else "",
            "active": rule.active if rule else True,
        },
        kinds=list(RuleKind),
        kind_labels=KIND_LABELS,
        examples={str(k): rule_kinds.params_text(v) for k, v in KIND_EXAMPLES.items()},
        can_manage=actor.can(P.risks_manage),
        today=utcnow().astimezone(default_calendar().tz).date(),
    )


@router.get("/risks/rules/new")
def rule_new(request: Request, session: SessionDep, actor: Manager) -> Response:
    return _editor(request, session, actor, None)


@router.get("/risks/rules/{rule_id}")
def rule_page(request: Request, session: SessionDep, actor: Reader, rule_id: int) -> Response:
    return _editor(request, session, actor, service.get_rule(session, actor, rule_id))


def _form_input(
    name: str, kind: str, params: str, region_code: str, description: str, assign_org_code: str, active: str
) -> service.RuleInput:
    return service.RuleInput(
        name=name,
        kind=kind,
        params=params,
        region_code=region_code,
        description=description,
        assign_org_code=assign_org_code,
        active=active in ("on", "true", "1"),
    )


@router.post("/risks/rules/new")
def rule_create(
    request: Request,
    session: SessionDep,
    actor: Manager,
    name: Text,
    kind: Text,
    params: Text,
    region_code: Text,
    description: OptText = "",
    assign_org_code: OptText = "",
    active: OptText = "",
) -> Response:
    rule = service.create_rule(
        session, actor, _form_input(name, kind, params, region_code, description, assign_org_code, active)
    )
    return _done(request, f"/risks/rules/{rule.id}?saved=1")


@router.post("/risks/rules/dry-run")
def rule_dry_run(
    request: Request,
    session: SessionDep,
    actor: Manager,
    name: Text,
    kind: Text,
    params: Text,
    region_code: Text,
    description: OptText = "",
    assign_org_code: OptText = "",
    active: OptText = "",
    first: OptText = "",
    last: OptText = "",
) -> Response:
    """The editor's dry run: the warnings the rule as typed would have raised (htmx partial)."""
    try:
        d1 = date.fromisoformat(first) if first else None
        d2 = date.fromisoformat(last) if last else None
    except ValueError:
        raise Invalid("Dates look like 2026-11-01.", field="from") from None
    result = service.dry_run(
        session,
        actor,
        _form_input(name or "-", kind, params, region_code, description, assign_org_code, active),
        d1,
        d2,
    )
    for w in result.warnings:
        w.first_local, w.last_local = local(w.first_at), local(w.last_at)  # type: ignore[attr-defined]
    return render(
        request, "risks/_dry_run.html", result=result, note=gettext(result.note) if result.note else ""
    )


@router.post("/risks/rules/{rule_id}")
def rule_update(
    request: Request,
    session: SessionDep,
    actor: Manager,
    rule_id: int,
    name: Text,
    kind: Text,
    params: Text,
    region_code: Text,
    description: OptText = "",
    assign_org_code: OptText = "",
    active: OptText = "",
    version: Annotated[int | None, Form()] = None,
) -> Response:
    service.update_rule(
        session,
        actor,
        rule_id,
        _form_input(name, kind, params, region_code, description, assign_org_code, active),
        version,
    )
    return _done(request, f"/risks/rules/{rule_id}?saved=1")
