from __future__ import annotations

import re
from datetime import datetime, time, timedelta
from pathlib import Path

import pytest
from sqlalchemy import update

from civicgrid.core.calendar import default_calendar, local_today
from civicgrid.core.db import utcnow
from civicgrid.core.errors import Invalid, NotFound, PermissionDenied
from civicgrid.events import actions, service, stats
from civicgrid.events.models import Channel, Event
from tests.factories import login_headers

GRID_1A, GRID_2A = (2.5, 2.5), (7.5, 2.5)
METRICS_DOC = Path(__file__).resolve().parents[2] / "docs" / "metrics.md"


def report(s, world, at=GRID_1A, who="resident", text="小区门口有暴露垃圾"):
    return service.create_event(
        s,
        world.actor(s, who),
        category_code="0102",
        lon=at[0],
        lat=at[1],
        description=text,
        channel=Channel.web,
    ).number


def step(s, world, who, number, action, **kw):
    return actions.act(s, world.actor(s, who), number, action, **kw)


def set_due(s, number, hours_from_now):
    now = utcnow()
    due = now + timedelta(hours=hours_from_now)
    if hours_from_now < 0:  # a passed deadline stays on today's local date (flows count per local day)
        midnight = datetime.combine(local_today(now), time(0), default_calendar().tz)
        due = max(due, midnight + (now - midnight) / 2)
    s.execute(
        update(Event)
        .where(Event.number == number)
        .values(handle_due_at=due)
        .execution_options(synchronize_session=False)
    )
    s.expire_all()


def handle_to_close(s, world, number, *, score=None, late=False):
    step(s, world, "handler", number, "start")
    step(s, world, "handler", number, "handle", result="已清运")
    if late:
        step(s, world, "resident", number, "verify", passed=False, note="垃圾还在")
        set_due(s, number, -1)  # the rework deadline passes before the second handling
        step(s, world, "handler", number, "handle", result="已再次清运")
    step(s, world, "resident", number, "verify", passed=True)
    step(s, world, "dispatcher", number, "close")
    if score:
        step(s, world, "resident", number, "rate", score=score)


@pytest.fixture
def events_set(world):
    """A hand-made set, each event driven through the real workflow:
    A closed on time, rated 5; B reworked, closed late, rated 2; C handed back, re-dispatched
    and overdue in handling; D escalated to the county, closed there; E rejected; F only
    reported; G accepted in county 2 (no department there)."""
    n = {}
    with world.db.session() as s:
        n["A"] = report(s, world)
        step(s, world, "dispatcher", n["A"], "accept")
        step(s, world, "dispatcher", n["A"], "dispatch")
        handle_to_close(s, world, n["A"], score=5)

        n["B"] = report(s, world)
        step(s, world, "dispatcher", n["B"], "accept")
        step(s, world, "dispatcher", n["B"], "dispatch")
        handle_to_close(s, world, n["B"], score=2, late=True)

        n["C"] = report(s, world)
        step(s, world, "dispatcher", n["C"], "accept")
        step(s, world, "dispatcher", n["C"], "dispatch")
        step(s, world, "handler", n["C"], "return", reason="不属于我单位职责")
        step(s, world, "dispatcher", n["C"], "dispatch", lead_org_id=world.tree.orgs["dept1"].id)
        step(s, world, "handler_safety", n["C"], "start")

        n["D"] = report(s, world)
        step(s, world, "dispatcher", n["D"], "accept")
        step(s, world, "dispatcher", n["D"], "escalate", reason="涉及多个部门")
        step(s, world, "county_dispatcher", n["D"], "dispatch", lead_org_id=world.tree.orgs["enforce1"].id)
        step(s, world, "handler", n["D"], "start")
        step(s, world, "handler", n["D"], "handle", result="已处置")
        step(s, world, "resident", n["D"], "verify", passed=True)
        step(s, world, "county_dispatcher", n["D"], "close")

        n["E"] = report(s, world)
        step(s, world, "dispatcher", n["E"], "reject", reason="不属于受理范围", basis="受理规则")
        n["F"] = report(s, world)
        n["G"] = report(s, world, at=GRID_2A)
        step(s, world, "dispatcher2", n["G"], "accept")
        set_due(s, n["C"], -1)  # C's deadline passes while it is being handled
    return n


