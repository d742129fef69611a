"""One-line valid objects for tests: a small two-county jurisdiction, orgs and users."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from shapely.geometry import box, mapping
from sqlalchemy.orm import Session

from civicgrid.accounts import service as accounts
from civicgrid.accounts.models import Org, OrgKind, User
from civicgrid.accounts.permissions import Role
from civicgrid.core.auth import SYSTEM
from civicgrid.core.vocab import Platform
from civicgrid.regions.models import Region, RegionLevel

PASSWORD = "correct-horse-9"


def make_region(
    session: Session,
    code: str,
    name: str,
    level: RegionLevel,
    bounds: tuple[float, float, float, float],
    parent: Region | None = None,
    name_en: str = "",
) -> Region:
    geom = box(*bounds)
    c = geom.centroid
    region = Region(
        code=code,
        name=name,
        name_en=name_en or code,
        level=level,
        parent_id=parent.id if parent else None,
        path=(parent.path if parent else "/") + code + "/",
        geometry=json.dumps(mapping(geom)),
        centroid_lon=c.x,
        centroid_lat=c.y,
        min_lon=bounds[0],
        min_lat=bounds[1],
        max_lon=bounds[2],
        max_lat=bounds[3],
    )
    session.add(region)
    session.flush()
    return region


@dataclass
class Tree:
    regions: dict[str, Region] = field(default_factory=dict)
    orgs: dict[str, Org] = field(default_factory=dict)
    users: dict[str, User] = field(default_factory=dict)


def make_tree(session: Session) -> Tree:
    """City A (0..10 × 0..10) with counties A1 (west) and A2 (east); each has one township,
    one village and two grids. Orgs: a city bureau, a county centre and a township office per
    county, a safety department in county A1."""
    t = Tree()
    L = RegionLevel
    r = t.regions
    r["city"] = make_region(session, "331000000000", "台州市", L.city, (0, 0, 10, 10), name_en="Taizhou")
    for i, (x0, x1) in enumerate([(0, 5), (5, 10)], start=1):
        county = make_region(session, f"33100{i}000000", f"县{i}", L.county, (x0, 0, x1, 10), r["city"])
        town = make_region(session, f"33100{i}001000", f"镇{i}", L.township, (x0, 0, x1, 10), county)
        village = make_region(session, f"33100{i}001001", f"村{i}", L.village, (x0, 0, x1, 10), town)
        g1 = make_region(session, f"33100{i}001001001", f"网格{i}-1", L.grid, (x0, 0, x1, 5), village)
        g2 = make_region(session, f"33100{i}001001002", f"网格{i}-2", L.grid, (x0, 5, x1, 10), village)
        r[f"county{i}"], r[f"town{i}"], r[f"village{i}"] = county, town, village
        r[f"grid{i}a"], r[f"grid{i}b"] = g1, g2
    o = t.orgs
    o["bureau"] = accounts.create_org(
        session,
        SYSTEM,
        code="city-bureau",
        name="市大数据局",
        kind=OrgKind.bureau,
        region_code="331000000000",
    )
    for i in (1, 2):
        o[f"centre{i}"] = accounts.create_org(
            session,
            SYSTEM,
            code=f"centre-{i}",
            name=f"县{i}社会治理中心",
            kind=OrgKind.governance_centre,
            region_code=r[f"county{i}"].code,
        )
        o[f"town{i}"] = accounts.create_org(
            session,
            SYSTEM,
            code=f"town-{i}",
            name=f"镇{i}四平台",
            kind=OrgKind.township_office,
            region_code=r[f"town{i}"].code,
        )
        o[f"village{i}"] = accounts.create_org(
            session,
            SYSTEM,
            code=f"village-{i}",
            name=f"村{i}村委会",
            kind=OrgKind.village_committee,
            region_code=r[f"village{i}"].code,
        )
    o["dept1"] = accounts.create_org(
        session,
        SYSTEM,
        code="dept-safety-1",
        name="县1综治办",
        kind=OrgKind.department,
        region_code=r["county1"].code,
        platform=Platform.safety,
    )
    for key, code, name, kind, region, platform in (
        (
            "enforce1",
            "town-1-enforcement",
            "镇1综合执法中队",
            OrgKind.department,
            "town1",
            Platform.enforcement,
        ),
        ("market1", "county-1-market", "县1市场监管局", OrgKind.department, "county1", Platform.market),
    ):
        o[key] = accounts.create_org(
            session, SYSTEM, code=code, name=name, kind=kind, region_code=r[region].code, platform=platform
        )
    return t


# Which org each role sits in for `make_users`: the natural home of that role in county 1.
ROLE_HOME = {
    Role.admin: "bureau",
    Role.leader: "centre1",
    Role.dispatcher: "town1",
    Role.handler: "dept1",
    Role.grid_worker: "village1",
    Role.resident: "village1",
    Role.data_steward: "bureau",
    Role.data_consumer: "dept1",
    Role.mediator: "town1",
}


def make_user(session: Session, t: Tree, username: str, role: Role, org_key: str, **kw: Any) -> User:
    user = accounts.create_user(
        session,
        SYSTEM,
        username=username,
        display_name=kw.pop("display_name", "张三"),
        password=kw.pop("password", PASSWORD),
        memberships=[(t.orgs[org_key].code, role)],
        **kw,
    )
    t.users[username] = user
    return user


def make_users(session: Session, t: Tree) -> Tree:
    """One user per role, named after the role, in the role's natural org in county 1."""
    for role, org_key in ROLE_HOME.items():
        make_user(session, t, str(role), role, org_key, phone="13812345678")
    return t


def login_headers(client: Any, username: str, password: str = PASSWORD) -> dict[str, str]:
    res = client.post("/api/v1/accounts/login", json={"username": username, "password": password})
    assert res.status_code == 201, res.text
    return {"Authorization": f"Bearer {res.json()['token']}"}
