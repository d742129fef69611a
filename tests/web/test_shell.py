"""The page shell: navigation by role, the user box, language switch, home pages by role."""

from __future__ import annotations

import re

import pytest

from civicgrid.accounts.permissions import Role, permissions_for
from tests.web.conftest import login

NAV = {
    "/regions/map": "网格地图",
    "/admin/users": "用户",
    "/admin/orgs": "组织",
    "/admin/audit": "审计日志",
    "/account": "我的账户",
}
REPORTER = {"/events/new", "/events/mine"}
EXPECTED = {
    "admin": {"/regions/map", "/admin/users", "/admin/orgs", "/admin/audit", "/account"}
    | REPORTER
    | {"/events/queue", "/events/work", "/events/search", "/events/import"},
    "dispatcher": {"/regions/map", "/admin/users", "/admin/orgs", "/account"}
    | {"/events/queue", "/events/search", "/events/import"},
    "leader": {"/regions/map", "/admin/users", "/admin/orgs", "/account", "/events/search"},
    "grid_worker": {"/regions/map", "/admin/orgs", "/account", "/events/search"} | REPORTER,
    "resident": {"/regions/map", "/account"} | REPORTER,
}
# Mediation (disputes): the workbench for who mediates, the difficult-case overview for leaders.
for _role in ("admin", "dispatcher"):
    EXPECTED[_role] = EXPECTED[_role] | {"/disputes/work"}
EXPECTED["leader"] = EXPECTED["leader"] | {"/disputes/difficult"}
# Risk warnings, the public data platform and the cockpit follow their own permissions.
_BY_PERMISSION = {"/risks": "risks.read", "/data": "data.read", "/cockpit": "events.supervise"}
for _role in EXPECTED:
    _perms = {str(p) for p in permissions_for(Role(_role))}
    EXPECTED[_role] = EXPECTED[_role] | {href for href, perm in _BY_PERMISSION.items() if perm in _perms}


def nav_links(html: str) -> set[str]:
    nav = re.search(r'<nav class="mainnav".*?</nav>', html, re.S)
    assert nav
    return set(re.findall(r'href="([^"]+)"', nav.group(0))) - {"/"}


@pytest.mark.parametrize("role", sorted(EXPECTED))
def test_navigation_shows_only_what_the_role_may_open(client, tree, role):
    login(client, role)
    home = client.get("/")
    assert home.status_code == 200
    assert nav_links(home.text) == EXPECTED[role]
    for href in EXPECTED[role]:
        assert client.get(href).status_code == 200, href
    for href in set(NAV) - EXPECTED[role]:
        assert client.get(href).status_code == 403, href


def test_user_box_and_logout_form(client, tree):
    login(client, "dispatcher")
    html = client.get("/").text
    assert "张三" in html and "镇1四平台" in html and "调度员" in html
    assert 'action="/logout"' in html and 'name="csrf_token"' in html
    assert re.search(r'<body hx-headers=\'\{"X-CSRF-Token": "[^"]+"\}\'', html)
    assert "/static/vendor/htmx-2.0.11/htmx.min.js" in html
    assert "https://" not in html and "http://" not in html  # no CDN, no online tiles


def test_language_switch_keeps_the_page(client, tree):
    login(client, "admin")
    html = client.get("/admin/users?q=dis").text
    assert 'href="/admin/users?q=dis&amp;lang=en"' in html
    en = client.get("/admin/users?q=dis&lang=en")
    assert "Users" in en.text and "lang=en" in en.headers["set-cookie"]
    assert "Users" in client.get("/admin/users").text  # remembered in the cookie


def test_dispatcher_home_shows_the_township(client, tree):
    login(client, "dispatcher")
    html = client.get("/").text
    assert "镇1" in html and "县1" in html and "台州市" in html  # name and parent chain
    assert 'data-parent="331001001000"' in html  # the small map of its grids
    assert re.search(r'<div class="num">2</div><div class="label">网格</div>', html)


def test_leader_home_counts_by_level(client, tree):
    login(client, "leader")
    html = client.get("/").text
    assert re.search(r'<div class="num">1</div><div class="label">乡镇（街道）</div>', html), html


def test_admin_home_links_and_counts(client, tree):
    login(client, "admin")
    html = client.get("/").text
    for href in ("/admin/users/new", "/admin/audit", "/admin/orgs"):
        assert f'href="{href}"' in html


def test_resident_home_is_a_welcome(client, tree):
    login(client, "resident")
    html = client.get("/").text
    assert "欢迎" in html
    assert "/admin/" not in html


def test_healthz(client):
    assert client.get("/healthz").json() == {"status": "ok"}
