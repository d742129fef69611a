"""Hotline (12345) import: reading CSV (UTF-8, GBK) and Excel, column mapping, the dry run's
report of every bad row, the all-or-nothing commit, re-imports, permissions, the web page's
background job, the JSON API and the CLI."""

from __future__ import annotations

import csv
import io
import json
import re
import threading
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from openpyxl import Workbook
from sqlalchemy import func, select
from typer.testing import CliRunner

from civicgrid.core.audit import AuditRecord
from civicgrid.core.errors import Invalid, PermissionDenied
from civicgrid.core.i18n import reset_locale, set_locale
from civicgrid.events import hotline
from civicgrid.events.models import Channel, Event, ImportJob, ImportStatus
from tests.factories import login_headers
from tests.web.conftest import csrf_of, login

HEADERS = [
    "工单编号",
    "标题",
    "诉求内容",
    "事件类别",
    "发生地址",
    "经度",
    "纬度",
    "来电人",
    "联系电话",
    "来电时间",
]
CST = hotline.LOCAL_TZ
CALLED = (datetime.now(CST) - timedelta(days=2)).replace(second=0, microsecond=0, tzinfo=None)
WHEN = CALLED.strftime("%Y-%m-%d %H:%M:%S")


def ticket(n: int, **over: object) -> dict[str, object]:
    row: dict[str, object] = {
        "工单编号": f"GD2026{n:05d}",
        "标题": "垃圾未清运",
        "诉求内容": f"幸福路{n}号门口暴露垃圾三天未清运",
        "事件类别": "0102",
        "发生地址": f"幸福路{n}号",
        "经度": 2.5,
        "纬度": 2.5,
        "来电人": "李四",
        "联系电话": "13900001111",
        "来电时间": WHEN,
    }
    row.update(over)
    return row


def csv_bytes(
    rows: list[dict[str, object]], encoding: str = "utf-8-sig", headers: list[str] = HEADERS
) -> bytes:
    out = io.StringIO()
    w = csv.writer(out)
    w.writerow(headers)
    for r in rows:
        w.writerow(["" if r.get(h) is None else r.get(h) for h in headers])
    return out.getvalue().encode(encoding)


def write(tmp_path: Path, name: str, content: bytes) -> Path:
    path = tmp_path / name
    path.write_bytes(content)
    return path


def count_events(db) -> int:
    with db.session() as s:
        return s.scalar(select(func.count(Event.id))) or 0


def run(world, path: Path, **kw):
    kw.setdefault("username", "dispatcher")
    return hotline.import_file(world.db, path=path, **kw)


# ---- reading files ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "encoding,detected",
    [("utf-8-sig", "utf-8"), ("utf-8", "utf-8"), ("gbk", "gb18030"), ("gb18030", "gb18030")],
)
def test_csv_encoding_is_detected(encoding, detected):
    sheet = hotline.read_sheet("工单.csv", csv_bytes([ticket(1), ticket(2)], encoding))
    assert sheet.encoding == detected
    assert sheet.headers == HEADERS
    assert [line for line, _cells in sheet.rows] == [2, 3]
    assert sheet.rows[0][1][2] == "幸福路1号门口暴露垃圾三天未清运"


