"""The demo jurisdiction carries a handful of mediation cases of every kind."""

from __future__ import annotations

from civicgrid.core.auth import SYSTEM
from civicgrid.demo.service import load_demo
from civicgrid.disputes import service, stats
from civicgrid.events import stats as event_stats


def test_demo_cases_cover_each_kind(db, tmp_path):
    with db.session() as s:
        load_demo(s, grids=60, seed=1, data_dir=tmp_path)
    with db.session() as s:
        cases = list(s.scalars(service.list_stmt(SYSTEM)))
        assert sorted(str(d.state) for d in cases) == [
            "agreed",
            "closed",
            "mediating",
            "mediating",
            "referred",
            "registered",
        ]
        assert {str(d.level) for d in cases} == {"village", "township", "county"}
        county = next(d for d in cases if str(d.level) == "county")
        assert county.leader_user_id is not None and county.threat_of_violence
        assert all(d.region_path.startswith(cases[0].region_path[:40]) for d in cases)  # one township
        summary = stats.summary(s, SYSTEM, event_stats.window(first=cases[0].registered_day.replace(day=1)))
        assert summary["metrics"]["follow_ups_overdue"] == 1  # the family case's 7-day call
