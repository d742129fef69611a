"""Journey, in the Chinese UI: the administrator writes a threshold rule, sees a bad parameter
refused and then the dry run name the warning it would have raised, and saves it; the worker
raises the warning; the township dispatcher finds it on the warning board, opens the warning
page with its evidence on the map, and closes it with feedback, marking it a false alarm; the
rule's precision shows it."""

from __future__ import annotations

import json
from datetime import timedelta
from typing import Any

import pytest

from tests.e2e.conftest import Server, log_in

pytestmark = pytest.mark.e2e
CATEGORY = "0102"  # 市容环境 › 暴露垃圾


def _prepare(server: Server) -> dict[str, Any]:
    """Three recent events of one category in the dispatcher's township (the demo has none)."""
    from shapely.geometry import shape
    from sqlalchemy import select

    from civicgrid.accounts import service as accounts
    from civicgrid.core.auth import SYSTEM
    from civicgrid.core.config import Settings
    from civicgrid.core.db import Database, utcnow
    from civicgrid.events import service as events
    from civicgrid.events.models import Channel
    from civicgrid.regions.models import Region, RegionLevel

    db = Database(Settings(data_dir=server.data_dir).resolved_database_url)
    try:
        with db.session() as s:
            events.seed_catalogue(s, SYSTEM)
            user = accounts.get_user_by_username(s, "dispatcher")
            assert user is not None
            town = s.get(Region, user.memberships[0].org.region_id)
            assert town is not None
            grid = s.scalars(
                select(Region).where(Region.level == RegionLevel.grid, Region.path.startswith(town.path))
            ).first()
            assert grid is not None
            p = shape(json.loads(grid.geometry)).representative_point()
            actor = accounts.actor_for_user(s, user)
            for i in range(3):
                events.create_event(
                    s,
                    actor,
                    category_code=CATEGORY,
                    lon=p.x + 0.0002 * i,
                    lat=p.y,
                    description=f"巷口垃圾堆放{i + 1}",
                    channel=Channel.web,
                    reported_at=utcnow() - timedelta(hours=i + 1),
                )
            city = s.scalars(select(Region).where(Region.parent_id.is_(None))).one()
            return {"city": city.code, "town": town.name}
    finally:
        db.dispose()


def _run_worker(server: Server) -> dict[str, int]:
    from civicgrid.core.config import Settings
    from civicgrid.core.db import Database
    from civicgrid.risks import service

    db = Database(Settings(data_dir=server.data_dir).resolved_database_url)
    try:
        with db.session() as s:
            return service.evaluate_new(s)
    finally:
        db.dispose()


def test_rule_dry_run_to_closed_warning_in_chinese(page: Any, server: Server, tmp_path: Any) -> None:
    facts = _prepare(server)

    log_in(page, server, "admin")
    page.wait_for_url(server.url + "/")
    page.click("nav.mainnav >> text=风险预警")
    page.click("text=风险规则")
    page.click("text=新建规则")
    page.fill("input[name=name]", "暴露垃圾高发")
    page.fill("input[name=region_code]", facts["city"])
    params = {"categories": [CATEGORY], "per": "township", "levels": {"yellow": 3, "red": 10}}
    page.fill("textarea[name=params]", json.dumps(params))  # no window: would scan all history
    page.click("#dry-run-button")
    error = page.locator("[data-errors-scope] .errors")
    error.get_by_text("必须填写参数 window_days").wait_for()
    assert "扫描全部历史数据" in error.inner_text()

    params["window_days"] = 2
    page.fill("textarea[name=params]", json.dumps(params))
    page.click("#dry-run-button")
    result = page.locator("#dry-run")
    result.get_by_text("将发布 1 条预警").wait_for()
    assert facts["town"] in result.inner_text() and "黄色" in result.inner_text()
    assert "试运行没有保存或发布任何内容" in result.inner_text()
    page.screenshot(path=str(tmp_path / "rule-dry-run.png"), full_page=True)
    page.click("text=保存规则")
    page.get_by_text("规则已保存。").wait_for()

    assert _run_worker(server).get("created") == 1

    page.context.clear_cookies()
    log_in(page, server, "dispatcher")
    page.wait_for_url(server.url + "/")
    page.click("nav.mainnav >> text=风险预警")
    row = page.locator("table.table >> tr", has_text="暴露垃圾高发")
    assert "黄色" in row.inner_text()
    row.locator("a").first.click()
    page.wait_for_selector("#risk-map[data-ready='3']")  # the three events on the map
    assert page.locator("table.evidence tbody tr").count() == 3
    page.screenshot(path=str(tmp_path / "warning.png"), full_page=True)

    page.click("summary:has-text('反馈并办结')")
    page.fill("textarea[name=feedback]", "执法中队现场核查，系集中清运前的临时堆放")
    page.fill("textarea[name=outcome]", "已清运，无复发")
    page.check("input[name=verdict][value=false_alarm]")
    page.click("button:has-text('办结预警')")
    page.locator("[data-state=closed]").wait_for()
    body = page.locator("main").inner_text()
    assert "已办结" in body and "误报" in body and "已清运，无复发" in body
    page.screenshot(path=str(tmp_path / "closed.png"), full_page=True)

    page.context.clear_cookies()
    log_in(page, server, "admin")
    page.wait_for_url(server.url + "/")
    page.goto(server.url + "/risks/rules")
    row = page.locator("table.table >> tr", has_text="暴露垃圾高发")
    assert "0%" in row.inner_text() and "(0/1)" in row.inner_text()
