"""The administrative tree city → county → township → village → grid, and grid workers."""

from __future__ import annotations

import enum
from datetime import datetime

from sqlalchemy import Enum, Float, ForeignKey, Index, Integer, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column, relationship

from civicgrid.core.db import Base, TimestampMixin, utcnow


class RegionLevel(enum.StrEnum):
    city = "city"
    county = "county"
    township = "township"
    village = "village"
    grid = "grid"


LEVEL_ORDER = [
    RegionLevel.city,
    RegionLevel.county,
    RegionLevel.township,
    RegionLevel.village,
    RegionLevel.grid,
]


class Region(TimestampMixin, Base):
    __tablename__ = "region"
    __table_args__ = (Index("ix_region_parent_level", "parent_id", "level"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    code: Mapped[str] = mapped_column(String(24), unique=True)
    name: Mapped[str] = mapped_column(String(100))
    name_en: Mapped[str] = mapped_column(String(200), default="")
    level: Mapped[RegionLevel] = mapped_column(Enum(RegionLevel, native_enum=False, length=16))
    parent_id: Mapped[int | None] = mapped_column(ForeignKey("region.id", ondelete="RESTRICT"), index=True)
    # Materialised path of codes, "/331000000000/331002000000/": subtree = path LIKE 'prefix%'.
    path: Mapped[str] = mapped_column(String(255), index=True)
    # GeoJSON geometry (Polygon or MultiPolygon, WGS84) as text: portable to SQLite and PostgreSQL.
    geometry: Mapped[str | None] = mapped_column(Text)
    centroid_lon: Mapped[float | None] = mapped_column(Float)
    centroid_lat: Mapped[float | None] = mapped_column(Float)
    min_lon: Mapped[float | None] = mapped_column(Float)
    min_lat: Mapped[float | None] = mapped_column(Float)
    max_lon: Mapped[float | None] = mapped_column(Float)
    max_lat: Mapped[float | None] = mapped_column(Float)
    synthetic: Mapped[bool] = mapped_column(default=False)

    parent: Mapped[Region | None] = relationship(remote_side="Region.id")


class GridAssignment(Base):
    """A grid worker (a user) assigned to patrol a grid."""

    __tablename__ = "grid_assignment"
    __table_args__ = (UniqueConstraint("grid_id", "user_id", name="uq_grid_assignment_grid_user"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    grid_id: Mapped[int] = mapped_column(ForeignKey("region.id", ondelete="CASCADE"), index=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("user_account.id", ondelete="CASCADE"), index=True)
    assigned_at: Mapped[datetime] = mapped_column(default=utcnow)
    version: Mapped[int] = mapped_column(Integer, default=1)
