"""The demo jurisdiction modelled on Taizhou (台州市): real city and counties, synthetic below.

`build_jurisdiction` draws the region tree as GeoJSON (pure and seeded); `load_demo` imports
it, creates the orgs and demo users and writes their logins to `demo-credentials.json`.
Townships, villages, grids, every boundary and every person are synthetic: any likeness to
a real township, village or person is a coincidence.
"""

from __future__ import annotations

import json
import math
import os
import secrets
import unicodedata
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np
from shapely.geometry import mapping
from sqlalchemy import insert, select, update
from sqlalchemy.orm import Session

from civicgrid.accounts import service as accounts
from civicgrid.accounts.models import Membership, Org, OrgKind, User
from civicgrid.accounts.permissions import ROLE_LABELS, Role
from civicgrid.core import audit
from civicgrid.core.auth import SYSTEM
from civicgrid.core.db import utcnow
from civicgrid.core.errors import Conflict, Invalid
from civicgrid.core.i18n import gettext, reset_locale, set_locale
from civicgrid.core.security import hash_password
from civicgrid.core.vocab import Platform
from civicgrid.demo import tiling
from civicgrid.demo.tiling import Piece, Point
from civicgrid.regions import service as regions
from civicgrid.regions.models import GridAssignment, Region, RegionLevel

DATA = Path(__file__).resolve().parent / "data"
CREDENTIALS_FILE = "demo-credentials.json"
_BATCH = 1000
BASE_URL = "http://127.0.0.1:8000"

MIN_GRIDS = 9  # one grid per county
MAX_GRIDS = 50_000  # codes leave 3 digits per level; beyond this the demo stops being quick
GRIDS_PER_VILLAGE = 4
DISTRICTS = {"331002", "331003", "331004"}  # 区: mostly streets (街道), no 乡

# Rough corners of Taizhou's real extent (mountains in the west, islands in the east), added
# to the seats so the hull looks like the region rather than a tight ring around its towns.
OUTLINE_HINTS: list[Point] = [
    (120.90, 29.28), (121.50, 29.20), (121.78, 29.00), (121.70, 28.70), (121.90, 28.45),
    (121.55, 28.18), (121.25, 28.08), (120.98, 28.30), (120.82, 28.50), (120.42, 28.72),
    (120.55, 29.00), (120.72, 29.17),
]  # fmt: skip
OUTLINE_WOBBLE = [(0.05, 3, 0.4), (0.035, 7, 1.7), (0.02, 13, 2.9), (0.012, 23, 0.8), (0.006, 41, 2.2)]


# ---- the jurisdiction as GeoJSON ---------------------------------------------------------


@lru_cache
def _facts() -> dict[str, Any]:
    data: dict[str, Any] = json.loads((DATA / "taizhou-counties.json").read_text(encoding="utf-8"))
    return data


@lru_cache
def _names() -> dict[str, Any]:
    data: dict[str, Any] = json.loads((DATA / "names.json").read_text(encoding="utf-8"))
    return data


def _romanise(syllables: list[str]) -> str:
    """Join pinyin syllables the way place names are written: "Dong'ao", "Shiqiao"."""
    out = syllables[0]
    for s in syllables[1:]:
        out += ("'" if s[:1] in "aoe" else "") + s
    return out.capitalize()


def _stems(rng: np.random.Generator) -> list[tuple[str, str]]:
    """All two-character place stems (Chinese, romanised) in a seeded random order."""
    names = _names()
    stems = [
        (a + b, _romanise([pa, pb]))
        for a, pa in names["place_first"]
        for b, pb in names["place_second"]
        if a != b
    ]
    order = rng.permutation(len(stems))
    return [stems[i] for i in order]


def _person_name(rng: np.random.Generator) -> str:
    names = _names()
    surname = names["surnames"][rng.integers(len(names["surnames"]))]
    given = names["given"]
    k = 1 if rng.random() < 0.3 else 2
    return surname + "".join(given[rng.integers(len(given))] for _ in range(k))


def _phone(rng: np.random.Generator) -> str:
    return "138" + "".join(str(d) for d in rng.integers(0, 10, 8))


