"""Ingestion: every input format, the rules and their line numbers, quality reports, atomic
versions (append, replace, a failed load keeps the previous one), progress, the HTTP upload."""

from __future__ import annotations

import json
import random
import re
import sqlite3
from pathlib import Path
from typing import Any

import pytest
from openpyxl import Workbook

from civicgrid.core.errors import Invalid
from civicgrid.data import engine as eng
from civicgrid.data import ingest, service
from civicgrid.data.models import DataVersion, VersionState
from tests.data.conftest import POPULATION_ROWS, DataWorld, csv_bytes
from tests.factories import login_headers

SRC = Path(__file__).resolve().parents[2] / "src" / "civicgrid"


def _rows(world: DataWorld, name: str = "village-population", **plan: Any) -> list[dict[str, Any]]:
    with world.db.session() as s:
        ds = service.get_dataset(s, name)
        files = service.dataset_files(s, ds)
    return service.engine().query(files, eng.QueryPlan(limit=1000, **plan)).records()


def _ingest(world: DataWorld, path: Path, **kw: Any) -> DataVersion:
    with world.db.session() as s:
        actor = world.actor(s, kw.pop("username", "steward"))
    return ingest.ingest(world.db, actor, kw.pop("name", "village-population"), path=path, **kw)


@pytest.fixture
def population(data_world: DataWorld) -> DataWorld:
    with data_world.db.session() as s:
        data_world.population(s)
    return data_world


# ---- the rules ------------------------------------------------------------------------------


def _check_digit(body: str) -> str:
    return eng.ID_CHECK[sum(w * int(d) for w, d in zip(eng.ID_WEIGHTS, body, strict=True)) % 11]


def test_id_number_check_digit_in_python_and_sql_agree() -> None:
    assert eng.id_number_valid("11010519491231002X")
    assert eng.id_number_valid("11010519491231002x")
    assert not eng.id_number_valid("110105194912310021")  # wrong check digit
    assert not eng.id_number_valid("110105194902300028")  # 30 February
    assert not eng.id_number_valid("11010519491231002")  # 17 digits
    rnd = random.Random(7)
    values = []
    for _ in range(300):
        born = f"{rnd.randint(1940, 2020)}{rnd.randint(1, 12):02d}{rnd.randint(1, 28):02d}"
        body = f"{rnd.randint(110000, 659999)}{born}{rnd.randint(0, 999):03d}"
        good = body + _check_digit(body)
        values += [good, body + rnd.choice([c for c in "0123456789X" if c != good[-1]])]
    e = service.engine()
    con_values = ", ".join(eng.literal(v) for v in values)
    res = e.run_sql(
        f"SELECT v, {eng.id_number_sql('v')} AS ok FROM (SELECT unnest([{con_values}]) AS v)",
        {},
        max_rows=1000,
    )
    assert {v: bool(ok) for v, ok in res.rows} == {v: eng.id_number_valid(v) for v in values}
    assert sum(1 for _, ok in res.rows if ok) == 300


def test_id_number_sql_on_the_calendar_and_the_check_character() -> None:
    """Every day of leap and common years (1900, 2000, 2023, 2024), days 29–31 of every
    month, lowercase x, and shapes that cast to a number but are no ID."""
    rnd = random.Random(11)
    values = [
        "",
        "abc",
        "+10105194912310021",
        "1e1051949123100211",
        "11010519491231002 ",
        "1101051949123100211",
    ]
    for year in (1900, 2000, 2023, 2024, 1800, 2099):
        for month in range(1, 13):
            for day in (1, 28, 29, 30, 31):
                body = f"{rnd.randint(110000, 659999)}{year}{month:02d}{day:02d}{rnd.randint(0, 999):03d}"
                good = body + _check_digit(body)
                values += [
                    good,
                    good.lower(),
                    body + rnd.choice([c for c in "0123456789Xx" if c.upper() != good[-1]]),
                ]
    con_values = ", ".join(eng.literal(v) for v in values)
    res = service.engine().run_sql(
        f"SELECT v, {eng.id_number_sql('v')} AS ok FROM (SELECT unnest([{con_values}]) AS v)",
        {},
        max_rows=5000,
    )
    assert {v: bool(ok) for v, ok in res.rows} == {v: eng.id_number_valid(v) for v in values}
    assert 0 < sum(1 for _, ok in res.rows if ok) < len(values)


