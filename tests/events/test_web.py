"""Event pages through the browser's eyes (cookie login, CSRF, htmx headers): each page in Chinese
for its role, the report form, the dispatcher's queue, the workbench, the event page's steps."""

from __future__ import annotations

import io
import re
from typing import Any

import pytest
from sqlalchemy import func, select

from civicgrid.events.models import Event
from tests.factories import login_headers
from tests.web.conftest import csrf_of, login

REPORT = {
    "category": "0102",
    "lon": 2.5,
    "lat": 2.5,
    "description": "小区门口有暴露垃圾",
    "address": "幸福路1号",
}
HX = {"HX-Request": "true"}


class Browser:
    """One user's cookie session on the shared test client."""

    def __init__(self, client: Any, username: str) -> None:
        client.cookies.clear()
        login(client, username)
        self.client = client
        self.csrf = csrf_of(client.get("/").text)

    def get(self, path: str, **kw: Any) -> Any:
        return self.client.get(path, **kw)

    def post(self, path: str, data: dict[str, Any], hx: bool = False, **kw: Any) -> Any:
        headers = HX if hx else {}
        return self.client.post(
            path, data={"csrf_token": self.csrf, **data}, headers=headers, follow_redirects=False, **kw
        )


def api_report(client: Any, username: str = "resident", **changes: Any) -> dict[str, Any]:
    res = client.post("/api/v1/events", headers=login_headers(client, username), json={**REPORT, **changes})
    assert res.status_code == 201, res.text
    return dict(res.json())


def api_get(client: Any, username: str, number: str) -> dict[str, Any]:
    return dict(client.get(f"/api/v1/events/{number}", headers=login_headers(client, username)).json())


def api_step(client: Any, username: str, number: str, action: str, **body: Any) -> dict[str, Any]:
    res = client.post(f"/api/v1/events/{number}/{action}", headers=login_headers(client, username), json=body)
    assert res.status_code == 200, res.text
    return dict(res.json())


def event_count(world: Any) -> int:
    with world.db.session() as s:
        return int(s.scalar(select(func.count(Event.id))) or 0)


def version_in(html: str, number: str) -> str:
    """The version a page or row offers for the event's step forms (what a browser posts back)."""
    start = html.index(f'id="row-{number}"') if f'id="row-{number}"' in html else 0
    m = re.compile(r'name="version" value="(\d+)"').search(html, start)
    assert m, "no step form for " + number
    return m.group(1)


def main_of(html: str) -> str:
    """The page without the shell (the user box names the reader)."""
    return re.search(r'<main id="main">.*</main>', html, re.S).group(0)


def steps_on_page(html: str) -> set[str]:
    section = re.search(r'<section class="card steps".*?</section>', html, re.S)
    return set(re.findall(r'data-step="(\w+)"', section.group(0))) if section else set()


# ---- pages by role -------------------------------------------------------------------------

PAGES = [
    ("grid_worker", "/events/new", "上报事件"),
    ("grid_worker", "/events/mine", "我的上报"),
    ("resident", "/events/new", "具体情况"),
    ("resident", "/events/mine", "我的上报"),
    ("dispatcher", "/events/queue", "受理派遣"),
    ("dispatcher", "/events/search", "事件查询"),
    ("handler", "/events/work", "办理工作台"),
    ("leader", "/events/search", "事件查询"),
]


@pytest.mark.parametrize(("username", "path", "text"), PAGES)
def test_each_page_speaks_chinese_to_its_role(client, world, username, path, text):
    b = Browser(client, username)
    res = b.get(path)
    assert res.status_code == 200, res.text
    assert '<html lang="zh-Hans">' in res.text and text in res.text
    assert f'href="{path}"' in res.text  # the navigation leads there
    en = b.get(path + "?lang=en")
    assert '<html lang="en">' in en.text and text not in en.text
    client.cookies.delete("lang")


@pytest.mark.parametrize(
    ("username", "path"),
    [
        ("resident", "/events/queue"),
        ("resident", "/events/work"),
        ("grid_worker", "/events/queue"),
        ("handler", "/events/queue"),
        ("dispatcher", "/events/work"),
        ("resident", "/events/queue/export.csv"),
        ("handler", "/events/queue/export.xlsx"),
    ],
)
def test_wrong_role_is_refused(client, world, username, path):
    b = Browser(client, username)
    res = b.get(path, headers={"Accept": "text/html"})
    assert res.status_code == 403
    assert "您的角色无权执行此操作" in res.text


