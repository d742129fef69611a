"""Exports of the event lists: CSV (UTF-8 with BOM) and Excel, parsed back; the same filters and
masking as the page; the row cap; deadlines as the lists show them."""

from __future__ import annotations

import csv
import io
from datetime import UTC, datetime, timedelta

import pytest
from openpyxl import load_workbook

from civicgrid.core.i18n import reset_locale, set_locale
from civicgrid.events import export
from tests.events.test_web import Browser, api_report, api_step

HEADER_ZH = ["事件编号", "状态", "标题", "类别编码", "类别", "所属平台", "层级", "地址", "网格编码"]


def read_csv(res) -> list[list[str]]:
    assert res.status_code == 200, res.text
    assert res.headers["content-type"].startswith("text/csv")
    assert res.content.startswith("\ufeff".encode())  # Excel needs the BOM to read UTF-8
    return list(csv.reader(io.StringIO(res.content.decode("utf-8-sig"))))


def read_xlsx(res) -> list[list[object]]:
    assert res.status_code == 200, res.text
    assert res.headers["content-type"] == export.FORMATS["xlsx"]
    ws = load_workbook(io.BytesIO(res.content), read_only=True).active
    return [["" if v is None else v for v in row] for row in ws.iter_rows(values_only=True)]


def column(rows: list[list[object]], name: str) -> list[object]:
    i = rows[0].index(name)
    return [r[i] for r in rows[1:]]


def test_csv_and_excel_hold_what_the_queue_shows(client, world):
    a = api_report(client)["number"]
    b = api_report(client, category="1101", lon=3.0, lat=3.0, description="楼道堆放杂物")["number"]
    api_step(client, "dispatcher", b, "accept")
    dispatcher = Browser(client, "dispatcher")
    rows = read_csv(dispatcher.get("/events/queue/export.csv"))
    assert rows[0][: len(HEADER_ZH)] == HEADER_ZH
    assert sorted(column(rows, "事件编号")) == sorted([a, b])
    assert set(column(rows, "状态")) == {"已上报", "已受理"}
    assert set(column(rows, "上报人")) == {"张三"}  # the dispatcher sees the reporter in clear, as on screen
    assert (
        'attachment; filename="events-queue-'
        in dispatcher.get("/events/queue/export.csv").headers["content-disposition"]
    )
    sheet = read_xlsx(dispatcher.get("/events/queue/export.xlsx"))
    assert sheet[0] == rows[0]

    def norm(v: object) -> object:  # Excel keeps 3.0 as the number 3; the CSV writes "3.0"
        try:
            return float(str(v))
        except ValueError:
            return str(v)

    assert [[norm(v) for v in r] for r in sheet[1:]] == [[norm(v) for v in r] for r in rows[1:]]
    # the same filters as the page
    only = read_csv(dispatcher.get("/events/queue/export.csv", params={"platform": "safety"}))
    assert column(only, "事件编号") == [b]
    only = read_csv(dispatcher.get("/events/queue/export.csv", params={"q": "杂物"}))
    assert column(only, "事件编号") == [b]


def test_personal_fields_are_masked_exactly_as_on_screen(client, world):
    number = api_report(client, description='=HYPERLINK("http://x")恶意公式')["number"]
    api_step(client, "dispatcher", number, "accept")
    api_step(client, "dispatcher", number, "dispatch")
    handler = Browser(client, "handler")
    page = handler.get(f"/events/{number}").text
    rows = read_csv(handler.get("/events/work/export.csv"))
    assert column(rows, "上报人") == ["张*"] and "<dd>张*</dd>" in page
    assert column(rows, "描述")[0].startswith("'=HYPERLINK")  # never a formula in Excel
    sheet = read_xlsx(handler.get("/events/work/export.xlsx"))
    assert column(sheet, "上报人") == ["张*"]
    assert str(column(sheet, "描述")[0]).startswith("=HYPERLINK")  # text, not a formula
    ws = load_workbook(io.BytesIO(handler.get("/events/work/export.xlsx").content)).active
    assert all(c.data_type == "s" for c in ws[2] if isinstance(c.value, str))


