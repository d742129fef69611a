"""The worker's evaluation: a rule's warning gains evidence and upgrades instead of repeating, a
run that fails leaves nothing behind and the next run does the work once, and on PostgreSQL a
second worker neither repeats the first one's work nor opens a second warning."""

from __future__ import annotations

import threading
from datetime import timedelta
from typing import Any

import pytest
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from civicgrid.core.auth import SYSTEM
from civicgrid.risks import service
from civicgrid.risks.models import Cursor, Warning, WarningEntry, WarningEvidence
from tests.risks.conftest import NOW, World, add_event, make_rule


def _events_of(session: Session, w: Warning) -> set[int]:
    return set(session.scalars(select(WarningEvidence.ref_id).where(WarningEvidence.warning_id == w.id)))


def _threshold(session: Session, world: World) -> Any:
    rule = make_rule(
        session,
        world,
        "threshold",
        {"categories": ["01"], "window_days": 3, "per": "township", "levels": {"yellow": 3, "red": 5}},
    )
    session.commit()
    return rule


def test_new_evidence_attaches_and_upgrades(session: Session, world: World) -> None:
    rule = _threshold(session, world)
    first = [add_event(session, world, category="0102", at=NOW - timedelta(hours=h)) for h in (3, 2, 1)]
    session.commit()
    service.evaluate_new(session, now=NOW)
    w = session.scalars(select(Warning)).one()
    assert (w.rule_id, str(w.level), _events_of(session, w)) == (rule.id, "yellow", {e.id for e in first})
    yellow_due = w.due_at

    more = [add_event(session, world, category="0101", at=NOW - timedelta(minutes=m)) for m in (20, 10)]
    session.commit()
    service.evaluate_new(session, now=NOW)
    session.expire_all()
    again = session.scalars(select(Warning)).one()  # the same warning, not a second one
    assert again.id == w.id and str(again.level) == "red"
    assert _events_of(session, again) == {e.id for e in first + more} and again.evidence_count == 5
    assert again.due_at is not None and yellow_due is not None and again.due_at <= yellow_due
    actions = list(
        session.scalars(
            select(WarningEntry.action).where(WarningEntry.warning_id == w.id).order_by(WarningEntry.id)
        )
    )
    assert actions == ["raise", "evidence", "upgrade"]

    # An event of another category or township changes nothing.
    add_event(session, world, category="1101", at=NOW)
    add_event(session, world, category="0102", at=NOW, grid="grid2a")
    session.commit()
    assert service.evaluate_new(session, now=NOW).get("findings") is None
    assert session.scalar(select(func.count()).select_from(Warning)) == 1


def test_a_failed_run_leaves_nothing_and_the_next_does_the_work_once(
    session: Session, world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    _threshold(session, world)
    hot = [add_event(session, world, category="0102", at=NOW - timedelta(hours=h)) for h in (3, 2, 1)]
    session.commit()
    real = service.raise_findings

    def crash(*args: Any, **kwargs: Any) -> None:
        real(*args, **kwargs)
        raise RuntimeError("worker killed")

    monkeypatch.setattr(service, "raise_findings", crash)
    with pytest.raises(RuntimeError):
        service.evaluate_new(session, now=NOW)
    session.rollback()
    assert session.scalar(select(func.count()).select_from(Warning)) == 0
    assert session.scalar(select(Cursor.last_id).where(Cursor.name == "events")) in (None, 0)

    monkeypatch.setattr(service, "raise_findings", real)
    assert service.evaluate_new(session, now=NOW)["events"] == 3
    assert service.evaluate_new(session, now=NOW) == {}  # nothing left to read
    w = session.scalars(select(Warning)).one()
    assert _events_of(session, w) == {e.id for e in hot}


def _postgresql_only(world: World) -> None:
    if world.db.engine.dialect.name != "postgresql":
        pytest.skip("several workers run only on PostgreSQL (SQLite has one writer)")


def test_second_worker_skips_the_stream_while_the_first_holds_it(session: Session, world: World) -> None:
    _postgresql_only(world)
    _threshold(session, world)
    for h in (3, 2, 1):
        add_event(session, world, category="0102", at=NOW - timedelta(hours=h))
    session.commit()
    service.evaluate_new(session, now=NOW)  # creates the cursor row
    add_event(session, world, category="0102", at=NOW)
    session.commit()

    holder = world.db.sessionmaker()
    other = world.db.sessionmaker()
    try:
        assert service._lock_cursor(holder, "events") is not None  # worker 1 is mid-run
        assert service.evaluate_new(other, now=NOW) == {"busy": 1}
        holder.rollback()  # worker 1 dies: its lock goes with its transaction
        assert service.evaluate_new(other, now=NOW)["events"] == 1
    finally:
        holder.close()
        other.close()
    w = session.scalars(select(Warning)).one()
    assert w.evidence_count == 4


def test_two_workers_raising_the_same_warning_make_one(world: World) -> None:
    _postgresql_only(world)
    with world.db.session() as s:
        e1, e2 = add_event(s, world).id, add_event(s, world).id
    village = world.region("village1").id
    first = world.db.sessionmaker()
    errors: list[BaseException] = []

    def second_worker() -> None:
        try:
            with world.db.session() as s:  # waits on the open-key index until the first commits
                service.raise_warning(
                    s,
                    actor=SYSTEM,
                    source="disputes",
                    region_id=village,
                    level="red",
                    title="b",
                    evidence=[("event", e2)],
                )
        except BaseException as exc:  # reported by the main thread
            errors.append(exc)

    try:
        service.raise_warning(
            first,
            actor=SYSTEM,
            source="disputes",
            region_id=village,
            level="yellow",
            title="a",
            evidence=[("event", e1)],
        )
        first.flush()
        thread = threading.Thread(target=second_worker)
        thread.start()
        thread.join(0.5)
        assert thread.is_alive()  # blocked behind the first worker's uncommitted warning
        first.commit()
        thread.join(10)
        assert not thread.is_alive() and not errors
    finally:
        first.close()
    with world.db.session() as s:
        w = s.scalars(select(Warning)).one()
        assert str(w.level) == "red" and _events_of(s, w) == {e1, e2}
