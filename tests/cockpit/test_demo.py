"""`civicgrid demo load` gives the cockpit something to show: the catalogue is seeded and the
generated events are counted by the statistics the panels read (rollups rebuilt after the bulk
insert)."""

from __future__ import annotations

from pathlib import Path

from sqlalchemy import func, select

from civicgrid.accounts import service as accounts
from civicgrid.cockpit import service as cockpit
from civicgrid.demo import service as demo
from civicgrid.events import stats
from civicgrid.events.models import Category, Event


def test_the_demo_cockpit_is_alive(db, tmp_path: Path):
    with db.session() as s:
        demo.load_demo(s, grids=9, seed=1, data_dir=tmp_path, events=300)
    with db.session() as s:
        assert s.scalar(select(func.count(Category.id))) > 50
        user = accounts.get_user_by_username(s, "leader")
        assert user is not None
        actor = accounts.actor_for_user(s, user)
        ctx = cockpit.context_for(s, actor, cockpit.cockpit_region(s, actor))
        trend = cockpit.compute(s, cockpit.get_panel(actor, "events.trend"), ctx)
        first = ctx.window.last.toordinal() - 29
        win = stats.window(ctx.window.last.fromordinal(first), ctx.window.last)
        direct = s.scalar(
            select(func.count()).where(Event.reported_at >= win.start, Event.reported_at < win.end)
        )
        assert direct and sum(r[1] for r in trend["rows"]) == direct
        m = cockpit.compute(s, cockpit.get_panel(actor, "events.map"), ctx)
        assert len(m["rows"]) == 9  # the nine counties of 台州市
        accepted = cockpit.compute(s, cockpit.get_panel(actor, "events.rates"), ctx)["rows"][0][0]
        platforms = cockpit.compute(s, cockpit.get_panel(actor, "events.platform"), ctx)["rows"]
        assert accepted and sum(r[1] for r in platforms) == accepted  # every breakdown is filled