def summary_for(world, who):
    with world.db.session() as s:
        actor = world.actor(s, who)
        return stats.summary(s, actor, stats.window())


def test_summary_matches_a_hand_count_city_wide(events_set, world):
    m = summary_for(world, "admin")["metrics"]
    # accepted in the period: A B C D G (E was refused, F not yet accepted)
    assert m["accepted"] == 5
    assert m["closed"] == 3  # A B D
    assert m["due"] == 4  # the three closed, and C whose deadline passed
    assert m["closure_rate"] == 0.75
    assert m["closed_on_time"] == 2 and m["on_time_rate"] == 0.5  # A D
    assert m["reworked"] == 1 and m["rework_rate"] == round(1 / 3, 4)
    assert m["rated"] == 2 and m["satisfied"] == 1 and m["satisfaction_rate"] == 0.5
    assert m["resolved_locally"] == 2 and m["local_resolution_rate"] == round(
        2 / 3, 4
    )  # D went to the county
    assert m["avg_handling_hours"] is not None and m["avg_handling_hours"] >= 0
    assert m["overdue_open"] == 1  # C
    today = summary_for(world, "admin")["today"]
    assert today["reported_flow"] == 7 and today["accepted_flow"] == 5 and today["closed_flow"] == 3
    assert today["overdue_flow"] == 2  # C, and B whose rework deadline passed before it was handled


def test_township_dispatcher_sees_only_their_township(events_set, world):
    town = summary_for(world, "dispatcher")
    assert town["scope"]["code"] == world.tree.regions["town1"].code
    assert town["metrics"]["accepted"] == 4  # G lies in the other county
    other = summary_for(world, "dispatcher2")["metrics"]
    assert other["accepted"] == 1 and other["closed"] == 0 and other["closure_rate"] is None
    with world.db.session() as s:
        f = stats.funnel(s, world.actor(s, "dispatcher2"), stats.window())
    assert f["stages"]["reported"] == 1 and f["by_state"]["accepted"] == 1


def test_funnel_counts_by_state_and_stage(events_set, world):
    with world.db.session() as s:
        f = stats.funnel(s, world.actor(s, "admin"), stats.window())
    by = {k: v for k, v in f["by_state"].items() if v}
    assert by == {"rated": 2, "closed": 1, "handling": 1, "rejected": 1, "reported": 1, "accepted": 1}
    assert f["stages"] == {
        "reported": 7,
        "accepted": 5,
        "dispatched": 4,
        "handled": 3,
        "closed": 3,
        "archived": 0,
    }


def test_breakdowns_partition_the_total(events_set, world):
    orgs = world.tree.orgs
    with world.db.session() as s:
        admin = world.actor(s, "admin")
        win = stats.window()
        by_region = stats.breakdown(s, admin, win, stats.Dimension.region)
        groups = {g["key"]: g["metrics"] for g in by_region["groups"]}
        assert groups[world.tree.regions["county1"].code]["accepted"] == 4
        assert groups[world.tree.regions["county2"].code]["accepted"] == 1
        total = by_region["total"]
        assert total["accepted"] == 5 and total["closed"] == 3 and total["due"] == 4

        by_org = {
            g["key"]: g["metrics"] for g in stats.breakdown(s, admin, win, stats.Dimension.org)["groups"]
        }
        assert by_org[orgs["enforce1"].code]["closed"] == 3  # A B D
        assert by_org[orgs["dept1"].code]["accepted"] == 1  # C after its hand-back
        assert by_org[""]["accepted"] == 1  # G, not dispatched

        by_cat = stats.breakdown(s, admin, win, stats.Dimension.category, category_level="class")
        assert [(g["key"], g["metrics"]["accepted"]) for g in by_cat["groups"]] == [("01", 5)]
        by_platform = {
            g["key"]: g["metrics"]["accepted"]
            for g in stats.breakdown(s, admin, win, stats.Dimension.platform)["groups"]
        }
        assert by_platform == {"safety": 0, "market": 0, "enforcement": 5, "service": 0}
        by_day = stats.breakdown(s, admin, win, stats.Dimension.period, period=stats.Period.day)
        assert sum(g["metrics"]["accepted"] for g in by_day["groups"]) == 5
        assert [g["key"] for g in by_day["groups"]][-1] == win.last.isoformat()
        by_month = stats.breakdown(s, admin, win, stats.Dimension.period, period=stats.Period.month)
        assert [g["key"] for g in by_month["groups"]] == [f"{win.last:%Y-%m}"]

        # the township's children are villages; the dispatcher cannot look at county 2
        dispatcher = world.actor(s, "dispatcher")
        town = stats.breakdown(s, dispatcher, win, stats.Dimension.region)
        assert [g["key"] for g in town["groups"]] == [world.tree.regions["village1"].code]
        with pytest.raises(NotFound):
            stats.breakdown(
                s, dispatcher, win, stats.Dimension.region, parent=world.tree.regions["county2"].code
            )
        with pytest.raises(Invalid):
            stats.breakdown(s, admin, win, stats.Dimension.region, parent=world.tree.regions["grid1a"].code)


