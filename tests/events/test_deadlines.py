"""The deadline worker: reminders and overdue warnings once per deadline, restarts, changed
deadlines, escalation, and (PostgreSQL) several workers at once."""

from __future__ import annotations

import json
import threading
import time
from datetime import timedelta

import pytest
from sqlalchemy import select

from civicgrid.accounts.models import Org
from civicgrid.core.audit import AuditRecord
from civicgrid.core.db import Database
from civicgrid.core.i18n import gettext, reset_locale, set_locale
from civicgrid.events import actions, deadlines, service
from civicgrid.events.models import Channel, Event, Level, Notification, State, TimelineEntry
from civicgrid.worker import jobs

MINUTE = timedelta(minutes=1)


def report(s, world, code="0102", who="resident", text="小区门口有暴露垃圾，臭味很大"):
    return service.create_event(
        s, world.actor(s, who), category_code=code, lon=2.5, lat=2.5, description=text, channel=Channel.web
    )


def step(s, world, who, number, action, **kw):
    return actions.act(s, world.actor(s, who), number, action, **kw)


def run(db: Database, now):
    with db.session() as s:
        return deadlines.check_deadlines(s, now=now)


def get(db: Database, number: str) -> Event:
    with db.session() as s:
        e = s.scalar(select(Event).where(Event.number == number))
        assert e is not None
        return e


def notices(db: Database, number: str, kind: str | None = None) -> list[tuple[str, str]]:
    """(kind, org code) of the deadline notices of an event, oldest first."""
    with db.session() as s:
        e = s.scalar(select(Event).where(Event.number == number))
        stmt = (
            select(Notification.kind, Org.code)
            .join(Org, Org.id == Notification.org_id)
            .where(Notification.event_id == e.id, Notification.kind.startswith("deadline_"))
            .order_by(Notification.id)
        )
        rows = [(k, c) for k, c in s.execute(stmt)]
    return [r for r in rows if kind is None or r[0] == kind]


def test_job_is_registered_with_the_worker():
    assert any(j.name == "events.check_deadlines" and j.every_seconds <= 60 for j in jobs())


def test_soon_then_overdue_for_each_stage_each_sent_once(world):
    db = world.db
    with db.session() as s:
        number = report(s, world).number
    e = get(db, number)
    assert run(db, e.reported_at)["notices"] == 0  # a fresh report is not due soon

    # acceptance: the owner (township office) is reminded, then warned with the county centre
    for _ in range(3):
        run(db, e.accept_due_at - MINUTE)
    assert notices(db, number) == [("deadline_soon", "town-1")]
    for _ in range(3):
        run(db, e.accept_due_at + MINUTE)
    assert notices(db, number, "deadline_overdue") == [
        ("deadline_overdue", "town-1"),
        ("deadline_overdue", "centre-1"),
    ]

    # handling: the lead department and the owner who dispatched; overdue also the county centre
    with db.session() as s:
        step(s, world, "dispatcher", number, "accept")
        step(s, world, "dispatcher", number, "dispatch")
    e = get(db, number)
    for _ in range(3):
        run(db, e.handle_due_at - MINUTE)
        run(db, e.handle_due_at + MINUTE)
    assert notices(db, number)[3:] == [
        ("deadline_soon", "town-1-enforcement"),
        ("deadline_soon", "town-1"),
        ("deadline_overdue", "town-1-enforcement"),
        ("deadline_overdue", "town-1"),
        ("deadline_overdue", "centre-1"),
    ]

    # verification: the owner; overdue also the county centre
    with db.session() as s:
        step(s, world, "handler", number, "start")
        step(s, world, "handler", number, "handle", result="已清运")
    e = get(db, number)
    for _ in range(3):
        run(db, e.verify_due_at - MINUTE)
        run(db, e.verify_due_at + MINUTE)
    assert notices(db, number)[8:] == [
        ("deadline_soon", "town-1"),
        ("deadline_overdue", "town-1"),
        ("deadline_overdue", "centre-1"),
    ]
    assert set(get(db, number).notices.split(",")) >= {
        deadlines.token(deadlines.STAGES[2], "overdue", e.verify_due_at)
    }

    # the inbox shows it in Chinese, with the deadline in local time
    with db.session() as s:
        n = s.scalars(select(Notification).where(Notification.kind == "deadline_overdue")).first()
        token = set_locale("zh_Hans")
        try:
            text = gettext(n.message, **json.loads(n.params))
        finally:
            reset_locale(token)
    assert "已超期" in text and number in text and "受理" in text


