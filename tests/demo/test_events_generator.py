from __future__ import annotations

import itertools
import json
import re
from collections import Counter
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import func, select

from civicgrid.accounts import service as accounts
from civicgrid.accounts.models import OrgKind
from civicgrid.core.audit import AuditRecord
from civicgrid.core.auth import SYSTEM
from civicgrid.core.calendar import default_calendar
from civicgrid.core.errors import Invalid
from civicgrid.core.vocab import Platform
from civicgrid.demo.events import generate_events
from civicgrid.events import service, stats
from civicgrid.events.models import Category, Event, EventSequence, State, TimelineEntry
from civicgrid.regions import service as regions
from tests.events.conftest import build_world
from tests.factories import make_tree

NOW = datetime(2026, 10, 9, 3, 17, tzinfo=UTC)  # just after the National Day holidays
DAYS = 60
FINISHED = {State.closed, State.rated, State.archived}
# states → the timestamps that must be set (and, after them, those that must not)
REACHED = {
    State.reported: (),
    State.rejected: (),
    State.merged: (),
    State.accepted: ("accepted_at",),
    State.dispatched: ("accepted_at", "dispatched_at"),
    State.handling: ("accepted_at", "dispatched_at"),
    State.suspended: ("accepted_at", "dispatched_at"),
    State.handled: ("accepted_at", "dispatched_at", "handled_at"),
    State.verified: ("accepted_at", "dispatched_at", "handled_at", "verified_at"),
    State.closed: ("accepted_at", "dispatched_at", "handled_at", "verified_at", "closed_at"),
    State.rated: ("accepted_at", "dispatched_at", "handled_at", "verified_at", "closed_at"),
    State.archived: ("accepted_at", "dispatched_at", "handled_at", "verified_at", "closed_at", "archived_at"),
}
STAMPS = ("accepted_at", "dispatched_at", "handled_at", "verified_at", "closed_at", "archived_at")


def fingerprint(session) -> list[tuple]:
    rows = session.execute(
        select(Event.number, Event.state, Event.category_id, Event.grid_id, Event.lon, Event.reported_at,
               Event.closed_at, Event.rating, Event.lead_org_id).order_by(Event.id)
    )  # fmt: skip
    return [tuple(r) for r in rows]


@pytest.fixture
def generated(db):
    with db.session() as s:
        t = build_world(s)
        # a township market station beside the county's bureau: market events can be handed back
        accounts.create_org(s, SYSTEM, code="town-1-market", name="镇1市场监管所", kind=OrgKind.department,
                            region_code=t.regions["town1"].code, platform=Platform.market)  # fmt: skip
    with db.session() as s:
        report = generate_events(s, count=1500, seed=11, days=DAYS, now=NOW)
    with db.session() as s:
        # the generator writes below the ORM; `civicgrid demo events` rebuilds the same way
        from civicgrid.events import rollups

        rollups.rebuild(s)
    return db, report


def test_events_are_consistent_with_their_state_and_the_calendar(generated):
    db, report = generated
    cal = default_calendar()
    with db.session() as s:
        events = s.scalars(select(Event).order_by(Event.id)).all()
        entries: dict[int, list[TimelineEntry]] = {}
        for t in s.scalars(select(TimelineEntry).order_by(TimelineEntry.event_id, TimelineEntry.seq)):
            entries.setdefault(t.event_id, []).append(t)
        assert len(events) == report.count == 1500
        assert sum(len(v) for v in entries.values()) == report.timeline_entries
        assert Counter(str(e.state) for e in events) == report.by_state
        # a realistic mix: most finished, every branch of the workflow present
        assert report.by_state["archived"] + report.by_state.get("rated", 0) > 600
        assert {"rejected", "merged", "handling"} <= set(report.by_state)
        for e in events:
            rules = json.loads(e.rules)
            assert NOW - timedelta(days=DAYS) <= e.reported_at <= NOW
            must = REACHED[e.state]
            # as in the workflow, a hand-back keeps the dispatch time and a rework the first handling
            may = {"dispatched_at"} if e.handback_count else set()
            may |= {"handled_at"} if e.rework_count else set()
            for name in STAMPS:
                if name not in may:
                    assert (getattr(e, name) is not None) == (name in must), (e.number, e.state, name)
            steps = [t.at for t in entries[e.id]]
            assert steps == sorted(steps) and steps[0] == e.reported_at and steps[-1] <= NOW
            assert e.accept_due_at == cal.add_working_hours(e.reported_at, rules["accept_hours"])
            tl = entries[e.id]
            assert [t.seq for t in tl] == list(range(1, len(tl) + 1)) and tl[0].action == "report"
            assert tl[-1].to_state == str(e.state) and e.version == len(tl)
            for a, b in itertools.pairwise(tl):
                assert b.from_state == a.to_state, (e.number, a.action, b.action)
            assert e.handback_count == sum(t.action == "return" for t in tl)
            assert e.rework_count == sum(t.action == "verify" and t.to_state == "handling" for t in tl)
            assert e.escalation_count == sum(t.action == "escalate" for t in tl)
            if e.state in FINISHED:
                hours = cal.working_hours_between(e.reported_at, e.handled_at)
                assert e.handling_hours == pytest.approx(hours, abs=0.006)
                assert e.closed_on_time == (e.handled_at <= e.handle_due_at)
            else:
                assert e.closed_on_time is None and e.handling_hours is None
            if e.state in (State.dispatched, State.handling, State.handled, State.verified, *FINISHED):
                assert e.lead_org_id is not None and e.handle_due_at is not None
            if e.state == State.rejected:
                assert e.reject_reason and e.reject_basis
            if e.state == State.merged:
                assert e.merged_into_id is not None and e.merged_into_id < e.id
            if e.rating is not None:
                assert e.state in (State.rated, State.archived) and e.reporter_user_id
            if e.handled_at and e.rework_count == 0 and e.handback_count == 0:
                assert e.handle_due_at == service.handle_due(cal, e.dispatched_at, rules)
            assert e.escalated_to_county == (e.level == "county" and e.escalation_count > 0)
            hit = regions.grid_for_point(s, e.lon, e.lat)
            assert hit.grid.id == e.grid_id and e.region_path == hit.grid.path


