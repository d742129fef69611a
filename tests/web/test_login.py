"""Login and logout pages: messages in the user's language, throttling, safe redirects, cookies."""

from __future__ import annotations

import pytest
from sqlalchemy import func, select

from civicgrid.accounts.models import LoginFailure, WebSession
from civicgrid.core.deps import SESSION_COOKIE
from civicgrid.web.web import safe_next
from tests import factories
from tests.web.conftest import csrf_of, login


def test_login_page_is_chinese_by_default(client, tree):
    res = client.get("/login")
    assert res.status_code == 200
    assert "用户名" in res.text and "登录" in res.text
    assert 'name="password"' in res.text


def test_login_sets_a_safe_cookie_and_goes_home(client, tree):
    res = login(client, "dispatcher")
    assert res.headers["location"] == "/"
    cookie = res.headers["set-cookie"]
    assert f"{SESSION_COOKIE}=" in cookie
    assert "httponly" in cookie.lower() and "samesite=lax" in cookie.lower()
    assert "secure" not in cookie.lower()  # settings.secure_cookies is off in tests
    assert client.get("/").status_code == 200


def test_secure_cookie_when_configured(client, tree, app):
    app.state.settings.secure_cookies = True
    res = login(client, "dispatcher")
    assert "secure" in res.headers["set-cookie"].lower()


def test_wrong_password_is_401_with_a_clear_message_and_counts(client, tree, db):
    res = client.post("/login", data={"username": "dispatcher", "password": "nope-nope"})
    assert res.status_code == 401
    assert "用户名或密码错误" in res.text
    assert 'value="dispatcher"' in res.text  # the form keeps the username
    with db.session() as s:  # the failure was committed although the login failed
        assert s.scalar(select(func.count()).select_from(LoginFailure)) == 1
    res = client.post("/login?lang=en", data={"username": "dispatcher", "password": "nope-nope"})
    assert res.status_code == 401 and "Wrong username or password." in res.text


def test_too_many_failures_lock_the_username(client, tree):
    for _ in range(5):
        assert client.post("/login", data={"username": "admin", "password": "wrong-one"}).status_code == 401
    res = client.post("/login", data={"username": "admin", "password": factories.PASSWORD})
    assert res.status_code == 429
    assert "密码错误次数过多" in res.text
    assert int(res.headers["retry-after"]) > 0
    assert SESSION_COOKIE not in res.headers.get("set-cookie", "")


def test_empty_form_is_refused(client, tree):
    res = client.post("/login", data={"username": "", "password": ""})
    assert res.status_code == 422


def test_login_from_another_site_is_refused(client, tree):
    res = client.post(
        "/login",
        data={"username": "dispatcher", "password": factories.PASSWORD},
        headers={"Origin": "https://evil.example"},
    )
    assert res.status_code == 403


@pytest.mark.parametrize(
    ("target", "expected"),
    [
        ("/admin/users?q=a", "/admin/users?q=a"),
        ("/regions/map", "/regions/map"),
        ("https://evil.example/", "/"),
        ("//evil.example/x", "/"),
        ("/\\evil.example", "/"),
        ("\\\\evil.example", "/"),
        ("javascript:alert(1)", "/"),
        ("http:/evil", "/"),
        ("relative/path", "/"),
        ("/ok\r\nSet-Cookie: x=1", "/"),
        ("", "/"),
    ],
)
def test_next_is_only_a_local_path(target, expected):
    assert safe_next(target) == expected


def test_login_redirects_to_next(client, tree):
    res = client.get("/regions/map", headers={"Accept": "text/html"}, follow_redirects=False)
    assert res.status_code == 303 and res.headers["location"].startswith("/login?next=")
    res = client.post(
        "/login",
        data={"username": "dispatcher", "password": factories.PASSWORD, "next": "/regions/map"},
        follow_redirects=False,
    )
    assert res.headers["location"] == "/regions/map"
    res = client.post(
        "/login",
        data={"username": "admin", "password": factories.PASSWORD, "next": "https://evil.example/"},
        follow_redirects=False,
    )
    assert res.headers["location"] == "/"


def test_logout_deletes_the_session(client, tree, db):
    login(client, "dispatcher")
    home = client.get("/")
    res = client.post("/logout", data={"csrf_token": csrf_of(home.text)}, follow_redirects=False)
    assert res.status_code == 303 and res.headers["location"] == "/login"
    with db.session() as s:
        assert s.scalar(select(func.count()).select_from(WebSession)) == 0
    assert client.get("/", headers={"Accept": "text/html"}, follow_redirects=False).status_code == 303