def test_bad_rows_are_kept_aside_with_line_numbers_and_reasons(population: DataWorld) -> None:
    good = POPULATION_ROWS
    text = csv_bytes(good[:1]).decode()
    text += "110105194912310021,李四,12345,331001001001,1990-02-30,4\n"  # line 3: check digit, mobile, date
    text += '330102198001010018,"王\n五",,331002001001,1980-01-01,2\n'  # lines 4-5: one record, valid
    text += "330102198001010018,赵六,13912345678\n"  # line 6: too few columns
    text += ",钱七,13912345678,33100100100X,1980-01-01,99\n"  # line 7: empty id, bad code, size>30
    text += f"{good[1]['id_number']},孙八,15912345678,331001001001,1990-03-07,abc\n"  # line 8: not an integer
    dv = _ingest(population, population.write("bad.csv", text.encode()))
    assert dv.state == VersionState.ready and dv.rows == 2 and dv.rejected == 4
    report = json.loads(dv.quality)
    lines = {r["line"]: sorted(r["reasons"]) for r in report["first_rejects"]}
    assert lines == {
        3: ["birth_date:type", "id_number:id_number", "mobile:mobile"],
        6: ["row:malformed"],
        7: ["household_size:max", "id_number:not_null", "village_code:regex"],
        8: ["household_size:type"],
    }
    # Personal values are masked in the stored report; the raw rows are kept aside in full.
    assert report["first_rejects"][0]["values"]["id_number"] == "110105********0021"
    kept = service.engine().read_rejected(dv.path)
    assert [r["_line"] for r in kept] == [3, 6, 7, 8]
    assert kept[0]["id_number"] == "110105194912310021" and kept[0]["birth_date"] == "1990-02-30"
    assert "赵六" in kept[1]["_raw"]
    # Quality: 6 records read; id_number filled in 4 (the malformed line counts as empty), valid in 4.
    q = report["fields"]
    assert report["read"] == 6
    assert q["id_number"]["filled"] == 4 and q["id_number"]["invalid"] == 2
    assert q["id_number"]["validity"] == pytest.approx(4 / 6, abs=1e-4)
    assert q["mobile"]["completeness"] == pytest.approx(4 / 6, abs=1e-4)
    assert q["household_size"]["invalid"] == 2
    assert {r["name"] for r in _rows(population)} == {"张三", "王\n五"}
    # The reasons read in the user's language.
    assert ingest.describe_reason("id_number:id_number") == "id_number：不是有效的身份证号"


def test_cli_lists_rejects_by_line_in_the_users_language(
    population: DataWorld, monkeypatch: pytest.MonkeyPatch
) -> None:
    from typer.testing import CliRunner

    from civicgrid.cli import app
    from civicgrid.core.config import get_settings

    good = POPULATION_ROWS
    text = csv_bytes(good[:1]).decode()
    text += f"{good[1]['id_number']},孙八,15912345678,331001001001,1990-03-07,abc\n"  # line 3
    path = population.write("cli.csv", text.encode())
    monkeypatch.setenv("CIVICGRID_DATABASE_URL", population.db.url)
    get_settings.cache_clear()
    try:
        res = CliRunner().invoke(app, ["data", "ingest", "village-population", str(path), "--as", "steward"])
    finally:
        get_settings.cache_clear()
    assert res.exit_code == 0, res.output
    assert "第 3 行：household_size：不是有效的整数" in res.output
    assert "1 行，拒收 1 行" in res.output


# ---- formats --------------------------------------------------------------------------------


def test_gbk_csv(population: DataWorld) -> None:
    rows = [r | {"name": n} for r, n in zip(POPULATION_ROWS, ["张三丰", "欧阳娜娜", "王五"], strict=True)]
    path = population.write("gbk.csv", csv_bytes(rows, encoding="gbk"))
    with pytest.raises(UnicodeDecodeError):
        path.read_bytes().decode("utf-8")
    dv = _ingest(population, path)
    assert dv.rows == 3 and dv.rejected == 0
    assert sorted(r["name"] for r in _rows(population)) == sorted(["张三丰", "欧阳娜娜", "王五"])