def test_wrong_type_size_and_row_count_are_clear_errors(monkeypatch):
    cases = [
        ("old.xls", b"\xd0\xcf\x11\xe0" + b"\0" * 100, 415, "old.xls"),
        ("scan.pdf", b"%PDF-1.4 ...", 415, ".pdf"),
        ("tickets.xlsx", b"not a zip at all", 415, ".xlsx"),
        ("empty.csv", b"", 422, "空"),
    ]
    for name, content, status, text in cases:
        with pytest.raises(Invalid) as err:
            hotline.read_sheet(name, content)
        assert err.value.status == status, name
        assert text in err.value.translated(), (name, err.value.translated())
    token = set_locale("zh_Hans")
    try:
        with pytest.raises(Invalid) as err:
            hotline.read_sheet("scan.pdf", b"%PDF")
        assert "scan.pdf" in err.value.translated() and "CSV" in err.value.translated()
        monkeypatch.setattr(hotline, "MAX_BYTES", 100)
        with pytest.raises(Invalid) as err:
            hotline.read_sheet("big.csv", csv_bytes([ticket(i) for i in range(5)]))
        assert err.value.status == 413 and "上限" in err.value.translated()
        monkeypatch.setattr(hotline, "MAX_BYTES", 20 * 1024 * 1024)
        monkeypatch.setattr(hotline, "MAX_ROWS", 3)
        with pytest.raises(Invalid) as err:
            hotline.read_sheet("many.csv", csv_bytes([ticket(i) for i in range(4)]))
        assert "超过 3 行" in err.value.translated()
        with pytest.raises(Invalid) as err:
            hotline.read_sheet("bin.csv", b"\x81\x30\xff\xff\xfe\x00\x80")
        assert err.value.code in ("bad_encoding", "unsupported_file_type")
    finally:
        reset_locale(token)


def test_default_mapping_knows_common_headers_and_custom_mapping_overrides():
    headers = [
        "序号",
        "工单号",
        "问题描述",
        "诉求类别",
        "地址",
        "经度",
        "纬度",
        "联系人",
        "联系电话",
        "受理时间",
    ]
    mapping = hotline.resolve_mapping(headers)
    assert mapping == {
        "工单号": "external_id",
        "问题描述": "description",
        "诉求类别": "category",
        "地址": "address",
        "经度": "lon",
        "纬度": "lat",
        "联系人": "reporter_name",
        "联系电话": "reporter_phone",
        "受理时间": "reported_at",
    }
    over = hotline.resolve_mapping(headers, {"序号": "external_id", "联系人": None})
    assert over["序号"] == "external_id" and "工单号" not in over and "联系人" not in over
    with pytest.raises(Invalid, match="Unknown fields"):
        hotline.resolve_mapping(headers, {"序号": "nonsense"})
    with pytest.raises(Invalid, match="does not have"):
        hotline.resolve_mapping(headers, {"不存在的列": "title"})
    with pytest.raises(Invalid, match="No column is mapped"):
        hotline.check_mapping(hotline.resolve_mapping(["单号", "内容"]))


# ---- dry run and commit -----------------------------------------------------------------------


def test_utf8_csv_imports_every_ticket_as_a_hotline_event(world, tmp_path):
    path = write(tmp_path, "12345.csv", csv_bytes([ticket(1), ticket(2, 事件类别="暴露垃圾", 标题="")]))
    job, dry = run(world, path, dry_run=True)
    assert job is None and len(dry.report.tickets) == 2 and dry.report.problems == []
    assert count_events(world.db) == 0  # the dry run writes nothing

    seen: list[tuple[str, int, int]] = []
    job, outcome = run(world, path, progress=lambda *p: seen.append(p))
    assert job is not None and job.status == ImportStatus.committed and job.created_rows == 2
    assert {p[0] for p in seen} == {"validate", "commit"} and seen[-1] == ("commit", 2, 2)
    with world.db.session() as s:
        events = s.scalars(select(Event).order_by(Event.id)).all()
        assert [e.external_id for e in events] == ["GD202600001", "GD202600002"]
        first, second = events
        assert first.channel == Channel.hotline and first.reporter_name == "李四"
        assert first.reporter_phone == "13900001111" and first.address == "幸福路1号"
        assert first.reported_at == CALLED.replace(tzinfo=CST).astimezone(UTC)
        assert first.grid_id == world.tree.regions["grid1a"].id
        assert first.title == "垃圾未清运" and second.title.startswith("幸福路2号")  # untitled: from the text
        assert [n for _line, n in outcome.created] == [first.number, second.number]
        rec = s.scalars(select(AuditRecord).where(AuditRecord.action == "event.import")).one()
        extra = json.loads(rec.diff)["_"]
        assert extra["created"] == 2 and extra["rows"] == 2 and extra["file"] == "12345.csv"
        assert "13900001111" not in rec.diff


