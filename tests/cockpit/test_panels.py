"""The panels' numbers: each equals the statistics function it reads (docs/metrics.md), the lists
link to their events, and a county's panels hold that county only."""

from __future__ import annotations

from typing import Any

from civicgrid.cockpit import registry
from civicgrid.cockpit import service as cockpit
from civicgrid.cockpit.registry import View
from civicgrid.events import stats
from tests.cockpit.test_service import ctx_for


def panel(world: Any, key: str, who: str = "leader", region: str | None = None, **kw: Any) -> dict[str, Any]:
    with world.db.session() as s:
        actor = world.actor(s, who)
        if region is None:
            ctx = ctx_for(s, world, who, **kw)
        else:
            from civicgrid.regions import service as regions

            ctx = cockpit.context_for(s, actor, regions.get_in_scope(s, actor, region), **kw)
        out = cockpit.compute(s, cockpit.get_panel(actor, key), ctx)
    assert "error" not in out, out
    return out


def column(p: dict[str, Any], key: str) -> int:
    return [c["key"] for c in p["columns"]].index(key)


def test_every_panel_names_its_definition_and_draws_its_kind(world):
    keys = {p.key for p in registry.panels()}
    assert {
        "events.flow", "events.rates", "events.map", "events.trend", "events.funnel", "events.platform",
        "events.category", "events.departments", "events.local_resolution", "events.local_resolution_total",
        "events.overdue", "events.due_soon", "events.worker_activity", "events.idle_grids", "data.overview",
        "data.calls", "data.consumers",
    } <= keys  # fmt: skip
    for p in registry.panels():
        if p.key.split(".")[0] in ("events", "data"):
            assert p.doc.startswith(("docs/metrics.md#", "docs/cockpit.md#")), p.key
    screen = [p.key for p in registry.panels(View.screen)]
    assert "events.map" in screen and "events.due_soon" not in screen


def test_flow_and_rates_are_the_summary_of_the_readers_county(world):
    flow = panel(world, "events.flow")
    rates = panel(world, "events.rates")
    with world.db.session() as s:
        s_ = stats.summary(s, world.actor(s, "leader"), stats.window())
    row = flow["rows"][0]
    assert row[column(flow, "today_reported_flow")] == s_["today"]["reported_flow"] == 5  # A C S P R
    assert row[column(flow, "today_accepted_flow")] == 3  # A C S
    assert row[column(flow, "today_closed_flow")] == 1  # A
    assert row[column(flow, "overdue_open")] == 1  # C
    assert flow["extra"]["docs"]["overdue_open"] == "docs/metrics.md#overdue_open"
    r = rates["rows"][0]
    assert r[column(rates, "accepted")] == s_["metrics"]["accepted"] == 3
    assert r[column(rates, "satisfaction_rate")] == 100.0  # A rated 5: shown in percent
    # the other county's leader sees their own two events only
    other = panel(world, "events.flow", who="leader2")["rows"][0]
    assert other[column(flow, "today_reported_flow")] == 2 and other[column(flow, "today_accepted_flow")] == 1


def test_lists_link_to_the_overdue_and_the_nearly_due_events(world):
    overdue = panel(world, "events.overdue")
    assert [r[0] for r in overdue["rows"]] == [world.numbers["C"]]
    assert overdue["rows"][0][column(overdue, "url")] == f"/events/{world.numbers['C']}"
    assert overdue["extra"]["total"] == 1
    soon = panel(world, "events.due_soon")
    assert [r[0] for r in soon["rows"]] == [world.numbers["S"]]
    assert panel(world, "events.overdue", who="leader2")["rows"] == []