def test_logged_out_reader_is_sent_to_login(client, world):
    res = client.get("/events/new", headers={"Accept": "text/html"}, follow_redirects=False)
    assert res.status_code == 303 and res.headers["location"] == "/login?next=/events/new"


def test_other_routes_under_events_are_not_taken_for_event_numbers(client, world):
    b = Browser(client, "dispatcher")
    assert b.get("/events/nonsense", headers={"Accept": "text/html"}).status_code == 404
    assert b.get("/events/331001-20990101-00001").status_code == 404  # well-formed, unknown


# ---- the report form ----------------------------------------------------------------------


def test_report_form_lists_the_catalogue_and_creates_a_web_event(client, world):
    b = Browser(client, "grid_worker")
    page = b.get("/events/new").text
    assert "市容环境 › 暴露垃圾" in page and 'value="0102"' in page
    assert 'data-parent="331001001001"' in page  # the map shows the grid worker's village
    res = b.post("/events/new", {k: str(v) for k, v in REPORT.items()})
    assert res.status_code == 303, res.text
    number = re.match(r"/events/([\d-]+)\?created=1", res.headers["location"]).group(1)
    page = b.get(res.headers["location"]).text
    assert f"上报成功，事件编号为 {number}" in page
    assert "已上报" in page and "幸福路1号" in page and "网格1-1" in page
    ev = api_get(client, "grid_worker", number)
    assert ev["channel"] == "web" and ev["category"] == "0102" and ev["state"] == "reported"


@pytest.mark.parametrize(
    ("changes", "message", "field"),
    [
        ({"lon": "50", "lat": "50"}, "辖区", "location"),
        ({"category": "9999"}, "未知的事件类别 9999", "category"),
        ({"category": "01"}, "请选择“市容环境”下的小类", "category"),
        ({"category": ""}, "请选择事件类别", "category"),
        ({"description": "   "}, "请描述问题", "description"),
        ({"lon": "", "lat": ""}, "请在地图上选择位置", "location"),
        ({"lat": "north"}, "请在地图上选择位置", "location"),
    ],
)
def test_report_form_errors_keep_the_input_and_write_nothing(client, world, changes, message, field):
    b = Browser(client, "resident")
    data = {**{k: str(v) for k, v in REPORT.items()}, **changes}
    res = b.post("/events/new", data)
    assert res.status_code == 422
    assert message in res.text and 'id="report-error"' in res.text
    legend = {"category": 1, "location": 2, "description": 3}[field]  # the part marked in red
    assert re.findall(r'<fieldset class="part invalid">\s*<legend>(\d)\. ', res.text) == [str(legend)]
    assert data["address"] in res.text  # what was typed stays in the form
    assert event_count(world) == 0
    # English on request
    en = b.post("/events/new?lang=en", data)
    assert en.status_code == 422 and "报" not in re.search(r'id="report-error">([^<]*)<', en.text).group(1)
    client.cookies.delete("lang")


def png_bytes() -> bytes:
    from PIL import Image

    out = io.BytesIO()
    Image.new("RGB", (64, 48), (200, 40, 40)).save(out, "PNG")
    return out.getvalue()


def test_report_form_stores_photos_and_a_bad_file_refuses_everything(client, world):
    b = Browser(client, "grid_worker")
    data = {k: str(v) for k, v in REPORT.items()}
    bad = [("photos", ("note.txt", b"not a photo", "text/plain"))]
    res = b.post("/events/new", data, files=bad)
    assert res.status_code == 422 and "note.txt" in res.text and event_count(world) == 0
    res = b.post("/events/new", data, files=[("photos", ("门口.png", png_bytes(), "image/png"))])
    assert res.status_code == 303, res.text
    page = b.get(res.headers["location"]).text
    thumb = re.search(r'<img src="(/api/v1/attachments/\d+/thumbnail)" alt="门口.png"', page)
    assert thumb, "no thumbnail on the event page"
    assert b.get(thumb.group(1)).headers["content-type"] == "image/jpeg"
    assert "上传照片或附件" in page and "1 个文件" in page