def _distance(a: Point, b: Point) -> float:
    return math.hypot(a[0] - b[0], a[1] - b[1])


def _numbering(classes: list[str], ranges: dict[str, int]) -> list[int]:
    """GB/T 10114 style serials: each class counts up from its range start (街道 001…, 镇 101…);
    when a class outgrows its range of 99, everything is numbered 1… in order instead."""
    counts = {c: classes.count(c) for c in set(classes)}
    if all(n <= 99 for n in counts.values()):
        seen: dict[str, int] = {}
        out = []
        for c in classes:
            seen[c] = seen.get(c, 0) + 1
            out.append(ranges[c] + seen[c])
        return out
    return list(range(1, len(classes) + 1))


@dataclass
class _Node:
    code: str
    name: str
    name_en: str
    level: RegionLevel
    geometry: Piece
    seat: Point
    parent_code: str | None = None
    synthetic: bool = True
    kind: str = ""  # township: street/town/township; village: community/village
    children: list[_Node] = field(default_factory=list)

    def feature(self) -> dict[str, Any]:
        return {
            "type": "Feature",
            "properties": {
                "code": self.code,
                "name": self.name,
                "name_en": self.name_en,
                "level": str(self.level),
                "parent_code": self.parent_code,
                "synthetic": self.synthetic,
            },
            "geometry": _geojson(self.geometry),
        }


def _geojson(geom: Piece) -> dict[str, Any]:
    def lists(x: Any) -> Any:
        return [lists(v) for v in x] if isinstance(x, list | tuple) else x

    m = mapping(geom)
    return {"type": m["type"], "coordinates": lists(m["coordinates"])}


def _check_grids(grids: int) -> None:
    if not MIN_GRIDS <= grids <= MAX_GRIDS:
        raise Invalid(
            "The demo needs between {minimum} and {maximum} grids.", minimum=MIN_GRIDS, maximum=MAX_GRIDS
        )


def build_jurisdiction(grids: int, seed: int) -> dict[str, Any]:
    """The demo tree as a GeoJSON FeatureCollection, parents before children, with exactly
    `grids` grids. Same arguments, same output; the seed changes everything below county."""
    _check_grids(grids)
    return {"type": "FeatureCollection", "features": [n.feature() for n in _walk(_build_tree(grids, seed))]}


def _walk(node: _Node) -> list[_Node]:
    out = []
    level = [node]
    while level:  # breadth first: every parent comes before its children
        out.extend(level)
        level = [c for n in level for c in n.children]
    return out


def _build_tree(grids: int, seed: int) -> _Node:
    facts = _facts()
    counties = facts["counties"]
    seats = [(float(c["lon"]), float(c["lat"])) for c in counties]
    shape = tiling.outline(seats + OUTLINE_HINTS, margin=0.06, wobble=OUTLINE_WOBBLE, inside=seats)
    city_facts = facts["city"]
    city = _Node(
        code=city_facts["code"] + "000000",
        name=city_facts["name"],
        name_en=city_facts["name_en"],
        level=RegionLevel.city,
        geometry=shape,
        seat=(float(city_facts["lon"]), float(city_facts["lat"])),
        synthetic=False,
    )
    # The county cells depend only on the real seats, never on the seed.
    pieces, used = tiling.split(shape, seats, np.random.default_rng(0))
    if used != seats:
        raise RuntimeError("a county seat was moved while splitting the city")
    areas = [p.area for p in pieces]
    # Half of the grids shared equally, half by area: the small urban districts keep a fair share.
    weights = [0.5 / len(areas) + 0.5 * a / sum(areas) for a in areas]
    for ci, (c, piece, n_grids) in enumerate(
        zip(counties, pieces, tiling.apportion(grids, weights), strict=True)
    ):
        county = _Node(
            code=c["code"] + "000000",
            name=c["name"],
            name_en=c["name_en"],
            level=RegionLevel.county,
            geometry=piece,
            seat=seats[ci],
            parent_code=city.code,
            synthetic=False,
        )
        city.children.append(county)
        _add_townships(county, n_grids, np.random.default_rng([seed, 1, ci]), seed, ci)
    return city


