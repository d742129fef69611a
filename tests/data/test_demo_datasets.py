"""The demo's datasets (demo/datasets.py) on SQLite and PostgreSQL: registered, loaded through
ingestion with a quality report that shows its rejects, shared with the demo consumer (an
approved grant read through the demo key, masked; an automatic one; a pending one), and a
superseded load past its retention waiting for destruction. The same seed makes the same rows."""

from __future__ import annotations

import json
from pathlib import Path

from sqlalchemy import select

from civicgrid.data import access, service
from civicgrid.data.models import Application, Destruction
from civicgrid.demo import datasets
from civicgrid.demo import service as demo


def test_the_demo_loads_datasets_that_every_page_can_show(client, db, tmp_path: Path) -> None:
    with db.session() as s:
        creds = demo.load_demo(s, grids=9, seed=1, data_dir=tmp_path)
    made = creds["data_platform"]
    assert set(made["datasets"]) == {"village-population", "enterprises", "hazardous-sites", "grid-overview"}
    assert all(rows > 0 for rows in made["datasets"].values())
    saved = json.loads((tmp_path / demo.CREDENTIALS_FILE).read_text(encoding="utf-8"))
    assert saved["data_platform"]["api_key"] == made["api_key"]

    with db.session() as s:
        population = service.get_dataset(s, "village-population")
        current = service.current_version(s, population)
        assert current is not None
        quality = service.quality(current)
        assert quality["rejected"] == 5 and len(quality["first_rejects"]) == 5  # on purpose, by line
        assert {"id_number:id_number", "phone:mobile", "name:not_null"} <= set(quality["reasons"])
        personal = {f.name for f in population.fields if f.sensitivity != "none"}
        assert personal == {"id_number", "name", "phone", "address"}

        sites = service.get_dataset(s, "hazardous-sites")
        assert [v.state for v in service.data_versions(s, sites)] == ["ready", "superseded"]
        request = s.scalars(select(Destruction)).one()  # the first load is past its retention
        assert (request.origin, request.scope, json.loads(request.versions)) == ("retention", "versions", [1])

        states = {
            (service.get_dataset(s, "hazardous-sites").id, "approved"),
            (service.get_dataset(s, "enterprises").id, "approved"),
            (population.id, "pending"),
        }
        assert {(a.dataset_id, a.state) for a in s.scalars(select(Application))} == states
        assert service.get_dataset(s, "grid-overview").open_class == "open"

        # the same seed, the same people
        places = datasets._places(s)
        assert datasets._population_rows(datasets._Maker(1), places) == datasets._population_rows(
            datasets._Maker(1), places
        )

    # the demo key reads the granted sites: its county only, the contact in clear, the phone masked
    res = client.get(
        "/api/v1/data/query/hazardous-sites",
        headers={"X-API-Key": made["api_key"]},
        params={"fields": "site_id,county_code,contact,contact_phone", "limit": 1000},
    )
    assert res.status_code == 200, res.text
    body = res.json()
    assert body["total"] > 0 and {r["county_code"] for r in body["records"]} == {"331002"}
    assert all("*" not in r["contact"] and "****" in r["contact_phone"] for r in body["records"])
    # the pending application waits in the bureau steward's inbox
    with db.session() as s:
        steward = access.inbox_stmt(datasets._actor(s, "steward"))
        assert len(s.scalars(steward).all()) == 1
