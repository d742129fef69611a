"""The issue's whole flow over HTTP, on SQLite and PostgreSQL: register → ingest → search →
apply → approve → key → query (masked) → sandbox aggregate → revoke → refused."""

from __future__ import annotations

import json
from datetime import timedelta

from civicgrid.data import access
from civicgrid.data.engine import ID_CHECK, ID_WEIGHTS, id_number_valid
from tests.data.conftest import csv_bytes
from tests.factories import login_headers

SURNAMES = "张王李赵刘陈杨黄周吴"


def id_number(area: str, birth: str, seq: int) -> str:
    body = f"{area}{birth}{seq:03d}"
    return body + ID_CHECK[sum(w * int(d) for w, d in zip(ID_WEIGHTS, body, strict=True)) % 11]


def residents() -> list[dict[str, object]]:
    """12 people in each of two villages and 3 in a third (a group the sandbox must hide)."""
    rows: list[dict[str, object]] = []
    for village, n in (("331001001001", 12), ("331001001002", 12), ("331001001003", 3)):
        for _ in range(n):
            seq = len(rows) + 1
            rows.append(
                {
                    "id_number": id_number("331001", f"19{60 + seq % 40:02d}0{1 + seq % 9}1{seq % 9}", seq),
                    "name": SURNAMES[seq % 10] + "甲乙丙"[seq // 10] + "一二三四五六七八九十"[seq % 10],
                    "mobile": f"138{seq:08d}",
                    "village_code": village,
                    "household_size": 1 + seq % 6,
                }
            )
    assert all(id_number_valid(str(r["id_number"])) for r in rows)
    assert len({r["name"] for r in rows}) == len(rows)
    return rows


DATASET = {
    "name": "household-register",
    "title": "户籍人口登记",
    "title_en": "Household register",
    "description": "按村汇总的户籍人口，含身份证号与联系电话",
    "tags": ["人口", "户籍"],
    "theme": "people",
    "grade": "important",
    "share_class": "conditional",
    "share_condition": "用于基层治理，须经审批",
    "open_class": "closed",
    "fields": [
        {
            "name": "id_number",
            "title": "身份证号",
            "sensitivity": "personal",
            "mask": "id_number",
            "primary_key": True,
            "rules": {"not_null": True, "id_number": True},
        },
        {"name": "name", "title": "姓名", "sensitivity": "personal", "mask": "name"},
        {
            "name": "mobile",
            "title": "手机号",
            "sensitivity": "personal",
            "mask": "phone",
            "rules": {"mobile": True},
        },
        {"name": "village_code", "title": "村代码", "rules": {"regex": r"\d{12}"}},
        {"name": "household_size", "title": "户人数", "type": "integer"},
    ],
}


def test_the_whole_flow(client, data_world):
    steward = login_headers(client, "steward")
    consumer = login_headers(client, "consumer")
    name = DATASET["name"]

    # register and ingest (the owner department's steward)
    res = client.post("/api/v1/data/datasets", headers=steward, json=DATASET)
    assert res.status_code == 201, res.text
    rows = residents()
    res = client.post(
        f"/api/v1/data/datasets/{name}/loads",
        headers=steward,
        files={"file": ("residents.csv", csv_bytes(rows), "text/csv")},
        data={"mode": "replace"},
    )
    assert res.status_code == 201, res.text
    assert res.json()["rows"] == len(rows) and res.json()["rejected"] == 0

    # the consumer department finds it
    res = client.get("/api/v1/data/search", headers=consumer, params={"q": "户籍人口"})
    assert res.status_code == 200, res.text
    assert name in [h["name"] for h in res.json()["items"]]

    # applies: personal fields and all, for a month
    until = (access.today() + timedelta(days=30)).isoformat()
    res = client.post(
        "/api/v1/data/applications",
        headers=consumer,
        json={
            "dataset": name,
            "purpose": "独居老人走访与困难群众帮扶",
            "fields": ["id_number", "name", "mobile", "village_code", "household_size"],
            "until": until,
        },
    )
    assert res.status_code == 201 and res.json()["state"] == "pending", res.text
    app_id = res.json()["id"]

    # the owner approves, narrowing: no mobile numbers, only two villages, names in clear
    res = client.post(
        f"/api/v1/data/approvals/{app_id}/approve",
        headers=steward,
        json={
            "fields": ["id_number", "name", "village_code", "household_size"],
            "extra_filter": [
                {"field": "village_code", "op": "in", "value": ["331001001001", "331001001002"]}
            ],
            "clear_fields": ["name"],
            "quota_rows_per_day": 1000,
        },
    )
    assert res.status_code == 200, res.text
    grant = res.json()["grant"]
    assert grant["clear_fields"] == ["name"] and "mobile" not in grant["fields"]

    # a key, shown once
    key = client.post("/api/v1/data/keys", headers=consumer, json={"name": "走访系统"}).json()["key"]

    # query: masked as granted, inside the row filter
    res = client.get(
        f"/api/v1/data/query/{name}", headers={"X-API-Key": key}, params={"sort": "id_number", "limit": 50}
    )
    assert (
        res.status_code == 403 and res.json()["error"]["code"] == "field_masked"
    )  # no probing masked values
    res = client.get(
        f"/api/v1/data/query/{name}", headers={"X-API-Key": key}, params={"sort": "name", "limit": 50}
    )
    assert res.status_code == 200, res.text
    body = res.json()
    assert body["total"] == 24  # the third village is outside the grant
    by_name = {r["name"]: r for r in body["records"]}
    source = {r["name"]: r for r in rows}
    for person, rec in by_name.items():
        clear_id = str(source[person]["id_number"])
        assert rec["id_number"] == clear_id[:6] + "********" + clear_id[-4:]
        assert "mobile" not in rec
    assert res.text.count("1380000") == 0  # no phone number left the engine

    # sandbox: an aggregate by village; the 3-person village would be hidden anyway
    res = client.post(
        "/api/v1/data/sandbox/queries",
        headers=consumer,
        json={
            "sql": f"SELECT village_code, count(*) AS people, sum(household_size) AS members "
            f'FROM "{name}" GROUP BY village_code ORDER BY village_code'
        },
    )
    assert res.status_code == 200, res.text
    assert [
        r[:2] if isinstance(r, list) else [r["village_code"], r["people"]] for r in res.json()["rows"]
    ] == [
        ["331001001001", 12],
        ["331001001002", 12],
    ]

    # revoke: the next query and the next sandbox query are refused
    res = client.post(
        f"/api/v1/data/grants/{grant['id']}/revoke", headers=steward, json={"reason": "走访结束"}
    )
    assert res.status_code == 200 and res.json()["live"] is False
    res = client.get(f"/api/v1/data/query/{name}", headers={"X-API-Key": key})
    assert res.status_code == 403 and res.json()["error"]["code"] == "grant_revoked"
    assert "撤销" in res.json()["error"]["message"]
    res = client.post(
        "/api/v1/data/sandbox/queries",
        headers=consumer,
        json={"sql": f'SELECT village_code, count(*) FROM "{name}" GROUP BY village_code'},
    )
    assert res.status_code in (403, 422), res.text

    # every read is in the hash-chained audit log, with its channel and rows, and the chain holds
    admin = login_headers(client, "admin")
    res = client.get("/api/v1/audit", headers=admin, params={"action": "data.read", "size": 50})
    reads = [json.loads(r["diff"])["_"] for r in res.json()["items"]]
    assert sorted((r["channel"], r["rows"]) for r in reads) == [("api", 24), ("sandbox", 2)]
    assert client.post("/api/v1/audit/verify", headers=admin).json()["intact"] is True
