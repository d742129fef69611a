"""The official `ckanapi` client (PyPI) against a running CivicGrid: what CKAN tools see is what we hold."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest

from civicgrid.core.config import Settings, get_settings
from civicgrid.core.migrate import upgrade
from civicgrid.data import access, ckan, keys
from tests.data.conftest import POPULATION_ROWS, DataWorld, build_data_world

ckanapi = pytest.importorskip("ckanapi")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def running(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[str, str]]:
    """uvicorn on a free loopback port over a SQLite database with two datasets; yields
    (base URL, the consumer's data key, which holds an api grant for the closed dataset)."""
    import uvicorn

    from civicgrid.core.db import Database
    from civicgrid.main import create_app

    data_dir = tmp_path / "data"
    monkeypatch.setenv("CIVICGRID_DATA_DIR", str(data_dir))
    get_settings.cache_clear()
    settings = Settings(data_dir=data_dir, embedded_worker=False)
    settings.ensure_data_dir()
    upgrade(settings.resolved_database_url)
    db = Database(settings.resolved_database_url)
    with db.session() as s:
        tree = build_data_world(s)
    world = DataWorld(db=db, tree=tree, tmp=tmp_path)
    with db.session() as s:
        world.population(s)
        world.population(
            s, name="open-stats", title="村人口统计", share_class="unconditional", open_class="open"
        )
        _key, clear = keys.create_key(s, world.actor(s, "consumer"), name="ckanapi")
    world.load_rows("village-population")
    world.load_rows("open-stats")
    with db.session() as s:
        app = access.apply(
            s,
            world.actor(s, "consumer"),
            dataset="village-population",
            purpose="基层治理人口核查",
            fields=["name", "village_code", "household_size"],
            until=access.today() + timedelta(days=10),
        )
        access.approve(s, world.actor(s, "steward"), app.id)
    port = _free_port()
    server = uvicorn.Server(
        uvicorn.Config(create_app(settings, db), host="127.0.0.1", port=port, log_level="warning")
    )
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        assert time.monotonic() < deadline and thread.is_alive(), "the test server did not start"
        time.sleep(0.05)
    try:
        yield f"http://127.0.0.1:{port}", clear
    finally:
        server.should_exit = True
        thread.join(timeout=10)
        db.dispose()
        get_settings.cache_clear()


def test_ckanapi_reads_what_civicgrid_holds(running: tuple[str, str]) -> None:
    url, key = running
    anon = ckanapi.RemoteCKAN(url, user_agent="civicgrid-test")
    found = anon.action.package_search(q="人口", rows=10)
    assert found["count"] == 1 and found["results"][0]["name"] == "open-stats"
    with pytest.raises(ckanapi.NotFound):
        anon.action.package_show(id="village-population")  # closed: not visible without a key

    with ckanapi.RemoteCKAN(url, apikey=key, user_agent="civicgrid-test") as client:
        assert client.action.package_search(q="人口")["count"] == 2
        pkg = client.action.package_show(id="village-population")
        assert pkg["title"] == "村人口信息" and pkg["organization"]["title"] == "县1市场监管局"
        assert [f["id"] for f in pkg["resources"][0]["fields"]][:2] == ["id_number", "name"]
        rid = pkg["resources"][0]["id"]
        assert rid == ckan.resource_id("village-population")
        rows = client.action.datastore_search(resource_id=rid, sort="household_size asc")
        assert rows["total"] == len(POPULATION_ROWS)
        assert [r["household_size"] for r in rows["records"]] == [2, 3, 4]
        assert [r["name"] for r in rows["records"]] == ["王*", "张*", "李*"]  # masked as the grant says
        assert set(rows["records"][0]) == {"name", "village_code", "household_size"}  # granted fields only
        filtered = client.action.datastore_search(
            resource_id=rid, filters={"village_code": "331002001001"}, include_total=True
        )
        assert filtered["total"] == 1 and filtered["records"][0]["household_size"] == 2
        with pytest.raises(ckanapi.NotAuthorized):
            client.action.datastore_search(resource_id=rid, fields=["mobile"])
        # the same through GET (ckanapi's get_only mode)
        getter = ckanapi.RemoteCKAN(url, apikey=key, get_only=True, user_agent="civicgrid-test")
        assert getter.action.datastore_search(resource_id=rid, limit=1)["records"][0]["name"].endswith("*")


def test_ckanapi_lists_organizations_tags_and_status(running: tuple[str, str]) -> None:
    url, key = running
    client = ckanapi.RemoteCKAN(url, apikey=key, user_agent="civicgrid-test")
    assert client.action.status_show()["ckan_version"].startswith("2.")
    assert client.action.organization_list() == ["county-1-market"]
    assert client.action.organization_show(id="county-1-market")["package_count"] == 2
    assert client.action.tag_list() == ["人口", "户籍"]
    assert sorted(client.action.package_list()) == ["open-stats", "village-population"]
    with pytest.raises(ckanapi.ValidationError):
        client.action.package_search(sort="popularity desc")