def test_my_reports_and_search_export_only_what_the_reader_may_see(client, world):
    mine = api_report(client, "resident")["number"]
    api_report(client, "resident2", lon=3.0, lat=3.0, description="另一位居民的上报")
    resident = Browser(client, "resident")
    assert column(read_csv(resident.get("/events/mine/export.csv")), "事件编号") == [mine]
    assert column(read_csv(resident.get("/events/search/export.csv")), "事件编号") == [mine]
    assert len(read_csv(Browser(client, "leader").get("/events/search/export.csv"))) == 3


def test_exports_are_streamed_in_batches_and_capped_with_a_clear_message(client, world, monkeypatch):
    numbers = [api_report(client, lon=0.5 + i * 0.4, lat=0.5 + i * 0.4)["number"] for i in range(5)]
    monkeypatch.setattr(export, "BATCH", 2)
    dispatcher = Browser(client, "dispatcher")
    rows = read_csv(dispatcher.get("/events/queue/export.csv"))
    assert column(rows, "事件编号") == numbers  # oldest waiting first, across batch boundaries
    monkeypatch.setattr(export, "EXPORT_CAP", 4)
    res = dispatcher.get("/events/queue/export.xlsx", headers={"Accept": "text/html"})
    assert res.status_code == 422
    assert "该列表共有 5 件事件，一次最多导出 4 件" in res.text
    assert dispatcher.get("/events/queue/export.pdf").status_code == 404


def test_english_headers_on_request(client, world):
    api_report(client)
    rows = read_csv(Browser(client, "dispatcher").get("/events/queue/export.csv?lang=en"))
    assert rows[0][:3] == ["Event number", "State", "Title"] and rows[1][1] == "Reported"
    client.cookies.delete("lang")


def test_filters_refuse_bad_values():
    with pytest.raises(export.Invalid):
        export.Filters.parse(since="2026-13-01")
    with pytest.raises(export.Invalid):
        export.Filters.parse(state="flying")
    f = export.Filters.parse(state="handling", q=" 垃圾 ", since="2026-11-01")
    assert f.params() == {"state": "handling", "q": "垃圾", "since": "2026-11-01"}


@pytest.mark.parametrize(
    ("hours", "text"),
    [
        (5.4, "5 小时后到期"),
        (0.5, "1 小时内到期"),
        (50, "2 天后到期"),
        (-3.2, "已超期 3 小时"),
        (-75, "已超期 3 天"),
    ],
)
def test_deadline_texts(hours, text):
    token = set_locale("zh_Hans")
    try:
        now = datetime(2026, 11, 25, 2, 0, tzinfo=UTC)
        d = export.Deadline("handle", now + timedelta(hours=hours), hours)
        assert d.text() == text and d.overdue == (hours < 0)
    finally:
        reset_locale(token)


def test_search_terms_are_jieba_words_without_stop_words():
    assert set(export.search_terms("小区门口垃圾")) == {"小区", "门口", "垃圾"}
    assert export.search_terms("问题") == ["问题"]  # only stop words: the query itself
    assert export.search_terms("  ") == []


def test_excel_starts_streaming_before_the_rows_are_read(monkeypatch):
    """The first bytes of the .xlsx leave before the first row is read (a 100,000-row export
    used to send nothing for ~30 s), and the file still opens with every row, numbers as
    numbers and text that looks like a formula as text."""
    read: list[int] = []

    def rows(_db, _actor, _stmt):
        for i in range(2 * export.BATCH + 1):
            read.append(i)
            yield [f"331002-20261125-{i:05d}", "=1+1", i, ""] + [""] * (len(export.COLUMNS) - 4)

    monkeypatch.setattr(export, "_rows", rows)
    chunks = export.xlsx_chunks(None, None, None)  # type: ignore[arg-type]
    first = next(chunks)
    assert first.startswith(b"PK") and read == []
    body = first + b"".join(chunks)
    ws = load_workbook(io.BytesIO(body)).active
    got = list(ws.iter_rows(values_only=True))
    assert len(got) == 2 * export.BATCH + 2
    assert got[1][:3] == ("331002-20261125-00000", "=1+1", 0) and ws["B2"].data_type == "s"
    assert got[-1][0] == f"331002-20261125-{2 * export.BATCH:05d}"
