"""Pages of the region tree: the offline grid map and the region side panel (htmx partial)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Request
from fastapi.responses import Response

from civicgrid.accounts.permissions import Permission
from civicgrid.core.auth import Actor
from civicgrid.core.deps import SessionDep, requires
from civicgrid.core.masking import mask_phone
from civicgrid.core.web import render
from civicgrid.regions import service as regions
from civicgrid.regions.models import LEVEL_ORDER, RegionLevel

router = APIRouter(include_in_schema=False)
P = Permission
Reader = Annotated[Actor, requires(P.regions_read)]


def sub_level(level: RegionLevel) -> str:
    """The level drawn as outlines under a region of `level` (none below villages)."""
    i = LEVEL_ORDER.index(level)
    below = LEVEL_ORDER[i + 1] if i + 1 < len(LEVEL_ORDER) else None
    return str(below) if below is not None and below != RegionLevel.grid else ""


@router.get("/regions/map")
def map_page(request: Request, session: SessionDep, actor: Reader, code: str = "") -> Response:
    """The grids under a region (default: the actor's own) drawn over the outlines of its sub-areas;
    a grid's code opens its village with the grid selected."""
    region = regions.get_in_scope(session, actor, code) if code else regions.get(session, actor.region_id)
    selected = ""
    if region.level == RegionLevel.grid and (parent_code := regions.parent_code(region)):
        village = regions.get_by_code(session, parent_code)
        if actor.in_scope(village.path):
            selected, region = region.code, village
    return render(
        request,
        "regions/map.html",
        region=region,
        ancestors=[*regions.ancestors(session, region), region],
        children=regions.children(session, actor, region.code),
        outline_level=sub_level(region.level),
        selected=selected,
    )


@router.get("/regions/{code}/panel")
def region_panel(request: Request, session: SessionDep, actor: Reader, code: str) -> Response:
    """The side panel for one region: name, code, parent chain and, for a grid, its grid workers."""
    detail = regions.region_detail(session, actor, code)
    clear = actor.can(P.users_manage)
    workers = [
        {
            "display_name": w.display_name,
            "phone": (w.phone if clear else mask_phone(w.phone)) if w.phone else "",
        }
        for w in detail.grid_workers or []
    ]
    return render(
        request, "regions/_panel.html", region=detail.region, ancestors=detail.ancestors, workers=workers
    )
