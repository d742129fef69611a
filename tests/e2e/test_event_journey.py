"""Journey, in the Chinese UI: a grid worker reports a fire hazard with a photo from the phone's
location; the township dispatcher accepts it and dispatches it from the queue; the township's
综治中心 handler starts and completes it with a result photo; the grid worker verifies it; the
dispatcher closes it; the grid worker rates it. The state is checked on screen after each step."""

from __future__ import annotations

import io
import re
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.conftest import Server, log_in

pytestmark = pytest.mark.e2e

PHONE = {"width": 390, "height": 844}
DESKTOP = {"width": 1280, "height": 860}
CATEGORY = "1101"  # 安全隐患 › 消防隐患: safety platform, handled where it happens (先属地)


def _prepare(server: Server) -> dict[str, Any]:
    """Seed the event catalogue (the demo loads regions and people only) and find a point in the
    grid worker's first grid; the dispatcher's routing sends this category to the handler's org."""
    from shapely.geometry import shape

    from civicgrid.accounts import service as accounts
    from civicgrid.core.auth import SYSTEM
    from civicgrid.core.config import Settings
    from civicgrid.core.db import Database
    from civicgrid.events import service
    from civicgrid.regions import service as regions

    db = Database(Settings(data_dir=server.data_dir).resolved_database_url)
    try:
        with db.session() as s:
            service.seed_catalogue(s, SYSTEM)
            worker = accounts.get_user_by_username(s, "gridworker")
            handler = accounts.get_user_by_username(s, "handler")
            assert worker is not None and handler is not None
            grid = regions.grids_of_worker(s, worker.id)[0]
            p = shape(__import__("json").loads(grid.geometry)).representative_point()
            return {
                "lon": round(p.x, 6),
                "lat": round(p.y, 6),
                "grid": grid.name,
                "handler_org": handler.memberships[0].org.name,
            }
    finally:
        db.dispose()


def _png(color: tuple[int, int, int]) -> bytes:
    from PIL import Image

    out = io.BytesIO()
    Image.new("RGB", (320, 240), color).save(out, "PNG")
    return out.getvalue()


def _switch_user(page: Any, server: Server, username: str) -> None:
    page.context.clear_cookies()
    log_in(page, server, username)
    page.wait_for_url(server.url + "/")


def _shot(page: Any, folder: Path, name: str, phone: bool = False) -> None:
    if phone:
        page.set_viewport_size(PHONE)
        page.wait_for_timeout(400)  # let the page lay out and paint at the new width
    page.screenshot(path=str(folder / f"{name}.png"), full_page=True)
    if phone:
        page.set_viewport_size(DESKTOP)


