"""Intake at speed: the reply built from what creation knows, the statement budget, cached
places that follow region imports, owners read fresh."""

from __future__ import annotations

import dataclasses
from typing import Any

import pytest
from sqlalchemy import event, func, select, text

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


# ---- several reports at once (the API's group commit) ----------------------------------------


def _report(actor: Any, **changes: Any) -> service.Report:
    fields = {
        "category_code": REPORT["category"],
        "lon": REPORT["lon"],
        "lat": REPORT["lat"],
        "description": REPORT["description"],
        "channel": Channel.api,
        **changes,
    }
    return service.Report(actor, **fields)


def test_a_batch_costs_the_statements_of_one_report(world):
    """Ten reports take as many statements as one: the batch shares every query and insert."""
    with world.db.session() as s:  # warm: the grid index and its places
        warm = service.receive_events(s, [_report(world.actor(s, "grid_worker"))])
        assert isinstance(warm[0], service.Intake)
    counts = []
    for size in (1, 10):
        seen: list[str] = []

        def count(conn: Any, cursor: Any, statement: str, *args: Any, seen: list[str] = seen) -> None:
            seen.append(statement)

        with world.db.session() as s:
            actor = world.actor(s, "grid_worker")
            reports = [
                _report(actor, lon=1.0 + k * 0.3, description=f"第{k}处暴露垃圾 {size}") for k in range(size)
            ]
            event.listen(world.db.engine, "before_cursor_execute", count)
            try:
                results = service.receive_events(s, reports)
            finally:
                event.remove(world.db.engine, "before_cursor_execute", count)
            assert all(isinstance(r, service.Intake) for r in results)
        counts.append(len([x for x in seen if "count(region.id)" not in x]))
    assert counts[1] == counts[0], counts


def test_a_batch_numbers_and_records_each_report_in_order(world):
    with world.db.session() as s:
        actor = world.actor(s, "grid_worker")
        results = service.receive_events(
            s, [_report(actor, lon=1.0 + k * 0.2, description=f"井盖缺失第{k}处") for k in range(5)]
        )
    intakes = [r for r in results if isinstance(r, service.Intake)]
    numbers = [i.event.number for i in intakes]
    assert len(set(numbers)) == 5
    assert [int(n.rsplit("-", 1)[1]) for n in numbers] == sorted(int(n.rsplit("-", 1)[1]) for n in numbers)
    with world.db.session() as s:
        for i in intakes:
            got = s.scalar(select(Event).where(Event.number == i.event.number))
            assert got is not None and got.description == i.event.description
            entries = service.timeline(s, got)
            assert [(e.seq, e.action, e.to_state) for e in entries] == [(1, "report", "reported")]
        from civicgrid.core import audit

        assert audit.verify(s) == []
        recorded = (
            s.execute(text("SELECT target_id FROM audit_record WHERE action = 'event.report' ORDER BY id"))
            .scalars()
            .all()
        )
        assert recorded[-5:] == numbers


def test_a_bad_report_in_a_batch_fails_alone_and_writes_nothing(world):
    with world.db.session() as s:
        worker = world.actor(s, "grid_worker")
        reader = dataclasses.replace(worker, permissions=frozenset({"events.read"}))  # may not report
        before = s.scalar(select(func.count(Event.id)))
        results = service.receive_events(
            s,
            [
                _report(worker, description="路灯不亮，晚上很黑"),
                _report(worker, category_code="9999"),
                _report(worker, lon=50.0, lat=50.0),
                _report(reader),
                _report(worker, description="   "),
                _report(worker, lon=1.2, description="人行道上占道经营"),
            ],
        )
    kinds = [type(r).__name__ for r in results]
    assert kinds == ["Intake", "Invalid", "Invalid", "PermissionDenied", "Invalid", "Intake"]
    assert "outside" in str(results[2]) or getattr(results[2], "code", "") == "invalid"
    with world.db.session() as s:
        assert s.scalar(select(func.count(Event.id))) == before + 2


def test_reports_in_one_batch_see_each_other_as_duplicates(world):
    """Two reports of the same thing arriving together: the second points at the first,
    although neither was in the database when the duplicate query ran."""
    with world.db.session() as s:
        actor = world.actor(s, "grid_worker")
        first, second = service.receive_events(
            s, [_report(actor), _report(actor, lon=REPORT["lon"] + 0.0001)]
        )
        assert isinstance(first, service.Intake) and isinstance(second, service.Intake)
        assert [d.event.number for d in second.duplicates] == [first.event.number]
        assert second.event.duplicate_of_id == first.event.id
        assert first.duplicates == []


def test_concurrent_posts_share_commits_and_each_gets_its_own_answer(app, client, world):
    """Requests that arrive together are written in fewer transactions than requests; a bad
    token among them gets its 401 and the others their events."""
    import asyncio

    import httpx

    headers = login_headers(client, "grid_worker")
    commits: list[int] = []

    def counted(conn: Any) -> None:
        commits.append(1)

    event.listen(world.db.engine, "commit", counted)

    async def post_all() -> list[httpx.Response]:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as c:
            bodies = [{**REPORT, "lon": 1.0 + k * 0.1, "description": f"第{k}处路面破损"} for k in range(12)]
            calls = [c.post("/api/v1/events", headers=headers, json=b) for b in bodies]
            calls.append(c.post("/api/v1/events", headers={"Authorization": "Bearer nope"}, json=REPORT))
            return await asyncio.gather(*calls)

    try:
        answers = asyncio.run(post_all())
    finally:
        event.remove(world.db.engine, "commit", counted)
    assert [a.status_code for a in answers] == [201] * 12 + [401]
    assert answers[-1].json()["error"]["code"] == "unauthenticated"
    numbers = {a.json()["number"] for a in answers[:12]}
    assert len(numbers) == 12
    assert [a.json()["description"] for a in answers[:12]] == [f"第{k}处路面破损" for k in range(12)]
    assert len(commits) < 12


def test_an_answer_that_fails_after_the_commit_fails_alone_and_is_not_written_twice(
    app, client, world, monkeypatch
):
    """Answers are built after the batch commits: one that fails gets a 500, the others their
    201, and its report stays written once (a retry of the batch would have written it again)."""
    import asyncio

    import httpx

    from civicgrid.events import api

    headers = login_headers(client, "grid_worker")
    built = api.intake_detail

    def failing(session: Any, actor: Any, intake: Any, *args: Any) -> Any:
        if intake.event.description == "第3处路面破损":
            raise RuntimeError("the answer could not be built")
        return built(session, actor, intake, *args)

    monkeypatch.setattr(api, "intake_detail", failing)

    async def post_all() -> list[httpx.Response]:
        transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as c:
            bodies = [{**REPORT, "lon": 1.0 + k * 0.1, "description": f"第{k}处路面破损"} for k in range(6)]
            return await asyncio.gather(*(c.post("/api/v1/events", headers=headers, json=b) for b in bodies))

    answers = asyncio.run(post_all())
    assert [a.status_code for a in answers] == [201, 201, 201, 500, 201, 201]
    with world.db.session() as s:
        written = s.scalars(select(Event.description).where(Event.description.like("第%处路面破损"))).all()
    assert sorted(written) == sorted(f"第{k}处路面破损" for k in range(6))
