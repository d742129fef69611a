"""The JSON API and the pages: rules with validation and dry run, the board, the warning page
and handling, bad input as 4xx in the reader's language with nothing written, and scope."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest
from sqlalchemy import func, select

from civicgrid.core.db import utcnow
from civicgrid.risks import service
from civicgrid.risks.models import RiskRule, Warning
from tests.factories import login_headers
from tests.risks.conftest import World, add_event


def _count(world: World, model: type) -> int:
    with world.db.session() as s:
        return int(s.scalar(select(func.count()).select_from(model)) or 0)


def _rule(world: World, **over: Any) -> dict[str, Any]:
    return {
        "name": "垃圾暴露阈值",
        "kind": "threshold",
        "params": {"categories": ["01"], "window_days": 2, "levels": {"yellow": 3}},
        "region_code": world.region("county1").code,
        **over,
    }


def _hot(world: World, n: int = 3) -> None:
    with world.db.session() as s:
        for i in range(n):
            add_event(s, world, category="0102", at=utcnow() - timedelta(hours=i + 1))


@pytest.mark.parametrize(
    ("params", "needle"),
    [
        ({"categories": ["01"], "levels": {"yellow": 3}}, "时间窗口"),  # no window: unbounded
        ({"categories": ["01"], "window_days": 400, "levels": {"yellow": 3}}, "window_days"),
        ({"categories": ["zz"], "window_days": 2, "levels": {"yellow": 3}}, "zz"),
        ({"categories": ["01"], "window_days": 2, "levels": {"purple": 3}}, "purple"),
        ({"categories": ["01"], "window_days": 2, "levels": {"yellow": 5, "red": 4}}, "red"),
        ({"categories": ["01"], "window_days": 2, "levels": {"yellow": 3}, "windw": 1}, "windw"),
        ({"categories": ["01"], "window_days": 2, "levels": {"yellow": 3}, "per": "city"}, "per"),
    ],
)
def test_bad_rules_are_refused_in_chinese(
    client: Any, world: World, params: dict[str, Any], needle: str
) -> None:
    h = login_headers(client, "admin")
    res = client.post("/api/v1/risks/rules", json=_rule(world, params=params), headers=h)
    assert res.status_code == 422, res.text
    message = res.json()["error"]["message"]
    assert needle in message and any("\u4e00" <= ch <= "\u9fff" for ch in message), message
    assert _count(world, RiskRule) == 0
    # The same for the dry run: nothing is evaluated.
    res = client.post("/api/v1/risks/rules/dry-run", json=_rule(world, params=params), headers=h)
    assert res.status_code == 422


def test_rule_dry_run_and_crud(client: Any, world: World) -> None:
    _hot(world, 4)
    h = login_headers(client, "admin")
    res = client.post("/api/v1/risks/rules/dry-run", json=_rule(world), headers=h)
    assert res.status_code == 200, res.text
    body = res.json()
    assert body["count"] == 1 and body["warnings"][0]["evidence"] == 4
    assert body["warnings"][0]["region_code"] == world.region("town1").code
    assert _count(world, RiskRule) == 0 and _count(world, Warning) == 0  # the dry run wrote nothing
    res = client.post("/api/v1/risks/rules", json=_rule(world), headers=h)
    assert res.status_code == 201, res.text
    rule = res.json()
    res = client.put(
        f"/api/v1/risks/rules/{rule['id']}",
        json={**_rule(world, name="改名"), "version": rule["version"]},
        headers=h,
    )
    assert res.status_code == 200 and res.json()["name"] == "改名"
    stale = client.put(
        f"/api/v1/risks/rules/{rule['id']}", json={**_rule(world), "version": rule["version"]}, headers=h
    )
    assert stale.status_code == 409
    # Another kind is refused; a county admin of county 2 cannot see the rule.
    res = client.put(f"/api/v1/risks/rules/{rule['id']}", json=_rule(world, kind="cluster"), headers=h)
    assert res.status_code == 422
    other = login_headers(client, "county_admin")
    assert client.get(f"/api/v1/risks/rules/{rule['id']}", headers=other).status_code == 404
    assert client.get("/api/v1/risks/rules", headers=other).json() == []
    # Only admins manage rules.
    assert (
        client.post(
            "/api/v1/risks/rules", json=_rule(world), headers=login_headers(client, "dispatcher")
        ).status_code
        == 403
    )


def test_warning_loop_over_the_api(client: Any, world: World) -> None:
    _hot(world)
    admin = login_headers(client, "admin")
    rule = client.post("/api/v1/risks/rules", json=_rule(world), headers=admin).json()
    with world.db.session() as s:
        service.evaluate_new(s)
    d = login_headers(client, "dispatcher")
    page = client.get("/api/v1/risks/warnings?open_only=true", headers=d).json()
    assert page["total"] == 1
    number = page["items"][0]["number"]
    detail = client.get(f"/api/v1/risks/warnings/{number}", headers=d).json()
    assert detail["steps"] == ["measure", "event", "task", "close"] and len(detail["evidence"]) == 3
    board = client.get("/api/v1/risks/board", headers=d).json()  # the township itself holds it
    assert board["region_code"] == world.region("town1").code and board["rows"][0]["counts"]["yellow"] == 1
    county = client.get(f"/api/v1/risks/board?region={world.region('county1').code}", headers=admin).json()
    assert [r["counts"]["yellow"] for r in county["rows"]] == [0, 1]  # the county itself, then town 1
    # Bad input: 4xx in the reader's language, nothing written.
    res = client.post(
        f"/api/v1/risks/warnings/{number}/close",
        json={"feedback": " ", "outcome": "x", "verdict": "real"},
        headers=d,
    )
    assert res.status_code == 422 and "处置情况" in res.json()["error"]["message"]
    res = client.post(
        f"/api/v1/risks/warnings/{number}/close",
        json={"feedback": "x", "outcome": "x", "verdict": "maybe"},
        headers=d,
    )
    assert res.status_code == 422
    res = client.post(
        f"/api/v1/risks/warnings/{number}/tasks", json={"org_code": "nope", "description": "x"}, headers=d
    )
    assert res.status_code == 422 and "nope" in res.json()["error"]["message"]
    res = client.post(
        f"/api/v1/risks/warnings/{number}/events", json={"category": "9999", "description": "x"}, headers=d
    )
    assert res.status_code == 422
    assert len(client.get(f"/api/v1/risks/warnings/{number}", headers=d).json()["timeline"]) == 1
    # Handling and closing.
    assert (
        client.post(
            f"/api/v1/risks/warnings/{number}/measures", json={"note": "已派人清理"}, headers=d
        ).status_code
        == 200
    )
    res = client.post(
        f"/api/v1/risks/warnings/{number}/close",
        json={"feedback": "已清理", "outcome": "已消除", "verdict": "false_alarm"},
        headers=d,
    )
    assert res.status_code == 200 and res.json()["state"] == "closed"
    got = client.get(f"/api/v1/risks/rules/{rule['id']}", headers=admin).json()
    assert got["precision"] == {"real": 0, "false_alarm": 1, "closed": 1, "rate": 0.0}
    # Scope: town 2's dispatcher does not see it; a resident has no access at all.
    assert (
        client.get(
            f"/api/v1/risks/warnings/{number}", headers=login_headers(client, "dispatcher2")
        ).status_code
        == 404
    )
    assert client.get("/api/v1/risks/warnings", headers=login_headers(client, "resident")).status_code == 403


def test_manual_raise_over_the_api(client: Any, world: World) -> None:
    gw = login_headers(client, "grid_worker")
    res = client.post(
        "/api/v1/risks/warnings",
        json={
            "region_code": world.region("village1").code,
            "level": "红",
            "title": "河堤渗水",
            "note": "巡查发现",
        },
        headers=gw,
    )
    assert res.status_code == 201, res.text
    assert res.json()["level"] == "red" and res.json()["assigned_org"] == "镇1四平台"
    res = client.post(
        "/api/v1/risks/warnings",
        json={"region_code": world.region("village2").code, "level": "red", "title": "x"},
        headers=gw,
    )
    assert res.status_code == 422  # outside the grid worker's village: not found as a region
    res = client.post(
        "/api/v1/risks/warnings",
        json={
            "region_code": world.region("village1").code,
            "level": "red",
            "title": "x",
            "event_numbers": ["no-such"],
        },
        headers=gw,
    )
    assert res.status_code == 422 and "no-such" in res.json()["error"]["message"]
    assert _count(world, Warning) == 1


def test_pages_render_in_chinese(client: Any, world: World) -> None:
    _hot(world)
    admin = login_headers(client, "admin")
    client.post("/api/v1/risks/rules", json=_rule(world), headers=admin)
    with world.db.session() as s:
        service.full_pass(s)
        number = s.scalar(select(Warning.number))
    d = login_headers(client, "dispatcher")
    for url, needle in (
        ("/risks", "风险预警"),
        (f"/risks/{number}", "反馈并办结"),
        ("/risks/rules", "准确率"),
        ("/risks/new", "发布预警"),
    ):
        res = client.get(url, headers=d)
        assert res.status_code == 200, url
        assert res.headers["content-type"] == "text/html; charset=utf-8"
        assert needle in res.text, (url, needle)
    assert client.get("/risks/rules/new", headers=d).status_code == 403
    res = client.get("/risks/rules/new", headers=admin)
    assert res.status_code == 200 and "试运行" in res.text
