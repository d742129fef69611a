"""The demo jurisdiction: a deterministic, exactly tiled Taizhou tree, and a load that logs in."""

from __future__ import annotations

import json
import re
import stat
from collections import defaultdict
from functools import cache
from pathlib import Path
from typing import Any

import pytest
import shapely
from shapely.geometry import Point, shape
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from civicgrid.accounts import service as accounts
from civicgrid.accounts.models import Membership
from civicgrid.accounts.permissions import Role
from civicgrid.core import audit
from civicgrid.core.errors import Conflict, Invalid
from civicgrid.demo import service as demo
from civicgrid.regions.models import GridAssignment, Region, RegionLevel

FACTS = json.loads((demo.DATA / "taizhou-counties.json").read_text(encoding="utf-8"))
CODE = {
    "city": re.compile(r"^331000000000$"),
    "county": re.compile(r"^3310\d\d000000$"),
    "township": re.compile(r"^3310\d\d\d{3}000$"),
    "village": re.compile(r"^3310\d\d\d{6}$"),
    "grid": re.compile(r"^3310\d\d\d{9}$"),
}
PREFIX = {"county": 4, "township": 6, "village": 9, "grid": 12}


@cache
def build(grids: int, seed: int = 2021) -> dict[str, Any]:
    return demo.build_jurisdiction(grids, seed)


def props(fc: dict[str, Any]) -> list[dict[str, Any]]:
    return [f["properties"] for f in fc["features"]]


def test_same_seed_gives_the_same_jurisdiction() -> None:
    assert demo.build_jurisdiction(50, 7) == demo.build_jurisdiction(50, 7)


def test_another_seed_moves_the_synthetic_levels_only() -> None:
    a, b = build(600, 1), build(600, 2)
    counties = [(p["code"], p["name"]) for p in props(a) if p["level"] == "county"]
    assert counties == [(p["code"], p["name"]) for p in props(b) if p["level"] == "county"]
    geoms = {f["properties"]["level"]: [] for f in a["features"]}
    for fa, fb in zip(a["features"], b["features"], strict=False):
        geoms[fa["properties"]["level"]].append(fa["geometry"] == fb["geometry"])
    assert all(geoms["county"])  # the counties sit on real seats, whatever the seed
    assert not all(geoms["township"])


@pytest.mark.parametrize("grids", [9, 50, 600, 1234])
def test_exactly_the_asked_number_of_grids(grids: int) -> None:
    levels = [p["level"] for p in props(build(grids))]
    assert levels.count("grid") == grids
    assert levels.count("county") == 9
    assert levels.count("city") == 1


@pytest.mark.parametrize("grids", [0, 8, demo.MAX_GRIDS + 1])
def test_grid_counts_out_of_range_are_refused(grids: int) -> None:
    with pytest.raises(Invalid):
        demo.build_jurisdiction(grids, 1)


def test_codes_names_and_parents_follow_the_format() -> None:
    fc = build(600)
    seen: dict[str, dict[str, Any]] = {}
    for p in props(fc):
        level, code = p["level"], p["code"]
        assert CODE[level].match(code), code
        assert code not in seen
        if level != "city":
            parent = seen[p["parent_code"]]  # parents come before their children
            assert code[: PREFIX[level]] == parent["code"][: PREFIX[level]]
        assert p["synthetic"] is (level not in ("city", "county"))
        assert p["name"] and p["name_en"]
        suffixes = {"township": ("街道", "镇", "乡"), "village": ("村", "社区"), "grid": ("网格",)}
        if level in suffixes:
            assert p["name"].endswith(suffixes[level]), p["name"]
        seen[code] = p
    # Township serials never end in 000 and villages never in 000: the format has no zero parts.
    assert all(not c.endswith("000000") for c, p in seen.items() if p["level"] == "township")


def test_the_nine_real_counties_hold_their_own_seats() -> None:
    fc = build(600)
    counties = {f["properties"]["code"]: f for f in fc["features"] if f["properties"]["level"] == "county"}
    assert sorted(counties) == sorted(c["code"] + "000000" for c in FACTS["counties"])
    for c in FACTS["counties"]:
        f = counties[c["code"] + "000000"]
        assert f["properties"]["name"] == c["name"]
        assert f["properties"]["name_en"] == c["name_en"]
        assert shape(f["geometry"]).contains(Point(c["lon"], c["lat"]))


