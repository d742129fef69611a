from __future__ import annotations

from tests.factories import login_headers

REPORT = {
    "category": "0102",
    "lon": 2.5,
    "lat": 2.5,
    "description": "小区门口有暴露垃圾",
    "address": "幸福路1号",
}


def test_report_dispatch_and_conflict_over_http(client, world):
    resident = login_headers(client, "resident")
    res = client.post("/api/v1/events", headers=resident, json=REPORT)
    assert res.status_code == 201, res.text
    ev = res.json()
    assert ev["state"] == "reported" and ev["grid_code"] == world.tree.regions["grid1a"].code
    assert ev["channel"] == "api" and ev["timeline"][0]["action"] == "report"
    assert ev["actions"] == []  # a resident cannot accept their own report
    number = ev["number"]

    dispatcher = login_headers(client, "dispatcher")
    ev = client.get(f"/api/v1/events/{number}", headers=dispatcher).json()
    assert "accept" in ev["actions"] and "reject" in ev["actions"]
    assert ev["reporter"] == "张三", ev["reporter"]  # dispatchers see the reporter in clear
    version = ev["version"]
    res = client.post(f"/api/v1/events/{number}/accept", headers=dispatcher, json={"version": version})
    assert res.status_code == 200 and res.json()["state"] == "accepted"
    # a second dispatcher acting on what they saw before gets a conflict in Chinese, and nothing changes
    res = client.post(
        f"/api/v1/events/{number}/reject",
        headers=dispatcher,
        json={"version": version, "reason": "x", "basis": "y"},
    )
    assert res.status_code == 409
    assert "刚刚被他人修改" in res.json()["error"]["message"]
    res = client.post(f"/api/v1/events/{number}/dispatch", headers=dispatcher, json={})
    assert res.status_code == 200 and res.json()["lead_org"] == "镇1综合执法中队"

    handler = login_headers(client, "handler")
    listing = client.get("/api/v1/events", headers=handler, params={"order": "due"}).json()
    assert [e["number"] for e in listing["items"]] == [number]
    assert listing["items"][0]["reporter"] == "张*"  # a handler sees the reporter masked


def test_bad_input_is_clear_and_writes_nothing(client, world):
    resident = login_headers(client, "resident")
    cases = [
        ({**REPORT, "category": "9999"}, 422, "未知的事件类别 9999。"),
        ({**REPORT, "lon": 50.0, "lat": 50.0}, 422, "辖区"),
        ({**REPORT, "description": ""}, 422, "输入无效"),
        ({**REPORT, "lat": 123}, 422, "输入无效"),
    ]
    for body, code, text in cases:
        res = client.post("/api/v1/events", headers=resident, json=body)
        assert res.status_code == code, res.text
        assert text in res.json()["error"]["message"], res.text
    # the route reads its body itself: a broken or missing JSON body is the same clear 422
    for raw in (b'{"category": "0102", "lon": 2.5,', b""):
        res = client.post(
            "/api/v1/events", headers={**resident, "Content-Type": "application/json"}, content=raw
        )
        assert res.status_code == 422 and "输入无效" in res.json()["error"]["message"], res.text
    res = client.post(
        "/api/v1/events", headers=resident, json={k: v for k, v in REPORT.items() if k != "lon"}
    )
    assert res.status_code == 422 and "lon" in res.json()["error"]["message"], res.text
    assert client.get("/api/v1/events", headers=resident).json()["total"] == 0
    res = client.post("/api/v1/events", headers=login_headers(client, "resident"), json=REPORT)
    number = res.json()["number"]
    dispatcher = login_headers(client, "dispatcher")
    res = client.post(f"/api/v1/events/{number}/close", headers=dispatcher, json={})
    assert res.status_code == 422 and res.json()["error"]["code"] == "illegal_transition"
    assert "已上报" in res.json()["error"]["message"]
    res = client.post(f"/api/v1/events/{number}/reject", headers=dispatcher, json={"reason": "不归我们管"})
    assert res.status_code == 422 and "basis" in res.json()["error"]["message"]
    res = client.post(f"/api/v1/events/{number}/fly", headers=dispatcher, json={})
    assert res.status_code == 404
    assert (
        client.get(f"/api/v1/events/{number}", headers=login_headers(client, "dispatcher2")).status_code
        == 404
    )


def test_internal_intake_is_idempotent(client, world):
    admin = login_headers(client, "admin")
    body = {**REPORT, "external_id": "risk-42", "channel": "risk"}
    first = client.post("/api/v1/events/internal", headers=admin, json=body).json()
    again = client.post("/api/v1/events/internal", headers=admin, json=body).json()
    assert first["number"] == again["number"] and first["channel"] == "risk"
    assert client.get("/api/v1/events", headers=admin).json()["total"] == 1


def test_inbox_shows_translated_notices(client, world):
    resident = login_headers(client, "resident")
    number = client.post("/api/v1/events", headers=resident, json=REPORT).json()["number"]
    dispatcher = login_headers(client, "dispatcher")
    client.post(f"/api/v1/events/{number}/accept", headers=dispatcher, json={})
    notes = client.get("/api/v1/inbox", headers=resident).json()
    assert notes[0]["message"] == f"您上报的事件 {number} 已受理。" and notes[0]["event_number"] == number
    res = client.post(f"/api/v1/inbox/{notes[0]['id']}/read", headers=resident)
    assert res.json()["read_at"] is not None
    assert client.get("/api/v1/inbox", headers=resident, params={"unread": True}).json() == []


def test_the_report_body_is_documented(client):
    """POST /api/v1/events reads its body itself; /docs still shows what to send."""
    op = client.get("/openapi.json").json()["paths"]["/api/v1/events"]["post"]
    schema = op["requestBody"]["content"]["application/json"]["schema"]
    assert {"category", "lon", "lat", "description"} <= set(schema["required"])
    assert schema["properties"]["lat"]["maximum"] == 90
