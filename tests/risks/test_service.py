"""Raising, dedup and upgrade, handling and closing, precision, scope, and bad input."""

from __future__ import annotations

from datetime import timedelta

import pytest
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from civicgrid.core.audit import AuditRecord
from civicgrid.core.auth import SYSTEM
from civicgrid.core.errors import Invalid, NotFound, PermissionDenied
from civicgrid.events.models import Channel, Event, Notification
from civicgrid.risks import service
from civicgrid.risks.models import Warning, WarningEvidence, WarningState
from tests.risks.conftest import NOW, World, add_event, make_rule


def count(session: Session, model: type) -> int:
    return int(session.scalar(select(func.count()).select_from(model)) or 0)


def test_manual_raise_dedups_and_upgrades(session: Session, world: World) -> None:
    gw = world.actor(session, "grid_worker")
    e1, e2 = add_event(session, world), add_event(session, world)
    village = world.region("village1").id
    w = service.raise_warning(
        session,
        actor=SYSTEM,
        source="disputes",
        region_id=village,
        level="黄",
        title="纠纷激化",
        evidence=[("event", e1.id)],
    )
    assert (w.level, w.state, w.evidence_count) == ("yellow", WarningState.open, 1)
    assert w.number.startswith("YJ-") and w.assigned_org_id == world.tree.orgs["town1"].id
    # The same source and region: evidence attaches, a higher level upgrades, a lower one does not downgrade.
    same = service.raise_warning(
        session,
        actor=SYSTEM,
        source="disputes",
        region_id=village,
        level="orange",
        title="x",
        evidence=[("event", e2.id), ("event", e1.id)],
    )
    assert same.id == w.id and same.level == "orange" and same.evidence_count == 2
    due_after_upgrade = same.due_at
    again = service.raise_warning(
        session,
        actor=SYSTEM,
        source="disputes",
        region_id=village,
        level="blue",
        title="x",
        evidence=[("dispute", 7)],
    )
    assert again.id == w.id and again.level == "orange" and again.evidence_count == 3
    assert again.due_at == due_after_upgrade
    assert count(session, Warning) == 1
    # Manual raises never merge: a person raising a second one means a second matter.
    m1 = service.raise_warning(
        session, actor=gw, source="manual", region_id=village, level="red", title="a", evidence=[]
    )
    m2 = service.raise_warning(
        session, actor=gw, source="manual", region_id=village, level="red", title="b", evidence=[]
    )
    assert m1.id != m2.id and count(session, Warning) == 3
    # The assigned office heard about it.
    assert (
        session.scalar(
            select(func.count()).select_from(Notification).where(Notification.kind == "risk_warning")
        )
        >= 3
    )


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"level": "purple"}, "level"),
        ({"title": "  "}, "title"),
        ({"evidence": [("photo", 1)]}, "evidence"),
        ({"evidence": [("event", 0)]}, "evidence"),
        ({"evidence": [("event", 999999)]}, "evidence"),
        ({"region_id": 999999}, "region"),
        ({"source": ""}, "source"),
    ],
)
def test_raise_refuses_bad_input(session: Session, world: World, kwargs: dict, field: str) -> None:
    args = {
        "source": "manual",
        "region_id": world.region("village1").id,
        "level": "yellow",
        "title": "险情",
        "evidence": [],
        **kwargs,
    }
    with pytest.raises(Invalid) as err:
        service.raise_warning(session, actor=world.actor(session, "dispatcher"), **args)
    assert err.value.params.get("field") == field
    assert count(session, Warning) == 0


def test_manual_raise_needs_right_and_scope(session: Session, world: World) -> None:
    with pytest.raises(PermissionDenied):
        service.raise_warning(
            session,
            actor=world.actor(session, "resident"),
            source="manual",
            region_id=world.region("village1").id,
            level="red",
            title="x",
            evidence=[],
        )
    with pytest.raises(NotFound):  # town 2 is outside dispatcher 1's scope
        service.raise_warning(
            session,
            actor=world.actor(session, "dispatcher"),
            source="manual",
            region_id=world.region("village2").id,
            level="red",
            title="x",
            evidence=[],
        )
    assert count(session, Warning) == 0


def _hot_threshold(session: Session, world: World, n: int = 3, days: float = 0.0):  # type: ignore[no-untyped-def]
    for i in range(n):
        add_event(session, world, category="0102", at=NOW - timedelta(days=days, hours=i))


