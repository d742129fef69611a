"""JSON routes of the risk loop under /api/v1/risks: warnings (board, list, detail, manual raise,
handling steps), tasks, and rules (CRUD, dry run, precision)."""

from __future__ import annotations

import json
from typing import Annotated

from fastapi import APIRouter, Query, status
from sqlalchemy.orm import Session

from civicgrid.accounts.models import Org
from civicgrid.accounts.permissions import Permission
from civicgrid.core.auth import Actor
from civicgrid.core.deps import SessionDep, requires
from civicgrid.core.pagination import PageDep, paginate
from civicgrid.risks import service
from civicgrid.risks.models import RiskRule, Warning, WarningLevel, WarningState
from civicgrid.risks.schemas import (
    BoardOut,
    BoardRow,
    CloseIn,
    DryRunIn,
    DryRunOut,
    EntryOut,
    EvidenceOut,
    MeasureIn,
    PrecisionOut,
    RuleIn,
    RuleOut,
    RuleUpdate,
    SimulatedOut,
    SpawnEventIn,
    TaskDoneIn,
    TaskIn,
    TaskOut,
    WarningDetail,
    WarningIn,
    WarningOut,
    WarningPage,
)

router = APIRouter(prefix="/api/v1/risks", tags=["risks"])
P = Permission
Reader = Annotated[Actor, requires(P.risks_read)]
Raiser = Annotated[Actor, requires(P.risks_raise)]
Handler = Annotated[Actor, requires(P.risks_handle)]
Manager = Annotated[Actor, requires(P.risks_manage)]


def warning_out(session: Session, w: Warning) -> WarningOut:
    return WarningOut(**service.describe(session, w))


def warning_detail(session: Session, actor: Actor, w: Warning) -> WarningDetail:
    tasks = []
    for t in service.tasks_of(session, w):
        org = session.get(Org, t.org_id)
        tasks.append(
            TaskOut(
                id=t.id,
                org=org.name if org else "",
                description=t.description,
                due_at=t.due_at,
                state=str(t.state),
                result=t.result,
                done_at=t.done_at,
            )
        )
    return WarningDetail(
        **service.describe(session, w),
        evidence=[
            EvidenceOut(**{k: v for k, v in e.items() if k in EvidenceOut.model_fields})
            for e in service.evidence_of(session, actor, w)
        ],
        timeline=[
            EntryOut(at=e.at, actor=e.actor, action=e.action, note=e.note, data=json.loads(e.data or "{}"))
            for e in service.timeline(session, w)
        ],
        tasks=tasks,
        steps=service.available_steps(actor, w),
    )


def rule_out(session: Session, actor: Actor, rule: RiskRule, with_months: bool = False) -> RuleOut:
    s = service.rule_summary(session, [rule])[0]
    p = s["precision"]
    months = (
        [
            {"month": m, "real": q.real, "false_alarm": q.false_alarm, "rate": q.rate}
            for m, q in service.precision_by_month(session, rule.id)
        ]
        if with_months
        else []
    )
    return RuleOut(
        id=rule.id,
        name=rule.name,
        description=rule.description,
        kind=rule.kind,
        params=s["params"],
        region_code=s["region"].code,
        region_name=s["region"].name,
        assign_org_code=s["org"].code if s["org"] else None,
        active=rule.active,
        version=rule.version,
        open_warnings=s["open"],
        warnings=s["total"],
        precision=PrecisionOut(real=p.real, false_alarm=p.false_alarm, closed=p.closed, rate=p.rate),
        precision_by_month=months,
    )


def _input(body: RuleIn) -> service.RuleInput:
    return service.RuleInput(
        name=body.name,
        kind=str(body.kind),
        params=body.params,
        region_code=body.region_code,
        description=body.description,
        assign_org_code=body.assign_org_code,
        active=body.active,
    )


# ---- warnings ---------------------------------------------------------------------------------


@router.get("/board", response_model=BoardOut)
def board(
    session: SessionDep, actor: Reader, region: Annotated[str | None, Query(max_length=24)] = None
) -> BoardOut:
    """Open warnings by level for the shown region itself and each of its children."""
    shown, cells = service.board(session, actor, region)
    return BoardOut(
        region_code=shown.code,
        region_name=shown.name,
        rows=[
            BoardRow(region_code=c.region.code, region_name=c.region.name, counts=c.counts, total=c.total)
            for c in cells
        ],
    )


@router.get("/warnings", response_model=WarningPage)
def list_warnings(
    session: SessionDep,
    actor: Reader,
    page: PageDep,
    level: WarningLevel | None = None,
    state: WarningState | None = None,
    open_only: bool = False,
    region: Annotated[str | None, Query(max_length=24)] = None,
    rule: int | None = Query(default=None, ge=1, le=2**31 - 1),
    mine: bool = False,
) -> WarningPage:
    stmt = service.list_stmt(
        session,
        actor,
        level=level,
        state=state,
        open_only=open_only,
        region_code=region,
        rule_id=rule,
        mine=mine,
    )
    rows, total = paginate(session, stmt, page)
    return WarningPage(
        items=[warning_out(session, w) for w in rows], total=total, page=page.page, size=page.size
    )