_TOWNSHIP_KINDS = {
    "street": ("街道", "Subdistrict", 0),
    "town": ("镇", "Town", 100),
    "township": ("乡", "Township", 200),
}
_VILLAGE_KINDS = {
    "community": ("社区", "Community", 0),
    "village": ("村", "Village", 200),
}


def _add_townships(county: _Node, n_grids: int, rng: np.random.Generator, seed: int, ci: int) -> None:
    k = max(1, min(n_grids, 999, round(math.sqrt(n_grids / GRIDS_PER_VILLAGE))))
    spread = 0.12 * math.sqrt(county.geometry.area)
    points = tiling.sample_points(county.geometry, k, rng, centre=county.seat, share=0.35, spread=spread)
    pieces, points = tiling.split(county.geometry, points, rng)
    order = sorted(range(k), key=lambda i: _distance(points[i], county.seat))
    district = county.code[:6] in DISTRICTS
    streets = max(1, math.ceil(k * (0.6 if district else 0.25)))
    rural = 0 if district else min(k - streets, k * 15 // 100)
    kinds = ["street"] * streets + ["town"] * (k - streets - rural) + ["township"] * rural
    serials = _numbering(kinds, {kk: v[2] for kk, v in _TOWNSHIP_KINDS.items()})
    stems = iter(_stems(rng))
    street_stems: list[tuple[str, str]] = [tuple(s) for s in _names()["street_stems"]]
    shares = tiling.apportion(n_grids, list(rng.uniform(0.7, 1.3, k)))
    for ti, (i, kind, serial, share) in enumerate(zip(order, kinds, serials, shares, strict=True)):
        zh_suffix, en_suffix, _start = _TOWNSHIP_KINDS[kind]
        pick = _street_stem(street_stems, points[i], county.seat) if kind == "street" else None
        stem, stem_en = pick or next(stems)
        township = _Node(
            code=f"{county.code[:6]}{serial:03d}000",
            name=stem + zh_suffix,
            name_en=f"{stem_en} {en_suffix}",
            level=RegionLevel.township,
            geometry=pieces[i],
            seat=points[i],
            parent_code=county.code,
            kind=kind,
        )
        county.children.append(township)
        _add_villages(township, share, np.random.default_rng([seed, 2, ci, ti]), seed, (ci, ti))


def _street_stem(free: list[tuple[str, str]], point: Point, seat: Point) -> tuple[str, str] | None:
    """A street named for where it lies from the seat (城东 east of it, …) while such names
    are free, then the other town-centre names; taken names are removed from `free`."""
    dx, dy = point[0] - seat[0], point[1] - seat[1]
    side = ("城东" if dx > 0 else "城西") if abs(dx) >= abs(dy) else ("城北" if dy > 0 else "城南")
    for s in sorted(free, key=lambda s: s[0] != side):
        free.remove(s)
        return s
    return None


def _add_villages(
    township: _Node, n_grids: int, rng: np.random.Generator, seed: int, path: tuple[int, int]
) -> None:
    k = max(1, min(n_grids, 999, round(n_grids / GRIDS_PER_VILLAGE)))
    spread = 0.15 * math.sqrt(township.geometry.area)
    points = tiling.sample_points(township.geometry, k, rng, centre=township.seat, share=0.3, spread=spread)
    pieces, points = tiling.split(township.geometry, points, rng)
    order = sorted(range(k), key=lambda i: _distance(points[i], township.seat))
    # Streets are mostly communities (社区); a town has one around its centre; a 乡 has none.
    communities = {"street": math.ceil(k * 0.7), "town": 1 if k >= 3 else 0, "township": 0}[township.kind]
    kinds = ["community"] * communities + ["village"] * (k - communities)
    serials = _numbering(kinds, {kk: v[2] for kk, v in _VILLAGE_KINDS.items()})
    stems = iter(_stems(rng))
    shares = tiling.apportion(n_grids, list(rng.uniform(0.7, 1.3, k)))
    for vi, (i, kind, serial, share) in enumerate(zip(order, kinds, serials, shares, strict=True)):
        zh_suffix, en_suffix, _start = _VILLAGE_KINDS[kind]
        stem, stem_en = next(stems)
        village = _Node(
            code=f"{township.code[:9]}{serial:03d}",
            name=stem + zh_suffix,
            name_en=f"{stem_en} {en_suffix}",
            level=RegionLevel.village,
            geometry=pieces[i],
            seat=points[i],
            parent_code=township.code,
            kind=kind,
        )
        township.children.append(village)
        _add_grids(village, share, np.random.default_rng([seed, 3, *path, vi]))


def _add_grids(village: _Node, n_grids: int, rng: np.random.Generator) -> None:
    points = tiling.sample_points(village.geometry, n_grids, rng)
    pieces, points = tiling.split(village.geometry, points, rng)
    # Numbered in reading order on a map: north to south, then west to east.
    order = sorted(range(n_grids), key=lambda i: (-round(points[i][1], 4), points[i][0]))
    for serial, i in enumerate(order, start=1):
        village.children.append(
            _Node(
                code=f"{village.code}{serial:03d}",
                name=f"{village.name}第{serial}网格",
                name_en=f"{village.name_en} Grid {serial}",
                level=RegionLevel.grid,
                geometry=pieces[i],
                seat=points[i],
                parent_code=village.code,
            )
        )


# ---- loading ---------------------------------------------------------------------------------

_CENTRE = ("社会治理中心", "Social Governance Centre")
_COUNTY_DEPARTMENTS = {
    Platform.safety: ("综治办", "Comprehensive Governance Office"),
    Platform.market: ("市场监督管理局", "Market Supervision Bureau"),
    Platform.enforcement: ("综合行政执法局", "Comprehensive Law Enforcement Bureau"),
    Platform.service: ("便民服务中心", "Convenience Service Centre"),
}
_TOWNSHIP_OFFICE = ("基层治理四平台", "Four Platforms Office")
_TOWNSHIP_STATIONS = {
    Platform.safety: ("综治中心", "Comprehensive Governance Centre"),
    Platform.market: ("市场监管所", "Market Supervision Station"),
    Platform.enforcement: ("综合执法中队", "Law Enforcement Squad"),
    Platform.service: ("便民服务中心", "Convenience Service Centre"),
}
_COMMITTEES = {
    "community": ("居民委员会", "Residents' Committee"),
    "village": ("村民委员会", "Villagers' Committee"),
}


DEMO_EVENT_DAYS = 90  # demo events are spread over the last 90 days


def has_data(session: Session) -> bool:
    """True when the database already holds a region tree (the demo loads only into an empty one)."""
    return session.scalar(select(Region.id).limit(1)) is not None


def load_demo(
    session: Session, *, grids: int = 600, seed: int = 2021, data_dir: Path, events: int = 0
) -> dict[str, Any]:
    """Load the demo jurisdiction, its orgs and demo users into an empty database, in the
    caller's transaction; write the logins to `<data_dir>/demo-credentials.json` and return them.
    The event catalogue is seeded; `events` > 0 also generates that many events over the last
    90 days (deterministic for the seed), so the cockpit has something to show."""
    if has_data(session):
        raise Conflict("The database already holds a jurisdiction; the demo loads only into an empty one.")
    _check_grids(grids)
    city = _build_tree(grids, seed)
    nodes = _walk(city)
    collection = {"type": "FeatureCollection", "features": [n.feature() for n in nodes]}
    regions.import_features(session, SYSTEM, collection)
    below_county = [RegionLevel.township, RegionLevel.village, RegionLevel.grid]
    session.execute(update(Region).where(Region.level.in_(below_county)).values(synthetic=True))

    n_orgs = _create_orgs(session, city)
    users = _create_named_users(session, city)
    rng = np.random.default_rng([seed, 4])
    workers = _create_grid_workers(session, [n for n in nodes if n.level == RegionLevel.grid], rng)
    from civicgrid.demo.events import generate_events  # it imports this module
    from civicgrid.events.service import seed_catalogue

    seed_catalogue(session, SYSTEM)
    if events:
        from civicgrid.events import rollups

        generate_events(session, count=events, seed=seed, days=DEMO_EVENT_DAYS)
        rollups.rebuild(session)  # the generator writes rows below the ORM: count them once
    creds: dict[str, Any] = {
        "base_url": BASE_URL,
        "jurisdiction": {"code": city.code, "name": city.name, "grids": grids, "seed": seed},
        "users": users,
        "grid_workers": workers,
        "api_keys": {"open311": _create_open311_client(session)},
    }
    from civicgrid.disputes.demo import load_demo_disputes

    load_demo_disputes(session)  # a handful of mediation cases in 椒江区 (disputes/demo.py)
    from civicgrid.demo import datasets as demo_datasets

    demo_datasets.load(session, creds, seed=seed)  # the data platform's datasets (demo/datasets.py)
    audit.record(
        session,
        SYSTEM,
        "demo.load",
        "region",
        city.code,
        extra={"grids": grids, "seed": seed, "regions": len(nodes), "orgs": n_orgs, "users": len(users)},
    )
    creds["credentials_file"] = str(data_dir / CREDENTIALS_FILE)
    write_credentials(data_dir, creds)
    return creds


def _create_orgs(session: Session, city: _Node) -> int:
    specs: list[tuple[str, str, str, OrgKind, str, Platform | None]] = [
        ("331000-bureau", "台州市大数据局", "Taizhou Big Data Bureau", OrgKind.bureau, city.code, None),
        ("331000-centre", city.name + _CENTRE[0], f"{city.name_en} {_CENTRE[1]}", OrgKind.governance_centre,
         city.code, None),
    ]  # fmt: skip
    for county in city.children:
        c6 = county.code[:6]
        specs.append((f"{c6}-centre", county.name + _CENTRE[0], f"{county.name_en} {_CENTRE[1]}",
                      OrgKind.governance_centre, county.code, None))  # fmt: skip
        for platform, (zh, en) in _COUNTY_DEPARTMENTS.items():
            specs.append((f"{c6}-{platform}", county.name + zh, f"{county.name_en} {en}", OrgKind.department,
                          county.code, platform))  # fmt: skip
        for township in county.children:
            t9 = township.code[:9]
            zh_name, en_name = county.name + township.name, f"{township.name_en}, {county.name_en}"
            specs.append((f"{t9}-office", zh_name + _TOWNSHIP_OFFICE[0], f"{en_name} {_TOWNSHIP_OFFICE[1]}",
                          OrgKind.township_office, township.code, None))  # fmt: skip
            for platform, (zh, en) in _TOWNSHIP_STATIONS.items():
                specs.append((f"{t9}-{platform}", zh_name + zh, f"{en_name} {en}", OrgKind.department,
                              township.code, platform))  # fmt: skip
            for village in township.children:
                zh, en = _COMMITTEES[village.kind]
                specs.append((f"{village.code}-vc", village.name + zh, f"{village.name_en} {en}",
                              OrgKind.village_committee, village.code, None))  # fmt: skip
    for code, name, name_en, kind, region_code, org_platform in specs:
        accounts.create_org(
            session, SYSTEM, code=code, name=name, name_en=name_en, kind=kind, region_code=region_code,
            platform=org_platform,
        )  # fmt: skip
    return len(specs)


def _first(node: _Node) -> _Node:
    return min(node.children, key=lambda n: n.code)


def _create_named_users(session: Session, city: _Node) -> list[dict[str, Any]]:
    """One login per role, in the org where that role naturally works; random passwords."""
    counties = {c.code[:6]: c for c in city.children}
    jiaojiang, linhai = counties["331002"], counties["331082"]
    jj_town, lh_town = _first(jiaojiang), _first(linhai)
    jj_village = _first(jj_town)
    jj_place = jiaojiang.name + jj_town.name
    people: list[tuple[str, Role, str, str]] = [
        ("admin", Role.admin, "331000-bureau", "Administers users, orgs, regions and the audit log."),
        ("leader", Role.leader, "331000-centre", "Reads the city's digital cockpit."),
        ("leader.linhai", Role.leader, "331082-centre", f"Leads {linhai.name}'s social governance centre."),
        ("dispatcher", Role.dispatcher, f"{jj_town.code[:9]}-office", f"Dispatches events in {jj_place}."),
        ("dispatcher.linhai", Role.dispatcher, f"{lh_town.code[:9]}-office",
         f"Dispatches events in {linhai.name}{lh_town.name}."),
        ("handler", Role.handler, f"{jj_town.code[:9]}-safety",
         f"Handles events sent to {jj_place}'s 综治中心."),
        ("gridworker", Role.grid_worker, f"{jj_village.code}-vc",
         f"Patrols the grids of {jj_place}{jj_village.name}."),
        ("resident", Role.resident, f"{jj_village.code}-vc", f"Lives in {jj_place}{jj_village.name}."),
        ("steward", Role.data_steward, "331000-bureau", "Runs the public data platform's catalogue."),
        ("consumer", Role.data_consumer, "331002-market", "Uses data for a county department."),
        ("mediator", Role.mediator, f"{jj_town.code[:9]}-office",
         f"Mediates disputes at {jj_place}'s 矛调中心."),
    ]  # fmt: skip
    rng = np.random.default_rng(5)  # demo names do not depend on the geometry seed
    out = []
    for username, role, org_code, note in people:
        password = secrets.token_urlsafe(12)
        user = accounts.create_user(
            session, SYSTEM, username=username, display_name=_person_name(rng), password=password,
            memberships=[(org_code, role)], phone=_phone(rng),
        )  # fmt: skip
        org = accounts.get_org_by_code(session, org_code)
        out.append(
            {"username": user.username, "password": password, "role": str(role), "org": org_code,
             "org_name": org.name, "note": note}
        )  # fmt: skip
    for grid in sorted(jj_village.children, key=lambda n: n.code):
        regions.assign_grid_worker(session, SYSTEM, grid.code, "gridworker")
    return out


OPEN311_CLIENT = "open311"


def _create_open311_client(session: Session) -> str:
    """The account an Open311 client (a city app, a partner system) reports through: a resident
    of the city's big-data bureau (it may report events and read its own), with a year-long key."""
    user = accounts.create_user(
        session,
        SYSTEM,
        username=OPEN311_CLIENT,
        display_name="Open311 接口",
        password=secrets.token_urlsafe(16),  # never used: the client works with its key
        memberships=[("331000-bureau", Role.resident)],
    )
    actor = accounts.actor_for_user(session, user)
    _row, token = accounts.create_api_token(session, actor, name="Open311 demo client", days=365)
    return token


def _create_grid_workers(session: Session, grids: list[_Node], rng: np.random.Generator) -> dict[str, Any]:
    """One grid worker per grid, in bulk: argon2 takes ~50 ms a hash, so every account shares
    one demo password hashed once, and one audit record covers the batch."""
    password = secrets.token_urlsafe(12)
    pw_hash = hash_password(password)
    grid_rows = session.execute(select(Region.code, Region.id).where(Region.level == RegionLevel.grid))
    grid_ids = {code: rid for code, rid in grid_rows}
    org_rows = session.execute(select(Org.code, Org.id).where(Org.kind == OrgKind.village_committee))
    org_ids = {code: oid for code, oid in org_rows}
    grids = sorted(grids, key=lambda g: g.code)
    now = utcnow()
    rows = [
        {"username": f"gw{g.code}", "display_name": _person_name(rng), "phone": _phone(rng),
         "password_hash": pw_hash, "active": True, "created_at": now, "updated_at": now}
        for g in grids
    ]  # fmt: skip
    user_ids: list[int] = []
    for start in range(0, len(rows), _BATCH):
        result = session.execute(
            insert(User).returning(User.id, sort_by_parameter_order=True), rows[start : start + _BATCH]
        )
        user_ids.extend(result.scalars())
    memberships = [
        {
            "user_id": uid,
            "org_id": org_ids[f"{g.parent_code}-vc"],
            "role": Role.grid_worker,
            "created_at": now,
        }
        for uid, g in zip(user_ids, grids, strict=True)
    ]
    assignments = [
        {"grid_id": grid_ids[g.code], "user_id": uid, "assigned_at": now, "version": 1}
        for uid, g in zip(user_ids, grids, strict=True)
    ]
    for start in range(0, len(rows), _BATCH):
        session.execute(insert(Membership), memberships[start : start + _BATCH])
        session.execute(insert(GridAssignment), assignments[start : start + _BATCH])
    audit.record(
        session,
        SYSTEM,
        "user.bulk_create",
        "user",
        "demo-grid-workers",
        extra={"users": len(rows), "memberships": len(memberships), "grid_assignments": len(assignments),
               "role": str(Role.grid_worker), "usernames": f"gw{grids[0].code}…gw{grids[-1].code}"},
    )  # fmt: skip
    return {
        "password": password,
        "count": len(rows),
        "username_pattern": "gw<grid code>",
        "example_usernames": [r["username"] for r in rows[:5]],
    }


def write_credentials(data_dir: Path, creds: dict[str, Any]) -> Path:
    """Write the demo logins readable by the owner only (mode 600), atomically."""
    data_dir.mkdir(parents=True, exist_ok=True)
    path = data_dir / CREDENTIALS_FILE
    tmp = path.with_suffix(".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as fp:
        json.dump(creds, fp, ensure_ascii=False, indent=2)
        fp.flush()
        os.fsync(fp.fileno())
    os.chmod(tmp, 0o600)  # O_CREAT's mode does not apply to a leftover tmp file
    os.replace(tmp, path)
    return path


# ---- printing --------------------------------------------------------------------------------


def _width(text: str) -> int:
    return sum(2 if unicodedata.east_asian_width(ch) in "WF" else 1 for ch in text)


def _pad(text: str, width: int) -> str:
    return text + " " * max(0, width - _width(text))


def _role_zh(role: str) -> str:
    label = ROLE_LABELS[Role(role)]
    token = set_locale("zh_Hans")
    try:
        return gettext(label)
    finally:
        reset_locale(token)


def print_credentials(creds: dict[str, Any]) -> str:
    """The demo logins as a short block for the terminal: Chinese, English in brackets."""
    j = creds.get("jurisdiction", {})
    lines = [
        f"演示辖区 (demo jurisdiction): {j.get('name', '')} · {j.get('grids', '?')} 个网格 (grids) · "
        f"seed {j.get('seed', '?')} · 乡镇及以下为虚构 (synthetic below county level)",
        f"地址 (URL): {creds['base_url']}",
        "",
    ]
    rows = [
        (f"{_role_zh(u['role'])} ({ROLE_LABELS[Role(u['role'])]})", u["username"], u["password"],
         u.get("org_name") or u["org"])
        for u in creds["users"]
    ]  # fmt: skip
    widths = [max(_width(r[i]) for r in rows) + 2 for i in range(3)]
    head = ("角色 (role)", "用户名 (user)", "密码 (password)")
    lines.append("".join(_pad(h, w) for h, w in zip(head, widths, strict=True)) + "单位 (org)")
    lines += [_pad(r[0], widths[0]) + _pad(r[1], widths[1]) + _pad(r[2], widths[2]) + r[3] for r in rows]
    gw = creds.get("grid_workers") or {}
    if gw:
        lines += [
            "",
            f"网格员账号 (grid worker accounts): {gw.get('count', '?')} 个，用户名 (username) "
            f"{gw.get('username_pattern', '')}，共用密码 (shared password): {gw['password']}",
            "  例如 (e.g.): " + ", ".join(gw.get("example_usernames", [])),
        ]
    if (creds.get("api_keys") or {}).get("open311"):
        lines += [
            "",
            f"Open311 接口密钥 (api_key): {creds['api_keys']['open311']}",
            f"  {creds['base_url']}/open311/v2/services.json · 说明 (guide): docs/open311.md",
        ]
    if creds.get("credentials_file"):
        lines += ["", f"已保存到 (saved to): {creds['credentials_file']}"]
    return "\n".join(lines)
