"""Rules of the region tree: lookup, scope checks, import/export, point-to-grid and grid workers."""

from __future__ import annotations

import json
import re
import threading
import time
from collections import defaultdict
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
import shapely
from numpy.typing import ArrayLike, NDArray
from shapely.geometry.base import BaseGeometry
from sqlalchemy import event, func, insert, select, update
from sqlalchemy.orm import Session

from civicgrid.accounts.permissions import Permission, Role
from civicgrid.core import audit
from civicgrid.core.auth import SYSTEM, Actor
from civicgrid.core.db import utcnow
from civicgrid.core.errors import Conflict, Invalid, NotFound, PermissionDenied
from civicgrid.core.i18n import gettext as _
from civicgrid.regions.geometry import (
    AREA_TOLERANCE,
    NOT_FOUND,
    GeometryError,
    GridIndex,
    outside_share,
    overlapping_pairs,
    read_polygon,
)
from civicgrid.regions.models import LEVEL_ORDER, GridAssignment, Region, RegionLevel

if TYPE_CHECKING:
    from civicgrid.accounts.models import User

__all__ = [
    "GridHit",
    "ImportReport",
    "Region",
    "RegionDetail",
    "RegionLevel",
    "ancestors",
    "assign_grid_worker",
    "check_in_scope",
    "children",
    "count_by_level",
    "count_grid_workers",
    "export_features",
    "features_geojson",
    "get",
    "get_by_code",
    "get_in_scope",
    "grid_for_point",
    "grid_index",
    "grid_workers",
    "grids_for_points",
    "grids_of_worker",
    "import_features",
    "lookup_point",
    "parent_code",
    "region_detail",
    "unassign_grid_worker",
]

RANK = {level: i for i, level in enumerate(LEVEL_ORDER)}
# Statistical division codes (GB/T 2260 + township/village extension): the part a level adds
# must not be all zeros, and a child repeats its parent's code up to that part.
CODE_RULES: dict[RegionLevel, tuple[re.Pattern[str], int]] = {
    RegionLevel.city: (re.compile(r"^\d{4}0{8}$"), 0),
    RegionLevel.county: (re.compile(r"^\d{4}(?!00)\d{2}0{6}$"), 4),
    RegionLevel.township: (re.compile(r"^\d{6}(?!000)\d{3}000$"), 6),
    RegionLevel.village: (re.compile(r"^\d{9}(?!000)\d{3}$"), 9),
    RegionLevel.grid: (re.compile(r"^\d{12}(?!000)\d{3}$"), 12),
}
REQUIRED_PROPERTIES = ("code", "name", "level", "parent_code")
BATCH = 1000
COORD_DIGITS = 6  # ~0.1 m: enough for a map, and keeps payloads small


# ---- lookup and scope ---------------------------------------------------------------------


def get(session: Session, region_id: int) -> Region:
    region = session.get(Region, region_id)
    if region is None:
        raise NotFound("No region with this id.")
    return region


def get_by_code(session: Session, code: str) -> Region:
    region = session.scalar(select(Region).where(Region.code == code))
    if region is None:
        raise NotFound("No region with code {region}.", region=code)
    return region


def check_in_scope(actor: Actor, region: Region) -> None:
    """Outside the actor's subtree a region does not exist for them (404, not 403)."""
    if not actor.in_scope(region.path):
        raise NotFound("No region with code {region}.", region=region.code)


def get_in_scope(session: Session, actor: Actor, code: str) -> Region:
    region = get_by_code(session, code)
    check_in_scope(actor, region)
    return region


def parent_code(region: Region) -> str | None:
    """The parent's code, read from the materialised path (no query)."""
    parts = region.path.strip("/").split("/")
    return parts[-2] if len(parts) > 1 else None


LEVEL_LABELS = {
    RegionLevel.city: "city",
    RegionLevel.county: "county",
    RegionLevel.township: "township",
    RegionLevel.village: "village",
    RegionLevel.grid: "grid",
}


def _level(level: RegionLevel) -> str:
    """The level's name in the reader's language, for messages."""
    return _(LEVEL_LABELS[level])


def _require(actor: Actor, permission: Permission) -> None:
    # The system actor (CLI, demo generator) holds no role but may do everything.
    if not (actor.user_id == 0 and actor.role == SYSTEM.role) and not actor.can(permission):
        raise PermissionDenied("Your role does not allow this.")


def _roots(session: Session, actor: Actor) -> list[Region]:
    """The top of what the actor sees: their own region, or every root for the system actor."""
    if actor.region_id:
        return [get(session, actor.region_id)]
    stmt = select(Region).where(Region.parent_id.is_(None)).order_by(Region.code)
    return [r for r in session.scalars(stmt) if actor.in_scope(r.path)]


