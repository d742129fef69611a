"""Journeys on the digital cockpit, in Chinese, over a demo with generated events:

- a county leader (临海市) opens the big screen, sees only their county, clicks through the map
  to a grid and comes back by the breadcrumbs;
- an event closed in another session shows on the open screen within 10 seconds;
- a chart downloads as a PNG.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from tests.e2e.conftest import CHROMIUM_ARGS, Server, _free_port, log_in  # noqa: F401

pytestmark = pytest.mark.e2e

LINHAI = "331082000000"
OTHER_COUNTIES = ("椒江区", "黄岩区", "路桥区", "温岭市", "玉环市", "天台县", "仙居县", "三门县")


def _verified_event(url: str) -> str:
    """An event in dispatcher.linhai's township taken through the real workflow up to
    verification, so the test can close it."""
    from shapely.geometry import shape
    from sqlalchemy import select

    from civicgrid.accounts import service as accounts
    from civicgrid.accounts.permissions import Role
    from civicgrid.core.auth import SYSTEM
    from civicgrid.core.db import Database
    from civicgrid.events import actions, service
    from civicgrid.events.models import Channel
    from civicgrid.regions import service as regions
    from civicgrid.regions.models import Region, RegionLevel

    db = Database(url)
    try:
        with db.session() as s:

            def actor(name: str) -> Any:
                user = accounts.get_user_by_username(s, name)
                assert user is not None
                return accounts.actor_for_user(s, user)

            dispatcher = actor("dispatcher.linhai")
            town = regions.get(s, dispatcher.region_id)
            grid = s.scalars(
                select(Region)
                .where(Region.path.startswith(town.path), Region.level == RegionLevel.grid)
                .order_by(Region.code)
            ).first()
            assert grid is not None
            worker = accounts.actor_for_user(s, regions.grid_workers(s, grid.id)[0])
            p = shape(json.loads(grid.geometry or "{}")).representative_point()
            event = service.create_event(
                s, worker, category_code="0102", lon=p.x, lat=p.y, description="巡查发现路边垃圾堆积",
                channel=Channel.web,
            )  # fmt: skip
            actions.act(s, dispatcher, event.number, "accept")
            actions.act(s, dispatcher, event.number, "dispatch")
            lead = accounts.get_org(s, event.lead_org_id or 0)
            accounts.create_user(
                s, SYSTEM, username="handler.linhai", display_name="临海处置员", password="correct-horse-9",
                memberships=[(lead.code, Role.handler)],
            )  # fmt: skip
            handler = actor("handler.linhai")
            actions.act(s, handler, event.number, "start")
            actions.act(s, handler, event.number, "handle", result="已清理")
            actions.act(s, worker, event.number, "verify", passed=True)
            return event.number
    finally:
        db.dispose()


@pytest.fixture(scope="module")
def cockpit_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Server, str]]:
    """A server of its own (its data would disturb the other journeys): the demo with 1,500
    generated events over 90 days, and one verified event to close."""
    import uvicorn

    from civicgrid.core.config import Settings
    from civicgrid.core.db import Database
    from civicgrid.core.migrate import upgrade
    from civicgrid.demo.service import load_demo
    from civicgrid.main import create_app

    data_dir = tmp_path_factory.mktemp("e2e-cockpit")
    settings = Settings(data_dir=data_dir, embedded_worker=False)
    upgrade(settings.resolved_database_url)
    db = Database(settings.resolved_database_url)
    with db.session() as s:
        creds = load_demo(s, grids=60, seed=1, data_dir=data_dir, events=1500)
    db.dispose()
    number = _verified_event(settings.resolved_database_url)
    port = _free_port()
    srv = uvicorn.Server(
        uvicorn.Config(create_app(settings), host="127.0.0.1", port=port, log_level="warning")
    )
    thread = threading.Thread(target=srv.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not srv.started:
        if time.monotonic() > deadline or not thread.is_alive():
            raise RuntimeError("the test server did not start")
        time.sleep(0.05)
    users = {u["username"]: u["password"] for u in creds["users"]}
    yield Server(f"http://127.0.0.1:{port}", data_dir, users), number
    srv.should_exit = True
    thread.join(timeout=10)


@pytest.fixture
def screen(browser: Any, cockpit_server: tuple[Server, str]) -> Iterator[Any]:
    """A county leader's browser at 1920×1080 on the big screen; nothing may leave the machine."""
    server, _number = cockpit_server
    context = browser.new_context(
        viewport={"width": 1920, "height": 1080}, locale="zh-CN", accept_downloads=True
    )
    outside: list[str] = []

    def guard(route: Any) -> None:
        if route.request.url.startswith((server.url, "data:", "blob:")):
            route.continue_()
        else:
            outside.append(route.request.url)
            route.abort()

    context.route("**/*", guard)
    page = context.new_page()
    page.set_default_timeout(20000)
    log_in(page, server, "leader.linhai")
    page.wait_for_url(server.url + "/")
    page.click("nav.mainnav >> text=数字驾驶舱")
    page.wait_for_url(f"{server.url}/cockpit/{LINHAI}")
    page.click("text=大屏")
    page.wait_for_url(f"{server.url}/cockpit/{LINHAI}/screen*")
    page.wait_for_selector("[data-map][data-ready]")
    yield page
    context.close()
    assert not outside, f"the page tried to reach the internet: {outside}"