def test_report_to_rating_in_chinese(page, server, tmp_path):
    facts = _prepare(server)
    shots = tmp_path

    # 1. The grid worker reports with the phone's location and a photo.
    _switch_user(page, server, "gridworker")
    page.click("nav.mainnav >> text=上报事件")
    page.wait_for_selector(".js-report-map[data-ready]")
    page.fill(".js-category-search", "消防")
    options = page.locator("#category option")
    assert options.count() >= 1 and "安全隐患 › 消防隐患" in options.all_inner_texts()
    page.select_option("#category", CATEGORY)
    page.context.grant_permissions(["geolocation"], origin=server.url)
    page.context.set_geolocation({"latitude": facts["lat"], "longitude": facts["lon"]})
    page.click("text=使用当前位置")
    page.wait_for_function("document.querySelector('.js-lon').value !== ''")
    assert facts["grid"] in page.locator(".js-loc-status").inner_text()
    page.fill("input[name=address]", "幸福路88号3单元楼道")
    page.fill("textarea[name=description]", "楼道内堆放大量纸箱和电动车，堵塞消防通道")
    photo = tmp_path / "楼道.png"
    photo.write_bytes(_png((180, 60, 40)))
    page.set_input_files("input[name=photos]", str(photo))
    _shot(page, shots, "1-report-form-phone", phone=True)
    page.click("text=提交上报")
    page.wait_for_url(re.compile(r".*/events/\d{6}-\d{8}-\d{5}\?created=1$"))
    number = re.search(r"/events/([\d-]+)\?", page.url).group(1)
    assert f"上报成功，事件编号为 {number}" in page.inner_text("main")
    assert page.inner_text("h1 .badge") == "已上报"
    assert page.locator(".thumbs img").count() == 1
    page.wait_for_selector(".js-event-map[data-ready]")
    _shot(page, shots, "2-event-reported")

    # 2. The dispatcher accepts it in the queue and dispatches it with the bulk button.
    _switch_user(page, server, "dispatcher")
    page.click("nav.mainnav >> text=受理派遣")
    row = page.locator(f"#row-{number}")
    assert "已上报" in row.inner_text()
    row.locator("[data-step=accept] button").click()
    page.wait_for_selector(f"#row-{number}[data-state=accepted]")
    row = page.locator(f"#row-{number}")
    assert "已受理" in row.inner_text() and facts["handler_org"] in row.inner_text()
    _shot(page, shots, "3-queue-accepted")
    row.locator("input[name=pick]").check()
    page.click("text=将所选事件派遣至建议承办部门")
    page.wait_for_selector(f"#bulk-results li[data-number='{number}'][data-ok=true]")
    assert "已派遣所选 1 件中的 1 件" in page.inner_text("#bulk-results")
    page.goto(f"{server.url}/events/{number}")
    assert page.inner_text("h1 .badge") == "已派遣"
    assert facts["handler_org"] in page.inner_text("main")

    # 3. The handler starts and completes it with a result photo.
    _switch_user(page, server, "handler")
    page.click("nav.mainnav >> text=办理工作台")
    row = page.locator(f"#row-{number}")
    row.locator("[data-step=start] button").click()
    page.wait_for_selector(f"#row-{number}[data-state=handling]")
    row = page.locator(f"#row-{number}")
    assert "处置中" in row.inner_text()
    row.locator("[data-step=handle] summary").click()
    row.locator("textarea[name=result]").fill("已清理楼道杂物，电动车移至集中充电点，消防通道畅通")
    result_photo = tmp_path / "处置后.png"
    result_photo.write_bytes(_png((40, 160, 80)))
    row.locator("input[name=photos]").set_input_files(str(result_photo))
    _shot(page, shots, "4-workbench-handle")
    row.locator("[data-step=handle] button[type=submit]").click()
    page.wait_for_selector(f"#row-{number}[data-state=handled]")
    assert "已处置" in page.locator(f"#row-{number}").inner_text()

    # 4. The grid worker verifies the fix.
    _switch_user(page, server, "gridworker")
    page.click("nav.mainnav >> text=我的上报")
    row = page.locator(f"#row-{number}")
    assert "已处置" in row.inner_text()
    row.locator("[data-step=verify] summary").click()
    row.locator("textarea[name=note]").fill("现场核实，通道已畅通")
    _shot(page, shots, "5-mine-verify-phone", phone=True)
    row.locator("[data-step=verify] button[type=submit]").click()
    page.wait_for_selector(f"#row-{number}[data-state=verified]")
    assert "已核查" in page.locator(f"#row-{number}").inner_text()

    # 5. The dispatcher closes it from the event page.
    _switch_user(page, server, "dispatcher")
    page.goto(f"{server.url}/events/{number}")
    page.locator("[data-step=close] button").click()
    page.wait_for_function("document.querySelector('h1 .badge').textContent.trim() === '已结案'")

    # 6. The grid worker rates it: four stars.
    _switch_user(page, server, "gridworker")
    page.click("nav.mainnav >> text=我的上报")
    row = page.locator(f"#row-{number}")
    assert "已结案" in row.inner_text()
    row.locator("[data-step=rate] summary").click()
    row.locator(f"label[for=star-{number}-4]").click()
    row.locator("textarea[name=comment]").fill("处理及时，很满意")
    row.locator("[data-step=rate] button[type=submit]").click()
    page.wait_for_selector(f"#row-{number}[data-state=rated]")
    assert "★★★★☆" in page.locator(f"#row-{number}").inner_text()
    _shot(page, shots, "6-mine-rated-phone", phone=True)

    page.goto(f"{server.url}/events/{number}")
    assert page.inner_text("h1 .badge") == "已评价"
    timeline = page.inner_text(".timeline")
    for step in ("上报", "受理", "派遣", "开始处置", "提交处置结果", "核查", "结案", "评价"):
        assert step in timeline, step
    assert page.locator(".thumbs img").count() == 2
    page.wait_for_selector(".js-event-map[data-ready]")
    _shot(page, shots, "7-event-rated")
    _shot(page, shots, "8-event-rated-phone", phone=True)
    print("screenshots:", shots)
