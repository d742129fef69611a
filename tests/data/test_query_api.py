"""The keyed data API over HTTP: applications, approvals, keys, masked queries, quotas, rate
limits, revocation, audit of every read and usage numbers for the charts."""

from __future__ import annotations

import json
from datetime import timedelta

import pytest
from sqlalchemy import select

from civicgrid.core import audit
from civicgrid.data import access
from tests.data.access_world import POPULATION_ROWS, AccessWorld, access_world_fixture  # noqa: F401
from tests.factories import login_headers

UNTIL = (access.today() + timedelta(days=30)).isoformat()
FIELDS = ["village", "name", "id_number", "age"]


@pytest.fixture
def loaded(access_world: AccessWorld) -> AccessWorld:
    version = access_world.data.load_rows("population", POPULATION_ROWS)
    assert version.rows == len(POPULATION_ROWS), version.error
    return access_world


def _grant(client, *, fields=FIELDS, row_filter=(), **approval) -> int:
    consumer = login_headers(client, "consumer")
    body = {"dataset": "population", "purpose": "困难群众走访", "fields": fields, "until": UNTIL}
    body["row_filter"] = list(row_filter)
    res = client.post("/api/v1/data/applications", headers=consumer, json=body)
    assert res.status_code == 201, res.text
    app = res.json()
    assert app["state"] == "pending" and app["grant"] is None
    steward = login_headers(client, "steward")
    res = client.post(f"/api/v1/data/approvals/{app['id']}/approve", headers=steward, json=approval)
    assert res.status_code == 200, res.text
    assert res.json()["state"] == "approved"
    return res.json()["grant"]["id"]


def _key(client, username="consumer") -> str:
    res = client.post("/api/v1/data/keys", headers=login_headers(client, username), json={"name": "走访系统"})
    assert res.status_code == 201, res.text
    return res.json()["key"]


def _query(client, key, dataset="population", **params):
    return client.get(f"/api/v1/data/query/{dataset}", headers={"X-API-Key": key}, params=params)


def test_a_granted_key_reads_masked_rows_inside_its_row_filter(client, loaded):
    _grant(client, row_filter=[{"field": "age", "op": "gte", "value": 18}])
    key = _key(client)
    res = _query(client, key, sort="-age")
    assert res.status_code == 200, res.text
    body = res.json()
    assert body["total"] == 4  # the child (age 9) is outside the grant's row filter
    assert [f["name"] for f in body["fields"]] == FIELDS
    assert {f["name"]: f["masked"] for f in body["fields"]} == {
        "village": False,
        "name": True,
        "id_number": True,
        "age": False,
    }
    first = body["records"][0]
    assert first == {"village": "村2", "name": "王*", "id_number": "330102********0018", "age": 45}
    assert {r["name"] for r in body["records"]} == {"王*", "张*", "欧***", "李*"}
    assert "phone" not in first  # never asked for
    assert body["quota"] == {"rows_per_day": 100_000, "used": 4, "remaining": 99_996}


def test_fields_granted_in_clear_are_shown_in_clear(client, loaded):
    _grant(client, clear_fields=["name"])
    body = _query(
        client, _key(client), fields="name,id_number", filters=json.dumps({"village": "村1"})
    ).json()
    assert sorted(r["name"] for r in body["records"]) == ["张三", "李四", "赵六"]
    assert all("*" in r["id_number"] for r in body["records"])


def test_filters_sort_and_pages_over_get_and_post(client, loaded):
    _grant(client, extra_filter=[{"field": "village", "op": "eq", "value": "村1"}])
    key = _key(client)
    res = _query(client, key, fields="age", sort="age desc", limit=1, offset=1)
    assert res.json()["records"] == [{"age": 19}] and res.json()["total"] == 3
    res = client.post(
        "/api/v1/data/query/population",
        headers={"Authorization": f"ApiKey {key}"},
        json={
            "fields": ["village", "age"],
            "filters": [{"field": "age", "op": "between", "value": [10, 40]}],
            "sort": ["-age"],
        },
    )
    assert res.status_code == 200, res.text
    # the grant's village condition is AND-ed with the caller's: 村2's 26-year-old never shows
    assert res.json()["records"] == [{"village": "村1", "age": 34}, {"village": "村1", "age": 19}]