def test_gbk_csv_from_chinese_excel(world, tmp_path):
    path = write(tmp_path, "gbk.csv", csv_bytes([ticket(1, 诉求内容="路灯不亮，夜间出行不便")], "gbk"))
    job, outcome = run(world, path)
    assert job is not None and job.encoding == "gb18030" and len(outcome.created) == 1
    with world.db.session() as s:
        assert s.scalar(select(Event.description)) == "路灯不亮，夜间出行不便"


def test_xlsx_with_a_title_row_real_dates_and_numeric_ticket_numbers(world, tmp_path):
    book = Workbook()
    sheet = book.active
    sheet.append(["台州市12345热线工单导出"])  # a title line above the header
    sheet.append(HEADERS)
    sheet.append([2026112000001, "", "河道漂浮垃圾", "0102", "滨河路", 2.5, 2.5, "王五", 13800000000, CALLED])
    sheet.append([2026112000002, "", "", "0102", "滨河路", 2.5, 2.5, "王五", 13800000000, CALLED])
    buf = io.BytesIO()
    book.save(buf)
    path = write(tmp_path, "工单.xlsx", buf.getvalue())
    _job, dry = run(world, path, dry_run=True)
    assert [(p.line, p.ticket) for p in dry.report.bad] == [(4, "2026112000002")]  # the sheet's own rows
    sheet.delete_rows(4)
    buf = io.BytesIO()
    book.save(buf)
    path.write_bytes(buf.getvalue())
    job, _outcome = run(world, path)
    assert job is not None and job.file_type == "xlsx" and job.header_line == 2
    with world.db.session() as s:
        e = s.scalars(select(Event)).one()
        assert e.external_id == "2026112000001" and e.reporter_phone == "13800000000"
        assert e.reported_at == CALLED.replace(tzinfo=CST).astimezone(UTC)


def test_custom_mapping_for_unusual_headers(world, tmp_path):
    headers = ["单号", "内容", "分类", "X", "Y", "时间"]
    rows = [{"单号": "A-1", "内容": "噪音扰民", "分类": "0102", "X": 2.5, "Y": 2.5, "时间": WHEN}]
    path = write(tmp_path, "odd.csv", csv_bytes(rows, headers=headers))
    with pytest.raises(Invalid, match="No column is mapped"):
        run(world, path)
    mapping = {"单号": "external_id", "内容": "description", "分类": "category", "X": "lon", "Y": "lat"}
    job, outcome = run(world, path, custom_mapping=mapping | {"时间": "reported_at"})
    assert job is not None and len(outcome.created) == 1
    assert json.loads(job.mapping)["时间"] == "reported_at"
    with world.db.session() as s:
        assert s.scalar(select(Event.external_id)) == "A-1"


def bad_file() -> bytes:
    future = (datetime.now(CST) + timedelta(days=2)).strftime("%Y-%m-%d %H:%M")
    rows = [
        ticket(1),  # line 2: fine
        ticket(2, 事件类别="9999"),  # 3
        ticket(3, 诉求内容=""),  # 4
        ticket(4, 经度="", 纬度=""),  # 5
        ticket(5, 经度=50, 纬度=50),  # 6: outside the jurisdiction
        ticket(6, 经度=7.5, 纬度=2.5),  # 7: county 2, outside the dispatcher's township
        ticket(7, 来电时间="昨天下午"),  # 8
        ticket(8, 来电时间=future),  # 9
        ticket(1, 诉求内容="同一工单再次出现"),  # 10: ticket of line 2 again
        ticket(9, 事件类别="01"),  # 11: a main class
        {h: "" for h in HEADERS},  # 12: blank, left out
        ticket(10),  # 13: fine
    ]
    return csv_bytes(rows)


EXPECTED_ZH = {
    3: "未知的事件类别 9999",
    4: "缺少诉求内容",
    5: "缺少坐标",
    6: "辖区",
    7: "不在您的辖区",
    8: "不是有效的日期时间",
    9: "晚于当前时间",
    10: "第 2 行",
    11: "大类",
}