def test_numbers_follow_the_service_scheme_and_continue_the_sequence(generated):
    db, _report = generated
    with db.session() as s:
        numbers = s.scalars(select(Event.number).order_by(Event.id)).all()
        assert len(set(numbers)) == len(numbers)
        assert all(re.fullmatch(r"33100[12]-\d{8}-\d{5}", n) for n in numbers)
        per_day: dict[str, list[int]] = {}
        for n in numbers:
            prefix, _sep, seq = n.rpartition("-")
            per_day.setdefault(prefix, []).append(int(seq))
        assert all(sorted(v) == list(range(1, len(v) + 1)) for v in per_day.values())
        lasts = {f"{r.prefix}-{r.day:%Y%m%d}": r.last for r in s.scalars(select(EventSequence))}
        assert lasts == {k: len(v) for k, v in per_day.items()}
        # a report through the real intake continues the same day's sequence
        day = max(lasts)
        prefix, _sep, ymd = day.partition("-")
        at = datetime.strptime(ymd, "%Y%m%d").replace(tzinfo=UTC) + timedelta(hours=3)
        assert service.next_number(s, prefix, at) == f"{day}-{lasts[day] + 1:05d}"
        records = s.scalars(select(AuditRecord).where(AuditRecord.action == "event.bulk_generate")).all()
        assert len(records) == 1 and json.loads(records[0].diff)["_"]["count"] == 1500


def test_statistics_of_generated_events_equal_a_count_in_python(generated):
    db, _report = generated
    with db.session() as s:
        win = stats.window((NOW - timedelta(days=DAYS)).date(), NOW.date(), now=NOW)
        m = stats.summary(s, SYSTEM, win, now=NOW)["metrics"]
        cohort = [
            e
            for e in s.scalars(select(Event))
            if e.accepted_at and win.start <= e.accepted_at < win.end and e.state != State.merged
        ]
        closed = [e for e in cohort if e.state in FINISHED]
        due = closed + [
            e
            for e in cohort
            if e.state not in FINISHED
            and e.state != State.suspended
            and e.handle_due_at
            and e.handle_due_at < NOW
        ]
        rated = [e for e in cohort if e.rating]
        assert m["accepted"] == len(cohort) and m["closed"] == len(closed) and m["due"] == len(due)
        assert m["closed_on_time"] == sum(bool(e.closed_on_time) for e in closed)
        assert m["reworked"] == sum(e.rework_count > 0 for e in closed)
        assert m["rated"] == len(rated) and m["satisfied"] == sum(e.rating >= 4 for e in rated)
        assert m["resolved_locally"] == sum(e.level != "county" for e in closed)
        assert m["avg_handling_hours"] == round(sum(e.handling_hours for e in closed) / len(closed), 2)
        assert 0.9 <= m["local_resolution_rate"] <= 1.0
        returns = s.scalar(
            select(func.count()).where(TimelineEntry.action == "return", TimelineEntry.at >= win.start)
        )
        assert stats.handbacks(s, SYSTEM, win, now=NOW)["total"]["handbacks"] == returns > 0


def test_same_seed_same_events(db):
    with db.session() as s:
        build_world(s)
    with db.session() as s:
        generate_events(s, count=300, seed=5, days=30, now=NOW)
        first = fingerprint(s)
        s.rollback()
        generate_events(s, count=300, seed=5, days=30, now=NOW)
        assert fingerprint(s) == first
        s.rollback()
        generate_events(s, count=300, seed=6, days=30, now=NOW)
        assert fingerprint(s) != first


def test_needs_a_jurisdiction_and_seeds_an_empty_catalogue(db):
    with db.session() as s, pytest.raises(Invalid):
        generate_events(s, count=10, seed=1, days=10, now=NOW)
    with db.session() as s:
        make_tree(s)
    with db.session() as s:
        assert s.scalar(select(func.count(Category.id))) == 0
        generate_events(s, count=50, seed=1, days=10, now=NOW)
        assert s.scalar(select(func.count(Category.id))) > 60
        assert s.scalar(select(func.count(Event.id))) == 50
    with db.session() as s, pytest.raises(Invalid):
        generate_events(s, count=0, seed=1, days=10)