@pytest.mark.parametrize(
    ("params", "status", "code", "zh"),
    [
        ({"fields": "salary"}, 422, "unknown_field", "没有字段 salary"),
        ({"fields": "phone"}, 403, "field_not_granted", "不包含字段 phone"),
        ({"filters": '[{"field": "name", "op": "eq", "value": "张三"}]'}, 403, "field_masked", "脱敏"),
        ({"sort": "-id_number"}, 403, "field_masked", "不能用于筛选或排序"),
        ({"filters": '[{"field": "age", "op": "drop", "value": 1}]'}, 422, "bad_filter", "未知的筛选运算符"),
        ({"filters": '[{"field": "age", "op": "gt", "value": "old"}]'}, 422, "bad_filter_value", "类型"),
        ({"filters": "{not json"}, 422, "bad_filter", "JSON"),
        ({"limit": 5000}, 422, "invalid", "输入无效"),
    ],
)
def test_bad_queries_get_a_clear_error_in_chinese(client, loaded, params, status, code, zh):
    _grant(client)
    res = _query(client, _key(client), **params)
    assert res.status_code == status, res.text
    assert res.json()["error"]["code"] == code and zh in res.json()["error"]["message"], res.text


def test_who_may_call(client, loaded):
    _grant(client)
    key = _key(client)
    res = client.get("/api/v1/data/query/population")
    assert res.status_code == 401 and "X-API-Key" in res.json()["error"]["message"]
    assert _query(client, "cgk_nonsense").json()["error"]["code"] == "api_key_unknown"
    assert _query(client, key, dataset="nope").status_code == 404
    outsider = _key(client, "outsider")
    res = _query(client, outsider)
    assert res.status_code == 403 and res.json()["error"]["code"] == "no_grant"
    assert "没有数据集 population 的授权" in res.json()["error"]["message"]
    # a session token is not a data key
    assert (
        client.get("/api/v1/data/query/population", headers=login_headers(client, "consumer")).status_code
        == 401
    )


def test_a_sandbox_only_grant_gives_no_rows(client, loaded):
    _grant(client, mode="sandbox")
    res = _query(client, _key(client))
    assert res.status_code == 403 and res.json()["error"]["code"] == "sandbox_only"


def test_the_daily_row_quota_cuts_the_last_page_then_refuses_until_midnight(client, loaded):
    _grant(client, quota_rows_per_day=4)
    key = _key(client)
    assert len(_query(client, key, limit=3).json()["records"]) == 3
    last = _query(client, key, limit=3).json()
    assert len(last["records"]) == 1 and last["quota"] == {"rows_per_day": 4, "used": 4, "remaining": 0}
    res = _query(client, key, limit=3)
    assert res.status_code == 429 and res.json()["error"]["code"] == "too_many_requests"
    assert "配额已用完" in res.json()["error"]["message"]
    wait = int(res.headers["Retry-After"])
    assert 0 < wait <= 24 * 3600
    # another key of the same org has its own quota (quotas are per key)
    assert _query(client, _key(client), limit=1).status_code == 200


def test_the_rate_limit_answers_429_with_retry_after(client, loaded):
    _grant(client, rate_per_minute=2)
    key = _key(client)
    assert [_query(client, key, limit=1).status_code for _ in range(2)] == [200, 200]
    res = _query(client, key, limit=1)
    assert res.status_code == 429 and res.headers["Retry-After"] == "30"
    assert "每分钟 2 次" in res.json()["error"]["message"]


def test_revoking_the_grant_or_the_key_refuses_the_next_call(client, loaded):
    grant_id = _grant(client)
    key = _key(client)
    assert _query(client, key).status_code == 200
    steward = login_headers(client, "steward")
    res = client.post(f"/api/v1/data/grants/{grant_id}/revoke", headers=steward, json={"reason": "项目结束"})
    assert res.status_code == 200 and res.json()["live"] is False
    res = _query(client, key)
    assert res.status_code == 403 and res.json()["error"]["code"] == "grant_revoked"
    _grant(client)
    assert _query(client, key).status_code == 200
    consumer = login_headers(client, "consumer")
    key_id = client.get("/api/v1/data/keys", headers=consumer).json()[0]["id"]
    assert client.post(f"/api/v1/data/keys/{key_id}/revoke", headers=consumer).json()["live"] is False
    res = _query(client, key)
    assert res.status_code == 401 and res.json()["error"]["code"] == "api_key_revoked"


def test_every_read_is_in_the_audit_chain_without_personal_data(client, loaded):
    _grant(client, clear_fields=["id_number"])
    key = _key(client)
    flt = json.dumps([{"field": "id_number", "op": "eq", "value": "110101199003071234"}])
    assert len(_query(client, key, filters=flt).json()["records"]) == 1
    _query(client, key, limit=2)
    with loaded.db.session() as s:
        reads = s.scalars(
            select(audit.AuditRecord)
            .where(audit.AuditRecord.action == "data.read")
            .order_by(audit.AuditRecord.id)
        ).all()
        assert audit.verify(s) == []
    assert [r.target_id for r in reads] == ["population", "population"]
    first = json.loads(reads[0].diff)["_"]
    assert first["rows"] == 1 and first["channel"] == "api" and key.startswith(first["key"])
    assert reads[0].actor == f"apikey:{first['key']}" and reads[0].org_id is not None
    assert "110101199003071234" not in reads[0].diff and "110101********1234" in reads[0].diff
    assert json.loads(reads[1].diff)["_"]["rows"] == 2
    # refused calls read nothing and record nothing
    _query(client, key, fields="salary")
    with loaded.db.session() as s:
        assert (
            len(s.scalars(select(audit.AuditRecord).where(audit.AuditRecord.action == "data.read")).all())
            == 2
        )