def map_level(page: Any, level: str) -> None:
    page.wait_for_selector(f"[data-map][data-level={level}][data-ready]")


def test_county_leader_sees_only_the_county_and_drills_to_a_grid_and_back(screen: Any, tmp_path: Any) -> None:
    page = screen
    assert page.locator("html").get_attribute("lang") == "zh-Hans"
    assert "临海市" in page.locator("h1").inner_text() and "县级数字驾驶舱" in page.locator("h1").inner_text()
    text = page.locator("body").inner_text()
    assert not [c for c in OTHER_COUNTIES if c in text]
    assert (
        int(page.locator("#panel-events-flow .cp-fig[data-col='4'] .cp-num").inner_text().replace(",", ""))
        > 0
    )
    page.screenshot(path=str(tmp_path / "screen-county.png"))
    crumbs = page.locator("#panel-events-map [data-crumbs] li")
    assert crumbs.all_inner_texts() == ["临海市"]  # the city above is not the leader's to open
    map_level(page, "county")
    for level, depth in (("township", 2), ("village", 3), ("grid", 4)):
        page.locator("#panel-events-map path.cp-area").first.dispatch_event("click")
        map_level(page, level)
        assert crumbs.count() == depth
    assert page.locator("#panel-events-map path.cp-area.cp-focus").count() == 1
    page.screenshot(path=str(tmp_path / "screen-grid.png"))
    page.click(f"#panel-events-map [data-crumbs] a[data-drill='{LINHAI}']")
    map_level(page, "county")
    assert crumbs.all_inner_texts() == ["临海市"]
    assert not [c for c in OTHER_COUNTIES if c in page.locator("body").inner_text()]
    print("screenshots:", tmp_path)


def test_an_event_closed_in_another_session_shows_within_ten_seconds(
    screen: Any, cockpit_server: tuple[Server, str]
) -> None:
    server, number = cockpit_server
    page = screen
    closed_today = page.locator("#panel-events-flow .cp-fig[data-col='2'] .cp-num")  # 今日办结
    before = int(closed_today.inner_text().replace(",", ""))
    with httpx.Client(base_url=server.url) as other:  # the dispatcher, in a session of their own
        token = other.post(
            "/api/v1/accounts/login",
            json={"username": "dispatcher.linhai", "password": server.users["dispatcher.linhai"]},
        ).json()["token"]
        res = other.post(
            f"/api/v1/events/{number}/close", json={}, headers={"Authorization": f"Bearer {token}"}
        )
        assert res.status_code == 200, res.text
    started = time.monotonic()
    page.wait_for_function(
        "([sel, before]) => Number(document.querySelector(sel).textContent.replace(/,/g, '')) === before + 1",
        arg=["#panel-events-flow .cp-fig[data-col='2'] .cp-num", before],
        timeout=10000,
    )
    assert time.monotonic() - started <= 10


def test_a_chart_downloads_as_png(screen: Any) -> None:
    page = screen
    page.wait_for_selector("#panel-events-trend[data-ready]")
    with page.expect_download() as info:
        page.click("#panel-events-trend [data-png]")
    download = info.value
    assert download.suggested_filename.endswith(".png")
    path = download.path()
    with open(path, "rb") as fp:
        assert fp.read(8) == b"\x89PNG\r\n\x1a\n"
