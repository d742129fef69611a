"""The catalogue: registering, changing and seeing datasets; metadata versions; the class rule."""

from __future__ import annotations

import json
from typing import Any

import pytest

from civicgrid.core.audit import AuditRecord
from civicgrid.core.errors import Conflict, Invalid, NotFound, PermissionDenied
from civicgrid.data import service
from civicgrid.data.models import MetadataVersion
from tests.data.conftest import DataWorld
from tests.factories import login_headers


def test_register_dataset_snapshots_metadata_and_audits(data_world: DataWorld) -> None:
    with data_world.db.session() as s:
        ds = data_world.population(s)
        assert ds.metadata_version == 1
        assert [f.name for f in ds.fields][:3] == ["id_number", "name", "mobile"]
        versions = service.metadata_versions(s, ds)
        assert [v.version for v in versions] == [1]
        snap = json.loads(versions[0].snapshot)
        assert snap["share_class"] == "conditional" and snap["fields"][0]["rules"]["id_number"] is True
        assert s.query(AuditRecord).filter_by(action="dataset.create", target_id=ds.name).count() == 1


def test_update_keeps_every_metadata_version(data_world: DataWorld) -> None:
    with data_world.db.session() as s:
        ds = data_world.population(s)
        steward = data_world.actor(s, "steward")
        service.update_dataset(s, steward, ds.name, expected_version=1, title="村人口（2026）", tags=["人口"])
        fields = [service.field_dict(f) for f in ds.fields] + [{"name": "gender", "title": "性别"}]
        service.update_dataset(s, steward, ds.name, expected_version=2, fields=fields)
        assert ds.metadata_version == 3
        snaps = {v.version: json.loads(v.snapshot) for v in service.metadata_versions(s, ds)}
        assert snaps[1]["title"] == "村人口信息" and snaps[2]["title"] == "村人口（2026）"
        assert "gender" not in [f["name"] for f in snaps[2]["fields"]]
        assert snaps[3]["fields"][-1]["name"] == "gender"
        # An editor who saw version 2 is told someone else changed it; nothing changes.
        with pytest.raises(Conflict):
            service.update_dataset(s, steward, ds.name, expected_version=2, title="x")
        assert ds.title == "村人口（2026）"
        # No change, no new version.
        service.update_dataset(s, steward, ds.name, title="村人口（2026）")
        assert s.query(MetadataVersion).filter_by(dataset_id=ds.id).count() == 3


def test_a_dataset_not_shared_is_never_open(data_world: DataWorld) -> None:
    with data_world.db.session() as s:
        with pytest.raises(Invalid) as err:
            data_world.population(s, share_class="none", share_condition="涉密", open_class="open")
        assert err.value.code == "share_open_class"
        ds = data_world.population(s, share_class="none", share_condition="涉及个人隐私", open_class="closed")
        with pytest.raises(Invalid):
            service.update_dataset(s, data_world.actor(s, "steward"), ds.name, open_class="conditional")
        assert ds.open_class == "closed" and ds.metadata_version == 1


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        ({"name": "Bad Name"}, "bad_name"),
        ({"name": "x"}, "bad_name"),
        ({"fields": [{"name": "身份证"}]}, "invalid"),
        ({"fields": [{"name": "a"}, {"name": "a"}]}, "invalid"),
        ({"fields": [{"name": "a", "rules": {"regex": "("}}]}, "invalid"),
        ({"fields": [{"name": "a", "rules": {"unknown": 1}}]}, "invalid"),
        ({"fields": [{"name": "a", "type": "integer", "rules": {"min": 5, "max": 1}}]}, "invalid"),
        ({"share_class": "conditional", "share_condition": ""}, "share_condition"),
    ],
)
def test_bad_registrations_are_refused(data_world: DataWorld, change: dict, expected: str) -> None:
    with data_world.db.session() as s:
        with pytest.raises(Invalid) as err:
            data_world.population(s, **change)
        assert err.value.code == expected


