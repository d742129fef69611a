"""Point → grid: inside, outside, shared edges, the vectorised path, and index freshness."""

from __future__ import annotations

import numpy as np
import pytest
import shapely
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from shapely.geometry import Point, box
from sqlalchemy import text

from civicgrid.core.auth import SYSTEM
from civicgrid.core.errors import Invalid
from civicgrid.regions import service
from civicgrid.regions.geometry import NOT_FOUND, GridIndex
from tests.factories import make_tree
from tests.regions.conftest import GRID1, GRID2, collection


@pytest.fixture
def tree(session):
    t = make_tree(session)
    session.commit()
    return t


def test_a_point_inside_a_grid_finds_it_and_its_ancestors(session, tree):
    hit = service.grid_for_point(session, 2.0, 7.0)
    assert hit.grid.code == tree.regions["grid1b"].code
    assert [a.code for a in hit.ancestors] == [
        tree.regions[k].code for k in ("city", "county1", "town1", "village1")
    ]


def test_a_point_outside_every_grid_is_outside_the_jurisdiction(session, tree):
    with pytest.raises(Invalid) as exc:
        service.grid_for_point(session, 11.5, 3.25)
    assert exc.value.code == "outside_jurisdiction"
    assert exc.value.translated() == "The point (11.500000, 3.250000) lies outside the jurisdiction."


@pytest.mark.parametrize(
    ("lon", "lat", "winner"),
    [
        (2.5, 5.0, "grid1a"),  # edge between 1a (south) and 1b (north)
        (5.0, 2.5, "grid1a"),  # edge between counties: 1a and 2a
        (5.0, 5.0, "grid1a"),  # corner of four grids
        (7.5, 5.0, "grid2a"),
        (10.0, 10.0, "grid2b"),  # outer corner: still inside (boundary included)
    ],
)
def test_a_point_on_a_shared_edge_goes_to_the_smallest_code(session, tree, lon, lat, winner):
    assert service.grid_for_point(session, lon, lat).grid.code == tree.regions[winner].code
    ids = service.grids_for_points(session, [lon], [lat])
    assert ids.tolist() == [tree.regions[winner].id]


def test_bulk_lookup_matches_single_lookups(session, tree):
    rng = np.random.default_rng(7)
    lons, lats = rng.uniform(-1, 11, 500), rng.uniform(-1, 11, 500)
    ids = service.grids_for_points(session, lons, lats)
    for lon, lat, rid in zip(lons, lats, ids, strict=True):
        try:
            expected = service.grid_for_point(session, lon, lat).grid.id
        except Invalid:
            expected = -1
        assert rid == expected
    assert (ids == -1).any() and (ids != -1).any()


def test_lookup_sees_a_new_import_at_once(session):
    assert service.grids_for_points(session, [121.01], [28.51]).tolist() == [-1]
    service.import_features(session, SYSTEM, collection())
    session.commit()
    assert service.grid_for_point(session, 121.01, 28.51).grid.code == GRID1


def test_lookup_sees_writes_by_another_process(session, db, monkeypatch):
    """Another process's write is invisible to this process's events: the fingerprint finds it."""
    service.import_features(session, SYSTEM, collection())
    session.commit()
    assert service.grid_for_point(session, 121.07, 28.51).grid.code == GRID2
    with db.engine.begin() as conn:  # plain SQL, as another process would write it
        conn.execute(
            text("UPDATE region SET geometry = :g, updated_at = :t WHERE code = :c"),
            {
                "g": shapely.to_geojson(box(121.05, 28.5, 121.06, 28.55)),
                "t": "2099-01-01 00:00:00",
                "c": GRID2,
            },
        )
    monkeypatch.setattr(service, "FINGERPRINT_SECONDS", 0.0)
    with pytest.raises(Invalid):
        service.grid_for_point(session, 121.07, 28.51)


def test_a_rolled_back_import_leaves_no_trace_in_the_index(session):
    service.import_features(session, SYSTEM, collection())
    assert service.grid_for_point(session, 121.01, 28.51).grid.code == GRID1  # own uncommitted write
    session.rollback()
    with pytest.raises(Invalid):
        service.grid_for_point(session, 121.01, 28.51)


# ---- the index against brute force, on an irregular tiling --------------------------------

_rng = np.random.default_rng(2026)
_seeds = shapely.points(_rng.uniform(0, 1, 60), _rng.uniform(0, 1, 60))
_frame = box(0, 0, 1, 1)
_cells = shapely.intersection(
    np.asarray(shapely.get_parts(shapely.voronoi_polygons(shapely.multipoints(_seeds), extend_to=_frame))),
    _frame,
)
# Codes deliberately not in geometric order.
_CODES = [f"331002001001{(i * 37) % 997 + 1:03d}" for i in range(len(_cells))]
_INDEX = GridIndex.build([(i + 1, c, g) for i, (c, g) in enumerate(zip(_CODES, _cells, strict=True))])
# Points on edges and vertices are the interesting ones: take some exactly from the cells.
_VERTICES = shapely.get_coordinates(_cells)


def brute_force(lon: float, lat: float) -> str | None:
    p = Point(lon, lat)
    hits = [c for c, g in zip(_CODES, _cells, strict=True) if g.intersects(p)]
    return min(hits) if hits else None


coordinate = st.floats(-0.2, 1.2, allow_nan=False)
vertex = st.integers(0, len(_VERTICES) - 1).map(lambda i: tuple(_VERTICES[i]))


@settings(max_examples=300, deadline=None)
@given(st.one_of(st.tuples(coordinate, coordinate), vertex))
def test_index_agrees_with_brute_force(point):
    lon, lat = point
    pos = _INDEX.position(lon, lat)
    found = _INDEX.codes[pos] if pos != NOT_FOUND else None
    assert found == brute_force(lon, lat)
    bulk = _INDEX.positions([lon, lon], [lat, lat])
    assert bulk.tolist() == [pos, pos]


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.lists(st.tuples(coordinate, coordinate), min_size=1, max_size=50))
def test_bulk_index_agrees_with_brute_force(points):
    lons, lats = zip(*points, strict=True)
    got = _INDEX.positions(lons, lats)
    expected = [brute_force(x, y) for x, y in points]
    assert [(_INDEX.codes[p] if p != NOT_FOUND else None) for p in got] == expected
