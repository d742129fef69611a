from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import pytest

from civicgrid.accounts import service as accounts
from civicgrid.accounts.permissions import Role
from civicgrid.core.auth import SYSTEM, Actor
from civicgrid.events import service
from civicgrid.regions import service as regions
from tests.factories import Tree, make_tree, make_user


@dataclass
class World:
    tree: Tree
    db: Any

    def actor(self, session, username: str) -> Actor:
        return accounts.actor_for_user(session, accounts.get_user_by_username(session, username))


def build_world(session) -> Tree:
    t = make_tree(session)
    make_user(session, t, "dispatcher", Role.dispatcher, "town1")
    make_user(session, t, "dispatcher2", Role.dispatcher, "town2")
    make_user(session, t, "county_dispatcher", Role.dispatcher, "centre1")
    make_user(session, t, "leader", Role.leader, "centre1")
    make_user(session, t, "handler", Role.handler, "enforce1")
    make_user(session, t, "handler_safety", Role.handler, "dept1")
    make_user(session, t, "grid_worker", Role.grid_worker, "village1")
    make_user(session, t, "resident", Role.resident, "village1")
    make_user(session, t, "resident2", Role.resident, "village1")
    make_user(session, t, "admin", Role.admin, "bureau")
    regions.assign_grid_worker(session, SYSTEM, t.regions["grid1a"].code, "grid_worker")
    service.seed_catalogue(session, SYSTEM)
    return t


@pytest.fixture
def world(db) -> World:
    with db.session() as s:
        t = build_world(s)
    return World(t, db)
