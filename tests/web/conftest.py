"""Page-test fixtures: the factories' two-county jurisdiction with one user per role."""

from __future__ import annotations

import re
from typing import Any

import pytest

from civicgrid.core.db import Database
from tests import factories


@pytest.fixture
def tree(db: Database) -> factories.Tree:
    with db.session() as s:
        t = factories.make_users(s, factories.make_tree(s))
        # Keep plain values: the session closes here.
        t.codes = {k: r.code for k, r in t.regions.items()}  # type: ignore[attr-defined]
    return t


def login(client: Any, username: str, password: str = factories.PASSWORD, **headers: str) -> Any:
    res = client.post(
        "/login",
        data={"username": username, "password": password, "next": "/"},
        headers=headers,
        follow_redirects=False,
    )
    assert res.status_code == 303, res.text
    return res


def csrf_of(html: str) -> str:
    m = re.search(r'name="csrf_token" value="([^"]+)"', html)
    assert m, "no csrf_token field in the page"
    return m.group(1)
