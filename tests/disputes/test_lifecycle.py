"""A case from intake to its end at each level and with each outcome (SQLite and PostgreSQL):
agreement and closure, a breached agreement that reopens the case, failure and referral with
first-contact responsibility, moves between levels, withdrawal, follow-up calls on working days."""

from __future__ import annotations

import json
from datetime import UTC, date, datetime, timedelta

import pytest
from sqlalchemy import delete, select, text
from sqlalchemy.exc import DBAPIError

from civicgrid.core.auth import SYSTEM
from civicgrid.core.calendar import default_calendar
from civicgrid.core.db import utcnow
from civicgrid.core.errors import Conflict, Invalid, NotFound, PermissionDenied
from civicgrid.disputes import service
from civicgrid.disputes.models import FollowUp, Level, Mediator, Outcome, State, TimelineEntry
from civicgrid.events import service as events
from civicgrid.events.models import Channel, Notification
from tests.disputes.conftest import IN_GRID_1A, raises, register, step

pytestmark = pytest.mark.usefixtures("in_english")


def _round(s, world, who, number, outcome="agreement", at=None):
    return step(
        s,
        world,
        who,
        number,
        "record_round",
        held_at=at or utcnow() - timedelta(hours=1),
        place="调解室",
        attendees="张三、李四",
        minutes="双方陈述意见，调解员释法说理。",
        outcome=outcome,
    )


def _actions(s, world, who, number):
    return service.available_actions(
        s, world.actor(s, who), service.get_dispute(s, world.actor(s, who), number)
    )


def _trail(s, number):
    d = service.get_dispute(s, SYSTEM, number)
    return [t.action for t in service.timeline(s, d)]


@pytest.mark.parametrize(
    ("who", "complexity", "level"),
    [("v_mediator", "simple", Level.village), ("t_mediator", "complex", Level.township)],
)
def test_agreement_at_village_and_township_closes_after_the_last_call(world, who, complexity, level):
    with world.db.session() as s:
        d = register(s, world, who, complexity=complexity, take=True)
        number = d.number
        assert d.state == State.mediating and d.level == level
        assert d.lead_mediator_id == world.user_id(s, who)
    with world.db.session() as s:
        _round(s, world, who, number)
        d = step(s, world, who, number, "agree", kind="full", facts="事实", terms="1. 条款")
        assert d.state == State.agreed and d.outcome == Outcome.agreement_full
        assert d.resolved_level == level and d.duration_days is not None
        kinds = sorted(str(f.kind) for f in service.pending_follow_ups(s, d))
        assert kinds == ["day30", "day7"]
        assert "close" not in _actions(s, world, who, number)  # calls still to make
    with world.db.session() as s:
        for p in (1, 2):
            step(s, world, who, number, "confirm", party_seq=p)
        d = step(
            s,
            world,
            who,
            number,
            "follow_up",
            kind="day7",
            satisfaction="satisfied",
            performance="performing",
        )
        assert d.state == State.agreed
        d = step(
            s,
            world,
            who,
            number,
            "follow_up",
            kind="day30",
            satisfaction="basically",
            performance="performed",
        )
        assert d.state == State.closed and d.closed_at is not None
        assert all(p.confirmed_agreement_no == 1 for p in d.parties)
        assert _trail(s, number) == [
            "register",
            "triage",
            "assign",
            "record_round",
            "agree",
            "confirm",
            "confirm",
            "follow_up",
            "follow_up",
        ]


def test_difficult_case_goes_to_the_county_with_a_named_leader(world):
    with world.db.session() as s:
        d = register(s, world, "t_mediator")
        number = d.number
        assert d.state == State.registered and d.level == Level.township
        with raises(Invalid, "leader in charge"):
            step(s, world, "t_mediator", number, "triage", complexity="difficult")
    with world.db.session() as s, raises(Invalid, "cannot be the leader"):  # a leader of the other county
        step(
            s,
            world,
            "t_mediator",
            number,
            "triage",
            complexity="difficult",
            leader_id=world.user_id(s, "leader2"),
        )
    with world.db.session() as s:
        d = step(
            s,
            world,
            "t_mediator",
            number,
            "triage",
            complexity="difficult",
            leader_id=world.user_id(s, "leader"),
        )
        assert d.level == Level.county and d.handling_org_id == world.tree.orgs["centre1"].id
        assert service.describe(s, world.actor(s, "c_mediator"), d)["leader"] == "赵书记"
        with pytest.raises(PermissionDenied):  # the township no longer handles it
            step(s, world, "t_mediator", number, "assign", mediator_ids=[world.user_id(s, "t_mediator")])
    with world.db.session() as s:
        step(s, world, "c_mediator", number, "assign", mediator_ids=[world.user_id(s, "c_mediator")])
        _round(s, world, "c_mediator", number)
        d = step(s, world, "c_mediator", number, "agree", kind="partial", facts="事实", terms="部分条款")
        assert d.outcome == Outcome.agreement_partial and d.resolved_level == Level.county
        assert [
            c.number for c in service.difficult_cases(s, world.actor(s, "leader"))
        ] == []  # agreed: not open
    with world.db.session() as s:
        assert "move_up" not in _actions(s, world, "c_mediator", number)


