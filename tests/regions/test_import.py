"""Importing boundaries: the happy path, every kind of bad feature, updates, scope and rights."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import pytest
from sqlalchemy import func, select

from civicgrid.accounts import service as accounts
from civicgrid.core.audit import AuditRecord
from civicgrid.core.auth import SYSTEM
from civicgrid.core.errors import Invalid, PermissionDenied
from civicgrid.core.i18n import reset_locale, set_locale
from civicgrid.regions import service
from civicgrid.regions.models import Region, RegionLevel
from tests.factories import make_tree, make_users
from tests.regions.conftest import (
    CITY,
    COUNTY,
    GRID1,
    GRID2,
    GRID3,
    TOWN,
    VILLAGE,
    VILLAGE2,
    collection,
    feature,
    geojson,
    square,
)


def region_count(session: Any) -> int:
    return session.scalar(select(func.count(Region.id))) or 0


def import_audits(session: Any) -> list[AuditRecord]:
    return list(session.scalars(select(AuditRecord).where(AuditRecord.action == "regions.import")))


def test_import_creates_the_tree_in_any_order(session):
    report = service.import_features(session, SYSTEM, collection())
    session.commit()
    assert (report.created, report.updated, report.unchanged) == (8, 0, 0)

    grid = service.get_by_code(session, GRID1)
    assert grid.path == f"/{CITY}/{COUNTY}/{TOWN}/{VILLAGE}/{GRID1}/"
    assert grid.level == RegionLevel.grid and grid.name == "网格一" and grid.name_en == "Grid 1"
    assert service.get(session, grid.parent_id).code == VILLAGE
    assert (grid.min_lon, grid.min_lat, grid.max_lon, grid.max_lat) == pytest.approx(
        (121.0, 28.5, 121.05, 28.55)
    )
    assert (grid.centroid_lon, grid.centroid_lat) == pytest.approx((121.025, 28.525))
    assert service.get_by_code(session, CITY).parent_id is None
    assert service.get_by_code(session, GRID3).name_en == ""

    # One audit record for the whole file, with the counts.
    audits = import_audits(session)
    assert len(audits) == 1
    assert json.loads(audits[0].diff)["_"] == {"created": 8, "features": 8, "unchanged": 0, "updated": 0}


def test_reimport_updates_changed_features_and_counts_the_rest(session):
    service.import_features(session, SYSTEM, collection())
    session.commit()
    grid = service.get_by_code(session, GRID1)  # held in the session across the bulk update
    data = collection()
    for f in data["features"]:
        if f["properties"]["code"] == GRID1:
            f["properties"]["name"] = "网格一（新）"
            f["geometry"] = geojson(square(0, 0, 4, 5))
    report = service.import_features(session, SYSTEM, data)
    session.commit()
    assert (report.created, report.updated, report.unchanged) == (0, 1, 7)
    assert grid.name == "网格一（新）"
    assert grid.max_lon == pytest.approx(121.04)
    assert region_count(session) == 8


def test_touching_siblings_and_tiny_clipping_errors_are_accepted(session):
    data = collection()
    for f in data["features"]:
        if f["properties"]["code"] == GRID2:
            # Sticks out of the village by 1e-9 degrees: floating-point noise, not an error.
            f["geometry"] = geojson(square(5, 0, 10 + 1e-7, 5))
    assert service.import_features(session, SYSTEM, data).created == 8


def _set(target: str, /, **props: Any) -> Callable[[list[dict[str, Any]]], None]:
    """A change to the feature with code `target`: new properties and/or geometry."""

    def change(features: list[dict[str, Any]]) -> None:
        for f in features:
            if f["properties"]["code"] == target:
                new = dict(props)
                geometry = new.pop("geometry", None)
                if geometry is not None:
                    f["geometry"] = geojson(geometry)
                f["properties"].update(new)

    return change


BOWTIE = {
    "type": "Polygon",
    "coordinates": [[[121.0, 28.5], [121.05, 28.55], [121.05, 28.5], [121.0, 28.55], [121.0, 28.5]]],
}

BAD_CASES: dict[str, tuple[Callable[[list[dict[str, Any]]], None], str, str]] = {
    "invalid geometry": (_set(GRID1, geometry=BOWTIE), GRID1, "the geometry is not valid: Self-intersection"),
    "child outside parent": (
        _set(GRID1, geometry=square(0, 0, 5, 6)),
        GRID1,
        f"it lies outside its parent {VILLAGE}",
    ),
    "overlapping siblings": (
        _set(GRID2, geometry=square(4, 0, 10, 5)),
        GRID2,
        f"it overlaps its sibling {GRID1}",
    ),
    "unknown parent": (
        _set(GRID1, code="331002001009001", parent_code="331002001009"),
        "331002001009001",
        "its parent code 331002001009 is neither in the file nor in the database",
    ),
    "wrong level": (_set(GRID1, level="village"), GRID1, "is not a valid village code"),
    "level skipped": (
        _set(GRID1, code="331002001005", level="village", parent_code=COUNTY),
        "331002001005",
        f"a village cannot be placed under the county {COUNTY}",
    ),
    "bad code": (_set(GRID1, code="33100200100100A"), "33100200100100A", "is not a valid grid code"),
    "code not extending parent": (
        _set(GRID3, code="331002001001009"),
        "331002001001009",
        f"does not extend its parent's code {VILLAGE2}",
    ),
    "duplicate code": (_set(GRID2, code=GRID1), GRID1, "the code 331002001001001 already appears in feature"),
    "point geometry": (
        _set(GRID1, geometry={"type": "Point", "coordinates": [121.01, 28.51]}),
        GRID1,
        "the geometry is a Point, not a Polygon or MultiPolygon",
    ),
    "city with a parent": (_set(CITY, parent_code=COUNTY), CITY, "a city has no parent"),
}


@pytest.mark.parametrize("case", list(BAD_CASES))
def test_a_bad_feature_rejects_the_file_and_names_it(session, case):
    change, code, reason = BAD_CASES[case]
    data = collection()
    change(data["features"])
    with pytest.raises(Invalid) as exc:
        service.import_features(session, SYSTEM, data)
    session.rollback()

    codes = [f["properties"]["code"] for f in data["features"]]
    bad = [d for d in exc.value.details if d["code"] == code]
    assert bad, exc.value.details
    detail = bad[-1]
    assert codes[detail["index"]] == code
    assert detail["message"].startswith(f"Feature {detail['index']} ({code}):")
    assert reason in detail["message"]
    assert "Nothing was saved" in exc.value.translated()
    assert region_count(session) == 0
    assert import_audits(session) == []


def test_missing_properties_are_listed(session):
    data = collection()
    del data["features"][0]["properties"]["level"]
    del data["features"][0]["properties"]["parent_code"]
    with pytest.raises(Invalid) as exc:
        service.import_features(session, SYSTEM, data)
    [detail] = exc.value.details
    assert detail["index"] == 0 and detail["code"] == GRID2
    assert "the properties level, parent_code are missing" in detail["message"]


def test_every_bad_feature_gets_one_detail(session):
    data = collection()
    _set(GRID1, geometry=BOWTIE)(data["features"])
    _set(GRID3, geometry=square(0, 5, 10, 11), name="")(data["features"])
    with pytest.raises(Invalid) as exc:
        service.import_features(session, SYSTEM, data)
    assert sorted(d["code"] for d in exc.value.details) == [GRID1, GRID3]
    [g3] = [d for d in exc.value.details if d["code"] == GRID3]
    # Two reasons for one feature in one message.
    assert "the name must be text" in g3["message"] and "outside its parent" in g3["message"]


def test_messages_are_translated(session):
    data = collection()
    _set(GRID1, geometry=BOWTIE)(data["features"])
    token = set_locale("zh_Hans")
    try:
        with pytest.raises(Invalid) as exc:
            service.import_features(session, SYSTEM, data)
        assert "要素" in exc.value.details[0]["message"] and "几何图形无效" in exc.value.details[0]["message"]
        assert "未保存任何内容" in exc.value.translated()
    finally:
        reset_locale(token)


def test_overlap_with_an_existing_sibling_in_the_database_is_rejected(session):
    service.import_features(session, SYSTEM, collection())
    session.commit()
    extra = feature("331002001001003", "网格三", "grid", VILLAGE, square(2, 2, 3, 3))
    with pytest.raises(Invalid) as exc:
        service.import_features(session, SYSTEM, collection([extra]))
    assert f"it overlaps its sibling {GRID1}" in exc.value.details[0]["message"]
    session.rollback()
    assert region_count(session) == 8


def test_shrinking_a_parent_below_its_existing_children_is_rejected(session):
    service.import_features(session, SYSTEM, collection())
    session.commit()
    village = feature(VILLAGE, "东村", "village", TOWN, square(0, 0, 7, 5))
    with pytest.raises(Invalid) as exc:
        service.import_features(session, SYSTEM, collection([village]))
    assert f"its existing child {GRID2} would lie outside it" in exc.value.details[0]["message"]


def test_an_existing_region_cannot_move_to_another_parent(session):
    service.import_features(session, SYSTEM, collection())
    session.commit()
    moved = feature(GRID1, "网格一", "grid", VILLAGE2, square(0, 5, 5, 10))
    with pytest.raises(Invalid) as exc:
        service.import_features(session, SYSTEM, collection([moved]))
    assert f"its parent cannot change from {VILLAGE} to {VILLAGE2}" in exc.value.details[0]["message"]


def test_features_below_existing_parents_need_only_the_new_part(session):
    service.import_features(session, SYSTEM, collection())
    session.commit()
    new = feature("331002001002002", "网格四", "grid", VILLAGE2, square(0, 5, 5, 10))
    shrunk = feature(GRID3, "网格三", "grid", VILLAGE2, square(5, 5, 10, 10))
    report = service.import_features(session, SYSTEM, collection([new, shrunk]))
    assert (report.created, report.updated) == (1, 1)
    assert service.get_by_code(session, "331002001002002").path.endswith(f"/{VILLAGE2}/331002001002002/")


def test_not_a_feature_collection(session):
    with pytest.raises(Invalid):
        service.import_features(session, SYSTEM, {"type": "Feature"})
    with pytest.raises(Invalid):
        service.import_features(session, SYSTEM, {"type": "FeatureCollection", "features": []})


def test_import_needs_the_right_and_the_scope(session):
    t = make_users(session, make_tree(session))
    session.commit()
    leader = accounts.actor_for_user(session, t.users["leader"])
    with pytest.raises(PermissionDenied):
        service.import_features(session, leader, collection())

    # A county-1 admin-like actor (regions.manage, scope county 1) may not write into county 2.
    admin = accounts.actor_for_user(session, t.users["admin"])
    county1_admin = type(admin)(**{**admin.__dict__, "region_path": t.regions["county1"].path})
    village2 = t.regions["village2"]
    grid = feature(
        f"{village2.code}003",
        "越界网格",
        "grid",
        village2.code,
        {"type": "Polygon", "coordinates": [[[5, 0], [6, 0], [6, 0.5], [5, 0.5], [5, 0]]]},
    )
    with pytest.raises(Invalid) as exc:
        service.import_features(session, county1_admin, collection([grid]))
    assert "outside your area of responsibility" in exc.value.details[0]["message"]
    # The same grid is fine for the city-wide admin... except that it overlaps grid 2a.
    with pytest.raises(Invalid) as exc:
        service.import_features(session, admin, collection([grid]))
    assert f"overlaps its sibling {t.regions['grid2a'].code}" in exc.value.details[0]["message"]