def test_gbk_deep_in_a_large_file(population: DataWorld) -> None:
    # The first megabyte is plain ASCII; the Chinese text comes later.
    rows = [POPULATION_ROWS[1] | {"name": "Li"}] * 40_000 + [POPULATION_ROWS[0] | {"name": "张三"}]
    dv = _ingest(population, population.write("gbk-late.csv", csv_bytes(rows, encoding="gbk")))
    assert dv.rows == 40_001
    assert (
        _rows(population, filters=[eng.Filter("name", "=", "张三")])[0]["id_number"] == "11010519491231002X"
    )


def test_utf8_with_bom_and_headers_by_title(population: DataWorld) -> None:
    # Headers may be the fields' titles (身份证号, 姓名, ...) as well as their names.
    titles = {
        f["name"]: f["title"] for f in __import__("tests.data.conftest").data.conftest.POPULATION_FIELDS
    }
    rows = [{titles[k]: v for k, v in r.items()} for r in POPULATION_ROWS]
    dv = _ingest(population, population.write("bom.csv", b"\xef\xbb\xbf" + csv_bytes(rows)))
    assert dv.rows == 3
    first = _rows(population, sort=[eng.Sort("birth_date")])[0]
    assert first["id_number"] == "11010519491231002X" and first["birth_date"] == "1949-12-31"
    assert first["household_size"] == 3


def test_excel(population: DataWorld) -> None:
    wb = Workbook()
    ws = wb.active
    ws.append(list(POPULATION_ROWS[0].keys()))
    for r in POPULATION_ROWS:
        ws.append(
            [
                r["id_number"],
                r["name"],
                r["mobile"] or None,
                r["village_code"],
                r["birth_date"],
                r["household_size"],
            ]
        )
    ws.append([None] * 6)  # an empty row is skipped, and numbering goes on
    ws.append(["110105194912310021", "坏行", "13812345678", "331001001001", "1949-12-31", 2])
    path = population.tmp / "people.xlsx"
    wb.save(path)
    dv = _ingest(population, path)
    assert dv.rows == 3 and dv.rejected == 1
    assert json.loads(dv.quality)["first_rejects"][0]["line"] == 6  # the sheet's row number
    assert {r["household_size"] for r in _rows(population)} == {2, 3, 4}


def test_json_array_and_ndjson(population: DataWorld) -> None:
    path = population.write("people.json", json.dumps(POPULATION_ROWS, ensure_ascii=False).encode())
    assert _ingest(population, path).rows == 3
    bad = dict(POPULATION_ROWS[0], mobile="123")
    nd = "\n".join(json.dumps(r, ensure_ascii=False) for r in [POPULATION_ROWS[1], bad]) + "\n"
    dv = _ingest(population, population.write("people.ndjson", nd.encode()), mode="replace")
    assert dv.rows == 1 and json.loads(dv.quality)["first_rejects"][0]["line"] == 2
    assert [r["name"] for r in _rows(population)] == ["李四"]


def test_sql_pull(population: DataWorld) -> None:
    source = population.tmp / "source.db"
    con = sqlite3.connect(source)
    con.execute(
        "CREATE TABLE person (id_number TEXT, name TEXT, mobile TEXT, village_code TEXT, "
        "birth_date TEXT, household_size INT)"
    )
    con.executemany(
        "INSERT INTO person VALUES (?, ?, ?, ?, ?, ?)", [tuple(r.values()) for r in POPULATION_ROWS] * 5
    )
    con.commit()
    con.close()
    with population.db.session() as s:
        actor = population.actor(s, "steward")
    dv = ingest.ingest(
        population.db,
        actor,
        "village-population",
        sql_url=f"sqlite:///{source}",
        sql_query="SELECT * FROM person WHERE household_size >= 3",
    )
    assert dv.rows == 10 and dv.source == "sql"
    with pytest.raises(Invalid):
        ingest.ingest(
            population.db,
            actor,
            "village-population",
            sql_url=f"sqlite:///{source}",
            sql_query="DELETE FROM person",
        )
    assert sqlite3.connect(source).execute("SELECT count(*) FROM person").fetchone() == (15,)


# ---- versions -------------------------------------------------------------------------------