def test_dry_run_lists_every_bad_row_with_its_line_and_reason_and_writes_nothing(world, tmp_path):
    path = write(tmp_path, "bad.csv", bad_file())
    token = set_locale("zh_Hans")
    try:
        _job, dry = run(world, path, dry_run=True)
        got = {p.line: "；".join(p.messages()) for p in dry.report.bad}
        assert sorted(got) == sorted(EXPECTED_ZH)
        for line, text in EXPECTED_ZH.items():
            assert text in got[line], (line, got[line])
        assert [t.line for t in dry.report.tickets] == [2, 13]
        with pytest.raises(hotline.ImportRefused) as refused:
            run(world, path)
        assert "9 行" in refused.value.translated()
        assert refused.value.details[0]["line"] == 3
    finally:
        reset_locale(token)
    token = set_locale("en")
    try:
        _job, dry = run(world, path, dry_run=True)
        assert "Unknown category 9999" in dry.report.bad[0].messages()[0]
    finally:
        reset_locale(token)
    assert count_events(world.db) == 0
    with world.db.session() as s:
        assert s.scalar(select(func.count(ImportJob.id))) == 0


def test_one_bad_row_means_no_event_at_all(world, tmp_path):
    rows = [ticket(i) for i in range(1, 6)]
    rows[3] = ticket(4, 经度=50)
    path = write(tmp_path, "one-bad.csv", csv_bytes(rows))
    with pytest.raises(hotline.ImportRefused) as refused:
        run(world, path)
    assert [p.line for p in refused.value.report.bad] == [5]
    assert count_events(world.db) == 0
    rows[3] = ticket(4)
    path.write_bytes(csv_bytes(rows))
    _job, outcome = run(world, path)
    assert len(outcome.created) == 5 and count_events(world.db) == 5


def test_reimporting_creates_nothing_new_and_says_so(world, tmp_path):
    path = write(tmp_path, "day1.csv", csv_bytes([ticket(1), ticket(2)]))
    run(world, path)
    _job, again = run(world, path)
    assert again.created == [] and [p.line for p in again.report.skipped] == [2, 3]
    assert count_events(world.db) == 2
    token = set_locale("zh_Hans")
    try:
        assert "已导入" in again.report.skipped[0].messages()[0]
    finally:
        reset_locale(token)
    # a cumulative export: yesterday's tickets again plus a new one
    path.write_bytes(csv_bytes([ticket(1), ticket(2), ticket(3)]))
    _job, more = run(world, path)
    assert [line for line, _n in more.created] == [4] and count_events(world.db) == 3


def test_two_simultaneous_imports_of_one_file_create_each_ticket_once(world, tmp_path):
    path = write(tmp_path, "twice.csv", csv_bytes([ticket(i) for i in range(1, 4)]))
    errors: list[BaseException] = []

    def go() -> None:
        try:
            run(world, path)
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=go) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert errors == [] and count_events(world.db) == 3


def test_only_importers_may_import(world, tmp_path, client):
    path = write(tmp_path, "x.csv", csv_bytes([ticket(1)]))
    with pytest.raises(PermissionDenied):
        run(world, path, username="handler")
    login(client, "handler")
    assert client.get("/events/import").status_code == 403
    headers = login_headers(client, "handler")
    res = client.post(
        "/api/v1/hotline/imports", headers=headers, files={"file": ("x.csv", path.read_bytes())}
    )
    assert res.status_code == 403
    assert count_events(world.db) == 0


# ---- the web page and its background job -------------------------------------------------------


def wait_for(client, job_id: int, *statuses: str, headers: dict[str, str] | None = None) -> str:
    """Poll the progress fragment as the page does, until the job reaches one of `statuses`."""
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        res = client.get(
            f"/events/import/{job_id}/progress", headers={"HX-Request": "true", **(headers or {})}
        )
        assert res.status_code == 200, res.text
        status = re.search(r'data-status="(\w+)"', res.text)
        assert status
        if status.group(1) in statuses:
            return res.text
        assert 'hx-trigger="every 1s"' in res.text  # still running: the page keeps polling
        time.sleep(0.05)
    raise AssertionError(f"import {job_id} did not reach {statuses}")


