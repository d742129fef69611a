from __future__ import annotations

import json

import pytest
from sqlalchemy.orm.exc import StaleDataError

from civicgrid.core.errors import Conflict, Invalid, NotFound, PermissionDenied
from civicgrid.events import actions, service
from civicgrid.events.models import Channel, Level, Notification, State

IN_GRID_1A = (2.5, 2.5)


def report(s, world, who="resident", code="0102", text="小区门口有暴露垃圾，臭味很大", at=IN_GRID_1A):
    return service.create_event(
        s,
        world.actor(s, who),
        category_code=code,
        lon=at[0],
        lat=at[1],
        description=text,
        channel=Channel.web,
    )


def step(s, world, who, number, action, **kw):
    return actions.act(s, world.actor(s, who), number, action, **kw)


def test_full_lifecycle_from_report_to_archive(world):
    with world.db.session() as s:
        e = report(s, world)
        number = e.number
        assert e.state == State.reported and e.level == Level.township
        assert number.startswith("331001-") and number.endswith("-00001")
        assert e.accept_due_at > e.reported_at
        assert json.loads(e.rules)["handle_unit"] == "hours"
    with world.db.session() as s:
        step(s, world, "dispatcher", number, "accept")
        e = step(s, world, "dispatcher", number, "dispatch")  # routing: the township's enforcement station
        assert e.lead_org_id == world.tree.orgs["enforce1"].id and e.handle_due_at is not None
        step(s, world, "handler", number, "start")
        step(s, world, "handler", number, "handle", result="已清运")
        step(s, world, "resident", number, "verify", passed=True)
        step(s, world, "dispatcher", number, "close")
        step(s, world, "resident", number, "rate", score=5, comment="很快")
        e = step(s, world, "dispatcher", number, "archive")
        assert e.state == State.archived and e.rating == 5 and e.closed_on_time is True
        assert e.handling_hours is not None and e.handling_hours >= 0
        entries = service.timeline(s, e)
        assert [x.action for x in entries] == [
            "report",
            "accept",
            "dispatch",
            "start",
            "handle",
            "verify",
            "close",
            "rate",
            "archive",
        ]
        assert [x.seq for x in entries] == list(range(1, 10))
        kinds = {
            n.kind
            for n in s.query(Notification).filter(Notification.user_id == world.tree.users["resident"].id)
        }
        assert {"accepted", "handled", "closed"} <= kinds


def test_reject_needs_reason_and_basis_and_tells_reporter_who(world):
    with world.db.session() as s:
        number = report(s, world).number
    with world.db.session() as s, pytest.raises(Invalid):
        step(s, world, "dispatcher", number, "reject", reason="不属于本辖区", basis="")
    with world.db.session() as s:
        e = step(
            s,
            world,
            "dispatcher",
            number,
            "reject",
            reason="属物业管理范围",
            basis="《物业管理条例》第三十五条",
            redirect_to="请联系小区物业服务中心",
        )
        last = service.timeline(s, e)[-1]
        assert e.state == State.rejected
        assert json.loads(last.data)["by_org"] == "镇1四平台"
        assert "物业" in json.loads(last.data)["redirect_to"]


def test_failed_verification_is_rework_and_handback_counts(world):
    with world.db.session() as s:
        number = report(s, world).number
        step(s, world, "dispatcher", number, "accept")
        step(s, world, "dispatcher", number, "dispatch")
        e = step(s, world, "handler", number, "return", reason="不属于我单位职责")
        assert e.state == State.accepted and e.handback_count == 1 and e.lead_org_id is None
        step(s, world, "dispatcher", number, "dispatch", lead_org_id=world.tree.orgs["enforce1"].id)
        step(s, world, "handler", number, "start")
        step(s, world, "handler", number, "handle", result="已处理")
        with pytest.raises(Invalid):
            step(s, world, "grid_worker", number, "verify", passed=False, note="")
        e = step(s, world, "grid_worker", number, "verify", passed=False, note="垃圾仍在")
        assert e.state == State.handling and e.rework_count == 1


def test_escalation_to_county_is_recorded(world):
    with world.db.session() as s:
        number = report(s, world).number
        e = step(s, world, "dispatcher", number, "escalate", reason="涉及多个部门")
        assert (
            e.level == Level.county
            and e.escalated_to_county
            and e.owner_org_id == world.tree.orgs["centre1"].id
        )
        with pytest.raises(PermissionDenied):
            step(s, world, "dispatcher", number, "dispatch")  # no longer the owner
        step(s, world, "county_dispatcher", number, "dispatch", lead_org_id=world.tree.orgs["enforce1"].id)
        with pytest.raises(Invalid, match="highest"):
            step(s, world, "county_dispatcher", number, "escalate", reason="再上报")


