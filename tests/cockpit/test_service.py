"""The cockpit service: scope of a cockpit, checked contexts, and one computation per panel,
scope and interval shared by every viewer (single flight)."""

from __future__ import annotations

import threading
import time
from datetime import timedelta
from typing import Any

import pytest

from civicgrid.cockpit import service as cockpit
from civicgrid.cockpit.registry import Column, Kind, Panel, PanelData, View
from civicgrid.core.errors import Invalid, NotFound
from civicgrid.events import stats
from tests.cockpit.conftest import GRID_1A, _report


def ctx_for(s: Any, world: Any, who: str, region: str | None = None, **kw: Any) -> Any:
    actor = world.actor(s, who)
    return cockpit.context_for(s, actor, cockpit.cockpit_region(s, actor, region), **kw)


def test_the_cockpit_is_the_readers_region_and_nothing_outside_it(world):
    with world.db.session() as s:
        leader = world.actor(s, "leader")
        assert cockpit.cockpit_region(s, leader).code == world.code("county1")
        assert cockpit.cockpit_region(s, leader, world.code("town1")).code == world.code("town1")
        with pytest.raises(NotFound):  # the other county, and the city above: not found
            cockpit.cockpit_region(s, leader, world.code("county2"))
        with pytest.raises(NotFound):
            cockpit.cockpit_region(s, leader, world.code("city"))
        with pytest.raises(Invalid):  # villages and grids are drilled into on the map
            cockpit.cockpit_region(s, leader, world.code("village1"))


def test_a_bad_filter_is_a_clear_invalid(world):
    month = stats.window()
    for kw in (
        {"platform": "roads"},
        {"category": "9999"},
        {"org": "no-such-org"},
        {"first": month.last, "last": month.last - timedelta(days=1)},
    ):
        with world.db.session() as s, pytest.raises(Invalid):
            ctx_for(s, world, "leader", **kw)


def slow_panel(calls: list[int], delay: float = 0.3) -> Panel:
    def query(session: Any, ctx: Any) -> PanelData:
        calls.append(1)
        time.sleep(delay)
        return PanelData([Column("n", "n")], [[len(calls)]])

    return Panel("tests.slow", "Slow", Kind.number, query)


@pytest.fixture
def frozen(monkeypatch):
    """One interval for the whole test, however slow the machine."""
    monkeypatch.setattr(cockpit.CACHE, "clock", lambda: 1000.0)


def test_many_concurrent_viewers_of_one_scope_cause_one_computation(world, frozen):
    """Twelve screens of county 1 (the leader's and the county centre's dispatcher's, same scope)
    ask at the same moment: the panel is computed once and all get the same answer."""
    calls: list[int] = []
    panel = slow_panel(calls)
    answers: list[Any] = []
    errors: list[BaseException] = []
    start = threading.Barrier(12)

    def viewer(who: str) -> None:
        try:
            with world.db.session() as s:
                ctx = ctx_for(s, world, who)
                start.wait()
                answers.append(cockpit.compute(s, panel, ctx))
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=viewer, args=(w,)) for w in ["leader", "county_dispatcher"] * 6]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    assert len(calls) == 1
    assert len(answers) == 12 and all(a == answers[0] for a in answers)


def test_every_panel_of_the_big_screen_is_computed_once_for_concurrent_viewers(world, monkeypatch, frozen):
    counted: list[str] = []
    real = stats.summary

    def summary(*a: Any, **kw: Any) -> Any:
        counted.append("summary")
        return real(*a, **kw)

    monkeypatch.setattr(stats, "summary", summary)
    results: list[dict[str, Any]] = []
    barrier = threading.Barrier(6)

    def viewer(who: str) -> None:
        with world.db.session() as s:
            ctx = ctx_for(s, world, who)
            actor = world.actor(s, who)
            barrier.wait()
            results.append(cockpit.compute_many(s, cockpit.visible_panels(actor, View.screen), ctx))

    threads = [threading.Thread(target=viewer, args=(w,)) for w in ["leader", "county_dispatcher"] * 3]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not [k for k, p in results[0].items() if "error" in p]
    n_panels = len(results[0])
    assert cockpit.CACHE.computations == n_panels  # not 6 × n_panels
    assert counted == ["summary"]  # the flow and the rates panels share one summary
    assert all(r == results[0] for r in results)


def test_another_scope_or_filter_is_computed_on_its_own(world, frozen):
    calls: list[int] = []
    panel = slow_panel(calls, delay=0)
    with world.db.session() as s:
        cockpit.compute(s, panel, ctx_for(s, world, "leader"))
        cockpit.compute(s, panel, ctx_for(s, world, "leader"))
        assert len(calls) == 1
        cockpit.compute(s, panel, ctx_for(s, world, "leader2"))
        cockpit.compute(s, panel, ctx_for(s, world, "leader", platform="safety"))
        assert len(calls) == 3


def test_numbers_follow_a_change_in_the_next_interval(world, monkeypatch):
    """Within an interval every viewer gets the same answer; a report made meanwhile shows in the
    next interval (the page asks again every few seconds)."""
    clock = [1000.0]
    monkeypatch.setattr(cockpit.CACHE, "clock", lambda: clock[0])
    with world.db.session() as s:
        flow = cockpit.get_panel(world.actor(s, "leader"), "events.flow")
    with world.db.session() as s:
        before = cockpit.compute(s, flow, ctx_for(s, world, "leader"))["rows"][0][0]
    with world.db.session() as s:
        _report(s, world, "resident", GRID_1A, "新的垃圾问题")
    with world.db.session() as s:
        assert cockpit.compute(s, flow, ctx_for(s, world, "leader"))["rows"][0][0] == before
    clock[0] += cockpit.INTERVAL
    with world.db.session() as s:
        assert cockpit.compute(s, flow, ctx_for(s, world, "leader"))["rows"][0][0] == before + 1


def test_a_failing_panel_shows_its_error_and_the_others_still_come(world):
    def broken(session: Any, ctx: Any) -> PanelData:
        raise Invalid("Choose a platform.")

    bad = Panel("tests.broken", "Broken", Kind.number, broken)
    with world.db.session() as s:
        actor = world.actor(s, "leader")
        out = cockpit.compute_many(
            s, [bad, cockpit.get_panel(actor, "events.flow")], ctx_for(s, world, "leader")
        )
    assert out["tests.broken"]["error"]
    assert "error" not in out["events.flow"]


def test_the_cache_forgets_past_intervals():
    clock = [0.0]
    cache = cockpit.PanelCache(interval=1, clock=lambda: clock[0])
    for i in range(5):
        clock[0] = float(i)
        cache.get(("k",), lambda: 1)
    assert len(cache._flights) <= 2
    assert cache.computations == 5