def test_filters_by_platform_and_category(events_set, world):
    with world.db.session() as s:
        admin = world.actor(s, "admin")
        win = stats.window()
        assert stats.summary(s, admin, win, stats.filters(s, category="01"))["metrics"]["accepted"] == 5
        assert stats.summary(s, admin, win, stats.filters(s, category="0102"))["metrics"]["accepted"] == 5
        assert stats.summary(s, admin, win, stats.filters(s, category="0101"))["metrics"]["accepted"] == 0
        safety = stats.filters(s, platform=stats.Platform.safety)
        assert stats.summary(s, admin, win, safety)["metrics"]["accepted"] == 0
        with pytest.raises(Invalid):
            stats.filters(s, category="9999")


def test_handbacks_per_department(events_set, world):
    with world.db.session() as s:
        h = stats.handbacks(s, world.actor(s, "dispatcher"), stats.window())
        assert h["orgs"] == [
            {
                "org": world.tree.orgs["enforce1"].code,
                "name": "镇1综合执法中队",
                "handbacks": 1,
                "handback_events": 1,
            }
        ]
        assert stats.handbacks(s, world.actor(s, "dispatcher2"), stats.window())["total"]["handbacks"] == 0


def test_a_period_before_the_events_is_empty(events_set, world):
    with world.db.session() as s:
        last_year = stats.window(
            stats.window().first - timedelta(days=400), stats.window().first - timedelta(days=1)
        )
        m = stats.summary(s, world.actor(s, "admin"), last_year)["metrics"]
        assert m["accepted"] == 0 and m["closure_rate"] is None and m["avg_handling_hours"] is None


def test_residents_may_not_read_statistics(world):
    with world.db.session() as s, pytest.raises(PermissionDenied):
        stats.summary(s, world.actor(s, "resident"), stats.window())


def test_api_scope_permission_and_bad_input(client, events_set, world):
    admin = login_headers(client, "admin")
    res = client.get("/api/v1/stats/events/summary", headers=admin)
    assert res.status_code == 200, res.text
    body = res.json()
    assert body["metrics"]["closure_rate"] == 0.75
    assert body["definitions"]["closure_rate"]["doc"] == "docs/metrics.md#closure_rate"
    assert "结案率" in body["definitions"]["closure_rate"]["label"]

    res = client.get("/api/v1/stats/events/by", headers=admin, params={"dimension": "region"})
    assert res.status_code == 200 and len(res.json()["groups"]) == 2
    res = client.get("/api/v1/stats/events/handbacks", headers=login_headers(client, "dispatcher"))
    assert res.json()["total"]["handbacks"] == 1
    res = client.get("/api/v1/stats/events/funnel", headers=login_headers(client, "dispatcher"))
    assert res.json()["stages"]["reported"] == 6

    assert (
        client.get("/api/v1/stats/events/summary", headers=login_headers(client, "resident")).status_code
        == 403
    )
    assert client.get("/api/v1/stats/events/summary").status_code == 401
    bad = [
        ({"from": "2026-05-02", "to": "2026-05-01"}, "晚于"),
        ({"from": "2020-01-01", "to": "2026-05-01"}, "最多"),
        ({"from": "yesterday"}, "输入无效"),
        ({"category": "9999"}, "未知的事件类别"),
        ({"platform": "space"}, "输入无效"),
    ]
    for params, text in bad:
        res = client.get("/api/v1/stats/events/summary", headers=admin, params=params)
        assert res.status_code == 422, (params, res.text)
        assert text in res.json()["error"]["message"], (params, res.text)
    res = client.get("/api/v1/stats/events/by", headers=admin, params={"dimension": "weather"})
    assert res.status_code == 422
    res = client.get(
        "/api/v1/stats/events/by",
        headers=admin,
        params={"dimension": "period", "period": "day", "from": "2025-01-01", "to": "2026-06-30"},
    )
    assert res.status_code == 422 and "更长的统计周期" in res.json()["error"]["message"]
    res = client.get(
        "/api/v1/stats/events/by",
        headers=login_headers(client, "dispatcher"),
        params={"dimension": "region", "parent": world.tree.regions["county2"].code},
    )
    assert res.status_code == 404


