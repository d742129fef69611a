"""Property: evaluating events one batch at a time as they arrive ends with exactly the warnings
a full pass over the same history raises (same clock) — for every rule kind over events."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import delete, select
from sqlalchemy.orm import Session

from civicgrid.events.models import Event
from civicgrid.risks import service
from civicgrid.risks.models import Cursor, Subject, Warning, WarningEntry, WarningEvidence
from tests.risks.conftest import NOW, World, add_event, make_rule

SPOTS = [(1.0, 1.0), (1.001, 1.0), (1.0, 1.002), (1.0, 6.0), (6.0, 1.0)]  # 110 m and 220 m apart
ADDRESSES = ["", "东山路1号", "东山路 1 号", "西山路2号"]
PHONES = ["", "13800000001", "13800000002"]

event_st = st.fixed_dictionaries(
    {
        "category": st.sampled_from(["0101", "0102", "1101"]),
        "spot": st.integers(0, len(SPOTS) - 1),
        "hours": st.integers(0, 24 * 25),
        "address": st.sampled_from(ADDRESSES),
        "phone": st.sampled_from(PHONES),
    }
)


def _rules(session: Session, world: World, with_trend: bool) -> None:
    make_rule(
        session,
        world,
        "threshold",
        {"categories": ["01"], "window_days": 3, "per": "village", "levels": {"yellow": 2, "red": 4}},
    )
    make_rule(
        session,
        world,
        "threshold",
        {"categories": ["1101"], "window_days": 5, "per": "grid", "levels": {"blue": 2}},
        region="county1",
    )
    make_rule(session, world, "cluster", {"radius_m": 150, "days": 2, "levels": {"yellow": 2, "orange": 3}})
    make_rule(session, world, "repeat", {"key": "address", "days": 10, "levels": {"yellow": 2, "red": 3}})
    make_rule(
        session, world, "repeat", {"key": "party", "days": 20, "categories": ["01"], "levels": {"orange": 2}}
    )
    if with_trend:
        make_rule(
            session,
            world,
            "trend",
            {"categories": ["01"], "min_count": 2, "per": "village", "levels": {"yellow": 50, "red": 200}},
        )


def _grid_for(spot: tuple[float, float]) -> str:
    lon, lat = spot
    return ("grid1a" if lat < 5 else "grid1b") if lon < 5 else "grid2a"


def _state(session: Session) -> set[tuple[Any, ...]]:
    out = set()
    for w in session.scalars(select(Warning)):
        ev = frozenset(
            session.scalars(select(WarningEvidence.ref_id).where(WarningEvidence.warning_id == w.id))
        )
        out.add((w.rule_id, w.region_id, str(w.level), ev))
    return out


def _reset(session: Session) -> None:
    for model in (WarningEvidence, WarningEntry, Warning, Subject, Cursor, Event):
        session.execute(delete(model))
    session.commit()


def _check(
    session: Session, world: World, history: list[dict[str, Any]], order: list[int], chunk: int
) -> None:
    _reset(session)
    made = []
    for start in range(0, len(order), chunk):
        for i in order[start : start + chunk]:
            h = history[i]
            spot = SPOTS[h["spot"]]
            made.append(
                add_event(
                    session,
                    world,
                    category=h["category"],
                    at=NOW - timedelta(hours=h["hours"]),
                    grid=_grid_for(spot),
                    lon=spot[0],
                    lat=spot[1],
                    address=h["address"],
                    phone=h["phone"],
                )
            )
        session.commit()
        service.evaluate_new(session, now=NOW)
    incremental = _state(session)
    for model in (WarningEvidence, WarningEntry, Warning):
        session.execute(delete(model))
    service.full_pass(session, now=NOW)
    assert _state(session) == incremental


SETTINGS = settings(
    max_examples=15, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)


@SETTINGS
@given(history=st.lists(event_st, min_size=1, max_size=14), data=st.data())
def test_any_arrival_order_agrees(
    session: Session, world: World, history: list[dict[str, Any]], data: Any
) -> None:
    """Threshold, cluster and repeat: events may arrive late (backdated) and in any order."""
    if not session.scalar(select(service.RiskRule.id).limit(1)):
        _rules(session, world, with_trend=False)
        session.commit()
    order = data.draw(st.permutations(range(len(history))))
    chunk = data.draw(st.integers(1, 5))
    _check(session, world, history, list(order), chunk)


@SETTINGS
@given(history=st.lists(event_st, min_size=1, max_size=14), chunk=st.integers(1, 5))
def test_time_ordered_arrival_agrees_with_trend(
    session: Session, world: World, history: list[dict[str, Any]], chunk: int
) -> None:
    """With events arriving in time order (the normal case), trend rules agree too."""
    if not session.scalar(select(service.RiskRule.id).limit(1)):
        _rules(session, world, with_trend=True)
        session.commit()
    order = sorted(range(len(history)), key=lambda i: (-history[i]["hours"], i))
    _check(session, world, history, order, chunk)
