"""The mediation metrics on a constructed set of cases (docs/metrics.md): 调解成功率, 化解率,
回访满意率, average duration, 镇村化解率 per org, mediator, type, level and period; and the cockpit
panels that read them."""

from __future__ import annotations

from datetime import timedelta

import pytest

from civicgrid.cockpit import registry
from civicgrid.core.db import utcnow
from civicgrid.disputes import service, stats
from civicgrid.events import stats as event_stats
from tests.disputes.conftest import register, step

pytestmark = pytest.mark.usefixtures("in_english")


def _round(s, world, who, number):
    step(
        s,
        world,
        who,
        number,
        "record_round",
        held_at=utcnow() - timedelta(minutes=30),
        place="调解室",
        attendees="双方",
        minutes="记录",
        outcome="progress",
    )


def _agreed(s, world, who, complexity, **kw):
    number = register(s, world, who, complexity=complexity, take=True, **kw).number
    _round(s, world, who, number)
    step(s, world, who, number, "agree", kind="full", facts="f", terms="t")
    return number


def build(s, world):
    """Six cases: 2 agreed at the village, 1 agreed at the township, 1 agreed at the county,
    1 failed at the township, 1 withdrawn; one 7-day call satisfied, one dissatisfied."""
    v1 = _agreed(s, world, "v_mediator", "simple")
    _agreed(s, world, "v_mediator", "simple", type="family")
    _agreed(s, world, "t_mediator", "complex")
    county = register(s, world, complexity="difficult", leader_id=world.user_id(s, "leader")).number
    step(s, world, "c_mediator", county, "assign", mediator_ids=[world.user_id(s, "c_mediator")])
    _round(s, world, "c_mediator", county)
    step(s, world, "c_mediator", county, "agree", kind="partial", facts="f", terms="t")
    failed = register(s, world, complexity="complex", take=True).number
    _round(s, world, "t_mediator", failed)
    step(s, world, "t_mediator", failed, "fail", reason="分歧大")
    withdrawn = register(s, world).number
    step(s, world, "t_mediator", withdrawn, "withdraw", reason="撤回")
    step(
        s,
        world,
        "v_mediator",
        v1,
        "follow_up",
        kind="day7",
        satisfaction="satisfied",
        performance="performing",
    )
    step(
        s,
        world,
        "c_mediator",
        county,
        "follow_up",
        kind="day7",
        satisfaction="dissatisfied",
        performance="performing",
    )
    return county


def test_summary_of_a_constructed_cohort(world):
    with world.db.session() as s:
        build(s, world)
    with world.db.session() as s:
        m = stats.summary(s, world.actor(s, "leader"), event_stats.window())["metrics"]
    assert (m["registered"], m["withdrawn"], m["agreed"], m["failed"], m["concluded"]) == (6, 1, 4, 1, 5)
    assert m["mediation_success_rate"] == 0.8  # 4 agreements of 5 concluded
    assert m["resolution_rate"] == 0.8  # 4 of the 5 not withdrawn
    assert m["resolved_locally"] == 3 and m["local_resolution_rate"] == 0.6  # 3 of 5 concluded
    assert m["follow_up_satisfaction_rate"] == 0.5
    assert m["avg_duration_days"] is not None and m["avg_duration_days"] >= 0
    assert m["open_now"] == 1  # the failed case: open until it is referred and the referral accepted


def test_breakdowns_partition_the_cohort(world):
    with world.db.session() as s:
        build(s, world)
    with world.db.session() as s:
        leader = world.actor(s, "leader")
        win = event_stats.window()
        total = stats.summary(s, leader, win)["metrics"]
        for dim in stats.Dimension:
            out = stats.breakdown(s, leader, win, dim)
            for key in ("registered", "agreed", "failed", "resolved_locally", "follow_ups_done"):
                assert sum(g["metrics"][key] for g in out["groups"]) == total[key], (dim, key)
        by_level = {
            g["key"]: g["metrics"] for g in stats.breakdown(s, leader, win, stats.Dimension.level)["groups"]
        }
        assert by_level["county"]["agreed"] == 1 and by_level["village"]["local_resolution_rate"] == 1.0
        by_org = {
            g["key"]: g["metrics"]["agreed"]
            for g in stats.breakdown(s, leader, win, stats.Dimension.org)["groups"]
        }
        assert by_org == {"village-1": 2, "town-1": 1, "centre-1": 1}
        by_type = {
            g["key"]: g["metrics"]["registered"]
            for g in stats.breakdown(s, leader, win, stats.Dimension.type)["groups"]
        }
        assert by_type["family"] == 1 and by_type["neighbour"] == 5 and by_type["debt"] == 0
        months = stats.breakdown(s, leader, win, stats.Dimension.period, period=event_stats.Period.month)
        assert [g["key"] for g in months["groups"]] == [f"{win.first:%Y-%m}"]
        f = stats.filters(s, mediator="v_mediator")
        assert stats.summary(s, leader, win, f)["metrics"]["agreed"] == 2


def test_panels_show_resolution_level_open_cases_and_overdue_calls(world):
    with world.db.session() as s:
        county = build(s, world)
        leader = world.actor(s, "leader")
        region = service.regions.get(s, leader.region_id)
        ctx = registry.Context(actor=leader, region=region, window=event_stats.window())
        gauge = registry.get("disputes.local_resolution").query(s, ctx)
        assert gauge.rows == [[0.6, 0.9]]
        levels = registry.get("disputes.open_by_level").query(s, ctx)
        assert [r[1] for r in levels.rows] == [0, 1, 0]  # the failed township case
        # a new case at the township is open too; the calls are overdue a month and a half on
        register(s, world)
        assert [r[1] for r in registry.get("disputes.open_by_level").query(s, ctx).rows] == [0, 2, 0]
        later = registry.Context(
            actor=leader, region=region, window=event_stats.window(), now=utcnow() + timedelta(days=45)
        )
        rows = registry.get("disputes.overdue_follow_ups").query(s, later).rows
        assert {r[0]: r[1] for r in rows} == {"村1村委会": 3, "镇1四平台": 2, "县1社会治理中心": 1}
        assert service.get_dispute(s, leader, county).state == "agreed"
        rates = registry.get("disputes.rates").query(s, ctx)
        assert rates.rows[0][0] == 80.0  # percent
