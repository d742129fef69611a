"""Cookie-authenticated writes without the CSRF token are refused and change nothing."""

from __future__ import annotations

from sqlalchemy import func, select

from civicgrid.accounts.models import User, WebSession
from tests import factories
from tests.web.conftest import csrf_of, login

NEW_USER = {
    "username": "wang",
    "display_name": "王五",
    "password": factories.PASSWORD,
    "org_code": "town-1",
    "role": "grid_worker",
}


def _users(db) -> int:
    with db.session() as s:
        return s.scalar(select(func.count()).select_from(User)) or 0


def test_post_without_token_is_refused(client, tree, db):
    login(client, "admin")
    before = _users(db)
    res = client.post("/admin/users/new", data=NEW_USER, headers={"Accept": "text/html"})
    assert res.status_code == 403
    assert "表单已过期" in res.text
    assert _users(db) == before


def test_post_with_a_wrong_token_is_refused(client, tree, db):
    login(client, "admin")
    before = _users(db)
    res = client.post("/admin/users/new", data={**NEW_USER, "csrf_token": "forged"})
    assert res.status_code == 403
    res = client.post("/admin/users/new", data=NEW_USER, headers={"X-CSRF-Token": "forged"})
    assert res.status_code == 403
    assert _users(db) == before


def test_logout_without_token_keeps_the_session(client, tree, db):
    login(client, "dispatcher")
    assert client.post("/logout").status_code == 403
    with db.session() as s:
        assert s.scalar(select(func.count()).select_from(WebSession)) == 1


def test_token_in_header_or_form_is_accepted(client, tree, db):
    login(client, "admin")
    token = csrf_of(client.get("/admin/users/new").text)
    res = client.post(
        "/admin/users/new", data=NEW_USER, headers={"X-CSRF-Token": token, "HX-Request": "true"}
    )
    assert res.status_code == 204 and res.headers["HX-Redirect"].startswith("/admin/users/")
    res = client.post(
        "/admin/users/new", data={**NEW_USER, "username": "zhao", "csrf_token": token}, follow_redirects=False
    )
    assert res.status_code == 303