def test_usage_numbers_for_owner_consumer_and_bureau(client, loaded):
    _grant(client)
    key = _key(client)
    _query(client, key, limit=2)
    _query(client, key, limit=3)
    owner = client.get("/api/v1/data/usage", headers=login_headers(client, "steward"), params={"days": 7})
    assert owner.status_code == 200, owner.text
    body = owner.json()
    assert len(body["days"]) == 7 and body["days"][-1] == access.today().isoformat()
    (series,) = body["datasets"]
    assert series["name"] == "population" and series["calls"][-1] == 2 and series["rows"][-1] == 5
    assert body["consumers"] == [
        {"org_id": loaded.data.tree.orgs["dept1"].id, "org": "县1综治办", "calls": 2, "rows": 5}
    ]
    assert body["channels"] == {"api": {"calls": 2, "rows": 5}} and body["total"] == {"calls": 2, "rows": 5}
    mine = client.get("/api/v1/data/usage", headers=login_headers(client, "consumer")).json()
    assert mine["total"] == {"calls": 2, "rows": 5}
    assert (
        client.get("/api/v1/data/usage", headers=login_headers(client, "outsider")).json()["total"]["calls"]
        == 0
    )
    assert (
        client.get("/api/v1/data/usage", headers=login_headers(client, "admin")).json()["total"]["rows"] == 5
    )
    assert client.get("/api/v1/data/usage", headers=login_headers(client, "resident")).status_code == 403


def test_approvals_inbox_decisions_and_roles_over_http(client, loaded):
    consumer = login_headers(client, "consumer")
    steward = login_headers(client, "steward")
    body = {"dataset": "population", "purpose": "困难群众走访", "fields": FIELDS, "until": UNTIL}
    app_id = client.post("/api/v1/data/applications", headers=consumer, json=body).json()["id"]
    inbox = client.get("/api/v1/data/approvals", headers=steward).json()
    assert [a["id"] for a in inbox["items"]] == [app_id] and inbox["items"][0]["purpose"] == "困难群众走访"
    assert client.get("/api/v1/data/approvals", headers=consumer).status_code == 403  # not a steward
    assert client.post("/api/v1/data/applications", headers=steward, json=body).status_code == 403
    res = client.post(f"/api/v1/data/approvals/{app_id}/refuse", headers=steward, json={"reason": ""})
    assert res.status_code == 422 and "理由" in res.json()["error"]["message"]
    res = client.post(f"/api/v1/data/approvals/{app_id}/refuse", headers=steward, json={"reason": "用途不符"})
    assert res.json()["state"] == "refused"
    mine = client.get("/api/v1/data/applications", headers=consumer).json()["items"]
    assert mine[0]["state"] == "refused" and mine[0]["decision_reason"] == "用途不符"
    assert client.get("/api/v1/data/approvals", headers=steward).json()["total"] == 0
    res = client.post(
        "/api/v1/data/applications", headers=consumer, json={**body, "dataset": "shops", "fields": ["shop"]}
    )
    assert res.json()["state"] == "approved" and res.json()["decided_by"] == "system"  # 无条件共享
    grants = client.get("/api/v1/data/grants", headers=consumer, params={"live": True}).json()
    assert [g["fields"] for g in grants] == [["shop"]]


def test_keys_are_shown_once_and_stored_hashed(client, loaded):
    consumer = login_headers(client, "consumer")
    res = client.post("/api/v1/data/keys", headers=consumer, json={"name": "走访系统", "days": 30})
    clear = res.json()["key"]
    assert clear.startswith("cgk_") and clear.startswith(res.json()["prefix"])
    listed = client.get("/api/v1/data/keys", headers=consumer).json()
    assert "key" not in listed[0] and listed[0]["live"] is True
    assert client.get("/api/v1/data/keys", headers=login_headers(client, "outsider")).json() == []
    other = login_headers(client, "outsider")
    assert client.post(f"/api/v1/data/keys/{listed[0]['id']}/revoke", headers=other).status_code == 404
    from civicgrid.data.models import ApiKey

    with loaded.db.session() as s:
        assert clear not in {k.key_hash for k in s.scalars(select(ApiKey))}
    assert client.post("/api/v1/data/keys", headers=consumer, json={"name": " "}).status_code == 422
