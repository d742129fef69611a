"""The JSON API: intake and steps, bad input answered in the caller's language with nothing
written, the agreement PDF, and the statistics routes."""

from __future__ import annotations

import io

from pypdf import PdfReader
from sqlalchemy import text

from tests.disputes.conftest import APPLICANT, RESPONDENT, held_now
from tests.factories import login_headers


def _body(world, **kw):
    body = {
        "source": "walk_in",
        "type": "debt",
        "title": "借款纠纷",
        "description": "借款逾期未还",
        "grid_code": world.tree.regions["grid1a"].code,
        "parties": [APPLICANT, RESPONDENT],
        "amount": "30000.50",
    }
    body.update(kw)
    return body


def _count(world, table: str) -> int:
    with world.db.session() as s:
        return int(s.scalar(text(f"SELECT count(*) FROM {table}")))


def test_intake_to_agreement_pdf_through_the_api(world, client):
    h = login_headers(client, "t_mediator")
    r = client.post("/api/v1/disputes", headers=h, json=_body(world, complexity="complex", take=True))
    assert r.status_code == 201, r.text
    d = r.json()
    number = d["number"]
    assert d["state"] == "mediating" and d["amount"] == "30000.50"
    assert d["parties"][0]["id_number"] == APPLICANT["id_number"]  # the handling org sees it
    assert set(d["actions"]) == {"assign", "record_round", "fail", "move_up", "move_down", "withdraw"}
    r = client.post(
        f"/api/v1/disputes/{number}/record_round",
        headers=h,
        json={
            "version": d["version"],
            "held_at": held_now(),
            "place": "镇矛调中心",
            "attendees": "张三、李四",
            "minutes": "双方同意分期还款",
            "outcome": "agreement",
        },
    )
    assert r.status_code == 200, r.text
    r = client.post(
        f"/api/v1/disputes/{number}/agree",
        headers=h,
        json={"kind": "full", "facts": "李四向张三借款三万元逾期未还。", "terms": "李四分三期还清。"},
    )
    assert r.status_code == 200 and r.json()["state"] == "agreed"
    assert [f["kind"] for f in r.json()["follow_ups"]] == ["day7", "day30"]
    pdf = client.get(f"/api/v1/disputes/{number}/agreement.pdf", headers=h)
    assert pdf.status_code == 200 and pdf.headers["content-type"] == "application/pdf"
    text_ = "".join(p.extract_text() for p in PdfReader(io.BytesIO(pdf.content)).pages)
    for expected in (
        "人民调解协议书",
        number,
        "申请人：张三",
        "被申请人：李四",
        "李四分三期还清",
        "争议金额",
    ):
        assert expected in text_, expected
    # the leader reads the case, masked, and may not print the agreement
    lh = login_headers(client, "leader")
    assert client.get(f"/api/v1/disputes/{number}", headers=lh).json()["parties"][0]["phone"] == "138****5678"
    assert client.get(f"/api/v1/disputes/{number}/agreement.pdf", headers=lh).status_code == 403
    assert client.post(f"/api/v1/disputes/{number}/close", headers=lh, json={}).status_code == 403


def test_bad_input_is_a_clear_4xx_in_the_callers_language_and_writes_nothing(world, client):
    h = login_headers(client, "t_mediator")
    before = (_count(world, "dispute"), _count(world, "audit_record"))
    cases = [
        (_body(world, parties=[{"name": ""}]), 422, "当事人1未填写姓名", "Party 1 has no name"),
        (_body(world, source="referral"), 422, "移送单位", "Referring body"),
    ]
    for body, status, zh, en in cases:
        r = client.post("/api/v1/disputes", headers=h, json=body)
        assert r.status_code == status and zh in r.json()["error"]["message"], r.text
        r = client.post("/api/v1/disputes", headers={**h, "Accept-Language": "en"}, json=body)
        assert en in r.json()["error"]["message"], r.text
    assert (_count(world, "dispute"), _count(world, "audit_record")) == before
    # an illegal transition and a referral without a receiving body
    number = client.post("/api/v1/disputes", headers=h, json=_body(world)).json()["number"]
    r = client.post(
        f"/api/v1/disputes/{number}/agree", headers=h, json={"kind": "full", "facts": "x", "terms": "y"}
    )
    assert r.status_code == 422 and r.json()["error"]["code"] == "illegal_transition"
    assert "不能" in r.json()["error"]["message"]
    r = client.post(f"/api/v1/disputes/{number}/refer", headers=h, json={"target": "court"})
    assert r.status_code == 422 and "接收单位" in r.json()["error"]["message"]
    r = client.get(f"/api/v1/disputes/{number}", headers=h).json()
    assert r["state"] == "registered" and r["version"] == 1 and len(r["timeline"]) == 1


def test_statistics_routes(world, client):
    h = login_headers(client, "t_mediator")
    body = _body(world, complexity="complex", take=True)
    number = client.post("/api/v1/disputes", headers=h, json=body).json()["number"]
    client.post(
        f"/api/v1/disputes/{number}/record_round",
        headers=h,
        json={
            "held_at": held_now(),
            "place": "室",
            "attendees": "甲乙",
            "minutes": "记",
            "outcome": "agreement",
        },
    )
    client.post(
        f"/api/v1/disputes/{number}/agree", headers=h, json={"kind": "full", "facts": "f", "terms": "t"}
    )
    lh = login_headers(client, "leader")
    s = client.get("/api/v1/stats/disputes/summary", headers=lh).json()
    assert s["metrics"]["agreed"] == 1 and s["metrics"]["local_resolution_rate"] == 1.0
    assert s["targets"]["local_resolution_rate"] == 0.9
    assert (
        s["definitions"]["local_resolution_rate"]["doc"] == "docs/metrics.md#disputes-local_resolution_rate"
    )
    by = client.get("/api/v1/stats/disputes/by?dimension=mediator", headers=lh).json()
    assert [(g["key"], g["metrics"]["agreed"]) for g in by["groups"]] == [("t_mediator", 1)]
    by = client.get("/api/v1/stats/disputes/by?dimension=type", headers=lh).json()
    assert {g["key"]: g["metrics"]["registered"] for g in by["groups"]}["debt"] == 1
    assert client.get("/api/v1/stats/disputes/by?dimension=org&org=nope", headers=lh).status_code == 422
