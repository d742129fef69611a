"""Journey: a wrong password shows a clear message in the user's language, then logging in works."""

from __future__ import annotations

import pytest

from tests.e2e.conftest import log_in

pytestmark = pytest.mark.e2e


def test_wrong_password_then_right_one(page, server, tmp_path):
    log_in(page, server, "admin", "not-the-password")
    alert = page.locator(".alert.error")
    alert.wait_for()
    assert "用户名或密码错误" in alert.inner_text()
    assert page.input_value("input[name=username]") == "admin"
    page.screenshot(path=str(tmp_path / "login-error-zh.png"), full_page=True)
    log_in(page, server, "admin")
    page.wait_for_url(server.url + "/")
    assert "审计日志" in page.locator("nav.mainnav").inner_text()
    page.screenshot(path=str(tmp_path / "home-admin-zh.png"), full_page=True)
    print("screenshots:", tmp_path)


def test_phone_layout(browser, server, tmp_path):
    context = browser.new_context(viewport={"width": 390, "height": 844}, locale="zh-CN", is_mobile=True)
    page = context.new_page()
    log_in(page, server, "dispatcher")
    page.wait_for_url(server.url + "/")
    width = page.evaluate("document.documentElement.scrollWidth")
    assert width <= 400, f"the page scrolls sideways on a phone ({width}px)"
    page.screenshot(path=str(tmp_path / "home-phone.png"), full_page=True)
    context.close()