def test_restart_sends_nothing_new_and_a_missed_notice_comes_late(world):
    with world.db.session() as s:
        number = report(s, world).number
    e = get(world.db, number)
    # the worker was down through the whole "due soon" window and days past the deadline
    late = e.accept_due_at + timedelta(days=5)
    first = run(world.db, late)
    assert first["overdue"] == 1 and first["soon"] == 0 and first["notices"] == 2
    restarted = Database(world.db.url)  # a new process: new engine, new sessions
    try:
        assert run(restarted, late)["notices"] == 0
        assert run(restarted, late + timedelta(days=1))["notices"] == 0
    finally:
        restarted.dispose()
    assert len(notices(world.db, number)) == 2


def test_extension_and_supervision_earn_new_notices(world):
    db = world.db
    with db.session() as s:
        number = report(s, world).number
        step(s, world, "dispatcher", number, "accept")
        step(s, world, "dispatcher", number, "dispatch")
        step(s, world, "handler", number, "start")
    first_due = get(db, number).handle_due_at
    run(db, first_due - MINUTE)
    assert len(notices(db, number, "deadline_soon")) == 2
    with db.session() as s:
        step(s, world, "handler", number, "request_extension", hours=8, reason="需要协调环卫车辆")
        step(s, world, "dispatcher", number, "decide_extension", grant=True)
    extended = get(db, number).handle_due_at
    assert extended > first_due
    assert run(db, first_due + MINUTE)["overdue"] == 0  # the old deadline no longer counts
    run(db, extended - MINUTE)
    assert len(notices(db, number, "deadline_soon")) == 4
    with db.session() as s:
        step(s, world, "leader", number, "supervise", note="请于今日内完成", due_hours=3)
    supervised = get(db, number).handle_due_at
    run(db, supervised + MINUTE)
    run(db, supervised + MINUTE)
    assert len(notices(db, number, "deadline_overdue")) == 3  # lead, owner, county centre


def test_overdue_category_with_escalation_goes_to_the_county(world):
    db = world.db
    with db.session() as s:
        collapse = report(s, world, code="0401", text="幸福路路面塌陷一个大坑").number
        rubbish = report(s, world).number
        step(s, world, "dispatcher", collapse, "accept")
        step(s, world, "dispatcher", collapse, "dispatch")
        step(s, world, "dispatcher", rubbish, "accept")
        step(s, world, "dispatcher", rubbish, "dispatch")
    e = get(db, collapse)
    assert json.loads(e.rules)["escalate_when_overdue"] and e.level == Level.township
    late = max(e.handle_due_at, get(db, rubbish).handle_due_at) + MINUTE
    done = run(db, late)
    assert done["escalated"] == 1 and done["overdue"] == 2
    e = get(db, collapse)
    assert e.level == Level.county and e.escalated_to_county and e.state == State.accepted
    assert e.owner_org_id == world.tree.orgs["centre1"].id and e.lead_org_id is None
    with db.session() as s:
        last = s.scalars(
            select(TimelineEntry).where(TimelineEntry.event_id == e.id).order_by(TimelineEntry.seq.desc())
        ).first()
        assert last.action == "escalate" and last.actor == "system" and "超期" in last.note
        audited = s.scalars(
            select(AuditRecord).where(
                AuditRecord.action == "event.escalate", AuditRecord.target_id == collapse
            )
        ).all()
        assert [a.actor for a in audited] == ["system"]
        told = s.scalars(
            select(Notification.org_id).where(Notification.event_id == e.id, Notification.kind == "escalated")
        ).all()
        assert told == [world.tree.orgs["centre1"].id]
    assert get(db, rubbish).level == Level.township  # its category does not escalate
    assert run(db, late + timedelta(hours=3))["escalated"] == 0

    # its marks went with the deadline, so the county's new dispatch is watched like the first
    assert get(db, collapse).notices == ""
    with db.session() as s:
        step(s, world, "county_dispatcher", collapse, "dispatch", lead_org_id=world.tree.orgs["enforce1"].id)
    assert run(db, get(db, collapse).handle_due_at + MINUTE)["overdue"] == 1
    assert "handle:overdue@" in get(db, collapse).notices

    # an unaccepted report of an escalating category goes up too
    with db.session() as s:
        fresh = report(s, world, code="0401", text="人民路路面塌陷").number
    assert run(db, get(db, fresh).accept_due_at + MINUTE)["escalated"] == 1
    assert get(db, fresh).level == Level.county