# ---- the dispatcher's queue ---------------------------------------------------------------


def test_queue_accept_inline_and_reject_needs_a_basis(client, world):
    ev = api_report(client)
    number = ev["number"]
    b = Browser(client, "dispatcher")
    queue = b.get("/events/queue").text
    assert number in queue and "已上报" in queue and "小时后到期" in queue
    res = b.post(
        f"/events/{number}/act/reject", {"version": "1", "reason": "不归我们管", "row": "queue"}, hx=True
    )
    assert res.status_code == 422 and "请填写法律依据" in res.text
    assert api_get(client, "dispatcher", number)["state"] == "reported"
    res = b.post(f"/events/{number}/act/accept", {"version": "1", "row": "queue"}, hx=True)
    assert res.status_code == 200, res.text
    row = res.text
    assert row.lstrip().startswith(f'<tr id="row-{number}"') and "已受理" in row
    assert "镇1综合执法中队" in row  # the suggested lead
    assert f'value="{number}@2"' in row  # ready for bulk dispatch, with the version shown


def test_bulk_dispatch_reports_each_event_and_one_failure_undoes_nothing(client, world):
    numbers = [api_report(client, lon=1.0 + i, lat=1.0 + i)["number"] for i in range(3)]
    for n in numbers:
        api_step(client, "dispatcher", n, "accept")
    stale = numbers[2]
    api_step(client, "dispatcher", stale, "escalate", reason="需要县级协调")  # now the county's, version 3
    b = Browser(client, "dispatcher")
    picks = [f"{numbers[0]}@2", f"{numbers[1]}@1", f"{stale}@2"]
    res = b.post("/events/queue/dispatch", {"pick": picks}, hx=True)
    assert res.status_code == 200, res.text
    assert "已派遣所选 3 件中的 1 件" in res.text
    assert f'data-number="{numbers[0]}" data-ok="true"' in res.text and "已派遣至 镇1综合执法中队" in res.text
    assert f'data-number="{numbers[1]}" data-ok="false"' in res.text and "刚刚被他人修改" in res.text
    assert f'data-number="{stale}" data-ok="false"' in res.text
    assert 'id="queue-body" hx-swap-oob="true"' in res.text
    states = [api_get(client, "dispatcher", n)["state"] for n in numbers[:2]]
    assert states == ["dispatched", "accepted"]
    # a plain form (no JavaScript) gets the whole page with the results
    res = b.post("/events/queue/dispatch", {"pick": [f"{numbers[1]}@2"]})
    assert res.status_code == 200 and "<html" in res.text and "已派遣所选 1 件中的 1 件" in res.text
    assert b.post("/events/queue/dispatch", {}, hx=True).status_code == 422


def test_queue_shows_the_duplicate_and_merges_it(client, world):
    first = api_report(client)["number"]
    second = api_report(client, "resident2", description="小区门口又有暴露垃圾没人管")["number"]
    b = Browser(client, "dispatcher")
    queue = b.get("/events/queue").text
    assert f"可能与 {first} 重复" in queue
    version = api_get(client, "dispatcher", second)["version"]
    assert f'name="version" value="{version}"' in queue
    res = b.post(
        f"/events/{second}/act/merge", {"version": version, "into_number": first, "row": "queue"}, hx=True
    )
    assert res.status_code == 200 and "已合并" in res.text
    assert api_get(client, "dispatcher", second)["merged_into"] == first
    assert second not in b.get("/events/queue").text  # merged events need no more action


def test_queue_filters_and_scope(client, world):
    api_report(client)
    api_report(client, category="1101", lon=3.0, lat=3.0, description="楼道堆放杂物堵塞消防通道")
    b = Browser(client, "dispatcher")
    page = b.get("/events/queue", params={"platform": "safety"}).text
    assert "楼道堆放杂物" in page and "小区门口有暴露垃圾" not in page
    page = b.get("/events/queue", params={"q": "消防通道 楼道"}).text
    assert "楼道堆放杂物" in page and "小区门口有暴露垃圾" not in page
    assert b.get("/events/queue", params={"state": "flying"}).status_code == 422
    other = Browser(client, "dispatcher2")  # the other county's office sees none of it
    assert "楼道堆放杂物" not in other.get("/events/queue").text