@router.post("/warnings", response_model=WarningDetail, status_code=status.HTTP_201_CREATED)
def raise_warning(body: WarningIn, session: SessionDep, actor: Raiser) -> WarningDetail:
    """Raise a warning by hand (manual warnings never merge with another open one)."""
    w = service.raise_manual(
        session,
        actor,
        region_code=body.region_code,
        level=body.level,
        title=body.title,
        note=body.note,
        event_numbers=body.event_numbers,
        rule_id=body.rule_id,
    )
    return warning_detail(session, actor, w)


@router.get("/warnings/{number}", response_model=WarningDetail)
def get_warning(number: str, session: SessionDep, actor: Reader) -> WarningDetail:
    return warning_detail(session, actor, service.get_warning(session, actor, number))


@router.post("/warnings/{number}/measures", response_model=WarningDetail)
def record_measure(number: str, body: MeasureIn, session: SessionDep, actor: Handler) -> WarningDetail:
    return warning_detail(session, actor, service.record_measure(session, actor, number, body.note))


@router.post("/warnings/{number}/events", response_model=WarningDetail, status_code=status.HTTP_201_CREATED)
def spawn_event(number: str, body: SpawnEventIn, session: SessionDep, actor: Handler) -> WarningDetail:
    """Create a four-platform event from the warning (channel `risk`)."""
    service.spawn_event(
        session,
        actor,
        number,
        category_code=body.category,
        description=body.description,
        lon=body.lon,
        lat=body.lat,
        address=body.address,
    )
    return warning_detail(session, actor, service.get_warning(session, actor, number))


@router.post("/warnings/{number}/tasks", response_model=WarningDetail, status_code=status.HTTP_201_CREATED)
def create_task(number: str, body: TaskIn, session: SessionDep, actor: Handler) -> WarningDetail:
    service.create_task(
        session, actor, number, org_code=body.org_code, description=body.description, due_hours=body.due_hours
    )
    return warning_detail(session, actor, service.get_warning(session, actor, number))


@router.post("/warnings/{number}/close", response_model=WarningDetail)
def close_warning(number: str, body: CloseIn, session: SessionDep, actor: Handler) -> WarningDetail:
    """Close with feedback (what was done, the outcome) and the verdict: real risk or false alarm."""
    w = service.close_warning(
        session, actor, number, feedback=body.feedback, outcome=body.outcome, verdict=body.verdict
    )
    return warning_detail(session, actor, w)


@router.post("/tasks/{task_id}/done", response_model=TaskOut)
def complete_task(task_id: int, body: TaskDoneIn, session: SessionDep, actor: Handler) -> TaskOut:
    t = service.complete_task(session, actor, task_id, body.result)
    org = session.get(Org, t.org_id)
    return TaskOut(
        id=t.id,
        org=org.name if org else "",
        description=t.description,
        due_at=t.due_at,
        state=str(t.state),
        result=t.result,
        done_at=t.done_at,
    )


# ---- rules ------------------------------------------------------------------------------------


@router.get("/rules", response_model=list[RuleOut])
def list_rules(session: SessionDep, actor: Reader) -> list[RuleOut]:
    return [rule_out(session, actor, r) for r in session.scalars(service.rules_stmt(actor))]


@router.post("/rules", response_model=RuleOut, status_code=status.HTTP_201_CREATED)
def create_rule(body: RuleIn, session: SessionDep, actor: Manager) -> RuleOut:
    return rule_out(session, actor, service.create_rule(session, actor, _input(body)))


@router.post("/rules/dry-run", response_model=DryRunOut)
def dry_run(body: DryRunIn, session: SessionDep, actor: Manager) -> DryRunOut:
    """What the rule would have raised over a past period (default: the last 30 days). Writes
    nothing."""
    result = service.dry_run(session, actor, _input(body), body.from_, body.to)
    return DryRunOut(
        kind=result.kind,
        from_=result.first,
        to=result.last,
        count=len(result.warnings),
        warnings=[
            SimulatedOut(
                region_code=w.region.code,
                region_name=w.region.name,
                level=w.level,
                first_at=w.first_at,
                last_at=w.last_at,
                evidence=w.evidence,
                samples=w.samples,
            )
            for w in result.warnings
        ],
        note=service.gettext(result.note) if result.note else "",
    )


@router.get("/rules/{rule_id}", response_model=RuleOut)
def get_rule(rule_id: int, session: SessionDep, actor: Reader) -> RuleOut:
    return rule_out(session, actor, service.get_rule(session, actor, rule_id), with_months=True)


@router.put("/rules/{rule_id}", response_model=RuleOut)
def update_rule(rule_id: int, body: RuleUpdate, session: SessionDep, actor: Manager) -> RuleOut:
    rule = service.update_rule(session, actor, rule_id, _input(body), body.version)
    return rule_out(session, actor, rule, with_months=True)
