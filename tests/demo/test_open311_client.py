"""The demo's Open311 key: written to demo-credentials.json, printed, and good for reporting."""

from __future__ import annotations

import json
from pathlib import Path

from sqlalchemy import select

from civicgrid.core.auth import SYSTEM
from civicgrid.demo import service as demo
from civicgrid.events import service as events
from civicgrid.regions.models import Region, RegionLevel


def test_demo_open311_key_reports_over_open311(client, db, tmp_path: Path) -> None:
    with db.session() as s:
        creds = demo.load_demo(s, grids=9, seed=1, data_dir=tmp_path)
        events.seed_catalogue(s, SYSTEM)
        grid = s.scalar(select(Region).where(Region.level == RegionLevel.grid).order_by(Region.code))
        assert grid is not None
        lon, lat = grid.centroid_lon, grid.centroid_lat
    key = creds["api_keys"]["open311"]
    saved = json.loads((tmp_path / demo.CREDENTIALS_FILE).read_text(encoding="utf-8"))
    assert saved["api_keys"] == {"open311": key}
    assert key in demo.print_credentials(creds)
    assert "open311" not in {u["username"] for u in creds["users"]}  # a machine account, no login

    res = client.post(
        "/open311/v2/requests.json",
        data={"api_key": key, "service_code": "0102", "lat": lat, "long": lon, "description": "路边垃圾"},
    )
    assert res.status_code == 201, res.text
    number = res.json()[0]["service_request_id"]
    assert number.startswith(grid.code[:6])
    # The key reads its own reports in clear; without a key the same request is public.
    got = client.get(f"/open311/v2/requests/{number}.json", params={"api_key": key}).json()
    assert got[0]["description"] == "路边垃圾" and got[0]["status"] == "open"