def test_funnel_platform_trend_and_ranking_follow_the_statistics(world):
    fun = panel(world, "events.funnel")
    assert [r[1] for r in fun["rows"]][:2] == [5, 3]  # reported A C S P R; accepted A C S
    plat = panel(world, "events.platform")
    assert sum(r[1] for r in plat["rows"]) == 3
    trend = panel(world, "events.trend")
    assert len(trend["rows"]) == 30 and trend["rows"][-1][1:] == [5, 3, 1]
    ranking = panel(world, "events.departments")
    names = [r[0] for r in ranking["rows"]]
    assert "镇1综合执法中队" in names
    row = ranking["rows"][names.index("镇1综合执法中队")]
    # due: A (closed on time) and C (deadline passed, open): 1 of 2
    assert row[column(ranking, "on_time_rate")] == 50.0 and row[column(ranking, "handbacks")] == 0


def test_local_resolution_per_region_against_the_target(world):
    city = panel(world, "events.local_resolution", who="admin")
    assert [r[0] for r in city["rows"]] == ["县1", "县2"]
    assert city["extra"]["target"] == 90.0
    assert city["rows"][0][1] == 100.0 and city["rows"][1][1] is None  # county 2 closed nothing
    county = panel(world, "events.local_resolution")
    assert [r[0] for r in county["rows"]] == ["镇1"]
    gauge = panel(world, "events.local_resolution_total")
    assert gauge["rows"] == [[1.0, 0.9]]


def test_the_map_shades_children_and_drills_down_to_a_grid(world):
    m = panel(world, "events.map")
    assert m["extra"]["level"] == "township" and [r[0] for r in m["rows"]] == [world.code("town1")]
    assert m["rows"][0][2:] == [5, 3, 1]  # reported A C S P R; open C S P; overdue C
    assert len(m["extra"]["points"]) == 5
    assert [c["code"] for c in m["extra"]["crumbs"]] == [world.code("county1")]  # the city is above the scope
    grid = panel(world, "events.map", region=world.code("grid1a"))
    assert grid["extra"]["focus"] == world.code("grid1a") and grid["extra"]["parent"] == world.code(
        "village1"
    )
    assert [r[0] for r in grid["rows"]] == [world.code("grid1a")]
    assert sorted(p[2] for p in grid["extra"]["points"]) == sorted(world.numbers[k] for k in "ASP")
    assert [c["code"] for c in grid["extra"]["crumbs"]] == [
        world.code(k) for k in ("county1", "town1", "village1", "grid1a")
    ]
    city = panel(world, "events.map", who="admin")
    assert [r[0] for r in city["rows"]] == [world.code("county1"), world.code("county2")]


def test_grid_worker_activity_and_idle_grids(world):
    act = panel(world, "events.worker_activity")
    assert len(act["rows"]) == 1 and act["rows"][0][-1] == 1  # the grid worker's patrol report P
    assert act["rows"][0][0].endswith("*")  # names are masked on the cockpit
    idle = panel(world, "events.idle_grids")
    assert [r[0] for r in idle["rows"]] == ["网格1-2"]  # grid 1a had a patrol report today
    assert idle["extra"]["idle"] == 1 and idle["extra"]["grids"] == 2
    assert idle["rows"][0][column(idle, "url")] == f"/regions/map?code={world.code('grid1b')}"


def test_data_platform_panels_count_the_datasets_of_the_readers_region(world):
    mine = panel(world, "data.overview")["rows"][0]
    assert mine == [1, 120, 7, 0]
    assert panel(world, "data.overview", who="leader2")["rows"][0][:3] == [1, 99999, 1000]
    assert panel(world, "data.overview", who="admin")["rows"][0][:3] == [2, 120 + 99999, 1007]
    calls = panel(world, "data.calls")
    assert calls["rows"][-1][1] == 7  # today, the data API channel
    consumers = panel(world, "data.consumers")
    assert consumers["rows"][0][1] == 7


def test_filters_narrow_the_panels(world):
    for key in ("events.flow", "events.map", "events.departments", "events.trend"):
        everything = panel(world, key)
        none = panel(world, key, platform="market")  # every event here is 0102 (enforcement)
        assert everything != none, key
