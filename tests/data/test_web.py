"""The data platform's pages: Chinese by default and UTF-8, each for the roles that may use it,
showing only what the reader may see — the sample masked by the same policy as the API — and
the applicant → approver → key and the request → approval → certificate journeys in forms."""

from __future__ import annotations

import json
import re
from datetime import timedelta

import pytest
from sqlalchemy import select

from civicgrid.core import audit
from civicgrid.data import access, service
from tests.data.access_world import POPULATION_ROWS, AccessWorld, access_world_fixture  # noqa: F401
from tests.factories import login_headers
from tests.web.conftest import csrf_of, login

UNTIL = (access.today() + timedelta(days=30)).isoformat()
PAGES = [
    "/data",
    "/data?q=人口",
    "/data/datasets/population",
    "/data/applications",
    "/data/applications/new?dataset=population",
    "/data/approvals",
    "/data/keys",
    "/data/usage",
    "/data/sandbox",
    "/data/lifecycle",
]
#: Which pages each role may open (the rest answer 403).
ALLOWED = {
    "consumer": {"/data", "/data?q=人口", "/data/datasets/population", "/data/applications",
                 "/data/applications/new?dataset=population", "/data/keys", "/data/usage", "/data/sandbox"},
    "steward": {"/data", "/data?q=人口", "/data/datasets/population", "/data/approvals", "/data/usage",
                "/data/lifecycle"},
    "admin": set(PAGES),
    "resident": set(),
}  # fmt: skip


@pytest.fixture
def loaded(access_world: AccessWorld) -> AccessWorld:
    access_world.data.load_rows("population", POPULATION_ROWS)
    return access_world


def _page(client, user: str, path: str):
    client.cookies.clear()
    login(client, user)
    return client.get(path)


def _grant(client, *, mode: str = "api", clear: list[str] | None = None) -> None:
    consumer = login_headers(client, "consumer")
    res = client.post(
        "/api/v1/data/applications",
        headers=consumer,
        json={
            "dataset": "population",
            "purpose": "困难群众走访",
            "fields": ["village", "name", "id_number", "age"],
            "mode": mode,
            "until": UNTIL,
        },
    )
    assert res.status_code == 201, res.text
    res = client.post(
        f"/api/v1/data/approvals/{res.json()['id']}/approve",
        headers=login_headers(client, "steward"),
        json={"clear_fields": clear or []},
    )
    assert res.status_code == 200, res.text


def test_every_page_speaks_chinese_in_utf8_to_the_roles_that_may_use_it(client, loaded):
    for user, allowed in ALLOWED.items():
        client.cookies.clear()
        login(client, user)
        for path in PAGES:
            res = client.get(path, headers={"Accept": "text/html"})
            if path not in allowed:
                assert res.status_code == 403, (user, path, res.status_code)
                continue
            assert res.status_code == 200, (user, path, res.text[:300])
            assert res.headers["content-type"] == "text/html; charset=utf-8"
            assert '<meta charset="utf-8">' in res.text and '<html lang="zh-Hans">' in res.text
            assert "公共数据" in res.text and "数据目录" in res.text, (user, path)
    # English on request
    client.cookies.clear()
    login(client, "consumer")
    assert "Data catalogue" in client.get("/data?lang=en").text


def test_the_catalogue_shows_only_what_the_reader_may_see(client, loaded):
    res = _page(client, "consumer", "/data")
    assert "/data/datasets/population" in res.text and "/data/datasets/shops" in res.text
    assert "/data/datasets/secret" not in res.text  # not shared: the owner's alone
    assert client.get("/data/datasets/secret", headers={"Accept": "text/html"}).status_code == 404
    res = client.get("/data", params={"q": "个体工商户"})
    assert "/data/datasets/shops" in res.text and "/data/datasets/population" not in res.text
    # a facet narrows, and the facet list names the owner organisation
    res = client.get("/data", params={"share_class": "unconditional"})
    assert "/data/datasets/shops" in res.text and "/data/datasets/population" not in res.text
    assert "无条件共享" in res.text and "县1市场监管局" in res.text
    # the owner sees its own unshared dataset; the outsider of the other county does not
    assert "/data/datasets/secret" in _page(client, "steward", "/data").text
    assert "/data/datasets/secret" not in _page(client, "outsider", "/data").text


def test_the_sample_is_masked_by_the_readers_policy_and_audited(client, loaded, db):
    # no grant yet: no rows, an invitation to apply
    res = _page(client, "consumer", "/data/datasets/population")
    assert "张三" not in res.text and "张*" not in res.text
    assert (
        "没有数据集 population 的授权" in res.text and "/data/applications/new?dataset=population" in res.text
    )
    # the owner reads its own data in clear
    res = _page(client, "steward", "/data/datasets/population")
    assert "张三" in res.text and "110101199003071234" in res.text
    assert "个人信息" in res.text and "身份证号" in res.text  # the schema with sensitivity
    assert "完整率" in res.text  # the quality report of the latest load
    # an api grant: masked in the engine, names in clear as granted
    _grant(client, clear=["name"])
    res = _page(client, "consumer", "/data/datasets/population")
    assert "张三" in res.text and "110101********1234" in res.text and "110101199003071234" not in res.text
    assert "13812345678" not in res.text  # the phone field was never granted
    with db.session() as s:
        reads = s.scalars(select(audit.AuditRecord).where(audit.AuditRecord.action == "data.read")).all()
        channels = [json.loads(r.diff)["_"]["channel"] for r in reads]
    assert channels.count("web") == 2  # the owner's and the consumer's sample, each audited