def test_breached_agreement_reopens_the_case_and_a_new_agreement_gets_new_calls(world):
    with world.db.session() as s:
        number = register(s, world, complexity="complex", take=True).number
        _round(s, world, "t_mediator", number)
        step(s, world, "t_mediator", number, "agree", kind="full", facts="事实", terms="李四一周内改管")
    with world.db.session() as s:
        d = step(
            s,
            world,
            "t_mediator",
            number,
            "follow_up",
            kind="day7",
            satisfaction="dissatisfied",
            performance="breached",
        )
        assert d.state == State.mediating and d.reopen_count == 1
        assert d.outcome is None and d.resolved_level is None and d.concluded_at is None
        calls = service.follow_ups(s, d)
        assert {(str(f.kind), f.cancelled, f.done_at is not None) for f in calls} == {
            ("day7", False, True),
            ("day30", True, False),
        }
        assert service.pending_follow_ups(s, d) == []
        notice = s.scalar(select(Notification).where(Notification.kind == "dispute_reopened"))
        assert notice is not None and notice.org_id == world.tree.orgs["town1"].id
    with world.db.session() as s:
        _round(s, world, "t_mediator", number)
        d = step(s, world, "t_mediator", number, "agree", kind="full", facts="事实", terms="新条款")
        assert d.agreement_no == 2 and d.state == State.agreed
        assert sorted(str(f.kind) for f in service.pending_follow_ups(s, d)) == ["day30", "day7"]
        assert all(p.confirmed_agreement_no is None for p in d.parties)  # confirm the new text again
        assert "reopen" in _trail(s, number)


def test_failed_mediation_is_referred_and_the_first_contact_stays_accountable(world):
    with world.db.session() as s:
        number = register(s, world, "v_mediator", complexity="simple", take=True).number
        # the village committee hands it up to the township: recorded and counted
        d = step(s, world, "v_mediator", number, "move_up", reason="涉及金额较大，村级难以化解")
        assert d.level == Level.township and d.level_up_count == 1 and d.state == State.triaged
        assert s.scalar(select(Mediator.released_at).where(Mediator.dispute_id == d.id)) is not None
    with world.db.session() as s:
        step(s, world, "t_mediator", number, "assign", mediator_ids=[world.user_id(s, "t_mediator")])
        _round(s, world, "t_mediator", number, outcome="no_agreement")
        d = step(s, world, "t_mediator", number, "fail", reason="双方分歧较大")
        assert d.state == State.failed and d.outcome == Outcome.failed and d.duration_days is not None
        info = service.describe(s, world.actor(s, "t_mediator"), d)
        assert info["accountable_org"] == "村1村委会"  # the village took it first
    with world.db.session() as s, raises(Invalid, "Receiving body"):
        step(s, world, "t_mediator", number, "refer", target="court", receiving_body="  ")
    with world.db.session() as s:
        d = step(s, world, "t_mediator", number, "refer", target="court", receiving_body="区人民法院")
        assert d.state == State.referred and d.referred_on == events.local_date(utcnow())
        assert service.describe(s, world.actor(s, "t_mediator"), d)["accountable_org"] == "村1村委会"
    with world.db.session() as s:
        # the first-contact org records the acceptance (it answers for the case until then)
        d = step(s, world, "v_mediator", number, "accept_referral")
        assert d.state == State.transferred and d.referral_accepted_on is not None
        assert service.describe(s, world.actor(s, "t_mediator"), d)["accountable_org"] == "镇1四平台"


def test_move_down_is_recorded_and_counted(world):
    with world.db.session() as s:
        number = register(s, world, complexity="complex", take=True).number
        d = step(s, world, "t_mediator", number, "move_down", reason="案情简单，交村调委会")
        assert d.level == Level.village and d.level_down_count == 1
        assert d.handling_org_id == world.tree.orgs["village1"].id
        assert "move_down" not in _actions(s, world, "v_mediator", number)
        data = json.loads(service.timeline(s, d)[-1].data)
        assert (data["from_level"], data["to_level"]) == ("township", "village")


