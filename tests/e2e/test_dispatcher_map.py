"""Journey: a dispatcher logs in (in Chinese), opens the grid map, clicks a grid and reads its panel."""

from __future__ import annotations

import pytest

from tests.e2e.conftest import log_in

pytestmark = pytest.mark.e2e


def test_dispatcher_opens_the_map_and_a_grid(page, server, tmp_path):
    log_in(page, server, "dispatcher")
    page.wait_for_url(server.url + "/")
    assert page.locator("html").get_attribute("lang") == "zh-Hans"
    assert page.locator("nav.mainnav").inner_text().count("网格地图") == 1
    page.wait_for_selector(".js-grid-map[data-ready]")  # the small map on the home page
    page.screenshot(path=str(tmp_path / "home-zh.png"), full_page=True)

    page.click("nav.mainnav >> text=网格地图")
    page.wait_for_selector("#grid-map[data-ready]")
    assert int(page.get_attribute("#grid-map", "data-ready") or 0) > 0
    grid = page.locator("path.grid-path").first
    grid.click()
    panel = page.locator("#region-panel .region-panel")
    panel.wait_for()
    title = panel.locator(".panel-title").inner_text()
    assert title.strip()
    assert "网格员" in panel.inner_text()
    assert panel.locator(".crumbs li").count() >= 3  # city › county › township › village
    page.screenshot(path=str(tmp_path / "map-zh.png"), full_page=True)
    print("screenshots:", tmp_path)
