"""Boundary geometry: reading and validating GeoJSON, and the point → grid index (shapely 2 STRtree).

Pure geometry, no database: the service decides what to load and when to rebuild.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import shapely
from numpy.typing import ArrayLike, NDArray
from shapely.errors import GEOSException
from shapely.geometry import shape
from shapely.geometry.base import BaseGeometry
from shapely.validation import explain_validity

POLYGON_TYPES = ("Polygon", "MultiPolygon")
# A child may stick out of its parent, and siblings may overlap, by this share of the smaller
# area: boundaries clipped from the same source differ in the last floating-point digits.
AREA_TOLERANCE = 1e-6
# Edge of a grid: the same point in two grids gets the one with the smaller code (see lookup).
NOT_FOUND = -1


class GeometryError(ValueError):
    """A boundary that cannot be used; `message` is an English msgid, `params` fill it."""

    def __init__(self, message: str, **params: Any) -> None:
        super().__init__(message)
        self.message = message
        self.params = params


def read_polygon(geometry: Any) -> BaseGeometry:
    """A valid Polygon or MultiPolygon from a GeoJSON geometry object, or GeometryError."""
    if not isinstance(geometry, dict) or "type" not in geometry:
        raise GeometryError("the geometry is missing")
    kind = geometry.get("type")
    if kind not in POLYGON_TYPES:
        raise GeometryError("the geometry is a {kind}, not a Polygon or MultiPolygon", kind=str(kind))
    try:
        geom = shape(geometry)
    except (ValueError, TypeError, KeyError, IndexError, AttributeError, GEOSException):
        raise GeometryError("the geometry's coordinates cannot be read") from None
    if geom.is_empty:
        raise GeometryError("the geometry is empty")
    if not geom.is_valid:
        raise GeometryError("the geometry is not valid: {reason}", reason=explain_validity(geom))
    min_x, min_y, max_x, max_y = geom.bounds
    if min_x < -180 or max_x > 180 or min_y < -90 or max_y > 90:
        raise GeometryError("the geometry lies outside WGS84 longitude/latitude bounds")
    return geom


def outside_share(children: Sequence[BaseGeometry], parents: Sequence[BaseGeometry]) -> NDArray[np.float64]:
    """For each pair, the share of the child's area that lies outside its parent (0 when inside)."""
    c = np.asarray(children, dtype=object)
    p = np.asarray(parents, dtype=object)
    out = np.zeros(len(c))
    if not len(c):
        return out
    shapely.prepare(p)
    # Fast path: most children are covered outright; only the rest pay for a difference.
    rest = ~shapely.covers(p, c)
    if rest.any():
        outside = shapely.area(shapely.difference(c[rest], p[rest]))
        out[rest] = outside / np.maximum(shapely.area(c[rest]), 1e-300)
    return out


def overlapping_pairs(geoms: Sequence[BaseGeometry], groups: Sequence[str]) -> list[tuple[int, int, float]]:
    """Pairs (i, j, share) of geometries in the same group whose interiors overlap by more than
    AREA_TOLERANCE of the smaller one. Touching edges do not count."""
    g = np.asarray(geoms, dtype=object)
    if len(g) < 2:
        return []
    tree = shapely.STRtree(g)
    left, right = tree.query(g, predicate="intersects")
    grp = np.asarray(groups, dtype=object)
    keep = (left < right) & (grp[left] == grp[right])
    left, right = left[keep], right[keep]
    if not len(left):
        return []
    inter = shapely.area(shapely.intersection(g[left], g[right]))
    smaller = np.minimum(shapely.area(g[left]), shapely.area(g[right]))
    share = inter / np.maximum(smaller, 1e-300)
    bad = share > AREA_TOLERANCE
    return [(int(i), int(j), float(s)) for i, j, s in zip(left[bad], right[bad], share[bad], strict=True)]


@dataclass(frozen=True)
class GridIndex:
    """Grid polygons in an STRtree; position k is the k-th grid in code order."""

    ids: NDArray[np.int64]
    codes: tuple[str, ...]
    tree: shapely.STRtree
    polygons: NDArray[np.object_]

    @classmethod
    def build(cls, grids: Sequence[tuple[int, str, BaseGeometry]]) -> GridIndex:
        # Sorted by code so that "smallest position" means "smallest code": a point on an edge
        # shared by two grids always lands in the same one, on every run and every process.
        rows = sorted(grids, key=lambda r: r[1])
        polygons = np.asarray([r[2] for r in rows], dtype=object)
        shapely.prepare(polygons)
        return cls(
            ids=np.asarray([r[0] for r in rows], dtype=np.int64),
            codes=tuple(r[1] for r in rows),
            tree=shapely.STRtree(polygons),
            polygons=polygons,
        )

    def __len__(self) -> int:
        return len(self.codes)

    def position(self, lon: float, lat: float) -> int:
        """Position of the grid holding the point (edges included), or NOT_FOUND."""
        hits = self.tree.query(shapely.points(lon, lat), predicate="intersects")
        return int(hits.min()) if hits.size else NOT_FOUND

    def positions(self, lons: ArrayLike, lats: ArrayLike) -> NDArray[np.int64]:
        """Vectorised `position`: one tree query for all points (GEOS loops in C)."""
        x = np.asarray(lons, dtype=np.float64)
        y = np.asarray(lats, dtype=np.float64)
        out = np.full(x.shape, NOT_FOUND, dtype=np.int64)
        if not x.size or not len(self):
            return out
        pts, cand = self.tree.query(shapely.points(x, y), predicate="intersects")
        step = np.diff(pts)
        if (step <= 0).any():
            # Some point hit several grids (a shared edge): keep the smallest position, i.e.
            # the first after sorting by (point, position).
            order = np.lexsort((cand, pts))
            pts, cand = pts[order], cand[order]
            first = np.ones(pts.shape, dtype=bool)
            first[1:] = pts[1:] != pts[:-1]
            pts, cand = pts[first], cand[first]
        out[pts] = cand
        return out