def children(session: Session, actor: Actor, code: str | None = None) -> list[Region]:
    """Children of the region with `code`; without a code, the actor's own region."""
    if code is None:
        return _roots(session, actor)
    region = get_in_scope(session, actor, code)
    stmt = select(Region).where(Region.parent_id == region.id).order_by(Region.code)
    return list(session.scalars(stmt))


def ancestors(session: Session, region: Region) -> list[Region]:
    """The chain above a region, top (city) first."""
    codes = region.path.strip("/").split("/")[:-1]
    if not codes:
        return []
    rows = session.scalars(select(Region).where(Region.code.in_(codes)))
    return sorted(rows, key=lambda r: RANK[r.level])


@dataclass
class RegionDetail:
    region: Region
    ancestors: list[Region]
    children_count: int
    grid_workers: list[User] | None  # None unless the region is a grid


def count_by_level(session: Session, region: Region) -> dict[str, int]:
    """How many regions of each level lie below a region."""
    stmt = (
        select(Region.level, func.count())
        .where(Region.path.startswith(region.path, autoescape=True), Region.id != region.id)
        .group_by(Region.level)
    )
    return {str(level): n for level, n in session.execute(stmt).all()}


def region_detail(session: Session, actor: Actor, code: str) -> RegionDetail:
    region = get_in_scope(session, actor, code)
    count = session.scalar(select(func.count(Region.id)).where(Region.parent_id == region.id)) or 0
    workers = grid_workers(session, region.id) if region.level == RegionLevel.grid else None
    return RegionDetail(region, ancestors(session, region), count, workers)


# ---- GeoJSON out ------------------------------------------------------------------------------


def _round(coords: Any, digits: int) -> Any:
    if isinstance(coords, float | int):
        return round(float(coords), digits)
    return [_round(c, digits) for c in coords]


def _feature(region: Region, digits: int | None = None) -> dict[str, Any]:
    geometry = json.loads(region.geometry) if region.geometry else None
    if geometry is not None and digits is not None:
        geometry = {"type": geometry["type"], "coordinates": _round(geometry["coordinates"], digits)}
    return {
        "type": "Feature",
        "properties": {
            "code": region.code,
            "name": region.name,
            "name_en": region.name_en,
            "level": str(region.level),
            "parent_code": parent_code(region),
            "synthetic": region.synthetic,
        },
        "geometry": geometry,
    }


def _subtree(session: Session, root: Region | None) -> Iterator[Region]:
    stmt = select(Region).order_by(Region.path)
    if root is not None:
        stmt = stmt.where(Region.path.startswith(root.path, autoescape=True))
    yield from session.scalars(stmt.execution_options(yield_per=BATCH))


def export_features(session: Session, actor: Actor, root_code: str | None = None) -> dict[str, Any]:
    """The subtree under `root_code` (default: the actor's whole scope) as a FeatureCollection,
    parents before children, ready for `import_features`."""
    _require(actor, Permission.regions_read)
    roots: list[Region | None]
    if root_code is not None:
        roots = [get_in_scope(session, actor, root_code)]
    elif actor.region_path == "/":
        roots = [None]
    else:
        roots = list(_roots(session, actor))
    features = [_feature(r) for root in roots for r in _subtree(session, root)]
    return {"type": "FeatureCollection", "features": features}


def features_geojson(
    session: Session, actor: Actor, parent_code: str | None = None, level: RegionLevel | None = None
) -> dict[str, Any]:
    """Boundaries for the map: the children of a region, or with `level` every region of that
    level below it (e.g. all grids of a township); coordinates rounded to 6 decimals."""
    _require(actor, Permission.regions_read)
    parents = _roots(session, actor) if parent_code is None else [get_in_scope(session, actor, parent_code)]
    features: list[dict[str, Any]] = []
    for parent in parents:
        if level is None:
            stmt = select(Region).where(Region.parent_id == parent.id)
        else:
            if RANK[level] <= RANK[parent.level]:
                raise Invalid(
                    "The level {level} is not below {region}.", level=_level(level), region=parent.code
                )
            stmt = select(Region).where(
                Region.path.startswith(parent.path, autoescape=True), Region.level == level
            )
        for region in session.scalars(stmt.order_by(Region.code)):
            features.append(_feature(region, COORD_DIGITS))
    return {"type": "FeatureCollection", "features": features}


# ---- import -------------------------------------------------------------------------------


@dataclass
class ImportReport:
    created: int = 0
    updated: int = 0
    unchanged: int = 0

    def __str__(self) -> str:
        return f"{self.created} created, {self.updated} updated, {self.unchanged} unchanged"