def test_city_outline_is_a_region_around_taizhou() -> None:
    city = shape(build(600)["features"][0]["geometry"])
    minx, miny, maxx, maxy = city.bounds
    assert 120.3 < minx < 120.6 and 121.8 < maxx < 122.0
    assert 27.9 < miny < 28.1 and 29.25 < maxy < 29.45
    assert city.area < 0.9 * city.envelope.area  # not a rectangle


@pytest.mark.parametrize(("grids", "seed"), [(600, 2021), (300, 5)])
def test_children_tile_their_parent(grids: int, seed: int) -> None:
    fc = build(grids, seed)
    geoms = {f["properties"]["code"]: shape(f["geometry"]) for f in fc["features"]}
    children: dict[str, list[str]] = defaultdict(list)
    for p in props(fc):
        if p["parent_code"]:
            children[p["parent_code"]].append(p["code"])
    assert all(g.is_valid and not g.is_empty and g.area > 0 for g in geoms.values())
    assert len(children) == sum(1 for p in props(fc) if p["level"] != "grid")
    for parent, kids in children.items():
        pg = geoms[parent]
        kg = [geoms[k] for k in kids]
        assert shapely.union_all(kg).symmetric_difference(pg).area < pg.area * 1e-9, parent
        tree = shapely.STRtree(kg)
        left, right = tree.query(kg, predicate="intersects")
        pairs = left < right
        overlap = shapely.area(shapely.intersection(
            [kg[i] for i in left[pairs]], [kg[j] for j in right[pairs]]
        ))  # fmt: skip
        assert (overlap < pg.area * 1e-12).all(), parent


# ---- loading into a database ---------------------------------------------------------------


def test_load_demo_creates_every_role_and_the_logins_work(session: Session, tmp_path: Path) -> None:
    creds = demo.load_demo(session, grids=20, seed=3, data_dir=tmp_path)

    path = tmp_path / demo.CREDENTIALS_FILE
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert json.loads(path.read_text(encoding="utf-8")) == creds
    assert set(creds["api_keys"]) == {"open311"}  # see test_open311_client.py

    roles = set(session.scalars(select(Membership.role).distinct()))
    assert roles == set(Role)
    assert {u["role"] for u in creds["users"]} == {str(r) for r in Role}
    for u in creds["users"]:
        result = accounts.authenticate(session, u["username"], u["password"])
        assert result.user is not None, u["username"]
        assert any(m.org.code == u["org"] and m.role == u["role"] for m in result.user.memberships)
    gw = creds["grid_workers"]
    assert accounts.authenticate(session, gw["example_usernames"][0], gw["password"]).user is not None
    assert accounts.authenticate(session, "admin", "wrong-password").user is None

    # Every grid has its own worker (and the named grid worker patrols some), all synthetic below county.
    grids = session.scalar(select(func.count()).select_from(Region).where(Region.level == RegionLevel.grid))
    assert grids == gw["count"] == 20
    covered = session.scalar(select(func.count(func.distinct(GridAssignment.grid_id))))
    assert covered == 20
    pairs = set(session.execute(select(Region.level, Region.synthetic).distinct()).all())
    assert pairs == {
        (RegionLevel.city, False), (RegionLevel.county, False), (RegionLevel.township, True),
        (RegionLevel.village, True), (RegionLevel.grid, True),
    }  # fmt: skip
    assert audit.verify(session) == []

    text = demo.print_credentials(creds)
    assert "管理员 (Administrator)" in text and "leader.linhai" in text and gw["password"] in text


def test_loading_twice_is_refused(session: Session, tmp_path: Path) -> None:
    demo.load_demo(session, grids=9, seed=1, data_dir=tmp_path)
    assert demo.has_data(session)
    with pytest.raises(Conflict):
        demo.load_demo(session, grids=9, seed=1, data_dir=tmp_path / "again")
    assert not (tmp_path / "again").exists()


def test_refusals_are_translated() -> None:
    from civicgrid.core.i18n import reset_locale, set_locale

    token = set_locale("zh_Hans")
    try:
        with pytest.raises(Invalid) as exc:
            demo.build_jurisdiction(3, 1)
        assert exc.value.translated() == "演示辖区的网格数须在 9 到 50000 之间。"
    finally:
        reset_locale(token)