def upload(client, name: str, content: bytes) -> int:
    page = client.get("/events/import")
    assert page.status_code == 200 and "12345" in page.text
    res = client.post(
        "/events/import",
        data={"csrf_token": csrf_of(page.text)},
        files={"file": (name, content)},
        follow_redirects=False,
    )
    assert res.status_code == 303, res.text
    return int(res.headers["location"].rsplit("/", 1)[1])


def test_web_flow_from_upload_to_created_events(client, world):
    login(client, "dispatcher")
    # a bad file: the report lists each bad row; nothing can be committed
    bad_id = upload(client, "bad.csv", bad_file())
    html = wait_for(client, bad_id, "validated")
    for line, text in EXPECTED_ZH.items():
        assert f"<td>{line}</td>" in html and text in html
    assert "/commit" not in html
    report = client.get(f"/events/import/{bad_id}/problems.csv")
    assert (
        report.status_code == 200
        and report.text.startswith("\ufeff")
        and "未知的事件类别 9999" in report.text
    )

    # a file with its own headers: map the columns on the page, check, commit
    headers = ["单号", "内容", "分类", "X", "Y"]
    rows = [{"单号": f"W-{i}", "内容": "占道经营", "分类": "0102", "X": 2.5, "Y": 2.5} for i in (1, 2)]
    job_id = upload(client, "odd.csv", csv_bytes(rows, headers=headers))
    page = client.get(f"/events/import/{job_id}")
    assert 'data-status="mapping"' in page.text and 'name="col-4"' in page.text
    csrf = csrf_of(page.text)
    fields = ["external_id", "description", "category", "lon", "lat"]
    res = client.post(
        f"/events/import/{job_id}/mapping",
        data={"csrf_token": csrf, **{f"col-{i}": f for i, f in enumerate(fields)}},
        follow_redirects=False,
    )
    assert res.status_code == 303
    html = wait_for(client, job_id, "validated")
    assert "/commit" in html and count_events(world.db) == 0
    res = client.post(f"/events/import/{job_id}/commit", headers={"HX-Request": "true", "X-CSRF-Token": csrf})
    assert res.status_code == 204 and res.headers["HX-Redirect"] == f"/events/import/{job_id}"
    again = client.post(f"/events/import/{job_id}/commit", headers={"X-CSRF-Token": csrf})
    assert again.status_code == 409  # a second click commits nothing twice
    html = wait_for(client, job_id, "committed")
    polled = client.get(f"/events/import/{job_id}/progress?poll=1", headers={"HX-Request": "true"})
    assert polled.headers["HX-Refresh"] == "true"  # finished: the page reloads into its final state
    with world.db.session() as s:
        numbers = s.scalars(select(Event.number).order_by(Event.id)).all()
        job = s.get_one(ImportJob, job_id)
        assert job.done == job.total == 2 and job.content == b""
    assert len(numbers) == 2
    for n in numbers:
        assert f'href="/events/{n}"' in html
    listing = client.get("/events/import")
    assert f'href="/events/import/{job_id}"' in listing.text
    # a week later the file of the import never committed is dropped; its report stays
    with world.db.session() as s:
        assert hotline.purge_files(s) == 0
        assert hotline.purge_files(s, now=datetime.now(UTC) + timedelta(days=8)) == 1
    with world.db.session() as s:
        bad = s.get_one(ImportJob, bad_id)
        assert bad.content == b"" and bad.bad_rows == 9


def test_web_upload_errors_are_clear(client, world):
    login(client, "dispatcher")
    page = client.get("/events/import")
    res = client.post(
        "/events/import",
        data={"csrf_token": csrf_of(page.text)},
        files={"file": ("photo.png", b"\x89PNG\r\n")},
        headers={"HX-Request": "true"},
    )
    assert res.status_code == 415 and "photo.png" in res.text
    res = client.post("/events/import", files={"file": ("a.csv", csv_bytes([ticket(1)]))})
    assert res.status_code == 403  # no CSRF token
    with world.db.session() as s:
        assert s.scalar(select(func.count(ImportJob.id))) == 0


