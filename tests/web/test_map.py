"""The grid map page and the region side panel."""

from __future__ import annotations

from sqlalchemy import select

from civicgrid.accounts.models import User
from civicgrid.regions.models import GridAssignment, Region
from tests.web.conftest import login


def test_map_page_for_a_dispatcher(client, tree):
    login(client, "dispatcher")
    res = client.get("/regions/map")
    assert res.status_code == 200
    html = res.text
    assert 'data-parent="331001001000"' in html
    assert "/static/vendor/leaflet-1.9.4/leaflet.js" in html and "tile" not in html.lower()
    assert "村1" in html  # drill-down choices


def test_map_of_a_region_outside_the_scope_is_404(client, tree):
    login(client, "dispatcher")
    assert client.get("/regions/map?code=331002001000", headers={"Accept": "text/html"}).status_code == 404


def test_panel_shows_name_chain_and_workers(client, tree, db):
    with db.session() as s:
        grid = s.scalar(select(Region).where(Region.code == "331001001001001"))
        worker = s.scalar(select(User).where(User.username == "grid_worker"))
        s.add(GridAssignment(grid_id=grid.id, user_id=worker.id))
    login(client, "dispatcher")
    res = client.get("/regions/331001001001001/panel", headers={"HX-Request": "true"})
    assert res.status_code == 200
    assert "网格1-1" in res.text and "村1" in res.text and "镇1" in res.text
    assert "张三" in res.text and "138****5678" in res.text and "13812345678" not in res.text
    en = client.get("/regions/331001001001001/panel?lang=en", headers={"HX-Request": "true"})
    assert "Grid workers" in en.text


def test_grid_worker_home_lists_assigned_grids(client, tree, db):
    with db.session() as s:
        grid = s.scalar(select(Region).where(Region.code == "331001001001002"))
        worker = s.scalar(select(User).where(User.username == "grid_worker"))
        s.add(GridAssignment(grid_id=grid.id, user_id=worker.id))
    login(client, "grid_worker")
    assert "网格1-2" in client.get("/").text