def test_candidates_are_read_page_by_page_and_skip_notified_backlog(world):
    db = world.db
    with db.session() as s:
        numbers = [report(s, world, text=f"暴露垃圾第{i}处").number for i in range(7)]
    late = max(get(db, n).accept_due_at for n in numbers) + timedelta(days=10)
    accept = deadlines.STAGES[0]
    with db.session() as s:
        paged = [r.id for r in deadlines.candidates(s, accept, late, page=3)]
        whole = [r.id for r in deadlines.candidates(s, accept, late)]
    assert paged == whole and len(whole) == 7
    run(db, late)
    with db.session() as s:
        assert deadlines.candidates(s, accept, late + timedelta(days=30)) == []  # all warned


def test_due_soon_threshold():
    assert deadlines.soon_threshold(1) == 0.5  # never more than half of a short stage
    assert deadlines.soon_threshold(4) == 2  # at least two working hours
    assert deadlines.soon_threshold(24) == pytest.approx(4.8)  # 20% of three working days
    assert deadlines.soon_threshold(240) == 16  # at most two working days early


def _pg_only(db: Database) -> None:
    if not db.url.startswith("postgresql"):
        pytest.skip("SQLite serialises writers and has no row locks; one worker runs there")


def test_two_workers_at_once_never_repeat_a_notice(world):
    _pg_only(world.db)
    db = world.db
    numbers = []
    with db.session() as s:
        for i in range(30):
            code = "0401" if i % 3 == 0 else "0102"
            numbers.append(report(s, world, code=code, text=f"路面问题第{i}处").number)
    late = max(get(db, n).accept_due_at for n in numbers) + MINUTE
    results: list[dict[str, int]] = []
    errors: list[BaseException] = []
    start = threading.Barrier(2)

    def worker() -> None:
        s = db.sessionmaker()
        try:
            start.wait()
            results.append(deadlines.check_deadlines(s, now=late, batch=4))
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)
        finally:
            s.close()

    threads = [threading.Thread(target=worker) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not errors, errors
    with db.session() as s:
        rows = s.scalars(select(Notification).where(Notification.kind == "deadline_overdue")).all()
        escalations = s.scalars(select(TimelineEntry).where(TimelineEntry.action == "escalate")).all()
    assert len(rows) == 2 * 30  # each report: its township office and the county centre, once
    assert sum(r["notices"] for r in results) == len(rows)
    assert sum(r["overdue"] for r in results) == 30
    assert len(escalations) == 10 == sum(r["escalated"] for r in results)
    assert len({e.event_id for e in escalations}) == 10


def test_unique_key_race_does_not_crash_the_batch(world):
    """Another transaction inserts the same notice key and commits while the job waits on it."""
    _pg_only(world.db)
    db = world.db
    with db.session() as s:
        first = report(s, world).number
        second = report(s, world, text="另一处暴露垃圾").number
    e = get(db, first)
    now = e.accept_due_at + MINUTE
    town = world.tree.orgs["town1"].id
    other = db.sessionmaker()
    other.add(
        Notification(
            key=deadlines.notice_key(e.id, "accept", "overdue", e.accept_due_at, town),
            org_id=town,
            event_id=e.id,
            kind="deadline_overdue",
            message=deadlines.STAGES[0].overdue_message,
        )
    )
    other.flush()  # holds the key, uncommitted
    timer = threading.Timer(1.0, lambda: (other.commit(), other.close()))
    timer.start()
    began = time.monotonic()
    try:
        done = run(db, now)
    finally:
        timer.join()
    assert time.monotonic() - began > 0.9  # the job's insert waited on the other key, then lost
    assert done["failed"] == 0 and done["overdue"] == 2 and done["notices"] == 3
    assert len(notices(db, first)) == 2 and len(notices(db, second)) == 2
    assert "accept:overdue@" in get(db, first).notices