@dataclass
class _Feature:
    index: int
    code: str
    name: str
    name_en: str
    level: RegionLevel
    parent_code: str | None
    geometry_json: str
    geom: BaseGeometry
    synthetic: bool


@dataclass
class _Existing:
    id: int
    code: str
    level: RegionLevel
    path: str
    name: str
    name_en: str
    geometry: str | None
    synthetic: bool

    @property
    def parent_code(self) -> str | None:
        parts = self.path.strip("/").split("/")
        return parts[-2] if len(parts) > 1 else None


@dataclass
class _Problems:
    """Reasons per feature index, each already translated."""

    reasons: dict[int, list[str]] = field(default_factory=lambda: defaultdict(list))
    codes: dict[int, Any] = field(default_factory=dict)

    def add(self, index: int, code: Any, reason: str) -> None:
        self.reasons[index].append(reason)
        self.codes.setdefault(index, code)

    def __contains__(self, index: int) -> bool:
        return index in self.reasons

    def details(self) -> list[dict[str, Any]]:
        out = []
        for i in sorted(self.reasons):
            code = self.codes.get(i)
            label = code if isinstance(code, str) and code else "?"
            message = _(
                "Feature {index} ({code}): {reasons}.",
                index=i,
                code=label,
                reasons="; ".join(self.reasons[i]),
            )
            out.append({"index": i, "code": code, "message": message})
        return out