def test_append_and_replace(population: DataWorld) -> None:
    v1 = population.load_rows(rows=POPULATION_ROWS[:2])
    v2 = population.load_rows(rows=POPULATION_ROWS[2:])
    assert (v1.version, v1.rows, v2.version, v2.rows, v2.mode) == (1, 2, 2, 3, "append")
    e = service.engine()
    # Each version sees exactly its rows; v1's files are untouched by the append.
    assert e.count(e.version_files(v1.path)) == 2 and e.count(e.version_files(v2.path)) == 3
    assert len(_rows(population)) == 3
    v3 = population.load_rows(rows=POPULATION_ROWS[1:2], mode="replace")
    assert v3.rows == 1 and [r["name"] for r in _rows(population)] == ["李四"]
    with population.db.session() as s:
        states = {
            v.version: v.state for v in service.data_versions(s, service.get_dataset(s, "village-population"))
        }
    assert states == {1: "superseded", 2: "superseded", 3: "ready"}


def _two_loads_then(world: DataWorld) -> DataVersion:
    return world.load_rows(rows=POPULATION_ROWS)


def _assert_untouched(world: DataWorld, before: DataVersion) -> None:
    with world.db.session() as s:
        ds = service.get_dataset(s, "village-population")
        assert ds.current_version_id == before.id
        latest = service.data_versions(s, ds)[0]
        assert latest.state == VersionState.failed and latest.error
    assert len(_rows(world)) == 3
    folder = service.engine().dataset_dir("village-population")
    assert not [p for p in folder.iterdir() if p.name.startswith(".staging")]
    assert not (folder / f"v{latest.version}").exists()


def test_a_failure_mid_write_keeps_the_previous_version(
    population: DataWorld, monkeypatch: pytest.MonkeyPatch
) -> None:
    before = _two_loads_then(population)
    real = eng.Engine.publish

    def crash(self: eng.Engine, staging: Path, dataset: str, version: int, previous: Any = ()) -> Any:
        real(self, staging, dataset, version, previous)  # files renamed into place ...
        raise OSError(28, "No space left on device")  # ... and the disk fills before the commit

    monkeypatch.setattr(eng.Engine, "publish", crash)
    with pytest.raises(Invalid) as err:
        population.load_rows(rows=POPULATION_ROWS[:1], mode="replace")
    assert "No space left" in err.value.translated()
    _assert_untouched(population, before)


@pytest.mark.parametrize(
    ("content", "code"),
    [
        (b"\x00\x01\x02 not a csv at all \xff\xfe", "bad_encoding"),
        ("id_number,name\n11010519491231002X,张三\n".encode(), "invalid"),  # missing columns
        (csv_bytes([dict(POPULATION_ROWS[0], id_number="123")]), "no_valid_rows"),
    ],
)
def test_a_failed_load_keeps_the_previous_version(population: DataWorld, content: bytes, code: str) -> None:
    before = _two_loads_then(population)
    with pytest.raises(Invalid) as err:
        _ingest(population, population.write("broken.csv", content), mode="replace")
    assert err.value.code == code
    _assert_untouched(population, before)


def test_a_blocking_rule_fails_the_whole_load(population: DataWorld) -> None:
    before = _two_loads_then(population)
    with population.db.session() as s:
        ds = service.get_dataset(s, "village-population")
        fields = [service.field_dict(f) for f in ds.fields]
        fields[0]["rules"]["blocking"] = True
        service.update_dataset(s, population.actor(s, "steward"), ds.name, fields=fields)
    rows = [*POPULATION_ROWS, dict(POPULATION_ROWS[0], id_number="110105194912310021")]
    with pytest.raises(Invalid) as err:
        population.load_rows(rows=rows, mode="replace")
    assert err.value.code == "blocking_rule"
    assert err.value.details[0]["line"] == 5 and "身份证号" in err.value.details[0]["message"]
    _assert_untouched(population, before)


def test_progress_is_reported_and_stored(population: DataWorld) -> None:
    wb = Workbook(write_only=True)
    ws = wb.create_sheet()
    ws.append(list(POPULATION_ROWS[0].keys()))
    for _ in range(12_000):
        ws.append(list(POPULATION_ROWS[1].values()))
    path = population.tmp / "big.xlsx"
    wb.save(path)
    seen: list[int] = []
    stored: list[int] = []

    def progress(rows: int, _total: int) -> None:
        seen.append(rows)
        if rows == 12_000 and not stored:
            with population.db.session() as s:
                stored.append(s.query(DataVersion).one().progress)

    with population.db.session() as s:
        actor = population.actor(s, "steward")
    dv = ingest.ingest(population.db, actor, "village-population", path=path, progress=progress)
    assert 10_000 in seen and seen[-1] == 12_000
    assert stored == [10_000]  # the row showed progress while the load ran
    assert dv.progress == 12_000 and dv.rows == 12_000