def test_every_metric_key_is_defined_in_the_docs():
    text = METRICS_DOC.read_text(encoding="utf-8")
    anchors = set(re.findall(r'<a id="([a-z_]+)"></a>', text))
    assert set(stats.METRICS) <= anchors, set(stats.METRICS) - anchors


def test_flows_and_region_counts(events_set, world):
    with world.db.session() as s:
        admin = world.actor(s, "admin")
        win = stats.window()
        f = stats.flows(s, admin, win)
        assert f["days"][0]["date"] == win.first.isoformat()
        assert len(f["days"]) == (win.last - win.first).days + 1
        today = f["days"][-1]
        assert (today["reported"], today["accepted"], today["closed"]) == (7, 5, 3)
        r = stats.counts_by_region(s, admin, win)
        assert r["level"] == "county"
        by = {g["key"]: g for g in r["groups"]}
        c1, c2 = world.tree.regions["county1"].code, world.tree.regions["county2"].code
        assert by[c1]["reported"] == 6 and by[c2]["reported"] == 1
        assert by[c1]["open"] == 2 and by[c2]["open"] == 1  # C handling, F reported; G accepted
        assert by[c1]["overdue"] == 1 and by[c2]["overdue"] == 0  # C
        grids = stats.counts_by_region(s, admin, win, parent=world.tree.regions["village1"].code)
        assert grids["level"] == "grid" and sum(g["reported"] for g in grids["groups"]) == 6
        town = stats.summary(s, admin, win, region=world.tree.regions["town1"].code)
        assert town["scope"]["code"] == world.tree.regions["town1"].code
        assert town["metrics"]["accepted"] == 4
        dept = stats.summary(s, admin, win, stats.filters(s, org=world.tree.orgs["dept1"].code))
        assert dept["metrics"]["accepted"] == 1 and dept["filters"]["org"] == world.tree.orgs["dept1"].code
        with pytest.raises(Invalid):
            stats.filters(s, org="no-such-org")
        dispatcher = world.actor(s, "dispatcher")
        for call in (
            lambda: stats.summary(s, dispatcher, win, region=world.tree.regions["county2"].code),
            lambda: stats.flows(s, dispatcher, win, region=world.tree.regions["county2"].code),
            lambda: stats.counts_by_region(s, dispatcher, win, parent=world.tree.regions["county2"].code),
        ):
            with pytest.raises(NotFound):
                call()


def test_api_flows_and_regions(client, events_set, world):
    admin = login_headers(client, "admin")
    res = client.get("/api/v1/stats/events/flows", headers=admin)
    assert res.status_code == 200, res.text
    assert res.json()["days"][-1]["reported"] == 7
    res = client.get("/api/v1/stats/events/regions", headers=admin)
    assert res.status_code == 200 and res.json()["level"] == "county"
    assert "区域上报数" in res.json()["definitions"]["region_reported"]["label"]
    dispatcher = login_headers(client, "dispatcher")
    county2 = world.tree.regions["county2"].code
    for path, key in (("regions", "parent"), ("flows", "region"), ("summary", "region")):
        res = client.get(f"/api/v1/stats/events/{path}", headers=dispatcher, params={key: county2})
        assert res.status_code == 404, (path, res.text)
    res = client.get("/api/v1/stats/events/summary", headers=admin, params={"org": "nope"})
    assert res.status_code == 422 and "未知的单位" in res.json()["error"]["message"]
    res = client.get(
        "/api/v1/stats/events/regions", headers=admin, params={"parent": world.tree.regions["grid1a"].code}
    )
    assert res.status_code == 422
