"""A small jurisdiction for mediation cases: mediators at the village committee, the township
centre and the county centre of county 1, a leader there, and staff of county 2 for scope."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo

import pytest

from civicgrid.accounts import service as accounts
from civicgrid.accounts.permissions import Role
from civicgrid.core.auth import SYSTEM, Actor
from civicgrid.core.errors import AppError
from civicgrid.core.i18n import reset_locale, set_locale
from civicgrid.disputes import service
from civicgrid.events import service as events
from tests.factories import Tree, make_tree, make_user

IN_GRID_1A = (2.5, 2.5)
APPLICANT = {"name": "张三", "role": "applicant", "id_number": "110101199003071233", "phone": "13812345678"}
RESPONDENT = {"name": "李四", "role": "respondent", "phone": "13987654321", "address": "村1 12号"}


@dataclass
class World:
    tree: Tree
    db: Any

    def actor(self, session, username: str) -> Actor:
        return accounts.actor_for_user(session, accounts.get_user_by_username(session, username))

    def user_id(self, session, username: str) -> int:
        user = accounts.get_user_by_username(session, username)
        assert user is not None
        return user.id


def build_world(session) -> Tree:
    t = make_tree(session)
    make_user(session, t, "v_mediator", Role.mediator, "village1")
    make_user(session, t, "t_mediator", Role.mediator, "town1", display_name="王调解")
    make_user(session, t, "t_mediator2", Role.mediator, "town1")
    make_user(session, t, "t_dispatcher", Role.dispatcher, "town1")
    make_user(session, t, "c_mediator", Role.mediator, "centre1")
    make_user(session, t, "leader", Role.leader, "centre1", display_name="赵书记")
    make_user(session, t, "t2_mediator", Role.mediator, "town2")
    make_user(session, t, "leader2", Role.leader, "centre2")
    make_user(session, t, "grid_worker", Role.grid_worker, "village1")
    make_user(session, t, "resident", Role.resident, "village1")
    make_user(session, t, "admin", Role.admin, "bureau")
    events.seed_catalogue(session, SYSTEM)
    return t


@pytest.fixture
def in_english() -> Iterator[None]:
    """Service tests read messages in English (field labels are translated where raised)."""
    token = set_locale("en")
    yield
    reset_locale(token)


@pytest.fixture
def world(db) -> World:
    with db.session() as s:
        t = build_world(s)
    return World(t, db)


def register(s, world: World, who: str = "t_mediator", **kw: Any):
    args: dict[str, Any] = {
        "source": "walk_in",
        "type": "neighbour",
        "title": "邻里排水纠纷",
        "description": "张三与李四因院墙排水管走向发生争执，双方多次口角。",
        "grid_code": world.tree.regions["grid1a"].code,
        "parties": [APPLICANT, RESPONDENT],
        "amount": "3500",
    }
    args.update(kw)
    return service.register(s, world.actor(s, who), **args)


def step(s, world: World, who: str, number: str, action: str, **kw: Any):
    return service.act(s, world.actor(s, who), number, action, **kw)


def english(exc: AppError) -> str:
    token = set_locale("en")
    try:
        return exc.translated()
    finally:
        reset_locale(token)


@contextmanager
def raises(kind: Any, text: str) -> Iterator[Any]:
    """pytest.raises that also checks the message a person reads (in English)."""
    with pytest.raises(kind) as info:
        yield info
    assert text in english(info.value), english(info.value)


def held_now() -> str:
    """A mediation round "just held", in China time: rounds may not lie in the future nor long
    before the case was registered (which the tests do now), so no fixed date keeps working."""
    return datetime.now(ZoneInfo("Asia/Shanghai")).isoformat(timespec="seconds")
