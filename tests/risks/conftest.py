"""A small jurisdiction (tests/factories.py) with the event catalogue, staff in each role and
helpers that write events straight into the table (hundreds per test, fast)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session

from civicgrid.accounts import service as accounts
from civicgrid.accounts.permissions import Role
from civicgrid.core.auth import SYSTEM, Actor
from civicgrid.core.db import Database
from civicgrid.events import service as events
from civicgrid.events.models import Category, Channel, Event, Level, State
from civicgrid.risks import service
from tests.factories import Tree, make_tree, make_user

NOW = datetime(2026, 11, 20, 4, 0, tzinfo=UTC)  # a Friday, 12:00 in China


@dataclass
class World:
    tree: Tree
    db: Database
    categories: dict[str, int]

    def actor(self, session: Session, username: str) -> Actor:
        return accounts.actor_for_user(session, accounts.get_user_by_username(session, username))

    def region(self, key: str) -> Any:
        return self.tree.regions[key]


def build_world(session: Session) -> tuple[Tree, dict[str, int]]:
    t = make_tree(session)
    make_user(session, t, "admin", Role.admin, "bureau")
    make_user(session, t, "county_admin", Role.admin, "centre2")
    make_user(session, t, "dispatcher", Role.dispatcher, "town1")
    make_user(session, t, "dispatcher2", Role.dispatcher, "town2")
    make_user(session, t, "leader", Role.leader, "centre1")
    make_user(session, t, "handler", Role.handler, "dept1")
    make_user(session, t, "grid_worker", Role.grid_worker, "village1")
    make_user(session, t, "resident", Role.resident, "village1")
    events.seed_catalogue(session, SYSTEM)
    cats = {c: i for c, i in session.execute(select(Category.code, Category.id))}
    return t, cats


@pytest.fixture
def world(db: Database) -> World:
    with db.session() as s:
        t, cats = build_world(s)
    return World(t, db, cats)


@pytest.fixture
def session(world: World) -> Iterator[Session]:
    s = world.db.sessionmaker()
    try:
        yield s
    finally:
        s.rollback()
        s.close()


_seq = [0]


def add_event(
    session: Session,
    world: World,
    *,
    category: str = "0101",
    at: datetime = NOW,
    grid: str = "grid1a",
    lon: float | None = None,
    lat: float | None = None,
    address: str = "",
    phone: str = "",
    state: State = State.reported,
) -> Event:
    """One event row written directly (no routing, no timeline): what the risk rules read."""
    g = world.tree.regions[grid]
    county = "1" if grid.startswith("grid1") else "2"
    r = world.tree.regions
    _seq[0] += 1
    e = Event(
        number=f"{g.code[:6]}-T-{_seq[0]:07d}",
        category_id=world.categories[category],
        platform="enforcement",
        rules="{}",
        title=f"测试事件{_seq[0]}",
        description="测试",
        address=address,
        lon=lon if lon is not None else (g.min_lon + g.max_lon) / 2,
        lat=lat if lat is not None else (g.min_lat + g.max_lat) / 2,
        grid_id=g.id,
        village_id=r[f"village{county}"].id,
        township_id=r[f"town{county}"].id,
        county_id=r[f"county{county}"].id,
        region_path=g.path,
        channel=Channel.web,
        reporter_phone=phone,
        state=state,
        level=Level.township,
        owner_org_id=world.tree.orgs[f"town{county}"].id,
        reported_at=at,
        created_at=at - timedelta(minutes=5),  # older than the cursor's gap grace
        accept_due_at=at + timedelta(hours=2),
    )
    session.add(e)
    session.flush()
    return e


def make_rule(
    session: Session, world: World, kind: str, params: dict[str, Any], region: str = "city", **kw: Any
):  # type: ignore[no-untyped-def]
    return service.create_rule(
        session,
        SYSTEM,
        service.RuleInput(
            name=kw.pop("name", f"{kind} rule"),
            kind=kind,
            params=json.dumps(params, ensure_ascii=False),
            region_code=world.tree.regions[region].code,
            **kw,
        ),
    )
