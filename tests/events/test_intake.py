"""Intake at speed: the reply built from what creation knows, the statement budget, cached
places that follow region imports, owners read fresh."""

from __future__ import annotations

from typing import Any

import pytest
from sqlalchemy import event, select, text

from civicgrid.accounts.models import Org
from civicgrid.core.errors import Invalid
from civicgrid.events import service
from civicgrid.events.models import Channel, Event
from civicgrid.regions import service as regions
from tests.factories import login_headers

REPORT = {"category": "0102", "lon": 2.5, "lat": 2.5, "description": "小区门口有暴露垃圾，臭味很大"}


def test_reply_to_a_report_is_what_the_event_page_shows(client, world):
    """The reply is built without reading the event back; it must equal a fresh read."""
    headers = login_headers(client, "grid_worker")
    first = client.post("/api/v1/events", headers=headers, json=REPORT)
    second = client.post("/api/v1/events", headers=headers, json={**REPORT, "lon": 2.5001})
    assert first.status_code == second.status_code == 201
    posted = second.json()
    assert posted["duplicates"] == [first.json()["number"]] == [posted["duplicate_of"]]
    got = client.get(f"/api/v1/events/{posted['number']}", headers=headers).json()
    assert posted == got


def test_intake_stays_within_its_statement_budget(client, world):
    """Token → actor is one query, the place comes from the cache, the owner is one query,
    the reply reads back only the reporter's name and phone: 12 statements at most (it was 25),
    with the statistics rollup's upsert."""
    headers = login_headers(client, "grid_worker")
    assert client.post("/api/v1/events", headers=headers, json=REPORT).status_code == 201  # warm
    seen: list[str] = []

    def count(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        seen.append(" ".join(statement.split())[:100])

    event.listen(world.db.engine, "before_cursor_execute", count)
    try:
        res = client.post("/api/v1/events", headers=headers, json={**REPORT, "lon": 1.5})
    finally:
        event.remove(world.db.engine, "before_cursor_execute", count)
    assert res.status_code == 201
    # not counted: transaction control, and the grid index's change check (once per 5 s)
    work = [s for s in seen if s.split()[0] not in ("BEGIN", "COMMIT") and "count(region.id)" not in s]
    assert len(work) <= 12, "\n".join(seen)


def test_places_follow_a_region_import(world):
    """A renamed township shows in the next intake's messages at once (the cache is dropped by
    the import), and closing an office reroutes the next event at once (owners are read fresh)."""
    db = world.db
    with db.session() as s:
        grid_worker = world.actor(s, "grid_worker")
        e = service.create_event(
            s, grid_worker, category_code="0102", lon=2.5, lat=2.5, description="垃圾", channel=Channel.api
        )
        assert e.owner_org_id == world.tree.orgs["town1"].id
    with db.session() as s:
        for key in ("town1", "centre1"):
            s.get(Org, world.tree.orgs[key].id).active = False
    with db.session() as s:
        town = regions.get_by_code(s, world.tree.regions["town1"].code)
        town.name = "新镇名"
    with db.session() as s:
        try:
            service.create_event(
                s,
                grid_worker,
                category_code="0102",
                lon=2.5,
                lat=2.5,
                description="垃圾",
                channel=Channel.api,
            )
            raise AssertionError("an event without an office must be refused")
        except Invalid as err:
            assert err.params["place"] == "新镇名"
    with db.session() as s:
        s.get(Org, world.tree.orgs["centre1"].id).active = True
    with db.session() as s:
        e = service.create_event(
            s, grid_worker, category_code="0102", lon=2.5, lat=2.5, description="垃圾", channel=Channel.api
        )
        assert e.owner_org_id == world.tree.orgs["centre1"].id


def test_locate_answers_like_grid_for_point(world):
    with world.db.session() as s:
        for lon, lat in [(1.0, 1.0), (2.5, 7.5), (7.5, 2.5), (9.9, 9.9), (5.0, 5.0)]:
            hit = regions.grid_for_point(s, lon, lat)
            chain = regions.locate(s, lon, lat)
            assert [r.code for r in chain] == [a.code for a in hit.ancestors] + [hit.grid.code]
            assert chain[-1].path == hit.grid.path
        try:
            regions.locate(s, 50.0, 50.0)
            raise AssertionError("a point outside must be refused")
        except Invalid as err:
            assert err.code == "outside_jurisdiction"


def test_the_report_is_audited_and_numbered_in_order(world):
    with world.db.session() as s:
        actor = world.actor(s, "grid_worker")
        numbers = [
            service.create_event(
                s,
                actor,
                category_code="0102",
                lon=2.5,
                lat=1.0 + i,
                description=f"垃圾{i}",
                channel=Channel.api,
            ).number
            for i in range(3)
        ]
    assert [n[-5:] for n in numbers] == ["00001", "00002", "00003"]
    with world.db.session() as s:
        from civicgrid.core import audit

        targets = s.scalars(
            select(audit.AuditRecord.target_id).where(audit.AuditRecord.action == "event.report")
        ).all()
        assert sorted(targets) == sorted(numbers)
        assert audit.verify(s) == []
        assert s.scalar(select(Event.id).where(Event.number == numbers[0])) is not None


def test_numbering_does_not_wait_for_an_open_intake(world):
    """On PostgreSQL the county's counter is taken in a statement of its own: a report whose
    transaction is still open does not hold the counter (it used to, until it committed).
    Numbers stay unique; one taken by an intake that rolls back is not reused."""
    db = world.db
    if db.engine.dialect.name != "postgresql":
        pytest.skip("SQLite serialises writers: the counter stays in the transaction")
    first = db.sessionmaker()
    try:
        a = service.create_event(
            first, world.actor(first, "grid_worker"), category_code="0102", lon=2.5, lat=2.5,
            description="垃圾一", channel=Channel.api,
        )  # fmt: skip
        prefix, day = a.number[:6], a.reported_at
        with db.session() as second:
            second.execute(text("SET LOCAL lock_timeout = '2s'"))
            b = service.next_number(second, prefix, day)
        a_number = a.number
        first.rollback()
    finally:
        first.close()
    with db.session() as s:
        c = service.create_event(
            s, world.actor(s, "grid_worker"), category_code="0102", lon=2.5, lat=3.0,
            description="垃圾三", channel=Channel.api,
        ).number  # fmt: skip
    assert [a_number[-5:], b[-5:], c[-5:]] == ["00001", "00002", "00003"]
    with db.session() as s:
        assert s.scalars(select(Event.number)).all() == [c]
