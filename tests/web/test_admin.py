"""Administration pages: users, orgs, the audit log with chain verification, my API tokens."""

from __future__ import annotations

from sqlalchemy import select, text

from civicgrid.accounts.models import ApiToken, User
from tests import factories
from tests.web.conftest import csrf_of, login


def _csrf(client, path: str = "/") -> str:
    return csrf_of(client.get(path).text)


def _hx(token: str) -> dict[str, str]:
    return {"X-CSRF-Token": token, "HX-Request": "true"}


def test_admin_creates_a_user_and_the_audit_page_shows_it(client, tree, db):
    login(client, "admin")
    token = _csrf(client, "/admin/users/new")
    res = client.post(
        "/admin/users/new",
        data={
            "username": "liwei",
            "display_name": "李伟",
            "phone": "13912345678",
            "password": factories.PASSWORD,
            "org_code": "village-1",
            "role": "grid_worker",
        },
        headers=_hx(token),
    )
    assert res.status_code == 204, res.text
    detail = client.get(res.headers["HX-Redirect"])
    assert "李伟" in detail.text and "已创建" in detail.text
    users = client.get("/admin/users?q=liwei").text
    assert "liwei" in users and "13912345678" in users  # an admin sees the phone in clear
    audit = client.get("/admin/audit?action=user.create").text
    assert "user.create" in audit and "liwei" in audit
    assert "139****5678" in audit  # the audit diff stores personal fields masked
    filtered = client.get("/admin/audit?by=nobody").text
    assert "liwei" not in filtered


def test_form_errors_come_back_as_4xx_fragments(client, tree):
    login(client, "admin")
    token = _csrf(client, "/admin/users/new")
    data = {
        "username": "dispatcher",
        "display_name": "x",
        "password": factories.PASSWORD,
        "org_code": "town-1",
        "role": "grid_worker",
    }
    res = client.post("/admin/users/new", data=data, headers=_hx(token))
    assert res.status_code == 409
    assert res.text.lstrip().startswith('<div class="alert error"')
    assert "dispatcher" in res.text
    res = client.post(
        "/admin/users/new", data={**data, "username": "new1", "password": "short"}, headers=_hx(token)
    )
    assert res.status_code == 422


def test_edit_and_deactivate_a_user(client, tree, db):
    login(client, "admin")
    with db.session() as s:
        uid = s.scalar(select(User.id).where(User.username == "grid_worker"))
    token = _csrf(client, f"/admin/users/{uid}")
    res = client.post(f"/admin/users/{uid}", data={"display_name": "赵六", "phone": ""}, headers=_hx(token))
    assert res.status_code == 204
    res = client.post(f"/admin/users/{uid}/active", data={"active": "0"}, headers=_hx(token))
    assert res.status_code == 204
    page = client.get(f"/admin/users/{uid}").text
    assert "赵六" in page and "已停用" in page
    with db.session() as s:
        assert s.get(User, uid).active is False


def test_dispatcher_sees_masked_phones_and_cannot_manage(client, tree):
    login(client, "dispatcher")
    page = client.get("/admin/users").text
    assert "138****5678" in page  # other people's phones; the dispatcher sees their own in clear
    assert page.count("13812345678") == 1
    assert "/admin/users/new" not in page
    res = client.get("/admin/users/new", headers={"Accept": "text/html"})
    assert res.status_code == 403
    assert "您的角色无权执行此操作" in res.text


def test_dispatcher_cannot_open_the_audit_log_in_either_language(client, tree):
    login(client, "dispatcher")
    res = client.get("/admin/audit", headers={"Accept": "text/html"})
    assert res.status_code == 403
    assert "您的角色无权执行此操作" in res.text and "<html" in res.text
    res = client.get("/admin/audit?lang=en", headers={"Accept": "text/html"})
    assert res.status_code == 403
    assert "Your role does not allow this." in res.text


def test_orgs_list_and_create(client, tree):
    login(client, "admin")
    page = client.get("/admin/orgs")
    assert "镇1四平台" in page.text
    token = csrf_of(page.text)
    res = client.post(
        "/admin/orgs",
        data={
            "code": "dept-market-2",
            "name": "县2市场监管所",
            "kind": "department",
            "region_code": "331002000000",
            "platform": "market",
        },
        headers=_hx(token),
    )
    assert res.status_code == 204, res.text
    assert "县2市场监管所" in client.get("/admin/orgs").text
    res = client.post(
        "/admin/orgs",
        data={"code": "dept-x", "name": "X", "kind": "department", "region_code": "331002000000"},
        headers=_hx(token),
    )
    assert res.status_code == 422  # a department needs a platform


def test_verify_chain_names_the_broken_record(client, tree, db):
    login(client, "admin")
    token = _csrf(client, "/admin/audit")
    res = client.post("/admin/audit/verify", headers=_hx(token))
    assert res.status_code == 200 and "完整" in res.text
    with db.engine.begin() as c:
        # Tamper with one record behind the application's back (the append-only trigger is dropped on
        # SQLite's per-test copy; on PostgreSQL, whose database the process's later tests reuse,
        # it is lifted for the one statement only).
        if c.dialect.name == "sqlite":
            for name in c.execute(text("SELECT name FROM sqlite_master WHERE type='trigger'")).scalars():
                c.execute(text(f'DROP TRIGGER "{name}"'))
            c.execute(text("UPDATE audit_record SET action = 'forged' WHERE id = 3"))
        else:
            c.execute(text("ALTER TABLE audit_record DISABLE TRIGGER USER"))
            c.execute(text("UPDATE audit_record SET action = 'forged' WHERE id = 3"))
            c.execute(text("ALTER TABLE audit_record ENABLE TRIGGER USER"))
    res = client.post("/admin/audit/verify", headers=_hx(token))
    assert "#3" in res.text and "alert error" in res.text


def test_my_tokens_create_once_and_revoke(client, tree, db):
    login(client, "dispatcher")
    page = client.get("/account")
    token = csrf_of(page.text)
    res = client.post("/account/tokens", data={"name": "报表脚本", "days": "30"}, headers=_hx(token))
    assert res.status_code == 201
    assert "cgp_" in res.text and 'hx-swap-oob="true"' in res.text
    secret = res.text.split('id="new-token">')[1].split("<")[0]
    assert secret not in client.get("/account").text  # shown only once
    assert client.get("/api/v1/accounts/me", headers={"Authorization": f"Bearer {secret}"}).status_code == 200
    with db.session() as s:
        tid = s.scalar(select(ApiToken.id))
    res = client.post(f"/account/tokens/{tid}/revoke", headers=_hx(token))
    assert res.status_code == 200 and "已吊销" in res.text
    assert client.get("/api/v1/accounts/me", headers={"Authorization": f"Bearer {secret}"}).status_code == 401


def test_role_switch(client, tree, db):
    login(client, "admin")
    with db.session() as s:
        uid = s.scalar(select(User.id).where(User.username == "dispatcher"))
    token = _csrf(client, f"/admin/users/{uid}")
    res = client.post(
        f"/admin/users/{uid}/memberships", data={"org_code": "centre-1", "role": "leader"}, headers=_hx(token)
    )
    assert res.status_code == 204, res.text
    client.cookies.clear()
    login(client, "dispatcher")
    page = client.get("/account").text
    assert 'name="membership_id"' in page
    with db.session() as s:
        user = s.get(User, uid)
        leader_mid = next(m.id for m in user.memberships if m.role == "leader")
    res = client.post("/account/role", data={"membership_id": str(leader_mid)}, headers=_hx(csrf_of(page)))
    assert res.status_code == 204
    assert "县1社会治理中心" in client.get("/").text
