"""The JSON routes: shapes, scope (a county-1 user never sees county 2), errors and workers."""

from __future__ import annotations

import pytest
from sqlalchemy import select

from civicgrid.accounts import service as accounts
from civicgrid.accounts.models import OrgKind
from civicgrid.accounts.permissions import Role
from civicgrid.core.audit import AuditRecord
from civicgrid.core.auth import SYSTEM
from civicgrid.regions import service
from tests.factories import Tree, login_headers, make_tree, make_user, make_users
from tests.regions.conftest import GRID1, VILLAGE, VILLAGE2, collection, feature, renamed, square

EN = {"Accept-Language": "en"}


@pytest.fixture
def tree(db):
    with db.session() as s:
        t = make_users(s, make_tree(s))
        codes = {k: r.code for k, r in t.regions.items()}
    return codes


def auth(client, username):
    return {**login_headers(client, username), **EN}


def test_children_lookup_and_detail(client, tree):
    h = auth(client, "admin")
    res = client.get("/api/v1/regions", headers=h)
    assert res.status_code == 200
    assert [r["code"] for r in res.json()] == [tree["city"]]
    res = client.get("/api/v1/regions", params={"parent": tree["city"]}, headers=h)
    assert [r["code"] for r in res.json()] == [tree["county1"], tree["county2"]]
    county = res.json()[0]
    assert county["parent_code"] == tree["city"] and county["level"] == "county"
    assert county["bbox"] == [0, 0, 5, 10] and county["centroid"] == [2.5, 5]

    res = client.get("/api/v1/regions/lookup", params={"lon": 7, "lat": 2}, headers=h)
    assert res.status_code == 200
    body = res.json()
    assert body["grid"]["code"] == tree["grid2a"]
    assert [a["code"] for a in body["ancestors"]] == [
        tree[k] for k in ("city", "county2", "town2", "village2")
    ]

    res = client.get("/api/v1/regions/lookup", params={"lon": 20, "lat": 2}, headers=h)
    assert res.status_code == 422
    assert res.json()["error"] == {
        "code": "outside_jurisdiction",
        "message": "The point (20.000000, 2.000000) lies outside the jurisdiction.",
    }

    res = client.get(f"/api/v1/regions/{tree['village1']}", headers=h)
    assert res.status_code == 200
    d = res.json()
    assert d["children_count"] == 2 and d["grid_workers"] is None
    assert [a["code"] for a in d["ancestors"]] == [tree[k] for k in ("city", "county1", "town1")]


def test_geojson_for_the_map(client, tree):
    h = auth(client, "admin")
    res = client.get("/api/v1/regions/geojson", params={"parent": tree["town1"], "level": "grid"}, headers=h)
    assert res.status_code == 200 and res.headers["content-type"].startswith("application/geo+json")
    fc = res.json()
    assert [f["properties"]["code"] for f in fc["features"]] == [tree["grid1a"], tree["grid1b"]]
    assert set(fc["features"][0]["properties"]) == {
        "code",
        "name",
        "name_en",
        "level",
        "parent_code",
        "synthetic",
    }
    res = client.get("/api/v1/regions/geojson", params={"parent": tree["city"]}, headers=h)
    assert [f["properties"]["level"] for f in res.json()["features"]] == ["county", "county"]


@pytest.fixture
def other_city(db):
    """A second city (3320…) from the sample file, with its own admin."""
    with db.session() as s:
        service.import_features(s, SYSTEM, renamed(collection()))
        t = Tree()
        t.orgs["bureau2"] = accounts.create_org(
            s, SYSTEM, code="bureau-2", name="二市大数据局", kind=OrgKind.bureau, region_code="332000000000"
        )
        make_user(s, t, "admin2", Role.admin, "bureau2")


def test_geojson_rounds_coordinates(client, db, other_city):
    with db.session() as s:
        grid = renamed(collection([feature(GRID1, "网格一", "grid", VILLAGE, square(1, 1, 4, 4))]))
        ring = grid["features"][0]["geometry"]["coordinates"][0]
        grid["features"][0]["geometry"]["coordinates"] = [[[x + 1e-9, y + 4.56789e-6] for x, y in ring]]
        service.import_features(s, SYSTEM, grid)
    res = client.get(
        "/api/v1/regions/geojson", params={"parent": "332002001001"}, headers=auth(client, "admin2")
    )
    ring = res.json()["features"][0]["geometry"]["coordinates"][0]
    assert ring[0] == [121.04, 28.510005]
    assert all(round(v, 6) == v for point in ring for v in point)


def test_import_and_export_through_the_api(client, tree, other_city):
    h = auth(client, "admin2")
    new = renamed(collection([feature("331002001002002", "网格四", "grid", VILLAGE2, square(5, 5, 10, 10))]))
    bad = {"type": "FeatureCollection", "features": [dict(new["features"][0], geometry=None)]}
    res = client.post("/api/v1/regions/import", json=bad, headers=h)
    assert res.status_code == 422
    err = res.json()["error"]
    assert err["code"] == "invalid" and "Nothing was saved" in err["message"]
    assert err["details"][0]["index"] == 0 and "the geometry is missing" in err["details"][0]["message"]
    assert err["details"][0]["code"] == "332002001002002"

    res = client.post("/api/v1/regions/import", json=new, headers=h)
    assert res.status_code == 200, res.text
    assert res.json() == {"created": 1, "updated": 0, "unchanged": 0}
    res = client.get("/api/v1/regions/export", params={"root": "332002001002"}, headers=h)
    assert res.headers["content-type"].startswith("application/geo+json")
    assert [f["properties"]["code"] for f in res.json()["features"]] == [
        "332002001002",
        "332002001002001",
        "332002001002002",
    ]
    # The admin of the other city cannot write here (scope), the leader cannot import at all.
    res = client.post("/api/v1/regions/import", json=new, headers=auth(client, "admin"))
    assert res.status_code == 422 and "outside your area" in res.json()["error"]["details"][0]["message"]


