"""The cockpit over HTTP: pages and JSON for the reader's region only (another county is a 404,
and no panel, export, report or page carries its numbers or names), exports in their formats,
permissions and clear errors."""

from __future__ import annotations

import csv
import io
import json

import pytest
from openpyxl import load_workbook
from pypdf import PdfReader

from tests.cockpit.conftest import OTHER_COUNTY_MARKS
from tests.factories import login_headers
from tests.web.conftest import login


def no_other_county(text: str, where: str) -> None:
    found = [m for m in OTHER_COUNTY_MARKS if m in text]
    assert not found, f"{where} shows the other county: {found}"


@pytest.fixture
def leader(client, world) -> dict[str, str]:
    return login_headers(client, "leader")


def test_no_panel_export_report_or_page_of_a_county_leader_shows_another_county(client, world, leader):
    county = world.code("county1")
    data = client.get(f"/api/v1/cockpit/{county}/data?view=analytic", headers=leader)
    assert data.status_code == 200
    body = data.json()
    assert not [k for k, p in body["panels"].items() if "error" in p]
    no_other_county(data.text, "the analytic data")
    no_other_county(
        client.get(f"/api/v1/cockpit/{county}/data?view=screen", headers=leader).text, "the screen"
    )
    for key, p in body["panels"].items():
        for fmt in ("csv", "xlsx"):
            res = client.get(f"/api/v1/cockpit/{county}/panels/{key}/export?format={fmt}", headers=leader)
            assert res.status_code == 200, (key, fmt)
            text = res.content.decode("utf-8") if fmt == "csv" else xlsx_text(res.content)
            no_other_county(text, f"{key}.{fmt}")
        if p["kind"] == "map":
            for region in ("town1", "village1", "grid1a", "grid1b"):
                drill = client.get(f"/api/v1/cockpit/{world.code(region)}/panels/{key}", headers=leader)
                assert drill.status_code == 200
                no_other_county(drill.text, f"the map at {region}")
    pdf = client.get(f"/api/v1/cockpit/{county}/report.pdf", headers=leader)
    no_other_county(pdf_text(pdf.content), "the PDF report")
    login(client, "leader")
    for path in (f"/cockpit/{county}", f"/cockpit/{county}/screen"):
        page = client.get(path)
        assert page.status_code == 200
        no_other_county(page.text, path)


OUTSIDE_PATHS = (
    "/api/v1/cockpit/{c}/data",
    "/api/v1/cockpit/{c}/panels/events.flow",
    "/api/v1/cockpit/{c}/panels/events.map",
    "/api/v1/cockpit/{c}/panels/events.flow/export?format=csv",
    "/api/v1/cockpit/{c}/report.pdf",
)


def test_a_region_outside_the_scope_does_not_exist_for_the_reader(client, world, leader):
    for region in ("county2", "town2", "grid2a", "city"):
        code = world.code(region)
        for path in OUTSIDE_PATHS:
            res = client.get(path.format(c=code), headers=leader)
            missing = client.get(path.format(c="331009000000"), headers=leader)  # no such region at all
            assert res.status_code == missing.status_code == 404, (region, path)
            assert res.text.replace(code, "331009000000") == missing.text  # the same answer: nothing leaks


def test_pages_outside_the_scope_are_not_found(client, world):
    login(client, "leader")
    for path in (f"/cockpit/{world.code('county2')}", f"/cockpit/{world.code('county2')}/screen"):
        res = client.get(path, headers={"Accept": "text/html"})
        assert res.status_code == 404
        no_other_county(res.text.replace(world.code("county2"), ""), path)  # only the code asked for


def test_the_city_sees_both_counties(client, world):
    admin = login_headers(client, "admin")
    body = client.get(f"/api/v1/cockpit/{world.code('city')}/data?view=analytic", headers=admin).json()
    assert [r[1] for r in body["panels"]["events.map"]["rows"]] == ["县1", "县2"]
    assert body["region"]["level"] == "city"


def test_only_leaders_dispatchers_and_admins_open_the_cockpit(client, world):
    county = world.code("county1")
    assert client.get(f"/api/v1/cockpit/{county}/data").status_code == 401
    for who in ("handler", "resident", "grid_worker"):
        res = client.get(f"/api/v1/cockpit/{county}/data", headers=login_headers(client, who))
        assert res.status_code == 403, who
    town = world.code("town1")
    assert (
        client.get(f"/api/v1/cockpit/{town}/data", headers=login_headers(client, "dispatcher")).status_code
        == 200
    )
    login(client, "handler")
    assert "数字驾驶舱" not in client.get("/").text
    login(client, "leader")
    home = client.get("/")
    assert 'href="/cockpit"' in home.text and "数字驾驶舱" in home.text
    res = client.get("/cockpit", follow_redirects=False)
    assert res.status_code == 303 and res.headers["location"] == f"/cockpit/{county}"