def test_json_api_flow(client, world):
    headers = login_headers(client, "dispatcher")
    content = csv_bytes(
        [{"号": "J-1", "内容": "井盖缺失", "类": "暴露垃圾", "经度": 2.5, "纬度": 2.5}],
        headers=["号", "内容", "类", "经度", "纬度"],
    )
    mapping = json.dumps({"号": "external_id", "内容": "description", "类": "category"}, ensure_ascii=False)
    res = client.post(
        "/api/v1/hotline/imports",
        headers=headers,
        files={"file": ("j.csv", content)},
        data={"mapping": mapping},
    )
    assert res.status_code == 202, res.text
    job_id = res.json()["id"]
    body = poll_api(client, job_id, headers, "validated")
    assert body["ok_rows"] == 1 and body["problems"] == []
    res = client.post(f"/api/v1/hotline/imports/{job_id}/commit", headers=headers)
    assert res.status_code == 202
    body = poll_api(client, job_id, headers, "committed")
    assert body["created_rows"] == 1 and body["events"][0]["line"] == 2
    # someone else's view: a county dispatcher above sees it; a dispatcher of another township does not
    assert (
        client.get(
            f"/api/v1/hotline/imports/{job_id}", headers=login_headers(client, "county_dispatcher")
        ).status_code
        == 200
    )
    assert (
        client.get(
            f"/api/v1/hotline/imports/{job_id}", headers=login_headers(client, "dispatcher2")
        ).status_code
        == 404
    )
    bad = client.put(f"/api/v1/hotline/imports/{job_id}/mapping", headers=headers, json={"号": "nonsense"})
    assert bad.status_code == 409  # committed: nothing to change


def poll_api(client, job_id: int, headers: dict[str, str], status: str) -> dict:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        body = client.get(f"/api/v1/hotline/imports/{job_id}", headers=headers).json()
        if body["status"] == status:
            return body
        assert body["status"] in ("validating", "validated", "committing"), body
        time.sleep(0.05)
    raise AssertionError(body)


# ---- the CLI ------------------------------------------------------------------------------------


def test_cli_dry_run_then_import(world, tmp_path, monkeypatch):
    from civicgrid.cli import app
    from civicgrid.core.config import get_settings

    bad = write(tmp_path, "bad.csv", bad_file())
    good = write(tmp_path, "good.csv", csv_bytes([ticket(1), ticket(2)]))
    monkeypatch.setenv("CIVICGRID_DATABASE_URL", world.db.url)
    get_settings.cache_clear()
    try:
        runner = CliRunner()
        res = runner.invoke(app, ["events", "import", str(bad), "--as", "dispatcher", "--dry-run"])
        assert res.exit_code == 1, res.output
        assert "第 3 行（工单 GD202600002）" in res.output and "未知的事件类别 9999" in res.output
        assert "未写入任何数据" in res.output
        res = runner.invoke(app, ["events", "import", str(bad), "--as", "dispatcher"])
        assert res.exit_code == 1 and count_events(world.db) == 0
        res = runner.invoke(app, ["events", "import", str(good), "--as", "nobody"])
        assert res.exit_code == 1 and "nobody" in res.output
        res = runner.invoke(app, ["events", "import", str(good), "--as", "dispatcher", "--mapping", "{oops"])
        assert res.exit_code == 1 and "JSON" in res.output
        res = runner.invoke(app, ["events", "import", str(good), "--as", "dispatcher"])
        assert res.exit_code == 0, res.output
        assert "创建了 2 个事件" in res.output and count_events(world.db) == 2
        res = runner.invoke(app, ["events", "import", str(good), "--as", "dispatcher"])
        assert res.exit_code == 0 and "创建了 0 个事件" in res.output and "已导入" in res.output
    finally:
        get_settings.cache_clear()
