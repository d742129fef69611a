"""The mediation pages in the Chinese UI: intake (errors keep the typed text and write nothing),
the case page with its steps, the workbench, the county overview, the agreement PDF link."""

from __future__ import annotations

import re

from sqlalchemy import text

from tests.disputes.conftest import held_now, register, step
from tests.factories import PASSWORD


def login(client, username: str) -> str:
    r = client.post("/login", data={"username": username, "password": PASSWORD}, follow_redirects=False)
    assert r.status_code == 303, r.text
    return re.search(r'name="csrf_token" value="([^"]+)"', client.get("/").text).group(1)


def _form(world, csrf, **kw):
    data = {
        "csrf_token": csrf,
        "source": "walk_in",
        "type": "neighbour",
        "title": "楼上漏水纠纷",
        "description": "楼上卫生间漏水，楼下天花板受损。",
        "grid_code": world.tree.regions["grid1a"].code,
        "party_name": ["张三", "李四"],
        "party_role": ["applicant", "respondent"],
        "party_kind": ["person", "person"],
        "party_id_number": ["", ""],
        "party_phone": ["13812345678", ""],
        "party_address": ["", ""],
        "complexity": "complex",
        "take": "1",
    }
    data.update(kw)
    return data


def test_intake_case_page_and_steps_in_chinese(world, client):
    csrf = login(client, "t_mediator")
    page = client.get("/disputes/new")
    assert page.status_code == 200 and "受理纠纷" in page.text and 'charset="utf-8"' in page.text.lower()
    r = client.post("/disputes/new", data=_form(world, csrf), follow_redirects=False)
    assert r.status_code == 303, r.text
    url = r.headers["location"]
    case = client.get(url)
    assert case.status_code == 200
    for expected in ("纠纷已受理", "调解中", "13812345678", "记录调解", "上移"):
        assert expected in case.text, expected
    number = url.split("/")[2].split("?")[0]
    r = client.post(
        f"/disputes/{number}/act/record_round",
        data={
            "csrf_token": csrf,
            "held_at": held_now()[:16],
            "place": "镇矛调中心",
            "attendees": "张三、李四",
            "minutes": "双方同意维修",
            "outcome": "agreement",
        },
        follow_redirects=False,
    )
    assert r.status_code == 303
    r = client.post(
        f"/disputes/{number}/act/agree",
        data={"csrf_token": csrf, "kind": "full", "facts": "漏水", "terms": "李四负责维修"},
        follow_redirects=False,
    )
    assert r.status_code == 303
    case = client.get(f"/disputes/{number}").text
    assert "人民调解协议书（PDF）" in case and "7日回访" in case and "第 1 次调解" in case
    pdf = client.get(f"/disputes/{number}/agreement.pdf")
    assert pdf.status_code == 200 and pdf.content.startswith(b"%PDF")
    # an illegal step from a form: a 4xx in Chinese, nothing changes
    r = client.post(
        f"/disputes/{number}/act/refer",
        data={"csrf_token": csrf, "target": "court", "receiving_body": "区法院"},
        headers={"HX-Request": "true"},
    )
    assert r.status_code == 422 and "现在不能进行此操作" in r.text
    work = client.get("/disputes/work").text
    assert "调解工作台" in work and number not in work  # agreed: no longer among my open cases
    assert "7日回访" not in work  # not due yet


def test_intake_errors_keep_the_form_and_write_nothing(world, client):
    csrf = login(client, "t_mediator")
    r = client.post(
        "/disputes/new", data=_form(world, csrf, party_name=["", "李四"], party_phone=["13812345678", ""])
    )
    assert r.status_code == 422
    assert "当事人1未填写姓名" in r.text and "楼上漏水纠纷" in r.text and "13812345678" in r.text
    r = client.post("/disputes/new", data=_form(world, csrf, source="referral"))
    assert r.status_code == 422 and "移送单位" in r.text
    with world.db.session() as s:
        assert s.scalar(text("SELECT count(*) FROM dispute")) == 0


def test_take_a_dispute_event_from_the_workbench(world, client):
    from civicgrid.events import service as events
    from civicgrid.events.models import Channel

    with world.db.session() as s:
        number = events.create_event(
            s,
            world.actor(s, "grid_worker"),
            category_code="1002",
            lon=2.5,
            lat=2.5,
            description="夫妻争吵，邻居报告",
            channel=Channel.web,
        ).number
    csrf = login(client, "t_mediator")
    work = client.get("/disputes/work").text
    assert f'data-take="{number}"' in work
    form = client.get(f"/disputes/new?event={number}").text
    assert number in form
    r = client.post(
        "/disputes/new",
        data=_form(world, csrf, source="event", event_number=number, type="", title="", grid_code=""),
        follow_redirects=False,
    )
    assert r.status_code == 303, r.text
    case = client.get(r.headers["location"]).text
    assert "婚姻家庭纠纷" in case and number in case
    assert f'data-take="{number}"' not in client.get("/disputes/work").text


def test_county_overview_lists_difficult_cases_with_their_leaders(world, client):
    with world.db.session() as s:
        number = register(s, world, complexity="difficult", leader_id=world.user_id(s, "leader")).number
        step(s, world, "c_mediator", number, "assign", mediator_ids=[world.user_id(s, "c_mediator")])
    login(client, "leader")
    page = client.get("/disputes/difficult")
    assert (
        page.status_code == 200 and "疑难纠纷" in page.text and number in page.text and "赵书记" in page.text
    )
    case = client.get(f"/disputes/{number}").text
    assert "110101********1233" in case and "110101199003071233" not in case  # the leader reads masked
    assert "记录调解" not in case  # and takes no step
    assert client.get("/disputes/new").status_code == 403