# ---- the handler's workbench --------------------------------------------------------------


def test_workbench_is_due_soonest_first_and_takes_the_steps(client, world):
    slow = api_report(client, category="0101", lon=1.0, lat=1.0, description="楼顶私搭乱建")[
        "number"
    ]  # 5 days
    fast = api_report(client, lon=2.0, lat=2.0)["number"]  # 4 working hours
    for n in (slow, fast):
        api_step(client, "dispatcher", n, "accept")
        api_step(client, "dispatcher", n, "dispatch")
    b = Browser(client, "handler")
    page = b.get("/events/work").text
    assert page.index(f'id="row-{fast}"') < page.index(f'id="row-{slow}"')
    row = b.post(f"/events/{fast}/act/start", {"version": version_in(page, fast), "row": "work"}, hx=True)
    assert row.status_code == 200 and "处置中" in row.text and 'data-step="handle"' in row.text
    step = {"hours": "8", "reason": "需要协调物业", "row": "work", "version": version_in(row.text, fast)}
    row = b.post(f"/events/{fast}/act/request_extension", step, hx=True)
    assert row.status_code == 200 and "已申请延期 8.0 个工作小时" in row.text
    v = version_in(row.text, fast)
    res = b.post(f"/events/{fast}/act/handle", {"version": v, "result": "", "row": "work"}, hx=True)
    assert res.status_code == 422 and "请填写处置结果" in res.text
    photo = [("photos", ("结果.png", png_bytes(), "image/png"))]
    res = b.post(
        f"/events/{fast}/act/handle", {"version": v, "result": "已清运", "row": "work"}, True, files=photo
    )
    assert res.status_code == 200 and "已处置" in res.text
    assert 'alt="结果.png"' in b.get(f"/events/{fast}").text  # the result's photo
    step = {"version": version_in(page, slow), "reason": "不属于本部门", "row": "work"}
    res = b.post(f"/events/{slow}/act/return", step, hx=True)
    assert res.status_code == 200 and "已受理" in res.text
    assert api_get(client, "dispatcher", slow)["handback_count"] == 1
    assert "楼顶私搭乱建" in Browser(client, "dispatcher").get("/events/queue").text  # back in the queue


# ---- the event page -----------------------------------------------------------------------


def test_event_page_buttons_are_exactly_the_allowed_steps(client, world):
    number = api_report(client)["number"]
    for username in ("resident", "dispatcher", "handler", "grid_worker", "leader"):
        page = Browser(client, username).get(f"/events/{number}").text
        assert steps_on_page(page) == set(api_get(client, username, number)["actions"]), username
    assert steps_on_page(Browser(client, "dispatcher").get(f"/events/{number}").text) >= {"accept", "reject"}
    api_step(client, "dispatcher", number, "accept")
    api_step(client, "dispatcher", number, "dispatch")
    for username in ("handler", "dispatcher", "resident"):
        page = Browser(client, username).get(f"/events/{number}").text
        assert steps_on_page(page) == set(api_get(client, username, number)["actions"]), username
    page = Browser(client, "handler").get(f"/events/{number}").text
    assert {"start", "return"} <= steps_on_page(page)
    assert f'name="version" value="{api_get(client, "handler", number)["version"]}"' in page


def test_event_page_timeline_map_and_masking(client, world):
    number = api_report(client)["number"]
    api_step(client, "dispatcher", number, "accept")
    api_step(client, "dispatcher", number, "dispatch", note="请两小时内清运")
    page = main_of(Browser(client, "handler").get(f"/events/{number}").text)
    assert "张*" in page and "张三" not in page  # the handler sees the reporter masked, timeline too
    timeline = re.search(r'<ol class="timeline">.*?</ol>', page, re.S).group(0)
    assert [a for a in ("上报", "受理", "派遣") if a in timeline] == ["上报", "受理", "派遣"]
    assert "请两小时内清运" in timeline and "镇1四平台" in timeline
    assert 'class="map small-map js-event-map" data-lon="2.5" data-lat="2.5"' in page
    assert '"type": "Polygon"' in page  # the grid outline for the map
    assert "张三" in main_of(Browser(client, "dispatcher").get(f"/events/{number}").text)


