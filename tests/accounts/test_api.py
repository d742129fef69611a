from __future__ import annotations

from datetime import timedelta

from sqlalchemy import select

from civicgrid.accounts.models import ApiToken, LoginFailure
from civicgrid.core.db import utcnow
from tests.factories import PASSWORD, login_headers, make_tree, make_user, make_users


def test_token_lifecycle(client, db) -> None:
    with db.session() as s:
        make_users(s, make_tree(s))
    headers = login_headers(client, "dispatcher")
    me = client.get("/api/v1/accounts/me", headers=headers).json()
    assert me["role"] == "dispatcher" and me["org_name"] == "镇1四平台"
    # a token cannot mint further tokens
    res = client.post("/api/v1/accounts/tokens", headers=headers, json={"name": "x"})
    assert res.status_code == 403
    tokens = client.get("/api/v1/accounts/tokens", headers=headers).json()
    assert len(tokens) == 1 and tokens[0]["prefix"].startswith("cgp_")
    # the clear token is never stored
    with db.session() as s:
        assert headers["Authorization"][7:] not in {t.token_hash for t in s.scalars(select(ApiToken))}
    res = client.delete(f"/api/v1/accounts/tokens/{tokens[0]['id']}", headers=headers)
    assert res.status_code == 200 and res.json()["revoked_at"]
    res = client.get("/api/v1/accounts/me", headers=headers)
    assert res.status_code == 401
    assert res.json()["error"]["message"] == "API 令牌无效、已过期或已被吊销。"


def test_expired_token_refused(client, db) -> None:
    with db.session() as s:
        make_users(s, make_tree(s))
    headers = login_headers(client, "leader")
    with db.session() as s:
        for t in s.scalars(select(ApiToken)):
            t.expires_at = utcnow() - timedelta(seconds=1)
    assert client.get("/api/v1/accounts/me", headers=headers).status_code == 401


def test_wrong_password_is_throttled_and_counted(client, db) -> None:
    with db.session() as s:
        make_users(s, make_tree(s))
    for _ in range(5):
        res = client.post("/api/v1/accounts/login", json={"username": "handler", "password": "wrong"})
        assert res.status_code == 401
        assert res.json()["error"]["message"] == "用户名或密码错误。"
    with db.session() as s:
        assert len(s.scalars(select(LoginFailure)).all()) == 5
    # even the right password is refused while locked, with a Retry-After
    res = client.post(
        "/api/v1/accounts/login",
        json={"username": "handler", "password": PASSWORD},
        headers={"Accept-Language": "en"},
    )
    assert res.status_code == 429
    assert int(res.headers["Retry-After"]) > 0
    assert res.json()["error"]["message"].startswith("Too many wrong passwords")
    # another user is not affected
    assert (
        client.post("/api/v1/accounts/login", json={"username": "leader", "password": PASSWORD}).status_code
        == 201
    )


def test_deactivated_user_cannot_use_token(client, db) -> None:
    with db.session() as s:
        t = make_users(s, make_tree(s))
        uid = t.users["handler"].id
    headers = login_headers(client, "handler")
    admin = login_headers(client, "admin")
    res = client.patch(f"/api/v1/accounts/users/{uid}", headers=admin, json={"active": False})
    assert res.status_code == 200 and res.json()["active"] is False
    assert client.get("/api/v1/accounts/me", headers=headers).status_code == 401


def test_scope_hides_other_county(client, db) -> None:
    with db.session() as s:
        t = make_users(s, make_tree(s))
        other = make_user(
            s, t, "dispatcher2", __import__("civicgrid").accounts.permissions.Role.dispatcher, "town2"
        )
        other_id = other.id
    headers = login_headers(client, "dispatcher")
    names = {u["username"] for u in client.get("/api/v1/accounts/users", headers=headers).json()}
    assert "grid_worker" in names and "dispatcher2" not in names
    assert client.get(f"/api/v1/accounts/users/{other_id}", headers=headers).status_code == 404
    orgs = {o["code"] for o in client.get("/api/v1/accounts/orgs", headers=headers).json()}
    assert "town-1" in orgs and "town-2" not in orgs and "centre-1" not in orgs


def test_phone_masked_for_non_admin(client, db) -> None:
    with db.session() as s:
        make_users(s, make_tree(s))
    leader = login_headers(client, "leader")
    users = {u["username"]: u for u in client.get("/api/v1/accounts/users", headers=leader).json()}
    assert users["handler"]["phone"] == "138****5678"
    admin = login_headers(client, "admin")
    users = {u["username"]: u for u in client.get("/api/v1/accounts/users", headers=admin).json()}
    assert users["handler"]["phone"] == "13812345678"


def test_bad_input_is_422_in_users_language_and_writes_nothing(client, db) -> None:
    with db.session() as s:
        make_users(s, make_tree(s))
    admin = login_headers(client, "admin")
    before = client.get("/api/v1/accounts/users", headers=admin).json()
    body = {"username": "x y", "display_name": "", "password": "short", "memberships": []}
    res = client.post("/api/v1/accounts/users", headers=admin, json=body)
    assert res.status_code == 422
    assert res.json()["error"]["message"].startswith("输入无效")
    res = client.post("/api/v1/accounts/users", headers={**admin, "Accept-Language": "en"}, json=body)
    assert res.json()["error"]["message"].startswith("The input is not valid")
    dup = {
        "username": "leader",
        "display_name": "王五",
        "password": "long-enough",
        "memberships": [{"org_code": "town-1", "role": "handler"}],
    }
    res = client.post("/api/v1/accounts/users", headers=admin, json=dup)
    assert res.status_code == 409
    unknown_org = {**dup, "username": "newbie", "memberships": [{"org_code": "nope", "role": "handler"}]}
    assert client.post("/api/v1/accounts/users", headers=admin, json=unknown_org).status_code == 404
    assert client.get("/api/v1/accounts/users", headers=admin).json() == before


def test_unknown_route_is_json_404_in_chinese(client) -> None:
    res = client.get("/api/v1/nothing-here")
    assert res.status_code == 404
    assert res.json() == {"error": {"code": "http_404", "message": "未找到。"}}
