"""Each rule kind raises exactly the warnings it should on a constructed history, none on a
quiet one — through the worker's full pass and through its incremental run alike."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session

from civicgrid.risks import service
from civicgrid.risks.models import Warning, WarningEvidence
from tests.risks.conftest import NOW, World, add_event, make_rule

PASSES = ["full", "incremental"]


def run(session: Session, how: str) -> None:
    if how == "full":
        service.full_pass(session, now=NOW)
    else:
        service.evaluate_new(session, now=NOW)
    session.flush()


def warnings(session: Session) -> list[dict[str, Any]]:
    out = []
    for w in session.scalars(select(Warning).order_by(Warning.id)):
        ev = set(
            session.scalars(
                select(WarningEvidence.ref_id).where(
                    WarningEvidence.warning_id == w.id, WarningEvidence.kind == "event"
                )
            )
        )
        out.append({"rule": w.rule_id, "region": w.region_id, "level": str(w.level), "events": ev})
    return out


@pytest.mark.parametrize("how", PASSES)
def test_threshold(session: Session, world: World, how: str) -> None:
    rule = make_rule(
        session,
        world,
        "threshold",
        {
            "categories": ["01"],
            "window_days": 7,
            "per": "township",
            "levels": {"yellow": 3, "red": 5},
        },
    )
    hot = [add_event(session, world, category="0102", at=NOW - timedelta(days=d)) for d in (0.1, 1, 2, 3, 6)]
    # Not counted: another category, older than the window, another township, a rejected event.
    add_event(session, world, category="1101", at=NOW - timedelta(days=1))
    add_event(session, world, category="0102", at=NOW - timedelta(days=15))
    add_event(session, world, category="0102", at=NOW - timedelta(days=1), grid="grid2a")
    add_event(session, world, category="0102", at=NOW - timedelta(days=1), state="rejected")
    run(session, how)
    assert warnings(session) == [
        {"rule": rule.id, "region": world.region("town1").id, "level": "red", "events": {e.id for e in hot}}
    ]


@pytest.mark.parametrize("how", PASSES)
def test_threshold_quiet(session: Session, world: World, how: str) -> None:
    make_rule(session, world, "threshold", {"categories": ["01"], "window_days": 7, "levels": {"yellow": 3}})
    # Three events, but never three inside one 7-day window.
    for d in (0, 8, 16):
        add_event(session, world, category="0102", at=NOW - timedelta(days=d))
    add_event(session, world, category="0102", at=NOW - timedelta(days=1), grid="grid2a")
    run(session, how)
    assert warnings(session) == []


@pytest.mark.parametrize("how", PASSES)
def test_cluster(session: Session, world: World, how: str) -> None:
    rule = make_rule(
        session,
        world,
        "cluster",
        {
            "radius_m": 100,
            "days": 2,
            "per": "village",
            "levels": {"yellow": 3, "orange": 4},
        },
    )
    base = (1.0, 1.0)
    close = [
        add_event(session, world, lon=base[0] + dx, lat=base[1] + dy, at=NOW - timedelta(hours=h), category=c)
        for dx, dy, h, c in (
            (0, 0, 1, "0101"),
            (0.0004, 0, 5, "0501"),
            (0, 0.0004, 20, "1101"),
            (0.0003, 0.0003, 30, "0102"),
        )
    ]
    add_event(session, world, lon=base[0] + 0.002, lat=base[1], at=NOW - timedelta(hours=2))  # 220 m away
    add_event(session, world, lon=base[0], lat=base[1], at=NOW - timedelta(days=5))  # too long ago
    run(session, how)
    assert warnings(session) == [
        {
            "rule": rule.id,
            "region": world.region("village1").id,
            "level": "orange",
            "events": {e.id for e in close},
        }
    ]


@pytest.mark.parametrize("how", PASSES)
def test_cluster_quiet(session: Session, world: World, how: str) -> None:
    make_rule(session, world, "cluster", {"radius_m": 100, "days": 2, "levels": {"yellow": 3}})
    for i in range(6):  # six events, each 300 m from the next
        add_event(session, world, lon=1.0 + 0.003 * i, lat=1.0, at=NOW - timedelta(hours=i))
    for d in range(3):  # three at one spot, three days apart
        add_event(session, world, lon=3.0, lat=3.0, at=NOW - timedelta(days=3 * d))
    run(session, how)
    assert warnings(session) == []


@pytest.mark.parametrize("how", PASSES)
def test_trend(session: Session, world: World, how: str) -> None:
    rule = make_rule(
        session,
        world,
        "trend",
        {
            "categories": ["1101"],
            "min_count": 4,
            "levels": {"blue": 50, "yellow": 100, "orange": 300},
        },
    )
    before = [add_event(session, world, category="1101", at=NOW - timedelta(days=d)) for d in (12, 13)]
    now_week = [
        add_event(session, world, category="1101", at=NOW - timedelta(days=d)) for d in (0.2, 1, 2, 3, 4, 5)
    ]
    # Rolling weeks ending at each event: at most 6 against 2 (+200 %) → yellow, never +300 %.
    run(session, how)
    got = warnings(session)
    assert [(w["rule"], w["region"], w["level"]) for w in got] == [
        (rule.id, world.region("town1").id, "yellow")
    ]
    assert got[0]["events"] >= {e.id for e in now_week}
    assert not got[0]["events"] & {e.id for e in before}


@pytest.mark.parametrize("how", PASSES)
def test_trend_quiet(session: Session, world: World, how: str) -> None:
    make_rule(session, world, "trend", {"categories": ["1101"], "min_count": 4, "levels": {"yellow": 100}})
    for i in range(20):  # one every 1.75 days for five weeks: 4 a week, week after week
        d = 0.5 + 1.75 * i
        add_event(session, world, category="1101", at=NOW - timedelta(days=d))
    run(session, how)
    assert warnings(session) == []


@pytest.mark.parametrize("how", PASSES)
def test_repeat_address_and_party(session: Session, world: World, how: str) -> None:
    by_address = make_rule(
        session,
        world,
        "repeat",
        {
            "key": "address",
            "days": 90,
            "categories": ["10"],
            "levels": {"yellow": 3},
        },
    )
    by_party = make_rule(session, world, "repeat", {"key": "party", "days": 30, "levels": {"orange": 2}})
    home = [
        add_event(session, world, category="1002", address=a, at=NOW - timedelta(days=d))
        for a, d in (("东山路12号", 80), ("东山路 12 号", 40), ("东山路１２号", 1))
    ]
    add_event(session, world, category="1002", address="东山路12号", at=NOW - timedelta(days=200))  # too old
    add_event(
        session, world, category="0101", address="东山路12号", at=NOW - timedelta(days=2)
    )  # other class
    caller = [
        add_event(session, world, category="1402", phone=p, at=NOW - timedelta(days=d), grid="grid2b")
        for p, d in (("138-1234-5678", 10), ("+86 13812345678", 3))
    ]
    run(session, how)
    got = {(w["rule"], w["level"]): (w["region"], w["events"]) for w in warnings(session)}
    assert got == {
        (by_address.id, "yellow"): (world.region("village1").id, {e.id for e in home}),
        (by_party.id, "orange"): (world.region("village2").id, {e.id for e in caller}),
    }


@pytest.mark.parametrize("how", PASSES)
def test_repeat_quiet(session: Session, world: World, how: str) -> None:
    make_rule(session, world, "repeat", {"key": "address", "levels": {"yellow": 2}})
    for i in range(5):
        add_event(session, world, address=f"西山路{i}号", at=NOW - timedelta(days=i))
    add_event(session, world, address="", at=NOW)  # no address: never a subject
    add_event(session, world, address="", at=NOW)
    run(session, how)
    assert warnings(session) == []


def test_repeat_counts_disputes_in_the_full_pass(session: Session, world: World) -> None:
    """A party (by phone or ID number) in an event and in two disputes: three within 30 days."""
    from civicgrid.disputes.models import Dispute, DisputeType, Party, PartyRole, Source
    from civicgrid.disputes.models import State as DisputeState
    from civicgrid.events.models import Level

    rule = make_rule(session, world, "repeat", {"key": "party", "days": 30, "levels": {"yellow": 3}})
    event = add_event(session, world, category="1001", phone="13800001111", at=NOW - timedelta(days=3))
    r = world.tree.regions
    disputes = []
    for i, (phone, id_number) in enumerate((("138 0000 1111", ""), ("", "11010519491231002X"), ("", ""))):
        d = Dispute(
            number=f"TJ-{i}",
            source=Source.walk_in,
            type=DisputeType.neighbour,
            title="邻里纠纷",
            address="",
            grid_id=r["grid1a"].id,
            village_id=r["village1"].id,
            township_id=r["town1"].id,
            county_id=r["county1"].id,
            region_path=r["grid1a"].path,
            level=Level.village,
            intake_org_id=world.tree.orgs["village1"].id,
            handling_org_id=world.tree.orgs["village1"].id,
            state=DisputeState.registered,
            registered_at=NOW - timedelta(days=i + 1),
            registered_day=(NOW - timedelta(days=i + 1)).date(),
        )
        session.add(d)
        session.flush()
        session.add(
            Party(
                dispute_id=d.id,
                seq=1,
                role=PartyRole.applicant,
                name="张三",
                phone=phone,
                id_number=id_number,
            )
        )
        if i == 1:  # the same person, known here by phone as well
            session.add(
                Party(dispute_id=d.id, seq=2, role=PartyRole.respondent, name="李四", phone="13800001111")
            )
        disputes.append(d)
    session.flush()
    service.full_pass(session, now=NOW)
    w = session.scalars(select(Warning)).one()
    kinds = set(
        session.execute(
            select(WarningEvidence.kind, WarningEvidence.ref_id).where(WarningEvidence.warning_id == w.id)
        ).all()
    )
    assert (w.rule_id, str(w.level)) == (rule.id, "yellow")
    assert kinds == {("event", event.id), ("dispute", disputes[0].id), ("dispute", disputes[1].id)}