def test_a_stale_form_gets_the_conflict_message_and_changes_nothing(client, world):
    number = api_report(client)["number"]
    b = Browser(client, "dispatcher")
    assert 'name="version" value="1"' in b.get(f"/events/{number}").text
    api_step(client, "dispatcher", number, "accept")  # someone else, meanwhile
    res = b.post(f"/events/{number}/act/reject", {"version": "1", "reason": "重复", "basis": "规定"}, hx=True)
    assert res.status_code == 409 and "刚刚被他人修改" in res.text
    assert api_get(client, "dispatcher", number)["state"] == "accepted"
    page = b.get(f"/events/{number}").text  # reloaded: the new version
    res = b.post(f"/events/{number}/act/dispatch", {"version": version_in(page, number)}, hx=True)
    assert res.status_code == 204 and res.headers["HX-Redirect"] == f"/events/{number}"
    res = b.post(f"/events/{number}/act/fly", {"version": "9"}, hx=True)
    assert res.status_code == 404


def test_unknown_or_foreign_event_is_not_found(client, world):
    number = api_report(client)["number"]
    b = Browser(client, "dispatcher2")
    assert b.get(f"/events/{number}", headers={"Accept": "text/html"}).status_code == 404
    res = b.post(f"/events/{number}/act/accept", {"version": "1"}, hx=True)
    assert res.status_code == 404 and api_get(client, "dispatcher", number)["state"] == "reported"


# ---- my reports: verify and rate ----------------------------------------------------------


def test_reporter_verifies_and_rates_from_my_reports(client, world):
    number = api_report(client)["number"]
    for action, body in (("accept", {}), ("dispatch", {})):
        api_step(client, "dispatcher", number, action, **body)
    api_step(client, "handler", number, "start")
    api_step(client, "handler", number, "handle", result="已清运")
    b = Browser(client, "resident")
    mine = b.get("/events/mine").text
    assert f'id="row-{number}"' in mine and "已处置" in mine and 'data-step="verify"' in mine
    assert "小时后到期" in mine or "天后到期" in mine  # the verification deadline
    v = version_in(mine, number)
    res = b.post(f"/events/{number}/act/verify", {"version": v, "passed": "false", "row": "mine"}, hx=True)
    assert res.status_code == 422 and "请填写说明" in res.text
    res = b.post(f"/events/{number}/act/verify", {"version": v, "passed": "true", "row": "mine"}, hx=True)
    assert res.status_code == 200 and "已核查" in res.text
    api_step(client, "dispatcher", number, "close")
    mine = b.get("/events/mine").text
    assert 'data-step="rate"' in mine
    # without JavaScript: a plain form post, then back to the list
    step = {"version": version_in(mine, number), "score": "4", "comment": "很及时", "next": "/events/mine"}
    res = b.post(f"/events/{number}/act/rate", step)
    assert res.status_code == 303 and res.headers["location"] == "/events/mine"
    mine = b.get("/events/mine").text
    assert "已评价" in mine and "★★★★☆" in mine
    assert api_get(client, "resident", number)["rating"] == 4


def test_search_finds_chinese_words_in_any_order_and_ranks_title_hits_first(client, world):
    a = api_report(client, description="路边有暴露垃圾，小区门口尤其严重")["number"]
    b_ = api_report(client, category="0501", lon=3.5, lat=3.5, description="小区门口垃圾桶旁占道经营")[
        "number"
    ]
    api_report(client, category="0501", lon=4.0, lat=4.0, description="菜市场占道经营")
    b = Browser(client, "dispatcher")
    page = b.get("/events/search", params={"q": "小区门口垃圾"}).text
    assert a in page and b_ in page and "菜市场" not in page
    assert "同时包含以下词语的事件" in page
    page = b.get("/events/search", params={"q": "垃圾桶"}).text
    assert page.index(b_) < page.index("</tbody>") and a not in page
    assert b.get("/events/search", params={"q": b_}).text.count(f'id="row-{b_}"') == 1
    # residents search only their own reports
    mine = Browser(client, "resident2").get("/events/search", params={"q": "占道"}).text
    assert "没有符合条件的事件" in mine