def test_import_needs_regions_manage(client, tree):
    res = client.post("/api/v1/regions/import", json=collection(), headers=auth(client, "leader"))
    assert res.status_code == 403


def test_a_county_1_user_cannot_see_county_2_through_any_route(client, tree):
    h = auth(client, "leader")  # county 1 governance centre
    assert [r["code"] for r in client.get("/api/v1/regions", headers=h).json()] == [tree["county1"]]
    for code in ("county2", "town2", "village2", "grid2a", "city"):
        assert client.get(f"/api/v1/regions/{tree[code]}", headers=h).status_code == 404
        assert client.get("/api/v1/regions", params={"parent": tree[code]}, headers=h).status_code == 404
        assert (
            client.get("/api/v1/regions/geojson", params={"parent": tree[code]}, headers=h).status_code == 404
        )
        assert client.get("/api/v1/regions/export", params={"root": tree[code]}, headers=h).status_code == 404
    res = client.get("/api/v1/regions/lookup", params={"lon": 7, "lat": 2}, headers=h)
    assert res.status_code == 422 and res.json()["error"]["code"] == "outside_jurisdiction"
    exported = {
        f["properties"]["code"] for f in client.get("/api/v1/regions/export", headers=h).json()["features"]
    }
    shown = {
        f["properties"]["code"] for f in client.get("/api/v1/regions/geojson", headers=h).json()["features"]
    }
    county2 = {tree[k] for k in ("county2", "town2", "village2", "grid2a", "grid2b")}
    assert tree["grid1a"] in exported and not exported & county2
    assert shown == {tree["town1"]}
    # Positive control: the same user does see county 1.
    assert client.get(f"/api/v1/regions/{tree['grid1a']}", headers=h).status_code == 200
    assert client.get("/api/v1/regions/lookup", params={"lon": 2, "lat": 2}, headers=h).status_code == 200

    dispatcher = auth(client, "dispatcher")  # township 1, may assign grid workers
    res = client.post(
        f"/api/v1/regions/{tree['grid2a']}/workers", json={"username": "grid_worker"}, headers=dispatcher
    )
    assert res.status_code == 404


def test_routes_need_a_login(client, tree):
    assert client.get("/api/v1/regions").status_code == 401
    assert client.get(f"/api/v1/regions/{tree['city']}").status_code == 401


def test_grid_worker_assignment(client, db, tree):
    with db.session() as s:
        t = Tree()
        t.orgs["village2"] = accounts.get_org_by_code(s, "village-2")
        make_user(s, t, "worker2", Role.grid_worker, "village2", display_name="李四")
    dispatcher = auth(client, "dispatcher")
    admin = auth(client, "admin")
    grid = tree["grid1a"]

    res = client.post(f"/api/v1/regions/{grid}/workers", json={"username": "grid_worker"}, headers=dispatcher)
    assert res.status_code == 201, res.text
    assert res.json() == [{"username": "grid_worker", "display_name": "张*"}]
    # The admin (users.manage) reads the name in clear; the dispatcher does not.
    assert client.get(f"/api/v1/regions/{grid}", headers=admin).json()["grid_workers"] == [
        {"username": "grid_worker", "display_name": "张三"}
    ]
    assert client.get(f"/api/v1/regions/{grid}", headers=dispatcher).json()["grid_workers"] == [
        {"username": "grid_worker", "display_name": "张*"}
    ]
    with db.session() as s:
        rec = s.scalars(select(AuditRecord).where(AuditRecord.action == "grid.assign")).one()
        assert rec.actor == "dispatcher"

    res = client.post(f"/api/v1/regions/{grid}/workers", json={"username": "grid_worker"}, headers=dispatcher)
    assert res.status_code == 409
    # A resident is not a grid worker.
    res = client.post(f"/api/v1/regions/{grid}/workers", json={"username": "resident"}, headers=dispatcher)
    assert res.status_code == 422 and "is not a grid worker" in res.json()["error"]["message"]
    # A grid worker of village 2 does not work in village 1, even when the admin asks.
    res = client.post(f"/api/v1/regions/{grid}/workers", json={"username": "worker2"}, headers=admin)
    assert res.status_code == 422
    assert (
        client.post(
            f"/api/v1/regions/{tree['grid2a']}/workers", json={"username": "worker2"}, headers=admin
        ).status_code
        == 201
    )
    # Only grids take workers; only roles with grids.assign may assign; unknown users are 404.
    res = client.post(
        f"/api/v1/regions/{tree['village1']}/workers", json={"username": "grid_worker"}, headers=dispatcher
    )
    assert res.status_code == 422 and "not a grid" in res.json()["error"]["message"]
    leader = auth(client, "leader")
    assert (
        client.post(
            f"/api/v1/regions/{grid}/workers", json={"username": "grid_worker"}, headers=leader
        ).status_code
        == 403
    )
    assert (
        client.post(
            f"/api/v1/regions/{grid}/workers", json={"username": "nobody"}, headers=dispatcher
        ).status_code
        == 404
    )

    assert client.delete(f"/api/v1/regions/{grid}/workers/grid_worker", headers=dispatcher).status_code == 204
    assert client.get(f"/api/v1/regions/{grid}", headers=admin).json()["grid_workers"] == []
    assert client.delete(f"/api/v1/regions/{grid}/workers/grid_worker", headers=dispatcher).status_code == 404
