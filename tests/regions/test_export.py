"""Export: a FeatureCollection that imports back into an empty database unchanged."""

from __future__ import annotations

import pytest
from sqlalchemy import delete

from civicgrid.accounts import service as accounts
from civicgrid.core.auth import SYSTEM
from civicgrid.core.errors import NotFound
from civicgrid.regions import service
from civicgrid.regions.models import LEVEL_ORDER, Region
from tests.factories import make_tree, make_users
from tests.regions.conftest import CITY, COUNTY, GRID1, TOWN, VILLAGE, VILLAGE2, collection, feature

HOLED_MULTI = {
    "type": "MultiPolygon",
    "coordinates": [
        [
            [[121.0, 28.55], [121.05, 28.55], [121.05, 28.6], [121.0, 28.6], [121.0, 28.55]],
            [[121.01, 28.56], [121.02, 28.56], [121.02, 28.57], [121.01, 28.57], [121.01, 28.56]],
        ],
        [[[121.06, 28.55], [121.1, 28.55], [121.1, 28.6], [121.06, 28.6], [121.06, 28.55]]],
    ],
}


def test_export_import_export_round_trip(session):
    data = collection()
    data["features"].append(feature("331002001002002", "飞地网格", "grid", VILLAGE2, HOLED_MULTI, "Exclave"))
    data["features"][-1]["properties"]["synthetic"] = True
    data["features"] = [f for f in data["features"] if f["properties"]["code"] != "331002001002001"]
    service.import_features(session, SYSTEM, data)
    session.commit()
    first = service.export_features(session, SYSTEM)
    assert first["type"] == "FeatureCollection"
    assert [f["properties"]["code"] for f in first["features"]][:4] == [CITY, COUNTY, TOWN, VILLAGE]
    by_code = {f["properties"]["code"]: f for f in first["features"]}
    assert by_code[GRID1]["properties"] == {
        "code": GRID1,
        "name": "网格一",
        "name_en": "Grid 1",
        "level": "grid",
        "parent_code": VILLAGE,
        "synthetic": False,
    }
    assert by_code["331002001002002"]["properties"]["synthetic"] is True
    assert by_code["331002001002002"]["geometry"] == HOLED_MULTI

    for level in reversed(LEVEL_ORDER):  # children first: parent links are RESTRICT
        session.execute(delete(Region).where(Region.level == level))
    session.commit()
    report = service.import_features(session, SYSTEM, first)
    session.commit()
    assert report.created == len(first["features"])
    assert service.export_features(session, SYSTEM) == first


def test_export_of_a_subtree_and_scope(session):
    t = make_users(session, make_tree(session))
    session.commit()
    sub = service.export_features(session, SYSTEM, t.regions["town1"].code)
    assert {f["properties"]["code"] for f in sub["features"]} == {
        t.regions[k].code for k in ("town1", "village1", "grid1a", "grid1b")
    }
    leader = accounts.actor_for_user(session, t.users["leader"])  # county 1
    mine = service.export_features(session, leader)
    codes = {f["properties"]["code"] for f in mine["features"]}
    assert t.regions["county1"].code in codes and t.regions["grid1a"].code in codes
    assert not codes & {t.regions[k].code for k in ("city", "county2", "grid2a", "grid2b")}
    with pytest.raises(NotFound):
        service.export_features(session, leader, t.regions["county2"].code)
