"""The data lifecycle on SQLite and PostgreSQL: retention flags data, a destruction request is
decided by someone other than the requester, approval removes the files and certifies their
hashes, and destroyed data can no longer be read through the API, the sandbox or CKAN."""

from __future__ import annotations

import hashlib
import json
from datetime import timedelta

import pytest
from sqlalchemy import select

from civicgrid.core import audit
from civicgrid.core.config import get_settings
from civicgrid.core.db import utcnow
from civicgrid.core.errors import AppError
from civicgrid.data import access, ckan, ingest, lifecycle, service
from civicgrid.data.models import Application, DataVersion, Destruction, Grant
from tests.data.access_world import POPULATION_ROWS, AccessWorld, access_world_fixture  # noqa: F401
from tests.factories import login_headers

UNTIL = (access.today() + timedelta(days=30)).isoformat()


def _files(name: str) -> dict[str, tuple[int, str]]:
    """Every file under the dataset's folder: relative path → (bytes, SHA-256)."""
    root = get_settings().data_dir.resolve()
    folder = root / "datasets" / name
    return {
        str(p.relative_to(root)): (p.stat().st_size, hashlib.sha256(p.read_bytes()).hexdigest())
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


def _grant_and_key(client) -> str:
    consumer = login_headers(client, "consumer")
    res = client.post(
        "/api/v1/data/applications",
        headers=consumer,
        json={
            "dataset": "population",
            "purpose": "困难群众走访",
            "fields": ["village", "age"],
            "until": UNTIL,
        },
    )
    assert res.status_code == 201, res.text
    res = client.post(
        f"/api/v1/data/approvals/{res.json()['id']}/approve",
        headers=login_headers(client, "steward"),
        json={},
    )
    assert res.status_code == 200, res.text
    res = client.post("/api/v1/data/keys", headers=consumer, json={"name": "走访系统"})
    return str(res.json()["key"])


@pytest.fixture
def loaded(access_world: AccessWorld) -> AccessWorld:
    access_world.data.load_rows("population", POPULATION_ROWS[:3])
    access_world.data.load_rows("population", POPULATION_ROWS[3:])  # append: v2 links v1's file
    return access_world


def test_a_refused_request_keeps_the_data_and_the_requester_cannot_decide(client, loaded):
    steward, admin = login_headers(client, "steward"), login_headers(client, "admin")
    before = _files("population")
    res = client.post(
        "/api/v1/data/destructions",
        headers=steward,
        json={"dataset": "population", "reason": "业务系统已停用"},
    )
    assert res.status_code == 201, res.text
    d = res.json()
    assert (d["state"], d["scope"], d["requested_by"]) == ("requested", "dataset", "steward")

    # one open request per dataset
    again = client.post(
        "/api/v1/data/destructions", headers=steward, json={"dataset": "population", "reason": "再次申请销毁"}
    )
    assert again.status_code == 409

    # the requester may neither approve nor refuse; a consumer may not decide at all
    res = client.post(f"/api/v1/data/destructions/{d['id']}/approve", headers=steward, json={})
    assert res.status_code == 403 and res.json()["error"]["code"] == "own_request"
    assert "另一位审批人" in res.json()["error"]["message"]
    res = client.post(
        f"/api/v1/data/destructions/{d['id']}/approve", headers=login_headers(client, "consumer"), json={}
    )
    assert res.status_code == 404  # not a dataset the consumer looks after

    # a refusal needs a reason, and keeps every file
    res = client.post(f"/api/v1/data/destructions/{d['id']}/refuse", headers=admin, json={"reason": " "})
    assert res.status_code == 422
    res = client.post(
        f"/api/v1/data/destructions/{d['id']}/refuse", headers=admin, json={"reason": "尚在审计期内，须保留"}
    )
    assert res.status_code == 200, res.text
    assert (res.json()["state"], res.json()["decided_by"]) == ("refused", "admin")
    assert _files("population") == before
    assert client.get(f"/api/v1/data/destructions/{d['id']}/certificate", headers=admin).status_code == 409
    res = client.get("/api/v1/data/datasets/population", headers=steward)
    assert res.json()["state"] == "active" and res.json()["rows"] == 5


def test_approval_removes_the_files_certifies_their_hashes_and_ends_every_read(client, loaded, db):
    key = _grant_and_key(client)
    assert client.get("/api/v1/data/query/population", headers={"X-API-Key": key}).status_code == 200
    consumer = login_headers(client, "consumer")
    pending = client.post(
        "/api/v1/data/applications",
        headers=login_headers(client, "outsider"),
        json={"dataset": "population", "purpose": "外县协查", "fields": ["village"], "until": UNTIL},
    ).json()
    before = _files("population")
    assert any("/v1/" in f for f in before) and any("/v2/" in f for f in before)

    steward, admin = login_headers(client, "steward"), login_headers(client, "admin")
    d = client.post(
        "/api/v1/data/destructions",
        headers=steward,
        json={"dataset": "population", "reason": "保存期满，依法销毁"},
    ).json()
    res = client.post(f"/api/v1/data/destructions/{d['id']}/approve", headers=admin, json={"reason": "同意"})
    assert res.status_code == 200, res.text
    assert res.json()["state"] == "done" and res.json()["certificate_number"].startswith("XH-")

    # the files are gone, and the certificate names each one with the hash and size it had
    assert _files("population") == {}
    assert not (get_settings().data_dir / "datasets" / "population").exists()
    cert = client.get(f"/api/v1/data/destructions/{d['id']}/certificate", headers=admin).json()
    assert {f["file"]: (f["bytes"], f["sha256"]) for f in cert["files"]} == before
    assert all(f["removed"] == "removed" for f in cert["files"])
    assert (cert["requested_by"], cert["approved_by"], cert["dataset"]) == ("steward", "admin", "population")
    assert [v["version"] for v in cert["versions"]] == [2, 1] and cert["totals"]["rows"] == 8
    assert cert["sha256"] == lifecycle.certificate_digest(cert)

    # the certificate's digest is in the hash-chained audit log, and the chain holds
    with db.session() as s:
        done = s.scalars(
            select(audit.AuditRecord).where(audit.AuditRecord.action == "data.destruction.done")
        ).one()
        assert json.loads(done.diff)["_"]["certificate_sha256"] == cert["sha256"]
    assert client.post("/api/v1/audit/verify", headers=admin).json()["intact"] is True

    # every channel refuses, naming the certificate; grants ended, the pending application refused
    res = client.get("/api/v1/data/query/population", headers={"X-API-Key": key})
    assert res.status_code == 410 and res.json()["error"]["code"] == "dataset_destroyed"
    assert cert["number"] in res.json()["error"]["message"] and "销毁" in res.json()["error"]["message"]
    res = client.post(
        "/api/v1/data/sandbox/queries", headers=consumer, json={"sql": "SELECT count(*) FROM population"}
    )
    assert res.status_code == 410 and cert["number"] in res.json()["error"]["message"]
    # CKAN says so too, in its error shape (ckanapi raises NotFound with this message), by name or id
    for action, body in (
        ("datastore_search", {"resource_id": "population"}),
        ("package_show", {"id": "population"}),
        ("datastore_search", {"resource_id": ckan.resource_id("population")}),
    ):
        res = client.post(f"/api/3/action/{action}", headers={"Authorization": key}, json=body)
        assert res.status_code == 410 and res.json()["success"] is False, res.text
        error = res.json()["error"]
        assert error["__type"] == "Not Found Error"
        assert cert["number"] in error["message"] and "销毁" in error["message"]
    # to a caller who could never see it (anonymous; the dataset was not open) the name stays unknown
    res = client.post("/api/3/action/package_show", json={"id": "population"})
    assert res.status_code == 404 and cert["number"] not in res.json()["error"]["message"]
    res = client.post(
        "/api/v1/data/applications",
        headers=consumer,
        json={"dataset": "population", "purpose": "再次申请使用", "fields": ["village"], "until": UNTIL},
    )
    assert res.status_code in (404, 410)
    with db.session() as s:
        assert all(g.revoked_at is not None for g in s.scalars(select(Grant)))
        assert s.get(Application, pending["id"]).state == "refused"
        assert {v.state for v in s.scalars(select(DataVersion))} == {"destroyed"}
    # the owner still sees the tombstone; loads and changes are refused
    res = client.get("/api/v1/data/datasets/population", headers=steward)
    assert res.status_code == 200 and res.json()["state"] == "destroyed" and res.json()["rows"] == 0
    res = client.get("/api/v1/data/search", headers=consumer, params={"q": "人口"})
    assert "population" not in [h["name"] for h in res.json()["items"]]


def test_destroying_earlier_versions_keeps_the_current_one(client, access_world, db):
    access_world.data.load_rows("population", POPULATION_ROWS[:2], mode="replace")
    access_world.data.load_rows("population", POPULATION_ROWS, mode="replace")
    steward, admin = login_headers(client, "steward"), login_headers(client, "admin")
    res = client.post(
        "/api/v1/data/destructions",
        headers=steward,
        json={"dataset": "population", "reason": "当前版本不能单独销毁", "versions": [2]},
    )
    assert res.status_code == 422 and res.json()["error"]["code"] == "current_version"
    v1 = {f: h for f, h in _files("population").items() if "/v1/" in f}
    d = client.post(
        "/api/v1/data/destructions",
        headers=steward,
        json={"dataset": "population", "reason": "旧版本超过保存期限", "versions": [1]},
    ).json()
    assert d["scope"] == "versions" and d["versions"] == [1]
    assert (
        client.post(f"/api/v1/data/destructions/{d['id']}/approve", headers=admin, json={}).status_code == 200
    )
    cert = client.get(f"/api/v1/data/destructions/{d['id']}/certificate", headers=admin).json()
    assert {f["file"]: (f["bytes"], f["sha256"]) for f in cert["files"]} == v1
    assert not any("/v1/" in f for f in _files("population"))
    versions = {
        v["version"]: v["state"]
        for v in client.get("/api/v1/data/datasets/population/versions", headers=steward).json()
    }
    assert versions == {1: "destroyed", 2: "ready"}
    res = client.get("/api/v1/data/datasets/population", headers=steward).json()
    assert res["state"] == "active" and res["rows"] == len(POPULATION_ROWS)


def test_the_retention_job_asks_but_never_destroys(access_world, db):
    access_world.data.load_rows("population", POPULATION_ROWS)
    with db.session() as s:
        steward = access_world.actor(s, "steward")
        service.update_dataset(s, steward, "population", retention_days=30)
        dv = s.scalars(select(DataVersion)).one()
        dv.finished_at = utcnow() - timedelta(days=31)
    before = _files("population")
    with db.session() as s:
        due = lifecycle.expired(s, access_world.actor(s, "steward"))
        assert [(i.dataset.name, i.scope) for i in due] == [("population", "dataset")]
        assert lifecycle.expired(s, access_world.actor(s, "consumer")) == []  # not theirs to look after
        assert lifecycle.check_retention(s) == 1
    with db.session() as s:
        assert lifecycle.check_retention(s) == 0  # one open request, never a second
        d = s.scalars(select(Destruction)).one()
        assert (d.origin, d.requested_by, d.state, d.scope) == ("retention", "system", "requested", "dataset")
    assert _files("population") == before  # nothing removed without an approval

    # refused: the job does not ask again about the same data for a while
    with db.session() as s:
        lifecycle.refuse_destruction(s, access_world.actor(s, "steward"), d.id, reason="案件办理中，延长保存")
    with db.session() as s:
        assert lifecycle.check_retention(s) == 0
        assert (
            lifecycle.check_retention(s, now=utcnow() + timedelta(days=lifecycle.REFUSAL_HOLD_DAYS + 1)) == 1
        )
    # a request the system opened may be approved by the owner's steward
    with db.session() as s:
        d2 = s.scalars(select(Destruction).where(Destruction.state == "requested")).one()
        done = lifecycle.approve_destruction(s, access_world.actor(s, "steward"), d2.id)
        assert done.state == "done"
    assert _files("population") == {}


def test_an_interrupted_removal_is_finished_by_the_worker(access_world, db, monkeypatch):
    access_world.data.load_rows("population", POPULATION_ROWS)
    before = _files("population")
    with db.session() as s:
        d = lifecycle.request_destruction(
            s, access_world.actor(s, "steward"), "population", reason="系统下线，销毁数据"
        )
    engine = service.engine()
    real = engine.remove_version

    def crash(path: str) -> list[dict[str, object]]:
        raise OSError("disk went away")

    monkeypatch.setattr(engine, "remove_version", crash)
    with pytest.raises(OSError), db.session() as s:
        lifecycle.approve_destruction(s, access_world.actor(s, "admin"), d.id)
    monkeypatch.setattr(engine, "remove_version", real)
    with db.session() as s:
        # the decision held: nobody reads the dataset any more, though its files are still there
        assert s.get(Destruction, d.id).state == "approved"
        with pytest.raises(AppError) as err:
            access.get_dataset(s, "population")
        assert err.value.status == 410
        assert lifecycle.check_retention(s) == 0  # too recent: the approver's own request may still run
        lifecycle.check_retention(s, now=utcnow() + lifecycle.FINISH_AFTER + timedelta(minutes=1))
    with db.session() as s:
        cert = lifecycle.certificate(s.get(Destruction, d.id))
    assert _files("population") == {}
    assert {f["file"]: (f["bytes"], f["sha256"]) for f in cert["files"]} == before
    assert cert["approved_by"] == "admin"


def test_only_the_owner_and_the_bureau_see_destructions(client, loaded):
    d = client.post(
        "/api/v1/data/destructions",
        headers=login_headers(client, "steward"),
        json={"dataset": "population", "reason": "业务系统已停用"},
    ).json()
    for user in ("consumer", "outsider"):
        headers = login_headers(client, user)
        assert client.get(f"/api/v1/data/destructions/{d['id']}", headers=headers).status_code == 404
        assert client.get("/api/v1/data/destructions", headers=headers).json()["total"] == 0
        res = client.post(
            "/api/v1/data/destructions",
            headers=headers,
            json={"dataset": "population", "reason": "我要销毁它"},
        )
        assert res.status_code in (403, 404)
    assert (
        client.get("/api/v1/data/destructions", headers=login_headers(client, "admin")).json()["total"] == 1
    )


def test_a_running_load_holds_the_destruction_back(access_world, db):
    access_world.data.load_rows("population", POPULATION_ROWS)
    with db.session() as s:
        steward = access_world.actor(s, "steward")
        d = lifecycle.request_destruction(s, steward, "population", reason="系统下线，销毁数据")
        ingest.start_load(s, steward, "population", mode="append", source="next.csv")
    with db.session() as s, pytest.raises(AppError) as err:
        lifecycle.approve_destruction(s, access_world.actor(s, "admin"), d.id)
    assert err.value.status == 409 and "正在归集" in err.value.translated()
    with db.session() as s:
        assert s.get(Destruction, d.id).state == "requested"


def test_a_load_racing_a_destruction_fails_and_leaves_nothing_behind(loaded, db, monkeypatch):
    """A destruction approved while a load runs (here its check for running loads misses the
    load): the load is refused when it would publish, and no file or folder of it is left."""
    w = loaded
    with db.session() as s:
        d = lifecycle.request_destruction(s, w.actor(s, "steward"), "population", reason="保存期满，依法销毁")
        destruction_id = d.id
    monkeypatch.setattr(lifecycle, "LOAD_RUNS_AT_MOST", timedelta(0))
    engine = service.engine()
    real_load = engine.load

    def load_then_destroy(*args, **kwargs):
        result = real_load(*args, **kwargs)  # the new rows are written, not yet published
        with db.session() as s:
            lifecycle.approve_destruction(s, w.actor(s, "admin"), destruction_id)
        return result

    monkeypatch.setattr(engine, "load", load_then_destroy)
    with pytest.raises(AppError) as err:
        w.data.load_rows("population", POPULATION_ROWS, mode="replace")
    assert err.value.status == 409 and "销毁" in err.value.translated()
    assert not (get_settings().data_dir / "datasets" / "population").exists()
    with db.session() as s:
        versions = {v.version: v for v in s.scalars(select(DataVersion))}
        assert [versions[n].state for n in (1, 2, 3)] == ["destroyed", "destroyed", "failed"]
        assert "销毁" in ingest.error_text(versions[3])  # the steward sees why the load failed
        ds = service.get_dataset(s, "population")
        assert ds.state == "destroyed" and ds.current_version_id == versions[2].id  # never moved
        cert = lifecycle.certificate(s.get(Destruction, destruction_id))
    assert not any("/v3/" in f["file"] for f in cert["files"])
