"""Pydantic shapes of the regions API."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, Field

from civicgrid.regions.models import RegionLevel


class RegionOut(BaseModel):
    code: str
    name: str
    name_en: str
    level: RegionLevel
    parent_code: str | None
    centroid: tuple[float, float] | None = Field(description="[lon, lat]")
    bbox: tuple[float, float, float, float] | None = Field(description="[min_lon, min_lat, max_lon, max_lat]")
    synthetic: bool


class GridWorkerOut(BaseModel):
    username: str
    display_name: str  # masked unless the reader may manage users


class RegionDetailOut(RegionOut):
    ancestors: list[RegionOut]
    children_count: int
    grid_workers: list[GridWorkerOut] | None = None


class LookupOut(BaseModel):
    grid: RegionOut
    ancestors: list[RegionOut]


class FeatureCollectionIn(BaseModel):
    """A GeoJSON FeatureCollection; each feature is checked by the import itself."""

    type: Literal["FeatureCollection"]
    features: list[dict[str, Any]]


class ImportReportOut(BaseModel):
    created: int
    updated: int
    unchanged: int


class WorkerIn(BaseModel):
    username: str = Field(min_length=1, max_length=64)
