"""Property: no sequence of steps by any roles leaves an event in an invalid state or loses
a timeline entry. Each step runs in its own transaction, as a request does."""

from __future__ import annotations

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from civicgrid.core.errors import AppError
from civicgrid.events import actions, service
from civicgrid.events.models import Channel, Event, Level, State

ACTORS = [
    "dispatcher",
    "county_dispatcher",
    "dispatcher2",
    "handler",
    "handler_safety",
    "grid_worker",
    "resident",
    "resident2",
    "leader",
    "admin",
]
ORGS = [None, "enforce1", "dept1", "market1", "town2"]


def params_for(draw, action):
    return {
        "reject": {"reason": draw(st.sampled_from(["", "非本辖区"])), "basis": "《条例》第5条"},
        "merge": {"into_number": "TARGET"},
        "dispatch": {"lead_org": draw(st.sampled_from(ORGS))},
        "escalate": {"reason": "需上级协调"},
        "decide_extension": {"grant": draw(st.booleans())},
        "suspend": {"reason": "等待"},
        "resume": {},
        "close": {},
        "archive": {},
        "supervise": {"note": "督办", "due_hours": draw(st.sampled_from([0, 4, 1000]))},
        "start": {},
        "return": {"reason": draw(st.sampled_from(["", "非我单位职责"]))},
        "request_extension": {"hours": draw(st.sampled_from([-1, 8])), "reason": "协调"},
        "handle": {"result": "已处理"},
        "verify": {"passed": draw(st.booleans()), "note": "仍未解决"},
        "rate": {"score": draw(st.integers(0, 6)), "comment": ""},
        "accept": {},
    }[action]


def check_invariants(s, event: Event, expected_entries: int) -> None:
    entries = service.timeline(s, event)
    assert [e.seq for e in entries] == list(range(1, len(entries) + 1))
    assert len(entries) == expected_entries
    assert entries[-1].to_state == event.state
    st_ = event.state
    if st_ in (State.dispatched, State.handling, State.handled):
        assert event.lead_org_id is not None and event.handle_due_at is not None
    if st_ in (State.closed, State.rated, State.archived):
        assert (
            event.closed_at is not None
            and event.handling_hours is not None
            and event.closed_on_time is not None
        )
    if st_ == State.rated:
        assert event.rating in (1, 2, 3, 4, 5)
    if st_ == State.rejected:
        assert event.reject_reason and event.reject_basis
    if st_ == State.merged:
        assert event.merged_into_id is not None
    if st_ == State.suspended:
        assert event.state_before_suspend in (State.dispatched, State.handling)
    if st_ == State.verified:
        assert event.verified_at is not None
    assert (event.level == Level.county) == event.escalated_to_county or event.level != Level.county
    assert event.rework_count >= 0 and event.handback_count >= 0


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_no_sequence_breaks_an_event(world, data):
    db = world.db
    with db.session() as s:
        r = world.actor(s, "resident")
        target = service.create_event(
            s, r, category_code="0102", lon=2.5, lat=2.5, description="垃圾堆放", channel=Channel.web
        ).number
        number = service.create_event(
            s, r, category_code="0102", lon=2.6, lat=2.6, description="暴露垃圾", channel=Channel.web
        ).number
    entries = 1
    visited = set()
    for _ in range(data.draw(st.integers(1, 30), label="steps")):
        # Mostly steps someone may take now (so deep states are reached), sometimes anything.
        with db.session() as s:
            ev = service.get_event(s, world.actor(s, "admin"), number)
            legal = (
                sorted(
                    (who, a) for who in ACTORS for a in actions.available_actions(s, world.actor(s, who), ev)
                )
                if ev.state in {st_ for sts in actions.ALLOWED_FROM.values() for st_ in sts}
                else []
            )
        onward = [x for x in legal if x[1] not in ("reject", "merge")]  # dead ends, rarely
        roll = data.draw(st.integers(0, 9), label="kind of step")
        if onward and roll < 7:
            who, action = data.draw(st.sampled_from(onward), label="onward step")
        elif legal and roll < 8:
            who, action = data.draw(st.sampled_from(legal), label="legal step")
        else:
            who = data.draw(st.sampled_from(ACTORS), label="who")
            action = data.draw(st.sampled_from(sorted(actions.ALLOWED_FROM)), label="action")
        params = params_for(data.draw, action)
        if action == "merge":
            params["into_number"] = target
        if action == "dispatch":
            org = params.pop("lead_org")
            if org:
                params["lead_org_id"] = world.tree.orgs[org].id
        with db.session() as s:
            before = service.get_event(s, world.actor(s, "admin"), number).state
        try:
            with db.session() as s:
                actions.act(s, world.actor(s, who), number, action, **params)
            ok = True
        except AppError:
            ok = False
        if ok:
            assert before in actions.ALLOWED_FROM[action], f"{action} succeeded from {before}"
            entries += 1
        with db.session() as s:
            event = service.get_event(s, world.actor(s, "admin"), number)
            if not ok:
                assert event.state == before  # a refused step changes nothing
            check_invariants(s, event, entries)
            visited.add(event.state)


def test_available_actions_are_exactly_the_ones_that_succeed(world):
    """Buttons never lie: every step offered to a reader succeeds, and a step not offered fails."""
    with world.db.session() as s:
        number = service.create_event(
            s,
            world.actor(s, "resident"),
            category_code="0102",
            lon=2.5,
            lat=2.5,
            description="暴露垃圾",
            channel=Channel.web,
        ).number
    path = [
        ("dispatcher", "accept", {}),
        ("dispatcher", "dispatch", {}),
        ("handler", "start", {}),
        ("handler", "handle", {"result": "已处理"}),
    ]
    for who_next, action_next, params_next in path:
        with world.db.session() as s:
            ev = service.get_event(s, world.actor(s, "admin"), number)
            for who in ACTORS:
                offered = actions.available_actions(s, world.actor(s, who), ev)
                assert (action_next in offered) == (
                    who == who_next or (who == "admin" and action_next in ("accept", "dispatch"))
                ), (who, offered)
        with world.db.session() as s:
            actions.act(s, world.actor(s, who_next), number, action_next, **params_next)
