"""Pure geometry for the demo jurisdiction: an outline, and splitting a polygon into pieces
that tile it (no gaps, no overlaps) with Voronoi cells of points inside it."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import TypeAlias

import numpy as np
import shapely
from shapely.geometry import MultiPoint, MultiPolygon, Polygon
from shapely.geometry.base import BaseGeometry

Piece: TypeAlias = Polygon | MultiPolygon
Point: TypeAlias = tuple[float, float]

# A piece smaller than this share of its parent is a sliver: the split is drawn again.
MIN_SHARE = 1e-4
# Polygon parts smaller than this share of the parent are floating-point crumbs, not land.
CRUMB_SHARE = 1e-12


def outline(
    points: Sequence[Point],
    margin: float,
    wobble: Sequence[tuple[float, float, float]],
    inside: Sequence[Point],
) -> Polygon:
    """A region-like blob around `points`: their convex hull, buffered, then bent radially;
    the points `inside` must end up inside it.

    Bending every vertex along its ray from the centre keeps the ring star-shaped, hence simple
    and valid; `wobble` holds (amplitude, frequency, phase) harmonics of the radial factor.
    """
    hull = MultiPoint(list(points)).convex_hull.buffer(margin, quad_segs=8)
    # Short edges everywhere, or the long straight hull edges would not bend at all.
    hull = shapely.segmentize(hull, max_segment_length=margin / 3)
    cx, cy = hull.centroid.x, hull.centroid.y
    ring = []
    for x, y in hull.exterior.coords[:-1]:
        angle = math.atan2(y - cy, x - cx)
        factor = 1.0 + sum(a * math.sin(f * angle + p) for a, f, p in wobble)
        ring.append((cx + (x - cx) * factor, cy + (y - cy) * factor))
    shape = Polygon(ring)
    if not shape.is_valid or not all(shape.contains(shapely.Point(p)) for p in inside):
        raise ValueError("the wobble is too strong: the outline is invalid or leaves a point out")
    return shape


def polygonal(geom: BaseGeometry, parent_area: float) -> Piece | None:
    """The area part of a clipped cell as a valid Polygon or MultiPolygon, without crumbs."""
    if not geom.is_valid:
        geom = shapely.make_valid(geom)
    parts = [g for g in shapely.get_parts(geom) if isinstance(g, Polygon)]
    parts = [g for g in parts if g.area > parent_area * CRUMB_SHARE]
    if not parts:
        return None
    if len(parts) == 1:
        return parts[0]
    return MultiPolygon(parts)


def sample_points(
    parent: BaseGeometry,
    k: int,
    rng: np.random.Generator,
    centre: Point | None = None,
    share: float = 0.0,
    spread: float = 0.0,
) -> list[Point]:
    """k random points strictly inside `parent`; about `share` of them cluster around `centre`
    (a Gaussian of width `spread`), as towns crowd around a seat."""
    shapely.prepare(parent)
    minx, miny, maxx, maxy = parent.bounds
    out: list[Point] = []
    near = round(k * share) if centre is not None else 0
    tries = 0
    while len(out) < k:
        tries += 1
        if tries > 1000:
            raise RuntimeError("could not place points inside the polygon")
        want = k - len(out)
        batch = max(16, want * 4)
        if len(out) < near and centre is not None:
            xs = rng.normal(centre[0], spread, batch)
            ys = rng.normal(centre[1], spread, batch)
        else:
            xs = rng.uniform(minx, maxx, batch)
            ys = rng.uniform(miny, maxy, batch)
        inside = shapely.contains_xy(parent, xs, ys)
        limit = (near - len(out)) if len(out) < near else want
        out.extend((float(x), float(y)) for x, y in list(zip(xs[inside], ys[inside], strict=True))[:limit])
    return out


def split(
    parent: Piece,
    seeds: Sequence[Point],
    rng: np.random.Generator,
    attempts: int = 50,
) -> tuple[list[Piece], list[Point]]:
    """Split `parent` into one piece per seed: its Voronoi cell clipped to the parent.

    The pieces tile the parent (the cells tile the plane). A seed whose piece comes out
    empty or a sliver is redrawn uniformly inside the parent, up to `attempts` times.
    Returns the pieces and the seeds actually used, in the order of `seeds`.
    """
    seeds = list(seeds)
    if len(seeds) == 1:
        return [parent], seeds
    area = parent.area
    for _ in range(attempts):
        # Coincident seeds share one cell (GEOS refuses to order them): redraw the repeats.
        seen: set[Point] = set()
        repeats = []
        for i, s in enumerate(seeds):
            if s in seen:
                repeats.append(i)
            seen.add(s)
        if repeats:
            for i in repeats:
                seeds[i] = sample_points(parent, 1, rng)[0]
            continue
        cells = shapely.voronoi_polygons(MultiPoint(seeds), extend_to=parent, ordered=True)
        clipped = shapely.intersection(np.asarray(cells.geoms, dtype=object), parent)
        pieces = [polygonal(c, area) for c in clipped]
        bad = [i for i, p in enumerate(pieces) if p is None or p.area < area * MIN_SHARE]
        if not bad:
            return [p for p in pieces if p is not None], seeds
        for i in bad:
            seeds[i] = sample_points(parent, 1, rng)[0]
    raise RuntimeError("could not split the polygon into non-empty pieces")


def apportion(total: int, weights: Sequence[float], minimum: int = 1) -> list[int]:
    """Integers summing exactly to `total`, each at least `minimum`, the rest shared in
    proportion to `weights` by largest remainder."""
    n = len(weights)
    if total < n * minimum:
        raise ValueError("total is below the minimum per share")
    rest = total - n * minimum
    wsum = float(sum(weights))
    exact = [rest * w / wsum for w in weights]
    shares = [math.floor(e) for e in exact]
    left = rest - sum(shares)
    order = sorted(range(n), key=lambda i: (-(exact[i] - shares[i]), i))
    for i in order[:left]:
        shares[i] += 1
    return [s + minimum for s in shares]