def test_owners_are_orgs_in_the_actors_scope(data_world: DataWorld) -> None:
    with data_world.db.session() as s:
        steward = data_world.actor(s, "steward")
        # A steward registers for their own org only.
        with pytest.raises(PermissionDenied):
            service.create_dataset(
                s,
                steward,
                name="other-org",
                title="t",
                theme="people",
                grade="general",
                share_class="unconditional",
                open_class="open",
                owner_org="dept-safety-1",
            )
        # The bureau registers for any org in its scope.
        ds = service.create_dataset(
            s,
            data_world.actor(s, "admin"),
            name="for-dept",
            title="t",
            theme="thing",
            grade="general",
            share_class="unconditional",
            open_class="open",
            owner_org="dept-safety-1",
        )
        assert ds.owner_org_id == data_world.tree.orgs["dept1"].id
        # Consumers register nothing; a steward of another org cannot change it.
        with pytest.raises(PermissionDenied):
            service.create_dataset(
                s,
                data_world.actor(s, "consumer"),
                name="mine",
                title="t",
                theme="people",
                grade="general",
                share_class="unconditional",
                open_class="open",
            )
        with pytest.raises(PermissionDenied):
            service.update_dataset(s, steward, "for-dept", title="taken over")
        with pytest.raises(Conflict):
            data_world.population(s, name="for-dept")


def test_visibility(data_world: DataWorld) -> None:
    with data_world.db.session() as s:
        data_world.population(s)
        data_world.population(
            s, name="secret-list", share_class="none", share_condition="涉密", open_class="closed"
        )
        names = lambda u: {d.name for d in s.scalars(service.list_stmt(data_world.actor(s, u)))}  # noqa: E731
        assert names("steward") == {"village-population", "secret-list"}
        assert names("consumer") == {"village-population"}
        assert names("admin") == {"village-population", "secret-list"}
        assert names("resident") == set()
        with pytest.raises(NotFound):
            service.get_visible(s, data_world.actor(s, "consumer"), "secret-list")


def test_catalogue_api(data_world: DataWorld, client: Any) -> None:
    from tests.data.conftest import POPULATION_FIELDS

    steward = login_headers(client, "steward")
    body = {
        "name": "enterprises",
        "title": "企业名录",
        "theme": "organisation",
        "grade": "general",
        "share_class": "unconditional",
        "open_class": "open",
        "tags": ["企业", "市场主体"],
        "fields": POPULATION_FIELDS[:2],
    }
    res = client.post("/api/v1/data/datasets", json=body, headers=steward)
    assert res.status_code == 201, res.text
    out = res.json()
    assert out["owner_org"] == "county-1-market" and out["can_manage"] and out["current_version"] is None
    # The same rule over HTTP, in the reader's language, and nothing changes.
    bad = client.patch(
        "/api/v1/data/datasets/enterprises",
        json={"share_class": "none", "share_condition": "x", "open_class": "open"},
        headers=steward | {"Accept-Language": "zh-CN"},
    )
    assert bad.status_code == 422 and "开放" in bad.json()["error"]["message"]
    consumer = login_headers(client, "consumer")
    assert (
        client.get("/api/v1/data/datasets/enterprises", headers=consumer).json()["share_class"]
        == "unconditional"
    )
    assert (
        client.post("/api/v1/data/datasets", json=body | {"name": "x-y-z"}, headers=consumer).status_code
        == 403
    )
    assert (
        client.patch("/api/v1/data/datasets/enterprises", json={"title": "x"}, headers=consumer).status_code
        == 403
    )
    res = client.patch(
        "/api/v1/data/datasets/enterprises",
        json={"title": "企业名录（新）", "expected_version": 1},
        headers=steward,
    )
    assert res.status_code == 200 and res.json()["metadata_version"] == 2
    versions = client.get("/api/v1/data/datasets/enterprises/metadata-versions", headers=consumer).json()
    assert [v["version"] for v in versions] == [2, 1] and versions[1]["snapshot"]["title"] == "企业名录"
    listing = client.get("/api/v1/data/datasets", params={"theme": "organisation"}, headers=consumer).json()
    assert [d["name"] for d in listing["items"]] == ["enterprises"]
    assert client.get("/api/v1/data/datasets/nope", headers=consumer).status_code == 404
