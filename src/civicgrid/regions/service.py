"""Rules of the region tree: lookup, scope checks, import/export and point-to-grid."""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.orm import Session

from civicgrid.core.auth import Actor
from civicgrid.core.errors import NotFound
from civicgrid.regions.models import Region, RegionLevel

__all__ = ["Region", "RegionLevel", "check_in_scope", "get", "get_by_code"]


def get(session: Session, region_id: int) -> Region:
    region = session.get(Region, region_id)
    if region is None:
        raise NotFound("No region with this id.")
    return region


def get_by_code(session: Session, code: str) -> Region:
    region = session.scalar(select(Region).where(Region.code == code))
    if region is None:
        raise NotFound("No region with code {code}.", code=code)
    return region


def check_in_scope(actor: Actor, region: Region) -> None:
    """Outside the actor's subtree a region does not exist for them (404, not 403)."""
    if not actor.in_scope(region.path):
        raise NotFound("No region with code {code}.", code=region.code)
