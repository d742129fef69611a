"""The role matrix: for every role, what it may and may not do through the API.

The expectations are written out here by hand (not derived from ROLE_PERMISSIONS), so a
change to the permission table that lets a role do more or less than intended fails.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import pytest

from civicgrid.accounts.permissions import Role
from tests.factories import login_headers, make_tree, make_users

R = Role
ALL = set(Role)
ALLOWED: dict[str, set[Role]] = {
    "list users": {R.admin, R.leader, R.dispatcher},
    "create user": {R.admin},
    "list orgs": ALL - {R.resident},
    "create org": {R.admin},
    "read region": ALL,
    "import regions": {R.admin},
    "assign grid worker": {R.admin, R.dispatcher},
    "read audit": {R.admin},
    "verify audit": {R.admin},
    "own tokens": ALL,
}


def _grid_feature(tree: Any) -> dict[str, Any]:
    g = tree.regions["grid1a"]
    return {
        "type": "Feature",
        "geometry": json.loads(g.geometry),
        "properties": {
            "code": g.code,
            "name": "网格一",
            "level": "grid",
            "parent_code": tree.regions["village1"].code,
        },
    }


def _actions(tree: Any, role: Role) -> dict[str, Callable[[Any, dict[str, str]], Any]]:
    grid = tree.regions["grid1a"].code
    return {
        "list users": lambda c, h: c.get("/api/v1/accounts/users", headers=h),
        "create user": lambda c, h: c.post(
            "/api/v1/accounts/users",
            headers=h,
            json={
                "username": f"new-{role}",
                "display_name": "李四",
                "password": "long-enough-pw",
                "memberships": [{"org_code": "village-1", "role": "resident"}],
            },
        ),
        "list orgs": lambda c, h: c.get("/api/v1/accounts/orgs", headers=h),
        "create org": lambda c, h: c.post(
            "/api/v1/accounts/orgs",
            headers=h,
            json={
                "code": f"org-{role}",
                "name": "新单位",
                "kind": "village_committee",
                "region_code": grid[:12],
            },
        ),
        "read region": lambda c, h: c.get(f"/api/v1/regions/{grid}", headers=h),
        "import regions": lambda c, h: c.post(
            "/api/v1/regions/import",
            headers=h,
            json={"type": "FeatureCollection", "features": [_grid_feature(tree)]},
        ),
        "assign grid worker": lambda c, h: c.post(
            f"/api/v1/regions/{grid}/workers", headers=h, json={"username": "grid_worker"}
        ),
        "read audit": lambda c, h: c.get("/api/v1/audit", headers=h),
        "verify audit": lambda c, h: c.post("/api/v1/audit/verify", headers=h),
        "own tokens": lambda c, h: c.get("/api/v1/accounts/tokens", headers=h),
    }


@pytest.mark.parametrize("role", list(Role))
def test_role_matrix(role: Role, client, db) -> None:
    with db.session() as s:
        tree = make_users(s, make_tree(s))
    headers = login_headers(client, str(role))
    for action, call in _actions(tree, role).items():
        res = call(client, headers)
        if role in ALLOWED[action]:
            assert res.status_code in (200, 201), (
                f"{role} should be allowed to {action}: {res.status_code} {res.text}"
            )
        else:
            assert res.status_code == 403, f"{role} must not {action}: {res.status_code} {res.text}"
            assert res.json()["error"]["code"] == "forbidden"


def test_matrix_covers_every_role_and_action() -> None:
    assert set().union(*ALLOWED.values()) == set(Role)