def test_apply_approve_and_create_a_key_through_the_pages(client, loaded):
    client.cookies.clear()
    login(client, "consumer")
    form = client.get("/data/applications/new?dataset=population").text
    res = client.post(
        "/data/applications",
        data={
            "csrf_token": csrf_of(form),
            "dataset": "population",
            "purpose": "独居老人走访",
            "fields": ["village", "name", "age"],
            "filter_field": ["age", ""],
            "filter_op": ["gte", "eq"],
            "filter_value": ["18", ""],
            "mode": "api",
            "until": UNTIL,
        },
        follow_redirects=False,
    )
    assert res.status_code == 303, res.text
    app_id = int(re.search(r"created=(\d+)", res.headers["location"]).group(1))
    # bad input: a clear message in Chinese, nothing written
    res = client.post(
        "/data/applications",
        data={
            "csrf_token": csrf_of(form),
            "dataset": "population",
            "purpose": "独居老人走访",
            "fields": ["nope"],
            "until": UNTIL,
        },
        headers={"HX-Request": "true"},
    )
    assert res.status_code == 422 and "没有字段 nope" in res.text

    # the owner's inbox has a notice, and the approvals tab counts the waiting application
    notices = client.get("/api/v1/inbox", headers=login_headers(client, "steward")).json()
    assert any(f"新的数据申请 {app_id}" in n["message"] for n in notices)
    client.cookies.clear()
    login(client, "steward")
    inbox = client.get("/data/approvals").text
    assert "独居老人走访" in inbox and "age 至少 18" in inbox
    assert re.search(r'href="/data/approvals"[^>]*>审批<span class="count"[^>]*>1</span>', inbox)
    res = client.post(
        f"/data/approvals/{app_id}/approve",
        data={
            "csrf_token": csrf_of(inbox),
            "fields": ["village", "name"],
            "clear_fields": ["name"],
            "until": UNTIL,
        },
        follow_redirects=False,
    )
    assert res.status_code == 303, res.text

    client.cookies.clear()
    login(client, "consumer")
    mine = client.get("/data/applications").text
    assert "已批准" in mine and "age 至少 18" in mine
    keys_page = client.get("/data/keys").text
    res = client.post(
        "/data/keys",
        data={"csrf_token": csrf_of(keys_page), "name": "走访系统"},
        headers={"HX-Request": "true"},
    )
    assert res.status_code == 200 and "只显示这一次" in res.text
    key = re.search(r'id="new-key">(cgk_[^<]+)<', res.text).group(1)
    body = client.get("/api/v1/data/query/population", headers={"X-API-Key": key}).json()
    # adults only, names in clear as approved, no age (narrowed away)
    assert body["total"] == 4 and {r["name"] for r in body["records"]} == {"张三", "李四", "王五", "欧阳娜娜"}
    assert all(set(r) == {"village", "name"} for r in body["records"])
    assert "走访系统" in client.get("/data/keys").text  # the key is listed, without its secret
    assert key not in client.get("/data/keys").text


def test_the_sandbox_page_runs_aggregates_and_shows_refusals(client, loaded, db):
    with db.session() as s:
        service.update_dataset(s, loaded.actor(s, "steward"), "population", k_threshold=2)
    _grant(client, mode="sandbox")
    client.cookies.clear()
    login(client, "consumer")
    page = client.get("/data/sandbox").text
    assert "population" in page and "仅可计数" in page  # masked fields may only be counted
    res = client.post(
        "/data/sandbox",
        data={
            "csrf_token": csrf_of(page),
            "sql": "SELECT village, count(*) AS n FROM population GROUP BY village",
        },
        headers={"HX-Request": "true"},
    )
    assert res.status_code == 200, res.text
    assert "村1" in res.text and "村2" in res.text and 'id="sandbox-table"' in res.text
    res = client.post(
        "/data/sandbox",
        data={"csrf_token": csrf_of(page), "sql": "SELECT name FROM population"},
        headers={"HX-Request": "true"},
    )
    assert res.status_code in (403, 422) and 'class="alert error"' in res.text
    assert "SELECT name FROM population" in client.get("/data/sandbox").text  # in the history


def test_destruction_through_the_lifecycle_pages(client, loaded):
    client.cookies.clear()
    login(client, "steward")
    page = client.get("/data/lifecycle").text
    res = client.post(
        "/data/destructions",
        data={"csrf_token": csrf_of(page), "dataset": "population", "reason": "系统下线，依规销毁"},
        follow_redirects=False,
    )
    assert res.status_code == 303, res.text
    url = res.headers["location"]
    mine = client.get(url).text
    assert "须由另一位审批人审批" in mine and "批准并销毁" not in mine
    res = client.post(url + "/approve", data={"csrf_token": csrf_of(mine)}, headers={"HX-Request": "true"})
    assert res.status_code == 403
    assert (
        client.get(url, headers=login_headers(client, "consumer") | {"Accept": "text/html"}).status_code
        == 404
    )

    client.cookies.clear()
    login(client, "admin")
    page = client.get(url).text
    assert "批准并销毁" in page
    res = client.post(url + "/approve", data={"csrf_token": csrf_of(page)}, follow_redirects=False)
    assert res.status_code == 303
    cert = client.get(url).text
    assert "销毁证明" in cert and "XH-" in cert and "v1" in cert
    assert re.search(r"[0-9a-f]{64}", cert)
    assert "销毁证明" in client.get("/data/lifecycle").text
    res = client.get("/data/datasets/population").text
    assert "已于" in res and "销毁" in res