def test_withdrawal_ends_the_case(world):
    with world.db.session() as s:
        number = register(s, world).number
        d = step(s, world, "t_mediator", number, "withdraw", reason="申请人撤回")
        assert d.state == State.withdrawn and d.outcome == Outcome.withdrawn
        assert _actions(s, world, "t_mediator", number) == []


def test_illegal_transitions_are_refused_and_change_nothing(world):
    with world.db.session() as s:
        number = register(s, world).number
    with world.db.session() as s:
        with pytest.raises(Invalid) as exc:
            step(s, world, "t_mediator", number, "agree", kind="full", facts="x", terms="y")
        assert exc.value.code == "illegal_transition"
        with pytest.raises(Invalid):
            step(s, world, "t_mediator", number, "refer", target="court", receiving_body="法院")
        with pytest.raises(NotFound):
            step(s, world, "t_mediator", number, "teleport")
    with world.db.session() as s:
        d = service.get_dispute(s, world.actor(s, "t_mediator"), number)
        assert d.state == State.registered and d.version == 1
        assert _trail(s, number) == ["register"]
    with world.db.session() as s:
        step(s, world, "t_mediator", number, "triage", complexity="complex")
        step(s, world, "t_mediator", number, "assign", mediator_ids=[world.user_id(s, "t_mediator")])
        with raises(Invalid, "at least one mediation round"):
            step(s, world, "t_mediator", number, "agree", kind="full", facts="x", terms="y")
        with pytest.raises(Conflict):  # optimistic locking: the page's version is stale
            step(s, world, "t_mediator", number, "withdraw", reason="x", version=1)


def test_offered_steps_are_exactly_the_legal_ones(world):
    """Every offered step succeeds; every step of the machine not offered to the handling org
    fails (the same table drives both)."""
    with world.db.session() as s:
        number = register(s, world, complexity="complex", take=True).number
        offered = _actions(s, world, "t_mediator", number)
    assert set(offered) == {"assign", "record_round", "fail", "move_up", "move_down", "withdraw"}
    with world.db.session() as s:
        with pytest.raises(NotFound):  # another county's mediator does not even see it
            service.get_dispute(s, world.actor(s, "t2_mediator"), number)
        assert _actions(s, world, "leader", number) == []  # reads, never acts


def test_from_an_event_of_a_dispute_category_linked_not_copied(world):
    with world.db.session() as s:
        e = events.create_event(
            s,
            world.actor(s, "grid_worker"),
            category_code="1001",
            lon=IN_GRID_1A[0],
            lat=IN_GRID_1A[1],
            description="两户因院墙排水问题争吵，可能动手。",
            channel=Channel.web,
        )
        event_number, event_id = e.number, e.id
        other = events.create_event(
            s,
            world.actor(s, "grid_worker"),
            category_code="0102",
            lon=IN_GRID_1A[0],
            lat=IN_GRID_1A[1],
            description="小区门口垃圾堆积",
            channel=Channel.web,
        ).number
    with world.db.session() as s:
        d = register(
            s,
            world,
            source="event",
            event_number=event_number,
            type=None,
            title="",
            description="",
            grid_code=None,
        )
        assert d.event_id == event_id and d.type == "neighbour" and d.description == ""
        assert d.grid_id == world.tree.regions["grid1a"].id
        assert service.describe(s, world.actor(s, "t_mediator"), d)["event_number"] == event_number
        assert service.dispute_for_event(s, world.actor(s, "t_mediator"), event_id).number == d.number
    with world.db.session() as s:
        with raises(Conflict, "already taken"):
            register(s, world, source="event", event_number=event_number)
        with raises(Invalid, "not of a dispute category"):
            register(s, world, source="event", event_number=other)
        assert [e.number for e in service.untaken_dispute_events(s, world.actor(s, "t_mediator"))] == []


def test_referral_intake_records_the_referring_body(world):
    with world.db.session() as s:
        with raises(Invalid, "Referring body"):
            register(s, world, source="referral")
        with raises(Invalid, "Name of the referring body"):
            register(s, world, source="referral", referred_by="court")
        d = register(
            s,
            world,
            source="referral",
            referred_by="police",
            referred_by_name="城关派出所",
            referral_ref="警调〔2026〕3号",
        )
        info = service.describe(s, world.actor(s, "t_mediator"), d)
        assert (info["referred_by"], info["referred_by_name"], info["referral_ref"]) == (
            "police",
            "城关派出所",
            "警调〔2026〕3号",
        )


