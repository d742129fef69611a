"""The CKAN-compatible API: envelope, error shape, every action, and what a key may see."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select

from civicgrid.core.audit import AuditRecord
from civicgrid.data import access, ckan, keys, metering
from tests.data.conftest import DataWorld

OPEN = "village-stats"
CLOSED = "village-population"


@dataclass
class CkanWorld:
    data: DataWorld
    client: TestClient
    key: str  # the consumer org's data key (no grant yet)

    def get(self, action: str, key: str | None = None, **params: Any) -> Any:
        headers = {"Authorization": key} if key else {}
        return self.client.get(f"/api/3/action/{action}", params=params, headers=headers)

    def post(self, action: str, body: Any, key: str | None = None) -> Any:
        headers = {"Authorization": key} if key else {}
        return self.client.post(f"/api/3/action/{action}", json=body, headers=headers)

    def grant(self, **approve: Any) -> None:
        with self.data.db.session() as s:
            app = access.apply(
                s,
                self.data.actor(s, "consumer"),
                dataset=CLOSED,
                purpose="基层治理人口核查",
                fields=["id_number", "name", "village_code", "household_size"],
                until=access.today() + timedelta(days=30),
            )
            access.approve(s, self.data.actor(s, "steward"), app.id, **approve)


@pytest.fixture
def ckan_world(data_world: DataWorld, client: TestClient) -> Iterator[CkanWorld]:
    with data_world.db.session() as s:
        data_world.population(s)
        data_world.population(
            s,
            name=OPEN,
            title="村人口统计（开放）",
            description="各村户籍人口统计，向社会开放",
            tags=["人口", "统计"],
            share_class="unconditional",
            open_class="open",
        )
        _key, clear = keys.create_key(s, data_world.actor(s, "consumer"), name="ckan client")
    data_world.load_rows(CLOSED)
    data_world.load_rows(OPEN)
    yield CkanWorld(data_world, client, clear)


def ok(response: Any) -> Any:
    assert response.status_code == 200, response.text
    body = response.json()
    assert set(body) == {"help", "success", "result"} and body["success"] is True
    assert "/api/3/action/help_show?name=" in body["help"]
    return body["result"]


def error(response: Any, status: int, kind: str) -> dict[str, Any]:
    assert response.status_code == status, response.text
    body = response.json()
    assert body["success"] is False and body["error"]["__type"] == kind
    assert body["error"]["message"]
    return dict(body["error"])


def test_status_show_and_the_unversioned_alias(ckan_world: CkanWorld) -> None:
    result = ok(ckan_world.get("status_show"))
    assert result["ckan_version"].startswith("2.") and "datastore" in result["extensions"]
    assert ok(ckan_world.client.get("/api/action/status_show")) == result
    assert ok(ckan_world.client.post("/api/3/action/status_show")) == result


def test_unknown_action_and_bad_key(ckan_world: CkanWorld) -> None:
    error(ckan_world.get("package_create"), 400, "Not Found Error")
    err = error(ckan_world.get("package_list", key="cgk_not-a-real-key"), 403, "Authorization Error")
    assert "key" in err["message"].lower() or "密钥" in err["message"]


def test_anonymous_sees_open_metadata_and_open_rows_only(ckan_world: CkanWorld) -> None:
    w = ckan_world
    assert ok(w.get("package_list")) == [OPEN]
    pkg = ok(w.get("package_show", id=OPEN))
    assert pkg["name"] == OPEN and pkg["private"] is False
    assert pkg["organization"]["name"] == "county-1-market"
    assert {t["name"] for t in pkg["tags"]} == {"人口", "统计"}
    assert pkg["num_resources"] == 1 and pkg["resources"][0]["datastore_active"] is True
    # ids are stable UUIDs derived from the name; either finds the package
    assert uuid.UUID(pkg["id"]) and ok(w.get("package_show", id=pkg["id"]))["name"] == OPEN
    error(w.get("package_show", id=CLOSED), 404, "Not Found Error")
    error(w.get("package_show"), 409, "Validation Error")

    rows = ok(w.get("datastore_search", resource_id=pkg["resources"][0]["id"]))
    assert rows["total"] == 3 and len(rows["records"]) == 3
    names = sorted(r["name"] for r in rows["records"])
    assert names == ["张*", "李*", "王*"]  # personal fields masked for everyone
    assert all("*" in r["id_number"] for r in rows["records"])
    assert [f["id"] for f in rows["fields"]][:2] == ["id_number", "name"]
    # the closed dataset's rows cannot even be addressed
    error(w.get("datastore_search", resource_id=ckan.resource_id(CLOSED)), 404, "Not Found Error")


def test_key_without_grant_sees_shareable_metadata_but_no_rows(ckan_world: CkanWorld) -> None:
    w = ckan_world
    assert ok(w.get("package_list", key=w.key)) == [CLOSED, OPEN]
    assert ok(w.get("package_show", key=w.key, id=CLOSED))["private"] is True
    err = error(w.get("datastore_search", key=w.key, resource_id=CLOSED), 403, "Authorization Error")
    assert CLOSED in err["message"]


def test_datastore_search_with_a_grant_masks_filters_and_pages(ckan_world: CkanWorld) -> None:
    w = ckan_world
    w.grant(
        clear_fields=["name"], extra_filter=[{"field": "village_code", "op": "eq", "value": "331001001001"}]
    )
    res = ok(w.get("datastore_search", key=w.key, resource_id=ckan.resource_id(CLOSED)))
    assert res["total"] == 2  # the grant's row filter: only village 331001001001
    assert sorted(r["name"] for r in res["records"]) == ["张三", "李四"]  # name granted in clear
    assert all(
        r["id_number"].startswith(("110105", "110101")) and "*" in r["id_number"] for r in res["records"]
    )
    assert {f["id"] for f in res["fields"]} == {"id_number", "name", "village_code", "household_size"}

    # fields, sort, limit, offset, include_total — as GET parameters and as a POST body
    page = ok(
        w.get(
            "datastore_search",
            key=w.key,
            resource_id=CLOSED,
            fields="name,household_size",
            sort="household_size desc",
            limit=1,
            offset=1,
            include_total="false",
        )
    )
    assert page["records"] == [{"name": "张三", "household_size": 3}] and "total" not in page
    body = ok(
        w.post(
            "datastore_search",
            {"resource_id": CLOSED, "filters": {"household_size": 4}, "fields": ["name"]},
            key=w.key,
        )
    )
    assert body["records"] == [{"name": "李四"}] and body["total"] == 1
    assert ok(w.get("datastore_search", key=w.key, resource_id=CLOSED, q="李"))["total"] == 1

    # bad input: a clear error, in CKAN's shape
    error(
        w.get("datastore_search", key=w.key, resource_id=CLOSED, filters="{not json"), 409, "Validation Error"
    )
    error(w.get("datastore_search", key=w.key, resource_id=CLOSED, limit="many"), 409, "Validation Error")
    error(
        w.get("datastore_search", key=w.key, resource_id=CLOSED, fields="mobile"), 403, "Authorization Error"
    )
    error(
        w.get("datastore_search", key=w.key, resource_id=CLOSED, sort="nosuch asc"), 409, "Validation Error"
    )
    bad_body = w.client.post(
        "/api/3/action/datastore_search", content=b"{oops", headers={"Authorization": w.key}
    )
    error(bad_body, 409, "Validation Error")

    # every successful read is audited (channel ckan, the key named) and metered
    with w.data.db.session() as s:
        reads = list(s.scalars(select(AuditRecord).where(AuditRecord.action == "data.read")))
        pending = metering.meter_for(s.get_bind()).pending()
    assert reads and all(json.loads(r.diff)["_"]["channel"] == "ckan" for r in reads)
    assert all(json.loads(r.diff)["_"]["key"].startswith("cgk_") for r in reads)
    assert any(k[3] == "ckan" and k[0] is not None for k in pending)


def test_revoked_key_is_refused(ckan_world: CkanWorld) -> None:
    w = ckan_world
    with w.data.db.session() as s:
        key = keys.resolve_key(s, w.key)
        keys.revoke_key(s, w.data.actor(s, "consumer"), key.id)
    error(w.get("package_list", key=w.key), 403, "Authorization Error")


def test_package_search_query_filters_facets_and_sort(ckan_world: CkanWorld) -> None:
    w = ckan_world
    anon = ok(w.get("package_search", q="人口"))
    assert anon["count"] == 1 and [p["name"] for p in anon["results"]] == [OPEN]
    keyed = ok(
        w.get(
            "package_search",
            key=w.key,
            q="人口",
            **{"facet.field": '["organization", "tags", "theme"]'},
        )
    )
    assert keyed["count"] == 2
    assert keyed["facets"]["organization"] == {"county-1-market": 2}
    assert keyed["facets"]["tags"] == {"人口": 2, "户籍": 1, "统计": 1}
    assert keyed["search_facets"]["organization"]["items"][0]["display_name"]
    assert ok(w.get("package_search", key=w.key, fq="tags:户籍"))["results"][0]["name"] == CLOSED
    assert ok(w.get("package_search", key=w.key, fq="-tags:户籍"))["count"] == 1
    assert ok(w.get("package_search", key=w.key, fq='organization:"county-1-market"'))["count"] == 2
    by_name = ok(w.get("package_search", key=w.key, sort="name desc", rows=1, start=1))
    assert by_name["count"] == 2 and [p["name"] for p in by_name["results"]] == [CLOSED]
    assert ok(w.get("package_search", key=w.key, q="不存在的词汇"))["count"] == 0
    error(w.get("package_search", sort="popularity desc"), 409, "Validation Error")
    error(w.get("package_search", fq="nosuchfield:1"), 409, "Validation Error")
    error(w.get("package_search", rows=5000), 409, "Validation Error")
    error(w.get("package_search", **{"facet.field": "[broken"}), 409, "Validation Error")


def test_organizations_and_tags(ckan_world: CkanWorld) -> None:
    w = ckan_world
    assert ok(w.get("organization_list")) == ["county-1-market"]
    orgs = ok(w.get("organization_list", all_fields="true"))
    assert orgs[0]["package_count"] == 1 and orgs[0]["is_organization"] is True
    shown = ok(w.get("organization_show", key=w.key, id="county-1-market", include_datasets="true"))
    assert shown["package_count"] == 2 and {p["name"] for p in shown["packages"]} == {CLOSED, OPEN}
    assert ok(w.get("organization_show", id=shown["id"]))["package_count"] == 1  # anonymous: open only
    error(w.get("organization_show", id="no-such-org"), 404, "Not Found Error")
    assert ok(w.get("tag_list")) == ["人口", "统计"]
    assert ok(w.get("tag_list", key=w.key)) == ["人口", "户籍", "统计"]
    assert ok(w.get("tag_list", key=w.key, query="户")) == ["户籍"]


def test_errors_speak_the_callers_language(ckan_world: CkanWorld) -> None:
    w = ckan_world
    zh = w.client.get(
        "/api/3/action/package_show", params={"id": "nope"}, headers={"Accept-Language": "zh-CN"}
    )
    en = w.client.get("/api/3/action/package_show", params={"id": "nope"}, headers={"Accept-Language": "en"})
    assert zh.json()["error"]["message"] != en.json()["error"]["message"]
    assert "nope" in zh.json()["error"]["message"] and "nope" in en.json()["error"]["message"]
