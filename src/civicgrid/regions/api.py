"""JSON routes of the region tree under /api/v1/regions: thin calls into `regions.service`."""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated, Any

from fastapi import APIRouter, Query, Response, status
from fastapi.responses import JSONResponse

from civicgrid.accounts.permissions import Permission
from civicgrid.core.auth import Actor
from civicgrid.core.deps import SessionDep, requires
from civicgrid.core.masking import mask_name
from civicgrid.regions import service
from civicgrid.regions.models import Region, RegionLevel
from civicgrid.regions.schemas import (
    FeatureCollectionIn,
    GridWorkerOut,
    ImportReportOut,
    LookupOut,
    RegionDetailOut,
    RegionOut,
    WorkerIn,
)

if TYPE_CHECKING:
    from civicgrid.accounts.models import User

router = APIRouter(prefix="/api/v1/regions", tags=["regions"])
P = Permission
GEOJSON = "application/geo+json"

Reader = Annotated[Actor, requires(P.regions_read)]


def region_out(region: Region) -> RegionOut:
    has_centroid = region.centroid_lon is not None and region.centroid_lat is not None
    bounds = (region.min_lon, region.min_lat, region.max_lon, region.max_lat)
    return RegionOut(
        code=region.code,
        name=region.name,
        name_en=region.name_en,
        level=region.level,
        parent_code=service.parent_code(region),
        centroid=(region.centroid_lon, region.centroid_lat) if has_centroid else None,
        bbox=bounds if None not in bounds else None,
        synthetic=region.synthetic,
    )


def worker_out(user: User, actor: Actor) -> GridWorkerOut:
    clear = actor.can(P.users_manage) or user.id == actor.user_id
    return GridWorkerOut(
        username=user.username, display_name=user.display_name if clear else mask_name(user.display_name)
    )


def geojson_response(collection: dict[str, Any]) -> JSONResponse:
    return JSONResponse(collection, media_type=GEOJSON)


@router.get("", response_model=list[RegionOut])
def list_children(session: SessionDep, actor: Reader, parent: str | None = None) -> list[RegionOut]:
    """Children of the region `parent`; without it, the actor's own region."""
    return [region_out(r) for r in service.children(session, actor, parent)]


@router.get("/lookup", response_model=LookupOut)
def lookup(
    session: SessionDep,
    actor: Reader,
    lon: Annotated[float, Query(ge=-180, le=180)],
    lat: Annotated[float, Query(ge=-90, le=90)],
) -> LookupOut:
    """The grid holding a WGS84 point, with its ancestors (422 outside_jurisdiction otherwise)."""
    hit = service.lookup_point(session, actor, lon, lat)
    return LookupOut(grid=region_out(hit.grid), ancestors=[region_out(a) for a in hit.ancestors])


@router.get("/geojson", response_class=JSONResponse)
def geojson(
    session: SessionDep, actor: Reader, parent: str | None = None, level: RegionLevel | None = None
) -> JSONResponse:
    """Boundaries for the map: children of `parent`, or every `level` region below it."""
    return geojson_response(service.features_geojson(session, actor, parent, level))


@router.get("/export", response_class=JSONResponse)
def export(session: SessionDep, actor: Reader, root: str | None = None) -> JSONResponse:
    """The subtree as a FeatureCollection that /import accepts."""
    return geojson_response(service.export_features(session, actor, root))


@router.post("/import", response_model=ImportReportOut)
def import_features(
    body: FeatureCollectionIn, session: SessionDep, actor: Annotated[Actor, requires(P.regions_manage)]
) -> ImportReportOut:
    """Create or update regions from a FeatureCollection; 422 with one detail per bad feature."""
    report = service.import_features(session, actor, body.model_dump())
    return ImportReportOut(created=report.created, updated=report.updated, unchanged=report.unchanged)


@router.get("/{code}", response_model=RegionDetailOut)
def detail(code: str, session: SessionDep, actor: Reader) -> RegionDetailOut:
    d = service.region_detail(session, actor, code)
    workers = None if d.grid_workers is None else [worker_out(u, actor) for u in d.grid_workers]
    return RegionDetailOut(
        **region_out(d.region).model_dump(),
        ancestors=[region_out(a) for a in d.ancestors],
        children_count=d.children_count,
        grid_workers=workers,
    )


@router.post("/{code}/workers", response_model=list[GridWorkerOut], status_code=status.HTTP_201_CREATED)
def assign_worker(
    code: str, body: WorkerIn, session: SessionDep, actor: Annotated[Actor, requires(P.grids_assign)]
) -> list[GridWorkerOut]:
    """Assign a grid worker; returns the grid's workers."""
    assignment = service.assign_grid_worker(session, actor, code, body.username)
    return [worker_out(u, actor) for u in service.grid_workers(session, assignment.grid_id)]


@router.delete("/{code}/workers/{username}", status_code=status.HTTP_204_NO_CONTENT)
def unassign_worker(
    code: str, username: str, session: SessionDep, actor: Annotated[Actor, requires(P.grids_assign)]
) -> Response:
    service.unassign_grid_worker(session, actor, code, username)
    return Response(status_code=status.HTTP_204_NO_CONTENT)
