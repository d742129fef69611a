"""Shared pieces of the region tests: English messages, and small GeoJSON trees to import."""

from __future__ import annotations

import copy
from collections.abc import Iterator
from typing import Any

import pytest
from shapely.geometry import box, mapping

from civicgrid.core.i18n import reset_locale, set_locale

# A small jurisdiction near Taizhou: one county, township and village, two grids that share an
# edge, plus a second village so that villages have a sibling.
X0, Y0 = 121.0, 28.5
CITY, COUNTY, TOWN, VILLAGE, VILLAGE2 = (
    "331000000000",
    "331002000000",
    "331002001000",
    "331002001001",
    "331002001002",
)
GRID1, GRID2, GRID3 = "331002001001001", "331002001001002", "331002001002001"


@pytest.fixture(autouse=True)
def english() -> Iterator[None]:
    """Messages in English so assertions read the msgids; one test checks Chinese on purpose."""
    token = set_locale("en")
    yield
    reset_locale(token)


def square(x0: float, y0: float, x1: float, y1: float) -> dict[str, Any]:
    """A GeoJSON polygon over a box given in hundredths of a degree from (X0, Y0)."""
    return dict(mapping(box(X0 + x0 / 100, Y0 + y0 / 100, X0 + x1 / 100, Y0 + y1 / 100)))


def geojson(geom: dict[str, Any]) -> dict[str, Any]:
    """Tuples from shapely's mapping → JSON lists, as a file would hold them."""
    import json

    return json.loads(json.dumps(geom))


def feature(
    code: str, name: str, level: str, parent: str | None, geometry: dict[str, Any], name_en: str = ""
) -> dict[str, Any]:
    props: dict[str, Any] = {"code": code, "name": name, "level": level, "parent_code": parent}
    if name_en:
        props["name_en"] = name_en
    return {"type": "Feature", "properties": props, "geometry": geojson(geometry)}


def sample_features() -> list[dict[str, Any]]:
    """Children listed before parents on purpose: import must not depend on order."""
    return [
        feature(GRID2, "网格二", "grid", VILLAGE, square(5, 0, 10, 5), "Grid 2"),
        feature(GRID1, "网格一", "grid", VILLAGE, square(0, 0, 5, 5), "Grid 1"),
        feature(GRID3, "网格三", "grid", VILLAGE2, square(0, 5, 5, 10)),  # leaves room for a new grid
        feature(VILLAGE, "东村", "village", TOWN, square(0, 0, 10, 5), "East Village"),
        feature(VILLAGE2, "西村", "village", TOWN, square(0, 5, 10, 10), "West Village"),
        feature(TOWN, "洪家街道", "township", COUNTY, square(0, 0, 10, 10), "Hongjia"),
        feature(COUNTY, "椒江区", "county", CITY, square(0, 0, 20, 10), "Jiaojiang"),
        feature(CITY, "台州市", "city", None, square(-10, -10, 30, 20), "Taizhou"),
    ]


def collection(features: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    return {"type": "FeatureCollection", "features": copy.deepcopy(features or sample_features())}


def renamed(data: dict[str, Any], prefix: str = "3320") -> dict[str, Any]:
    """The same tree under another city's codes (e.g. beside the factory's 3310… tree)."""
    for f in data["features"]:
        p = f["properties"]
        for key in ("code", "parent_code"):
            if p[key]:
                p[key] = prefix + p[key][4:]
    return data