def test_extension_suspend_and_supervision(world):
    with world.db.session() as s:
        number = report(s, world).number
        step(s, world, "dispatcher", number, "accept")
        step(s, world, "dispatcher", number, "dispatch")
        step(s, world, "handler", number, "start")
        due = service.get_event(s, world.actor(s, "dispatcher"), number).handle_due_at
        step(s, world, "handler", number, "request_extension", hours=8, reason="需要协调环卫车辆")
        with pytest.raises(Conflict):
            step(s, world, "handler", number, "request_extension", hours=4, reason="再延")
        e = step(s, world, "dispatcher", number, "decide_extension", grant=True)
        assert e.handle_due_at > due and e.extension_requested_hours is None
        e = step(s, world, "dispatcher", number, "suspend", reason="等待天气好转")
        assert e.state == State.suspended
        e = step(s, world, "dispatcher", number, "resume")
        assert e.state == State.handling
        e = step(s, world, "leader", number, "supervise", note="请于今日内完成", due_hours=4)
        assert e.supervision_count == 1
        orgs = {n.org_id for n in s.query(Notification).filter(Notification.kind == "supervised")}
        assert orgs == {world.tree.orgs["town1"].id, world.tree.orgs["enforce1"].id}


def test_illegal_steps_wrong_roles_and_scope(world):
    with world.db.session() as s:
        number = report(s, world).number
    with world.db.session() as s, pytest.raises(PermissionDenied, match="lead department"):
        step(s, world, "handler", number, "handle", result="x")  # not dispatched to them
    with world.db.session() as s, pytest.raises(PermissionDenied):
        step(s, world, "handler", number, "accept")
    with world.db.session() as s, pytest.raises(NotFound):
        step(s, world, "dispatcher2", number, "accept")  # county 2 cannot even see it
    with world.db.session() as s, pytest.raises(Invalid) as exc:
        step(s, world, "dispatcher", number, "close")
    assert exc.value.code == "illegal_transition"
    with world.db.session() as s, pytest.raises(NotFound):
        step(s, world, "resident2", number, "rate", score=5)  # residents see only their own reports


def test_unknown_category_and_outside_point_write_nothing(world):
    with world.db.session() as s, pytest.raises(Invalid):
        report(s, world, code="9999")
    with world.db.session() as s, pytest.raises(Invalid) as exc:
        report(s, world, at=(50.0, 50.0))
    assert exc.value.code == "outside_jurisdiction"
    with world.db.session() as s, pytest.raises(Invalid):
        report(s, world, code="01")  # a top-level class is not a reportable category
    with world.db.session() as s:
        assert s.query(service.Event).count() == 0


def test_duplicates_are_suggested_and_merge_keeps_reporters_informed(world):
    with world.db.session() as s:
        first = report(s, world).number
        second = report(s, world, who="resident2", text="小区门口垃圾暴露很臭", at=(2.5002, 2.5002))
        assert second.duplicate_of_id is not None
        other = report(s, world, who="resident2", text="路灯不亮", at=(2.5, 2.5))
        assert other.duplicate_of_id is None  # same place, different matter
        step(s, world, "dispatcher", second.number, "merge", into_number=first)
        step(s, world, "dispatcher", first, "accept")
        step(s, world, "dispatcher", first, "dispatch")
        step(s, world, "handler", first, "start")
        step(s, world, "handler", first, "handle", result="已清运")
        told = {n.user_id for n in s.query(Notification).filter(Notification.kind == "handled")}
        assert told == {world.tree.users["resident"].id, world.tree.users["resident2"].id}


def test_two_people_at_once_one_wins(world):
    with world.db.session() as s:
        number = report(s, world).number
    a = world.db.sessionmaker()
    b = world.db.sessionmaker()
    try:
        ea = service.get_event(a, world.actor(a, "dispatcher"), number)
        eb = service.get_event(b, world.actor(b, "dispatcher"), number)
        actions.do_accept(a, world.actor(a, "dispatcher"), ea)
        a.commit()
        with pytest.raises(StaleDataError):
            actions.do_reject(b, world.actor(b, "dispatcher"), eb, reason="重复", basis="规定")
        b.rollback()
    finally:
        a.close()
        b.close()
    with world.db.session() as s:
        e = service.get_event(s, world.actor(s, "dispatcher"), number)
        assert e.state == State.accepted and len(service.timeline(s, e)) == 2
        with pytest.raises(Conflict):
            actions.act(s, world.actor(s, "dispatcher"), number, "dispatch", version=1)
