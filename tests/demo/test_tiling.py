"""The pure geometry under the demo: shares that add up, and splits that tile their parent."""

from __future__ import annotations

import numpy as np
import pytest
import shapely
from shapely.geometry import Polygon, box

from civicgrid.demo import tiling


@pytest.mark.parametrize(
    ("total", "weights"),
    [(10, [1, 1, 1]), (9, [5, 1, 1, 2, 0.1, 3, 3, 3, 1]), (10000, [0.3, 0.7]), (3, [1, 1, 1])],
)
def test_apportion_sums_exactly_with_a_minimum_each(total: int, weights: list[float]) -> None:
    shares = tiling.apportion(total, weights)
    assert sum(shares) == total
    assert min(shares) >= 1


def test_apportion_follows_the_weights() -> None:
    assert tiling.apportion(103, [1, 2, 7]) == [11, 21, 71]


def test_apportion_below_the_minimum_is_refused() -> None:
    with pytest.raises(ValueError):
        tiling.apportion(2, [1, 1, 1])


def assert_tiles(parent: shapely.Geometry, pieces: list[shapely.Geometry]) -> None:
    assert all(p.is_valid and not p.is_empty and p.geom_type in ("Polygon", "MultiPolygon") for p in pieces)
    union = shapely.union_all(pieces)
    assert union.symmetric_difference(parent).area < parent.area * 1e-9
    for i, a in enumerate(pieces):
        for b in pieces[i + 1 :]:
            assert a.intersection(b).area < parent.area * 1e-12


def test_split_tiles_a_non_convex_parent() -> None:
    # A U shape: Voronoi cells straddle the gap, so some pieces come out in two parts.
    parent = box(0, 0, 3, 3).difference(box(1, 1, 2, 3))
    rng = np.random.default_rng(7)
    seeds = tiling.sample_points(parent, 12, rng)
    pieces, used = tiling.split(parent, seeds, rng)
    assert len(pieces) == len(used) == 12
    assert all(p.contains(shapely.Point(s)) for p, s in zip(pieces, used, strict=True))
    assert_tiles(parent, pieces)


def test_split_redraws_seeds_that_would_give_no_piece() -> None:
    parent = box(0, 0, 1, 1)
    rng = np.random.default_rng(1)
    # Two identical seeds collapse into one Voronoi cell: one of them must be redrawn.
    pieces, used = tiling.split(parent, [(0.5, 0.5), (0.5, 0.5), (0.2, 0.8)], rng)
    assert len(set(used)) == 3
    assert_tiles(parent, pieces)


def test_sample_points_lie_inside_and_cluster_around_the_centre() -> None:
    parent = Polygon([(0, 0), (4, 0), (4, 4), (0, 4)])
    rng = np.random.default_rng(3)
    pts = tiling.sample_points(parent, 200, rng, centre=(1, 1), share=0.5, spread=0.1)
    assert len(pts) == 200
    assert all(parent.contains(shapely.Point(p)) for p in pts)
    near = sum(1 for x, y in pts if abs(x - 1) < 0.5 and abs(y - 1) < 0.5)
    assert near >= 100


def test_outline_keeps_the_given_points_inside() -> None:
    pts = [(0.0, 0.0), (1.0, 0.2), (0.5, 1.0)]
    shape = tiling.outline(pts, margin=0.1, wobble=[(0.05, 5, 0.3)], inside=pts)
    assert shape.is_valid
    assert all(shape.contains(shapely.Point(p)) for p in pts)