def test_fields_inferred_when_none_are_registered(data_world: DataWorld) -> None:
    with data_world.db.session() as s:
        data_world.population(s, name="sites", fields=[], share_class="unconditional", share_condition="")
    path = data_world.write("sites.csv", "site_id,名称,lat\n1,加油站,28.6\n2,化工厂,28.7\n".encode())
    dv = _ingest(data_world, path, name="sites")
    assert dv.rows == 2
    with data_world.db.session() as s:
        ds = service.get_dataset(s, "sites")
        assert [(f.name, str(f.type), f.title) for f in ds.fields] == [
            ("site_id", "integer", ""),
            ("field_2", "string", "名称"),
            ("lat", "float", ""),
        ]
        assert ds.metadata_version == 2


def test_only_the_owners_stewards_load(population: DataWorld) -> None:
    path = population.write("p.csv", csv_bytes(POPULATION_ROWS))
    for user in ("consumer", "consumer_steward"):
        with pytest.raises(Exception) as err:
            _ingest(population, path, username=user)
        assert getattr(err.value, "status", 0) in (403, 404)


# ---- HTTP -----------------------------------------------------------------------------------


def test_upload_api(population: DataWorld, client: Any) -> None:
    steward = login_headers(client, "steward")
    url = "/api/v1/data/datasets/village-population/loads"
    res = client.post(url, files={"file": ("p.csv", csv_bytes(POPULATION_ROWS), "text/csv")}, headers=steward)
    assert res.status_code == 201, res.text
    assert res.json()["state"] == "ready" and res.json()["rows"] == 3
    bad = csv_bytes([dict(POPULATION_ROWS[0], mobile="12")])
    res = client.post(
        url,
        files={"file": ("bad.csv", bad, "text/csv")},
        data={"mode": "replace"},
        headers=steward | {"Accept-Language": "zh-CN"},
    )
    assert res.status_code == 422
    err = res.json()["error"]
    assert err["code"] == "no_valid_rows" and err["details"][0]["message"] == "第 2 行：mobile：不是手机号码"
    versions = client.get("/api/v1/data/datasets/village-population/versions", headers=steward).json()
    assert [(v["version"], v["state"]) for v in versions] == [(2, "failed"), (1, "ready")]
    assert (
        "没有一行"
        in client.get(
            "/api/v1/data/datasets/village-population/versions/2",
            headers=steward | {"Accept-Language": "zh-CN"},
        ).json()["error"]
    )
    res = client.post(
        url,
        files={"file": ("p.csv", csv_bytes(POPULATION_ROWS), "text/csv")},
        data={"wait": "false"},
        headers=steward,
    )
    assert res.status_code == 202 and res.json()["state"] == "loading"
    polled = client.get("/api/v1/data/datasets/village-population/versions/3", headers=steward).json()
    assert polled["state"] == "ready" and polled["rows"] == 6 and polled["progress"] == 3
    ds = client.get("/api/v1/data/datasets/village-population", headers=steward).json()
    assert ds["current_version"] == 3 and ds["rows"] == 6
    # Rejected rows (raw, personal) only for the owner's stewards.
    consumer = login_headers(client, "consumer")
    assert client.get(url.replace("loads", "versions/2/rejected"), headers=consumer).status_code == 403
    assert client.post(url, files={"file": ("p.csv", b"x", "text/csv")}, headers=consumer).status_code == 403
    assert not list((service.engine().data_dir / "uploads").glob("*"))


def test_nothing_outside_the_engine_imports_duckdb_or_pyarrow() -> None:
    offenders = [
        str(p.relative_to(SRC))
        for p in SRC.rglob("*.py")
        if p.name not in ("engine.py", "arrowcsv.py")
        and re.search(r"^\s*(import|from) (duckdb|pyarrow)\b", p.read_text(), re.MULTILINE)
    ]
    assert offenders == []
    arrow_only = (SRC / "data" / "arrowcsv.py").read_text()
    assert not re.search(r"^\s*(import|from) duckdb", arrow_only, re.MULTILINE)