def _chunks(items: Sequence[Any], size: int = BATCH) -> Iterator[Sequence[Any]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


def _read_feature(i: int, raw: Any, problems: _Problems) -> _Feature | None:
    """One feature's own properties and geometry; None (with problems noted) when unusable."""
    if not isinstance(raw, dict) or raw.get("type") != "Feature":
        problems.add(i, None, _("it is not a GeoJSON Feature"))
        return None
    props = raw.get("properties")
    if not isinstance(props, dict):
        props = {}
    code = props.get("code")
    missing = [k for k in REQUIRED_PROPERTIES if k not in props]
    if missing:
        problems.add(i, code, _("the properties {names} are missing", names=", ".join(missing)))
    if not isinstance(code, str) or not code:
        if "code" not in missing:
            problems.add(i, code, _("the code must be a string of digits"))
        code = None
    synthetic = props.get("synthetic", False)  # optional: generated data (the demo) says so
    if not isinstance(synthetic, bool):
        problems.add(i, code, _("synthetic must be true or false"))
    name = props.get("name")
    if "name" not in missing and (not isinstance(name, str) or not name.strip() or len(name) > 100):
        problems.add(i, code, _("the name must be text of 1 to 100 characters"))
    name_en = props.get("name_en") or ""
    if not isinstance(name_en, str) or len(name_en) > 200:
        problems.add(i, code, _("the English name must be text of at most 200 characters"))
        name_en = ""
    level: RegionLevel | None = None
    raw_level = props.get("level")
    if "level" not in missing:
        try:
            level = RegionLevel(str(raw_level))
        except ValueError:
            problems.add(
                i,
                code,
                _(
                    "the level {level} is not one of city, county, township, village, grid",
                    level=str(raw_level),
                ),
            )
    parent = props.get("parent_code")
    if parent is not None and (not isinstance(parent, str) or not parent):
        problems.add(i, code, _("the parent code must be a string or null"))
        parent = None
    if level is not None and "parent_code" not in missing:
        if level == RegionLevel.city and parent is not None:
            problems.add(i, code, _("a city has no parent: parent_code must be null"))
        elif level != RegionLevel.city and parent is None:
            problems.add(i, code, _("parent_code is required below the city level"))
    if code is not None and level is not None and not CODE_RULES[level][0].match(code):
        problems.add(
            i, code, _("the code {code} is not a valid {level} code", code=code, level=_level(level))
        )
    try:
        geom = read_polygon(raw.get("geometry"))
    except GeometryError as exc:
        problems.add(i, code, _(exc.message, **exc.params))
        geom = None
    if code is None or level is None or geom is None:
        return None
    # Kept despite other problems (e.g. its name) so that its geometry is checked as well and
    # every reason is reported at once; any problem still rejects the file.
    geometry = raw["geometry"]
    geometry_json = json.dumps(
        {"type": geometry["type"], "coordinates": geometry["coordinates"]}, separators=(",", ":")
    )
    return _Feature(
        i,
        code,
        str(name or "").strip(),
        name_en.strip(),
        level,
        parent,
        geometry_json,
        geom,
        synthetic is True,
    )


def _raw_code(raw: Any) -> str | None:
    props = raw.get("properties") if isinstance(raw, dict) else None
    code = props.get("code") if isinstance(props, dict) else None
    return code if isinstance(code, str) and code else None


def _load_existing(session: Session, codes: Iterable[str]) -> dict[str, _Existing]:
    out: dict[str, _Existing] = {}
    wanted = set(codes)
    cols = (
        Region.id,
        Region.code,
        Region.level,
        Region.path,
        Region.name,
        Region.name_en,
        Region.geometry,
        Region.synthetic,
    )
    if len(wanted) > 2 * BATCH:
        # A large file (the demo, a re-import) touches most of the table: one scan beats many
        # IN lists, which PostgreSQL plans badly right after a bulk insert (stale statistics).
        for row in session.execute(select(*cols)):
            if row.code in wanted:
                out[row.code] = _Existing(*row)
        return out
    for chunk in _chunks(sorted(wanted)):
        for row in session.execute(select(*cols).where(Region.code.in_(chunk))):
            out[row.code] = _Existing(*row)
    return out


def _load_children(
    session: Session, parent_ids: Iterable[int]
) -> list[tuple[int, str, int | None, str | None]]:
    """(id, code, parent_id, geometry) of the existing children of these regions."""
    rows: list[tuple[int, str, int | None, str | None]] = []
    cols = (Region.id, Region.code, Region.parent_id, Region.geometry)
    for chunk in _chunks(sorted(set(parent_ids))):
        rows.extend(
            (r[0], r[1], r[2], r[3])
            for r in session.execute(select(*cols).where(Region.parent_id.in_(chunk)))
        )
    return rows


def _geometry(text: str | None) -> BaseGeometry | None:
    if not text:
        return None
    try:
        geom = shapely.from_geojson(text)
    except shapely.errors.GEOSException:
        return None
    return geom if isinstance(geom, BaseGeometry) and not geom.is_empty else None


def _columns(f: _Feature) -> dict[str, Any]:
    c = f.geom.centroid
    min_lon, min_lat, max_lon, max_lat = f.geom.bounds
    return {
        "name": f.name,
        "name_en": f.name_en,
        "geometry": f.geometry_json,
        "centroid_lon": c.x,
        "centroid_lat": c.y,
        "min_lon": min_lon,
        "min_lat": min_lat,
        "max_lon": max_lon,
        "max_lat": max_lat,
        "synthetic": f.synthetic,
    }


def import_features(session: Session, actor: Actor, collection: dict[str, Any]) -> ImportReport:
    """Create or update regions from a GeoJSON FeatureCollection, in any order. Everything is
    validated first; any bad feature rejects the whole file (Invalid, one detail per feature)."""
    _require(actor, Permission.regions_manage)
    if not isinstance(collection, dict) or collection.get("type") != "FeatureCollection":
        raise Invalid("The file is not a GeoJSON FeatureCollection.")
    raw_features = collection.get("features")
    if not isinstance(raw_features, list) or not raw_features:
        raise Invalid("The FeatureCollection has no features.")

    problems = _Problems()
    parsed = [_read_feature(i, raw, problems) for i, raw in enumerate(raw_features)]
    first_at: dict[str, int] = {}
    for i, (raw, f) in enumerate(zip(raw_features, parsed, strict=True)):
        code = f.code if f is not None else _raw_code(raw)
        if code is None:
            continue
        if code in first_at:
            problems.add(
                i,
                code,
                _("the code {code} already appears in feature {first}", code=code, first=first_at[code]),
            )
        else:
            first_at[code] = i
    feats = {f.code: f for f in parsed if f is not None and first_at[f.code] == f.index}
    all_file_codes = set(first_at)

    parent_codes = {f.parent_code for f in feats.values() if f.parent_code}
    existing = _load_existing(session, set(feats) | parent_codes)

    # Structure: parent known, level one below it, unchanged parent/level for existing codes, scope.
    paths: dict[str, str] = {}
    for f in sorted(feats.values(), key=lambda f: RANK[f.level]):
        old = existing.get(f.code)
        if old is not None:
            if old.level != f.level:
                problems.add(
                    f.index,
                    f.code,
                    _(
                        "its level cannot change from {old} to {new}",
                        old=_level(old.level),
                        new=_level(f.level),
                    ),
                )
            if old.parent_code != f.parent_code:
                problems.add(
                    f.index,
                    f.code,
                    _(
                        "its parent cannot change from {old} to {new}",
                        old=old.parent_code or "-",
                        new=f.parent_code or "-",
                    ),
                )
        parent_level: RegionLevel | None = None
        parent_path = "/"
        if f.parent_code is not None:
            in_file = feats.get(f.parent_code)
            in_db = existing.get(f.parent_code)
            if in_file is not None:
                parent_level = in_file.level
                parent_path = paths.get(f.parent_code, "")
            elif in_db is not None:
                parent_level, parent_path = in_db.level, in_db.path
            elif f.parent_code in all_file_codes:
                parent_path = ""  # the parent is in the file but bad: its own problems are reported
            else:
                problems.add(
                    f.index,
                    f.code,
                    _(
                        "its parent code {parent} is neither in the file nor in the database",
                        parent=f.parent_code,
                    ),
                )
                parent_path = ""
            if parent_level is not None and RANK[f.level] != RANK[parent_level] + 1:
                problems.add(
                    f.index,
                    f.code,
                    _(
                        "a {level} cannot be placed under the {parent_level} {parent}",
                        level=_level(f.level),
                        parent_level=_level(parent_level),
                        parent=f.parent_code,
                    ),
                )
            elif f.code[: CODE_RULES[f.level][1]] != f.parent_code[: CODE_RULES[f.level][1]]:
                # Checked only under a parent of the right level: otherwise the level is the error.
                problems.add(
                    f.index,
                    f.code,
                    _(
                        "the code {code} does not extend its parent's code {parent}",
                        code=f.code,
                        parent=f.parent_code,
                    ),
                )
        if parent_path and not actor.in_scope(parent_path):
            problems.add(f.index, f.code, _("it lies outside your area of responsibility"))
        if parent_path:
            paths[f.code] = parent_path + f.code + "/"

    ok = {c: f for c, f in feats.items() if c in paths}
    _check_geometry(session, ok, existing, all_file_codes, problems)

    if problems.reasons:
        raise Invalid(
            "The import was rejected: {count} of {total} features have problems. Nothing was saved.",
            count=len(problems.reasons),
            total=len(raw_features),
            details=problems.details(),
        )
    report = _write(session, feats, existing, paths)
    top = min(feats.values(), key=lambda f: (RANK[f.level], f.code))
    audit.record(
        session,
        actor,
        "regions.import",
        "region",
        top.code,
        extra={
            "features": len(feats),
            "created": report.created,
            "updated": report.updated,
            "unchanged": report.unchanged,
        },
    )
    return report


@dataclass
class _Siblings:
    """Regions of one level, file features (owner set) and existing ones (owner None)."""

    geoms: list[BaseGeometry] = field(default_factory=list)
    parents: list[str] = field(default_factory=list)
    codes: list[str] = field(default_factory=list)
    owners: list[_Feature | None] = field(default_factory=list)

    def add(self, geom: BaseGeometry, parent: str, code: str, owner: _Feature | None) -> None:
        self.geoms.append(geom)
        self.parents.append(parent)
        self.codes.append(code)
        self.owners.append(owner)


def _check_geometry(
    session: Session,
    feats: dict[str, _Feature],
    existing: dict[str, _Existing],
    file_codes: set[str],
    problems: _Problems,
) -> None:
    """Children inside parents (both directions of an update), siblings not overlapping."""
    parent_geoms: dict[str, BaseGeometry | None] = {}
    pairs: list[tuple[_Feature, BaseGeometry]] = []
    for f in feats.values():
        if f.parent_code is None or (f.parent_code in file_codes and f.parent_code not in feats):
            continue  # a bad parent in the file has its own problems; its geometry is not trusted
        if f.parent_code not in parent_geoms:
            in_file = feats.get(f.parent_code)
            old = existing.get(f.parent_code)
            parent_geoms[f.parent_code] = (
                in_file.geom if in_file else _geometry(old.geometry) if old else None
            )
        pg = parent_geoms[f.parent_code]
        if pg is not None:
            pairs.append((f, pg))
    shares = outside_share([f.geom for f, _p in pairs], [p for _f, p in pairs])
    for (f, _p), share in zip(pairs, shares, strict=True):
        if share > AREA_TOLERANCE:
            problems.add(
                f.index,
                f.code,
                _(
                    "it lies outside its parent {parent} ({share} of its area)",
                    parent=f.parent_code,
                    share=f"{share:.2%}",
                ),
            )

    # Existing regions not in the file take part as siblings and as children of updated parents.
    id_to_code = {e.id: c for c, e in existing.items()}
    parents = {f.parent_code for f in feats.values()}
    watched = {e.id for c, e in existing.items() if c in parents or c in feats}
    others = [row for row in _load_children(session, watched) if row[1] not in file_codes]

    by_level: dict[RegionLevel, _Siblings] = defaultdict(_Siblings)
    for f in feats.values():
        if f.parent_code is not None:
            by_level[f.level].add(f.geom, f.parent_code, f.code, f)
    kids: list[tuple[str, BaseGeometry, _Feature]] = []
    for _id, code, parent_id, text in others:
        geom = _geometry(text)
        pcode = id_to_code.get(parent_id) if parent_id is not None else None
        if geom is None or pcode is None:
            continue
        if pcode in feats:
            kids.append((code, geom, feats[pcode]))
        by_level[LEVEL_ORDER[RANK[existing[pcode].level] + 1]].add(geom, pcode, code, None)

    # One STRtree per level, pairs kept only within a parent: the same answer as a tree per
    # sibling group, with one vectorised query instead of thousands of small ones.
    for sib in by_level.values():
        for i, j, share in overlapping_pairs(sib.geoms, sib.parents):
            for me, other in ((i, j), (j, i)):
                owner = sib.owners[me]
                if owner is not None:
                    problems.add(
                        owner.index,
                        owner.code,
                        _(
                            "it overlaps its sibling {other} ({share} of the smaller area)",
                            other=sib.codes[other],
                            share=f"{share:.2%}",
                        ),
                    )

    kid_shares = outside_share([k[1] for k in kids], [k[2].geom for k in kids])
    for (code, _g, parent), share in zip(kids, kid_shares, strict=True):
        if share > AREA_TOLERANCE:
            problems.add(
                parent.index, parent.code, _("its existing child {child} would lie outside it", child=code)
            )


def _write(
    session: Session, feats: dict[str, _Feature], existing: dict[str, _Existing], paths: dict[str, str]
) -> ImportReport:
    report = ImportReport()
    now = utcnow()
    session.info[_CHANGED] = True
    ids = {code: e.id for code, e in existing.items()}
    changes: list[dict[str, Any]] = []
    for level in LEVEL_ORDER:
        rows = []
        for f in feats.values():
            if f.level != level:
                continue
            cols = _columns(f)
            old = existing.get(f.code)
            if old is None:
                rows.append(
                    {
                        "code": f.code,
                        "level": f.level,
                        "path": paths[f.code],
                        "parent_id": ids[f.parent_code] if f.parent_code else None,
                        "created_at": now,
                        "updated_at": now,
                        **cols,
                    }
                )
            elif (old.name, old.name_en, old.geometry, old.synthetic) != (
                f.name,
                f.name_en,
                f.geometry_json,
                f.synthetic,
            ):
                changes.append({"id": old.id, "updated_at": now, **cols})
            else:
                report.unchanged += 1
        for chunk in _chunks(rows):
            result = session.execute(
                insert(Region).returning(Region.id, Region.code, sort_by_parameter_order=True), list(chunk)
            )
            ids.update({code: rid for rid, code in result})
        report.created += len(rows)
    for chunk in _chunks(changes):
        session.execute(update(Region), list(chunk))
    report.updated = len(changes)
    # Bulk statements bypass the identity map: reload any Region the caller already holds.
    changed = {c["id"] for c in changes}
    for obj in list(session.identity_map.values()):
        if isinstance(obj, Region) and obj.id in changed:
            session.expire(obj)
    _bump(session)
    return report


# ---- point → grid -------------------------------------------------------------------------

# One index per database (keyed by its URL). A write to regions in this process bumps the
# database's version (on flush, commit and rollback); writes by other processes are noticed
# through a fingerprint of the region rows, re-read at most every FINGERPRINT_SECONDS.
FINGERPRINT_SECONDS = 5.0
MAX_INDEXES = 8
_CHANGED = "civicgrid.regions.changed"


@dataclass(frozen=True)
class RegionRef:
    """What intake needs of a region, cached per grid with the index. Id, code, level and path
    never change once a region exists; an import may rename it, which other processes notice
    at their next fingerprint check (the name is used only in messages)."""

    id: int
    code: str
    name: str
    level: RegionLevel
    path: str


@dataclass
class _CachedIndex:
    index: GridIndex
    version: int
    fingerprint: tuple[Any, ...]
    checked: float
    # grid id → the grid's chain city … grid, loaded with the index (`_places`); dropped with it
    places: dict[int, tuple[RegionRef, ...]] = field(default_factory=dict)


_indexes: dict[str, _CachedIndex] = {}
_versions: dict[str, int] = defaultdict(int)
_build_lock = threading.Lock()


def _db_key(session: Session) -> str:
    return session.get_bind().engine.url.render_as_string(hide_password=True)


def _bump(session: Session) -> None:
    _versions[_db_key(session)] += 1


@event.listens_for(Session, "after_flush")
def _note_region_writes(session: Session, _ctx: Any) -> None:
    if session.info.get(_CHANGED) or any(
        isinstance(o, Region) for o in (*session.new, *session.dirty, *session.deleted)
    ):
        session.info[_CHANGED] = True
        _bump(session)


@event.listens_for(Session, "after_commit")
@event.listens_for(Session, "after_rollback")
def _end_region_writes(session: Session) -> None:
    if session.info.pop(_CHANGED, False):
        _bump(session)


def _fingerprint(session: Session) -> tuple[Any, ...]:
    # Every level, not only grids: the cached places carry the ancestors' names too.
    row = session.execute(
        select(func.count(Region.id), func.max(Region.id), func.max(Region.updated_at))
    ).one()
    return (row[0], row[1], str(row[2]))


def _places(session: Session) -> dict[int, tuple[RegionRef, ...]]:
    """Every grid's chain city … grid, from one query over the regions (no geometry), so that
    no intake waits on a query for a grid's first report after a (re)start."""
    refs = {
        r.code: RegionRef(r.id, r.code, r.name, RegionLevel(r.level), r.path)
        for r in session.execute(select(Region.id, Region.code, Region.name, Region.level, Region.path))
    }
    places = {}
    for ref in refs.values():
        if ref.level == RegionLevel.grid:
            chain = [refs[c] for c in ref.path.strip("/").split("/") if c in refs]
            places[ref.id] = tuple(sorted(chain, key=lambda r: RANK[r.level]))
    return places


def grid_index(session: Session) -> GridIndex:
    """The point → grid index of this session's database, rebuilt when grids changed."""
    key = _db_key(session)
    now = time.monotonic()
    version = _versions[key]
    cached = _indexes.get(key)
    if cached is not None and cached.version == version and now - cached.checked < FINGERPRINT_SECONDS:
        return cached.index
    fingerprint = _fingerprint(session)
    if cached is not None and cached.version == version and cached.fingerprint == fingerprint:
        cached.checked = now
        return cached.index
    with _build_lock:
        rows = session.execute(
            select(Region.id, Region.code, Region.geometry).where(
                Region.level == RegionLevel.grid, Region.geometry.is_not(None)
            )
        ).all()
        geoms = shapely.from_geojson([r[2] for r in rows]) if rows else []
        index = GridIndex.build([(r[0], r[1], g) for r, g in zip(rows, geoms, strict=True)])
        _indexes.pop(key, None)
        _indexes[key] = _CachedIndex(index, version, fingerprint, now, _places(session))
        while len(_indexes) > MAX_INDEXES:  # e.g. a test run opening many databases
            _indexes.pop(next(iter(_indexes)))
    return index


@dataclass
class GridHit:
    grid: Region
    ancestors: list[Region]  # city → village


def _outside(lon: float, lat: float) -> Invalid:
    return Invalid(
        "The point ({lon}, {lat}) lies outside the jurisdiction.",
        error_code="outside_jurisdiction",
        lon=f"{lon:.6f}",
        lat=f"{lat:.6f}",
    )


def grid_for_point(session: Session, lon: float, lat: float) -> GridHit:
    """The grid holding a WGS84 point, and its ancestors. On an edge shared by two grids the
    one with the smaller code wins, so the answer never depends on insertion order."""
    if not (np.isfinite(lon) and np.isfinite(lat) and -180 <= lon <= 180 and -90 <= lat <= 90):
        raise _outside(lon, lat)
    index = grid_index(session)
    pos = index.position(lon, lat)
    grid = session.get(Region, int(index.ids[pos])) if pos != NOT_FOUND else None
    if grid is None:
        raise _outside(lon, lat)
    return GridHit(grid, ancestors(session, grid))


def locate(session: Session, lon: float, lat: float) -> tuple[RegionRef, ...]:
    """`grid_for_point` for intake: the grid's chain, city first and grid last, as cached
    references — no query once a grid has been seen (regions change only by import, which
    drops the cache in this process at once and in others within FINGERPRINT_SECONDS)."""
    found = locate_many(session, [(lon, lat)])[0]
    if isinstance(found, Invalid):
        raise found
    return found


def locate_many(
    session: Session, points: Sequence[tuple[float, float]]
) -> list[tuple[RegionRef, ...] | Invalid]:
    """`locate` of several points, with one tree query for all of them (a batch of reports);
    an Invalid in the place of a point outside the jurisdiction."""
    lons = np.asarray([p[0] for p in points], dtype=np.float64)
    lats = np.asarray([p[1] for p in points], dtype=np.float64)
    valid = np.isfinite(lons) & np.isfinite(lats) & (np.abs(lons) <= 180) & (np.abs(lats) <= 90)
    grid_ids = np.full(lons.shape, NOT_FOUND, dtype=np.int64)
    if valid.any():
        grid_ids[valid] = grids_for_points(session, lons[valid], lats[valid])
    cached = _indexes.get(_db_key(session))  # the grid chains, loaded with the index
    places = cached.places if cached is not None else {}
    out: list[tuple[RegionRef, ...] | Invalid] = []
    for (lon, lat), grid_id in zip(points, [int(g) for g in grid_ids], strict=True):
        chain = places.get(grid_id) if grid_id != NOT_FOUND else None
        if chain is None and grid_id != NOT_FOUND:
            grid = session.get(Region, grid_id)
            if grid is not None:
                chain = tuple(
                    RegionRef(r.id, r.code, r.name, r.level, r.path)
                    for r in [*ancestors(session, grid), grid]
                )
                places[grid_id] = chain
        out.append(chain if chain is not None else _outside(lon, lat))
    return out


def grids_for_points(session: Session, lons: ArrayLike, lats: ArrayLike) -> NDArray[np.int64]:
    """Region ids of the grids holding each point (-1 outside every grid), vectorised."""
    index = grid_index(session)
    pos = index.positions(lons, lats)
    out = np.full(pos.shape, NOT_FOUND, dtype=np.int64)
    found = pos != NOT_FOUND
    out[found] = index.ids[pos[found]]
    return out


def lookup_point(session: Session, actor: Actor, lon: float, lat: float) -> GridHit:
    """`grid_for_point` seen by an actor: a grid outside their scope is outside their jurisdiction."""
    _require(actor, Permission.regions_read)
    hit = grid_for_point(session, lon, lat)
    if not actor.in_scope(hit.grid.path):
        raise _outside(lon, lat)
    return hit


# ---- grid workers -------------------------------------------------------------------------


def _grid_in_scope(session: Session, actor: Actor, code: str) -> Region:
    grid = get_in_scope(session, actor, code)
    if grid.level != RegionLevel.grid:
        raise Invalid("{region} is a {level}, not a grid.", region=code, level=_level(grid.level))
    return grid


def grid_workers(session: Session, grid_id: int) -> list[User]:
    """Users assigned to a grid, in the order they were assigned."""
    from civicgrid.accounts import service as accounts

    stmt = (
        select(GridAssignment.user_id)
        .where(GridAssignment.grid_id == grid_id)
        .order_by(GridAssignment.assigned_at, GridAssignment.id)
    )
    users = [accounts.get_user(session, uid) for uid in session.scalars(stmt)]
    return [u for u in users if u.active]


def grids_of_worker(session: Session, user_id: int) -> list[Region]:
    """The grids a user is assigned to, by code."""
    stmt = (
        select(Region)
        .join(GridAssignment, GridAssignment.grid_id == Region.id)
        .where(GridAssignment.user_id == user_id)
        .order_by(Region.code)
    )
    return list(session.scalars(stmt))


def count_grid_workers(session: Session, region: Region) -> int:
    """Distinct grid workers assigned anywhere in the subtree."""
    stmt = (
        select(func.count(func.distinct(GridAssignment.user_id)))
        .join(Region, GridAssignment.grid_id == Region.id)
        .where(Region.path.startswith(region.path, autoescape=True))
    )
    return session.scalar(stmt) or 0


def assign_grid_worker(session: Session, actor: Actor, grid_code: str, username: str) -> GridAssignment:
    """Assign a user who is a grid worker of an org over this grid (the grid or an ancestor)."""
    from civicgrid.accounts import service as accounts

    _require(actor, Permission.grids_assign)
    grid = _grid_in_scope(session, actor, grid_code)
    user = accounts.get_user_by_username(session, username)
    if user is None or not user.active:
        raise NotFound("No active user named {username}.", username=username)
    covers = any(
        m.role == Role.grid_worker and grid.path.startswith(get(session, m.org.region_id).path)
        for m in user.memberships
    )
    if not covers:
        raise Invalid(
            "{username} is not a grid worker of an organisation covering grid {region}.",
            username=user.username,
            region=grid.code,
        )
    taken = session.scalar(
        select(GridAssignment.id).where(GridAssignment.grid_id == grid.id, GridAssignment.user_id == user.id)
    )
    if taken is not None:
        raise Conflict(
            "{username} is already assigned to grid {region}.", username=user.username, region=grid.code
        )
    row = GridAssignment(grid_id=grid.id, user_id=user.id)
    session.add(row)
    session.flush()
    audit.record(
        session, actor, "grid.assign", "region", grid.id, after={"grid": grid.code, "username": user.username}
    )
    return row


def unassign_grid_worker(session: Session, actor: Actor, grid_code: str, username: str) -> None:
    from civicgrid.accounts import service as accounts

    _require(actor, Permission.grids_assign)
    grid = _grid_in_scope(session, actor, grid_code)
    user = accounts.get_user_by_username(session, username)
    row = None
    if user is not None:
        row = session.scalar(
            select(GridAssignment).where(GridAssignment.grid_id == grid.id, GridAssignment.user_id == user.id)
        )
    if row is None:
        raise NotFound("{username} is not assigned to grid {region}.", username=username, region=grid.code)
    session.delete(row)
    session.flush()
    audit.record(
        session, actor, "grid.unassign", "region", grid.id, before={"grid": grid.code, "username": username}
    )
