"""The cockpit's world: the factories' two counties (县1, 县2) with events driven through the real
workflow in both, a leader per county, the city's admin, and datasets with metered calls owned
in each county — so every test can check that one county's numbers never reach the other's
leader."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

import pytest
from sqlalchemy import update

from civicgrid.accounts import service as accounts
from civicgrid.accounts.permissions import Role
from civicgrid.cockpit import service as cockpit
from civicgrid.core.auth import Actor
from civicgrid.core.db import Database, utcnow
from civicgrid.data import service as data
from civicgrid.data.metering import local_day
from civicgrid.data.models import DataVersion, Usage, VersionState
from civicgrid.events import actions, service
from civicgrid.events.models import Channel, Event
from tests.events.conftest import build_world
from tests.factories import Tree, make_user

GRID_1A, GRID_1B, GRID_2A = (2.5, 2.5), (2.5, 7.5), (7.5, 2.5)
OTHER_COUNTY_MARKS = ("331002", "县2", "镇2", "村2", "网格2", "县2数据集")


@dataclass
class CockpitWorld:
    tree: Tree
    db: Database
    numbers: dict[str, str] = field(default_factory=dict)

    def actor(self, session: Any, username: str) -> Actor:
        user = accounts.get_user_by_username(session, username)
        assert user is not None
        return accounts.actor_for_user(session, user)

    def code(self, key: str) -> str:
        return self.tree.regions[key].code


def _report(s: Any, w: CockpitWorld, who: str, at: tuple[float, float], text: str) -> str:
    return service.create_event(
        s, w.actor(s, who), category_code="0102", lon=at[0], lat=at[1], description=text, channel=Channel.web
    ).number


def _step(s: Any, w: CockpitWorld, who: str, number: str, action: str, **kw: Any) -> None:
    actions.act(s, w.actor(s, who), number, action, **kw)


def _due_in(s: Any, number: str, hours: float) -> None:
    s.execute(
        update(Event)
        .where(Event.number == number)
        .values(handle_due_at=utcnow() + timedelta(hours=hours))
        .execution_options(synchronize_session=False)
    )
    # Only the events: the tree's regions must stay loaded for the tests after the session ends.
    for obj in list(s.identity_map.values()):
        if isinstance(obj, Event):
            s.expire(obj)


def _dataset(s: Any, admin: Actor, name: str, title: str, owner: str, calls: int, rows: int) -> None:
    ds = data.create_dataset(
        s, admin, name=name, title=title, theme="people", grade="general",
        share_class="unconditional", open_class="open", owner_org=owner,
        fields=[{"name": "village_code", "title": "村代码"}],
    )  # fmt: skip
    version = DataVersion(dataset_id=ds.id, version=1, mode="replace", state=VersionState.ready,
                          rows=rows, created_by="test")  # fmt: skip
    s.add(version)
    s.flush()
    ds.current_version_id = version.id
    s.add(Usage(key_id=None, dataset_id=ds.id, day=local_day(), channel="api", calls=calls, rows=calls * 10))
    s.flush()


@pytest.fixture(autouse=True)
def _fresh_cache() -> Iterator[None]:
    """Answers are shared per interval; a test must not see the previous test's."""
    cockpit.CACHE.clear()
    yield
    cockpit.CACHE.clear()


@pytest.fixture
def world(db: Database) -> CockpitWorld:
    """County 1: A closed and rated, C overdue in handling, S due in 5 hours, P a grid worker's
    patrol report (grid 1a), R rejected. County 2: G accepted, H reported — each with 县2's words."""
    with db.session() as s:
        t = build_world(s)
        make_user(s, t, "leader2", Role.leader, "centre2")
        w = CockpitWorld(t, db)
        n = w.numbers
        n["A"] = _report(s, w, "resident", GRID_1A, "小区门口有暴露垃圾")
        _step(s, w, "dispatcher", n["A"], "accept")
        _step(s, w, "dispatcher", n["A"], "dispatch")
        _step(s, w, "handler", n["A"], "start")
        _step(s, w, "handler", n["A"], "handle", result="已清运")
        _step(s, w, "resident", n["A"], "verify", passed=True)
        _step(s, w, "dispatcher", n["A"], "close")
        _step(s, w, "resident", n["A"], "rate", score=5)
        n["C"] = _report(s, w, "resident", GRID_1B, "路边垃圾堆积多日")
        _step(s, w, "dispatcher", n["C"], "accept")
        _step(s, w, "dispatcher", n["C"], "dispatch")
        _step(s, w, "handler", n["C"], "start")
        _due_in(s, n["C"], -3)
        n["S"] = _report(s, w, "resident", GRID_1A, "垃圾桶满溢无人清理")
        _step(s, w, "dispatcher", n["S"], "accept")
        _step(s, w, "dispatcher", n["S"], "dispatch")
        _due_in(s, n["S"], 5)
        n["P"] = _report(s, w, "grid_worker", GRID_1A, "巡查发现绿地有垃圾")
        n["R"] = _report(s, w, "resident", GRID_1B, "楼道有杂物")
        _step(s, w, "dispatcher", n["R"], "reject", reason="不属于受理范围", basis="受理规则")
        n["G"] = _report(s, w, "resident2", GRID_2A, "县2的街面垃圾")
        _step(s, w, "dispatcher2", n["G"], "accept")
        n["H"] = _report(s, w, "resident2", GRID_2A, "县2的另一处垃圾")
        admin = w.actor(s, "admin")
        _dataset(s, admin, "county1-data", "县1数据集", "county-1-market", calls=7, rows=120)
        _dataset(s, admin, "county2-data", "县2数据集", "town-2", calls=1000, rows=99999)
    return w