def test_bad_intake_is_refused_with_nothing_written(world):
    bad = [
        ({"parties": [{"name": "  ", "phone": "13812345678"}]}, "Party 1 has no name"),
        ({"parties": []}, "at least one party"),
        ({"parties": [{"name": "张三", "id_number": "110101199003071234"}]}, "ID number of party 1"),
        ({"parties": [{"name": "张三", "phone": "call me"}]}, "phone number of party 1"),
        ({"amount": "-5"}, "amount"),
        ({"amount": "many"}, "amount"),
        ({"type": "alien"}, "Type"),
        ({"title": ""}, "Title"),
        ({"grid_code": world.tree.regions["grid2a"].code}, "No region"),  # another county
    ]
    with world.db.session() as s:
        for kw, message in bad:
            with raises((Invalid, NotFound), message), s.begin_nested():
                register(s, world, **kw)
        assert s.scalar(text("SELECT count(*) FROM dispute")) == 0
        assert s.scalar(text("SELECT count(*) FROM dispute_party")) == 0


def test_the_timeline_is_append_only_in_the_database(world):
    with world.db.session() as s:
        number = register(s, world).number
    with world.db.session() as s:
        d = service.get_dispute(s, world.actor(s, "t_mediator"), number)
        entry_id = service.timeline(s, d)[0].id
    for sql in (
        "UPDATE dispute_timeline SET note = 'x' WHERE id = :i",
        "DELETE FROM dispute_timeline WHERE id = :i",
    ):
        with world.db.session() as s, pytest.raises(DBAPIError, match="append-only"):
            s.execute(text(sql), {"i": entry_id})
    with world.db.session() as s:
        assert s.scalar(select(TimelineEntry.note).where(TimelineEntry.id == entry_id)) == ""


# ---- follow-up calls on working days ---------------------------------------------------------


def _local_noon(d: date) -> datetime:
    return datetime(d.year, d.month, d.day, 12, tzinfo=default_calendar().tz).astimezone(UTC)


@pytest.mark.parametrize(
    ("agreed", "day7", "day30"),
    [
        (
            date(2026, 9, 24),
            date(2026, 10, 8),
            date(2026, 10, 26),
        ),  # 10-01 National Day → 10-08; 10-24 Sat → 10-26
        (date(2026, 10, 3), date(2026, 10, 10), date(2026, 11, 2)),  # 10-10 is a 调休 working Saturday
        (date(2026, 11, 2), date(2026, 11, 9), date(2026, 12, 2)),  # plain working days stay
    ],
)
def test_follow_up_days_fall_on_working_days(agreed, day7, day30):
    cal = default_calendar()
    at = _local_noon(agreed)
    assert service.follow_up_day(cal, at, 7) == day7
    assert service.follow_up_day(cal, at, 30) == day30
    assert cal.is_workday(day7) and cal.is_workday(day30)


def test_the_worker_schedules_calls_across_a_holiday_and_reminds_once(world):
    with world.db.session() as s:
        number = register(s, world, complexity="complex", take=True).number
        _round(s, world, "t_mediator", number)
        d = step(s, world, "t_mediator", number, "agree", kind="full", facts="事实", terms="条款")
        # the agreement was signed the day before the Mid-Autumn and National Day holidays
        d.agreed_at = _local_noon(date(2026, 9, 24))
        s.execute(delete(FollowUp).where(FollowUp.dispute_id == d.id))
    with world.db.session() as s:
        counts = service.check_follow_ups(s, now=_local_noon(date(2026, 9, 25)))
        assert counts == {"scheduled": 2, "due": 0, "overdue": 0}
        due = {str(f.kind): f.due_on for f in s.scalars(select(FollowUp))}
        assert due == {"day7": date(2026, 10, 8), "day30": date(2026, 10, 26)}
    with world.db.session() as s:
        assert service.check_follow_ups(s, now=_local_noon(date(2026, 10, 7)))["due"] == 0  # still a holiday
        assert service.check_follow_ups(s, now=_local_noon(date(2026, 10, 8))) == {
            "scheduled": 0,
            "due": 1,
            "overdue": 0,
        }
        assert service.check_follow_ups(s, now=_local_noon(date(2026, 10, 8)))["due"] == 0  # told once
        assert service.check_follow_ups(s, now=_local_noon(date(2026, 10, 9)))["overdue"] == 1
        assert service.check_follow_ups(s, now=_local_noon(date(2026, 10, 12)))["overdue"] == 0
        kinds = sorted(
            n.kind for n in s.scalars(select(Notification).where(Notification.kind.like("followup%")))
        )
        assert kinds == ["followup_due", "followup_overdue"]
        assert all(
            n.org_id == world.tree.orgs["town1"].id
            for n in s.scalars(select(Notification).where(Notification.kind.like("followup%")))
        )