def test_bad_filters_are_a_clear_422(client, world, leader):
    for query in (
        "from=2026-13-01",
        "platform=roads",
        "category=9999",
        "org=no-such-org",
        "from=2026-11-20&to=2026-11-01",
    ):
        res = client.get(f"/api/v1/cockpit/{world.code('county1')}/data?{query}", headers=leader)
        assert res.status_code == 422, query
        assert res.json()["error"]["message"]


def test_a_village_has_no_cockpit_of_its_own_and_unknown_panels_are_404(client, world, leader):
    res = client.get(f"/api/v1/cockpit/{world.code('village1')}/data", headers=leader)
    assert res.status_code == 422 and "乡镇" in res.json()["error"]["message"]
    assert (
        client.get(f"/api/v1/cockpit/{world.code('county1')}/panels/nope.nope", headers=leader).status_code
        == 404
    )
    assert client.get("/api/v1/cockpit/abc/data", headers=leader).status_code == 422


def test_exports_are_the_panels_table(client, world, leader):
    county = world.code("county1")
    p = client.get(f"/api/v1/cockpit/{county}/panels/events.overdue", headers=leader).json()
    res = client.get(f"/api/v1/cockpit/{county}/panels/events.overdue/export?format=csv", headers=leader)
    assert res.headers["content-type"].startswith("text/csv")
    assert (
        "attachment" in res.headers["content-disposition"]
        and "events.overdue" in res.headers["content-disposition"]
    )
    assert res.content.startswith("\ufeff".encode())
    rows = list(csv.reader(io.StringIO(res.content.decode("utf-8-sig"))))
    assert rows[0][0] == "事件编号" and rows[1][0] == world.numbers["C"]
    assert len(rows) == 1 + len(p["rows"])
    xl = client.get(f"/api/v1/cockpit/{county}/panels/events.departments/export?format=xlsx", headers=leader)
    ws = load_workbook(io.BytesIO(xl.content)).active
    assert ws.cell(1, 2).value == "按期结案率 (%)"
    assert ws.cell(2, 1).value == "镇1综合执法中队" and ws.cell(2, 2).value == 50.0


def test_the_pdf_report_is_one_page_with_the_cockpits_numbers(client, world, leader):
    county = world.code("county1")
    res = client.get(f"/api/v1/cockpit/{county}/report.pdf", headers=leader)
    assert res.status_code == 200 and res.headers["content-type"] == "application/pdf"
    reader = PdfReader(io.BytesIO(res.content))
    assert len(reader.pages) == 1
    text = pdf_text(res.content)
    assert "县1数字驾驶舱报告" in text.replace(" ", "")
    assert world.numbers["C"] in text  # the overdue list
    assert "镇1综合执法中队" in text  # the department ranking
    flow = client.get(f"/api/v1/cockpit/{county}/panels/events.flow", headers=leader).json()
    assert "今日上报" in text and str(flow["rows"][0][0]) in text
    assert "50.0%" in text  # 按期结案率 of the period


def test_the_report_follows_the_chosen_period(client, world, leader):
    county = world.code("county1")
    res = client.get(f"/api/v1/cockpit/{county}/report.pdf?from=2025-01-01&to=2025-01-31", headers=leader)
    text = pdf_text(res.content)
    assert "2025-01-01" in text and "2025-01-31" in text
    assert world.numbers["C"] in text  # overdue now is not limited to the period


def test_pages_speak_chinese_and_english(client, world):
    login(client, "leader")
    county = world.code("county1")
    zh = client.get(f"/cockpit/{county}")
    assert "县级数字驾驶舱" in zh.text and 'charset="utf-8"' in zh.text.lower().replace("'", '"')
    assert zh.headers["content-type"] == "text/html; charset=utf-8"
    en = client.get(f"/cockpit/{county}/screen?lang=en")
    assert "County cockpit" in en.text and 'lang="en"' in en.text
    data = json.loads(
        en.text.split('id="cockpit-data">', 1)[1].split("</script>", 1)[0]
    )  # the page carries its first numbers
    assert "events.flow" in data["panels"]


def xlsx_text(content: bytes) -> str:
    wb = load_workbook(io.BytesIO(content))
    return "\n".join(str(c) for ws in wb.worksheets for row in ws.iter_rows(values_only=True) for c in row)


def pdf_text(content: bytes) -> str:
    return "\n".join(page.extract_text() or "" for page in PdfReader(io.BytesIO(content)).pages)