def test_rule_warning_loop_and_precision(session: Session, world: World) -> None:
    rule = make_rule(
        session, world, "threshold", {"categories": ["01"], "window_days": 2, "levels": {"yellow": 3}}
    )
    _hot_threshold(session, world)
    service.full_pass(session, now=NOW)
    w = session.scalars(select(Warning)).one()
    dispatcher, handler = world.actor(session, "dispatcher"), world.actor(session, "handler")
    assert service.available_steps(dispatcher, w) == ["measure", "event", "task", "close"]
    assert service.available_steps(handler, w) == []  # not the assigned org
    with pytest.raises(PermissionDenied):
        service.record_measure(session, handler, w.number, "看一眼")

    service.record_measure(session, dispatcher, w.number, "组织执法中队连夜清理")
    assert w.state == WarningState.handling
    event = service.spawn_event(
        session, dispatcher, w.number, category_code="0102", description="清理暴露垃圾"
    )
    assert event.channel == Channel.risk and event.number
    task = service.create_task(
        session, dispatcher, w.number, org_code="town-1-enforcement", description="每日巡查", due_hours=16
    )
    with pytest.raises(Invalid):  # a task still open blocks closing
        service.close_warning(
            session, dispatcher, w.number, feedback="已清理", outcome="已消除", verdict="real"
        )
    enforcement = world.actor(session, "dispatcher")  # only the tasked org may report on the task
    with pytest.raises(PermissionDenied):
        service.complete_task(session, enforcement, task.id, "已巡查")
    from civicgrid.accounts.permissions import Role
    from tests.factories import make_user

    make_user(session, world.tree, "enforcer", Role.handler, "enforce1")
    service.complete_task(session, world.actor(session, "enforcer"), task.id, "连续巡查三天，未复发")

    for bad in ({"feedback": ""}, {"outcome": " "}, {"verdict": "maybe"}):
        args = {"feedback": "已清理", "outcome": "隐患消除", "verdict": "real", **bad}
        with pytest.raises(Invalid):
            service.close_warning(session, dispatcher, w.number, **args)
    assert w.state == WarningState.handling
    service.close_warning(
        session, dispatcher, w.number, feedback="已清理", outcome="隐患消除", verdict="real"
    )
    assert w.state == WarningState.closed and w.verdict == "real"
    assert service.precision(session)[rule.id].rate == 1.0

    # Re-evaluating the same history raises nothing new: the closed warning covers it.
    service.full_pass(session, now=NOW)
    service.evaluate_new(session, now=NOW)
    assert count(session, Warning) == 1
    # New evidence after closing opens a new warning; marking it a false alarm halves precision.
    add_event(session, world, category="0102", at=NOW)
    service.full_pass(session, now=NOW + timedelta(minutes=1))
    second = session.scalars(select(Warning).where(Warning.state != WarningState.closed)).one()
    assert second.id != w.id
    service.close_warning(
        session, dispatcher, second.number, feedback="核实", outcome="系正常聚集", verdict="false_alarm"
    )
    p = service.precision(session)[rule.id]
    assert (p.real, p.false_alarm, p.rate) == (1, 1, 0.5)
    # Over time: per local month of closing (both were closed just now, in real time).
    from civicgrid.core.calendar import default_calendar

    months = {w_.closed_at.astimezone(default_calendar().tz).strftime("%Y-%m") for w_ in (w, second)}
    by_month = service.precision_by_month(session, rule.id)
    assert [m for m, _ in by_month] == sorted(months)
    assert (sum(p.real for _, p in by_month), sum(p.false_alarm for _, p in by_month)) == (1, 1)
    with pytest.raises(Invalid):  # closed is closed
        service.record_measure(session, dispatcher, second.number, "再看看")


def test_full_pass_is_idempotent(session: Session, world: World) -> None:
    make_rule(session, world, "threshold", {"categories": ["01"], "window_days": 2, "levels": {"yellow": 3}})
    _hot_threshold(session, world, n=4)
    first = service.full_pass(session, now=NOW)
    audits = count(session, AuditRecord)
    evidence = count(session, WarningEvidence)
    second = service.full_pass(session, now=NOW)
    assert first.get("created") == 1 and second.get("created") is None and second.get("unchanged") == 1
    assert (count(session, AuditRecord), count(session, WarningEvidence)) == (audits, evidence)


def test_scope_of_warnings(session: Session, world: World) -> None:
    for region in ("village1", "village2"):
        service.raise_warning(
            session,
            actor=SYSTEM,
            source="disputes",
            region_id=world.region(region).id,
            level="red",
            title=region,
            evidence=[],
        )
    d1 = world.actor(session, "dispatcher")
    titles = {w.title for w in session.scalars(service.list_stmt(session, d1))}
    assert titles == {"village1"}
    other = session.scalar(select(Warning).where(Warning.title == "village2"))
    with pytest.raises(NotFound):
        service.get_warning(session, d1, other.number)
    assert {w.title for w in session.scalars(service.list_stmt(session, world.actor(session, "admin")))} == {
        "village1",
        "village2",
    }
    with pytest.raises(PermissionDenied):
        service.list_stmt(session, world.actor(session, "resident"))


def test_deadline_notice_once(session: Session, world: World) -> None:
    w = service.raise_warning(
        session,
        actor=SYSTEM,
        source="disputes",
        region_id=world.region("village1").id,
        level="red",
        title="x",
        evidence=[],
    )
    assert w.clock == "calendar" and w.due_at is not None
    later = w.due_at + timedelta(minutes=1)
    assert service.check_deadlines(session, now=later) == {"overdue": 1}
    assert service.check_deadlines(session, now=later) == {"overdue": 0}


def test_events_spawned_are_idempotent_per_number(session: Session, world: World) -> None:
    w = service.raise_warning(
        session,
        actor=SYSTEM,
        source="disputes",
        region_id=world.region("village1").id,
        level="red",
        title="x",
        evidence=[],
    )
    d = world.actor(session, "dispatcher")
    a = service.spawn_event(session, d, w.number, category_code="1001", description="入户调解")
    b = service.spawn_event(session, d, w.number, category_code="1001", description="再次入户")
    assert a.id != b.id and {a.external_id, b.external_id} == {f"{w.number}/1", f"{w.number}/2"}
    assert session.scalar(select(func.count()).select_from(Event).where(Event.channel == Channel.risk)) == 2
