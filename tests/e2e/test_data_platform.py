"""Journey, in the Chinese UI, over the demo's datasets: a consumer department (椒江区市场监督管理局)
searches the catalogue, finds the enterprise register and applies for it, legal representatives
included; the big-data bureau's data steward approves it in the approvals inbox with the
representative's name in clear; the consumer sees the sample masked as granted, then creates an
API key that reads the same data. Screenshots of each step are kept in the test's tmp folder."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.conftest import Server, log_in

pytestmark = pytest.mark.e2e
MASKED_PHONE = re.compile(r"1\d\d\*\*\*\*\d{4}")


def _switch_user(page: Any, server: Server, username: str) -> None:
    page.context.clear_cookies()
    log_in(page, server, username)
    page.wait_for_url(server.url + "/")


def _shot(page: Any, folder: Path, name: str) -> None:
    page.screenshot(path=str(folder / f"{name}.png"), full_page=True)


def test_search_apply_approve_sample_and_key_in_chinese(page, server, tmp_path):
    purpose = "开展个体企业双随机抽查，需要联系法定代表人"

    # 1. The consumer finds the enterprise register through the one search box.
    _switch_user(page, server, "consumer")
    page.click("nav.mainnav >> text=公共数据")
    assert page.inner_text("h1") == "数据目录"
    page.fill("input[name=q]", "法人")
    page.click("form[role=search] button[type=submit]")
    hit = page.locator("article.hit", has_text="企业法人登记信息")
    assert "无条件共享" in hit.inner_text()
    _shot(page, tmp_path, "1-catalogue-search")
    hit.locator("h3 a").click()
    page.wait_for_url(server.url + "/data/datasets/enterprises")
    assert "法定代表人身份证号" in page.inner_text("main") and "个人信息" in page.inner_text("main")

    # 2. It applies, naming the legal representative's name and phone (personal: the owner decides).
    page.click("text=申请使用该数据")
    page.fill("textarea[name=purpose]", purpose)
    page.check("input[name=fields][value=legal_rep]")
    page.check("input[name=fields][value=legal_rep_phone]")
    page.select_option("select[name=filter_field] >> nth=0", "county_code")
    page.fill("input[name=filter_value] >> nth=0", "331002")
    _shot(page, tmp_path, "2-apply")
    page.click("text=提交申请")
    page.wait_for_url(re.compile(r".*/data/applications\?created=\d+$"))
    assert "已提交" in page.inner_text(".alert.ok")
    row = page.locator("tr", has_text=purpose)
    assert "待审批" in row.inner_text()

    # 3. The bureau's steward approves in the inbox: the name in clear, the phone stays masked.
    _switch_user(page, server, "steward")
    page.click("nav.mainnav >> text=公共数据")
    page.click("nav.data-tabs >> text=审批")
    card = page.locator("section.card", has_text=purpose)
    assert "椒江区市场监督管理局" in card.inner_text() and "county_code 等于 331002" in card.inner_text()
    card.locator("input[name=clear_fields][value=legal_rep]").check()
    _shot(page, tmp_path, "3-approvals-inbox")
    card.locator("button", has_text="批准").first.click()
    page.wait_for_selector(f"section.card:has-text('{purpose}')", state="detached")
    decided = page.locator("tr", has_text="企业法人登记信息").filter(has_text="steward")
    assert "已批准" in decided.first.inner_text()  # now among the recently decided

    # 4. The consumer sees its sample as granted: representatives in clear, phones masked.
    _switch_user(page, server, "consumer")
    page.goto(server.url + "/data/applications")
    assert "已批准" in page.locator("tr", has_text=purpose).inner_text()
    page.goto(server.url + "/data/datasets/enterprises")
    sample = page.locator("#sample table")
    head = sample.locator("thead").inner_text()
    assert "法定代表人" in head and "法定代表人电话" in head
    phones = [c for c in sample.locator("tbody td").all_inner_texts() if MASKED_PHONE.fullmatch(c.strip())]
    assert phones, "the phone numbers are masked in the sample"
    assert not any(re.fullmatch(r"1\d{10}", c.strip()) for c in sample.locator("tbody td").all_inner_texts())
    _shot(page, tmp_path, "4-dataset-sample")

    # 5. …and creates an API key, shown once, that reads the same data.
    page.click("nav.data-tabs >> text=接口密钥")
    page.fill("input[name=name]", "双随机抽查系统")
    page.click("text=创建密钥")
    key = page.inner_text("#new-key").strip()
    assert key.startswith("cgk_") and "只显示这一次" in page.inner_text("#key-result")
    assert "双随机抽查系统" in page.inner_text("#data-keys")
    _shot(page, tmp_path, "5-key-created")
    res = page.request.get(
        server.url + "/api/v1/data/query/enterprises",
        headers={"X-API-Key": key},
        params={"fields": "name,legal_rep,legal_rep_phone,county_code", "limit": "5"},
    )
    assert res.ok, res.text()
    body = res.json()
    assert {r["county_code"] for r in body["records"]} == {"331002"}
    assert all(MASKED_PHONE.fullmatch(r["legal_rep_phone"]) for r in body["records"])
    print("screenshots:", tmp_path)
