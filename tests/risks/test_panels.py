"""The cockpit panels of the risk loop: registered, scoped, and moving with the warnings."""

from __future__ import annotations

from datetime import timedelta

from sqlalchemy.orm import Session

from civicgrid.cockpit import registry
from civicgrid.core.auth import SYSTEM
from civicgrid.core.calendar import local_today
from civicgrid.core.db import utcnow
from civicgrid.events.stats import window
from civicgrid.risks import service
from tests.risks.conftest import World


def _ctx(session: Session, world: World, username: str, region: str) -> registry.Context:
    return registry.Context(
        actor=world.actor(session, username),
        region=world.region(region),
        window=window(local_today() - timedelta(days=3), local_today()),
        now=utcnow(),
    )


def test_panels_follow_the_warnings(session: Session, world: World) -> None:
    keys = {p.key for p in registry.panels()}
    assert {"risks.by_level", "risks.by_region", "risks.loop", "risks.rules"} <= keys
    leader = world.actor(session, "leader")
    assert "risks.by_level" in {p.key for p in registry.panels(actor=leader)}
    assert "risks.by_level" not in {p.key for p in registry.panels(actor=world.actor(session, "resident"))}

    for region, level in (("village1", "red"), ("village1", "yellow"), ("village2", "orange")):
        service.raise_warning(
            session,
            actor=SYSTEM,
            source="manual",
            region_id=world.region(region).id,
            level=level,
            title="t",
            evidence=[],
        )
    by_level = registry.get("risks.by_level").query(session, _ctx(session, world, "leader", "county1"))
    assert [c.key for c in by_level.columns] == ["red", "orange", "yellow", "blue", "overdue"]
    assert by_level.rows == [[1, 0, 1, 0, 0]]  # county 2's orange warning is not in county 1
    city = registry.get("risks.by_region").query(session, _ctx(session, world, "admin", "city"))
    assert [r[1:] for r in city.rows] == [[1, 0, 1, 0], [0, 1, 0, 0]]

    d = world.actor(session, "dispatcher")
    number = next(iter(session.scalars(service.list_stmt(session, d)))).number
    service.close_warning(session, d, number, feedback="已处置", outcome="平息", verdict="real")
    loop = registry.get("risks.loop").query(session, _ctx(session, world, "leader", "county1"))
    assert loop.rows[0][1:] == [1, 1, 100.0]
