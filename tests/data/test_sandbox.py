"""The sandbox: escape attempts are refused with a reason; aggregates run; small groups vanish."""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import func, select

from civicgrid.core.audit import AuditRecord
from civicgrid.core.config import get_settings
from civicgrid.core.errors import AppError
from civicgrid.core.i18n import reset_locale, set_locale
from civicgrid.data import access, ingest, sandbox, service
from civicgrid.data.models import Grant, SandboxQuery
from civicgrid.data.sandbox import SandboxRefused, SandboxTable
from tests.data.conftest import DataWorld
from tests.factories import login_headers

POP = SandboxTable(
    name="population",
    view="v_population",
    fields={"village": "none", "age": "none", "sex": "none", "name": "personal", "id_number": "personal"},
    all_fields=frozenset({"village", "age", "sex", "name", "id_number", "phone"}),
    primary_key=("id_number",),
    k=10,
)
ENT = SandboxTable(
    name="enterprises",
    view="v_enterprises",
    fields={"village": "none", "staff": "none", "owner_id": "personal"},
    all_fields=frozenset({"village", "staff", "owner_id"}),
    primary_key=("owner_id",),
    k=5,
)
NO_PK = SandboxTable(
    name="visits", view="v_visits", fields={"village": "none"}, all_fields=frozenset({"village"})
)
GRANTED = {"population": POP, "enterprises": ENT, "visits": NO_PK}


@pytest.fixture(autouse=True)
def english() -> Iterator[None]:
    """Messages are checked in English here; one test switches to Chinese on purpose."""
    token = set_locale("en")
    yield
    reset_locale(token)


def refusal(sql: str) -> str:
    with pytest.raises(SandboxRefused) as e:
        sandbox.validate(sql, GRANTED)
    assert e.value.status == 422 and e.value.code == "sandbox_refused"
    return e.value.translated()


ESCAPES = [
    # writes and other statements
    ("INSERT INTO population VALUES ('x', 1)", "INSERT"),
    ("UPDATE population SET age = 1", "UPDATE"),
    ("DELETE FROM population", "DELETE"),
    ("CREATE TABLE stolen AS SELECT * FROM population", "CREATE"),
    ("DROP TABLE population", "DROP"),
    ("ALTER TABLE population ADD COLUMN x INT", "ALTER"),
    ("COPY population TO '/tmp/out.csv'", "COPY"),
    ("COPY (SELECT * FROM population) TO '/tmp/out.parquet' (FORMAT parquet)", "COPY"),
    ("ATTACH '/tmp/other.db' AS other", "ATTACH"),
    ("DETACH other", "DETACH"),
    ("PRAGMA database_list", "PRAGMA"),
    ("INSTALL httpfs", "INSTALL"),
    ("LOAD httpfs", "LOAD"),
    ("SET memory_limit = '100GB'", "SET"),
    ("EXPORT DATABASE '/tmp/dump'", "EXPORT"),
    ("IMPORT DATABASE '/tmp/dump'", "IMPORT"),
    ("CALL pragma_version()", "CALL"),
    # files and table functions
    (
        "SELECT count(*) FROM read_parquet('/var/lib/civicgrid/data/population/v1/part-0.parquet')",
        "READ_PARQUET",
    ),
    ("SELECT count(*) FROM read_csv('/etc/passwd')", "READ_CSV"),
    ("SELECT count(*) FROM read_csv_auto('/etc/passwd')", "READ_CSV"),
    ("SELECT count(*) FROM read_json('/etc/x.json')", "READ_JSON"),
    ("SELECT count(*) FROM glob('/etc/*')", "GLOB"),
    ("SELECT count(*) FROM 'data/population.parquet'", "data/population.parquet"),
    ("SELECT count(*) FROM population, read_csv('/etc/passwd')", "READ_CSV"),
    ("SELECT count(*) FROM population JOIN read_parquet('/x.parquet') r ON true", "READ_PARQUET"),
    ("SELECT count(*) FROM duckdb_settings()", "DUCKDB_SETTINGS"),
    # a second statement
    ("SELECT count(*) FROM population; DROP TABLE population", "2"),
    ("SELECT count(*) FROM population; SELECT count(*) FROM population", "2"),
    # ungranted or unknown tables, qualified names
    ("SELECT count(*) FROM secret", "secret"),
    ("SELECT count(*) FROM main.population", "main.population"),
    ("SELECT count(*) FROM information_schema.tables", "information_schema"),
    # subquery escapes
    ("SELECT count(*) FROM (SELECT * FROM population)", "subqueries"),
    ("SELECT count(*) FROM population WHERE village IN (SELECT village FROM secret)", "subqueries"),
    ("WITH t AS (SELECT * FROM population) SELECT count(*) FROM t", "WITH"),
    ("SELECT count(*) FROM population UNION SELECT count(*) FROM enterprises", "UNION"),
    # functions outside the allow-list
    ("SELECT getenv('HOME'), count(*) FROM population", "getenv"),
    ("SELECT current_setting('threads'), count(*) FROM population", "current_setting"),
    ("SELECT count(*) FROM population WHERE village = getvariable('x')", "getvariable"),
    ("SELECT list(name) FROM population", "array_agg"),
    ("SELECT string_agg(village, ',') FROM population", "group_concat"),
    ("SELECT any_value(age) FROM population", "any_value"),
    ("SELECT count(*) OVER () FROM population", "OVER"),
    # raw rows
    ("SELECT * FROM population", "*"),
    ("SELECT village, age FROM population", "aggregates"),
    ("SELECT age, count(*) FROM population GROUP BY village", "age"),
    ("SELECT 1 FROM population", "aggregates"),
    ("SELECT village, count(*) FROM population GROUP BY ALL", "GROUP BY ALL"),
    # personal fields: counted only
    ("SELECT name, count(*) FROM population GROUP BY name", "name"),
    ("SELECT min(id_number) FROM population", "id_number"),
    ("SELECT count(*) FROM population WHERE id_number = '110101199003071234'", "id_number"),
    ("SELECT count(*) FILTER (WHERE name LIKE '张%') FROM population", "name"),
    # fields outside the grant
    ("SELECT phone, count(*) FROM population GROUP BY phone", "phone"),
    ("SELECT nosuch, count(*) FROM population GROUP BY nosuch", "nosuch"),
    # joins that could inflate or cross
    ("SELECT count(*) FROM population, enterprises", "ON"),
    ("SELECT count(*) FROM population p JOIN visits v ON p.village = v.village", "visits"),
    # reserved names and parameters
    ("SELECT count(*) AS __cg_k0 FROM population", "__cg_k"),
    ("SELECT count(*) FROM population WHERE age = $1", "parameters"),
    ("", "SELECT"),
]


@pytest.mark.parametrize(("sql", "needle"), ESCAPES)
def test_escape_attempts_are_refused_with_a_reason(sql: str, needle: str) -> None:
    message = refusal(sql)
    assert needle.lower() in message.lower(), message


def test_refusals_speak_the_users_language() -> None:
    token = set_locale("zh_Hans")
    try:
        assert "COPY" in refusal("COPY population TO '/tmp/x.csv'")
        assert "沙箱" in refusal("COPY population TO '/tmp/x.csv'")
        assert "聚合" in refusal("SELECT village, age FROM population")
        assert "未获授权" in refusal("SELECT count(*) FROM secret") or "授权" in refusal(
            "SELECT count(*) FROM secret"
        )
    finally:
        reset_locale(token)


ACCEPTED = [
    "SELECT village, COUNT(*) AS n, AVG(age) AS mean_age FROM population GROUP BY village",
    "SELECT village AS v, COUNT(*) n FROM population WHERE age >= 60 GROUP BY v ORDER BY n DESC LIMIT 5",
    "SELECT COUNT(*) FROM population",
    "SELECT COUNT(DISTINCT id_number) AS people, COUNT(*) FILTER (WHERE age > 17) AS adults FROM population",
    "SELECT CASE WHEN age >= 60 THEN 'old' ELSE 'young' END AS band, count(*) FROM population GROUP BY band",
    "select sex, round(avg(age), 1) from population group by 1 having count(*) > 3 order by 2",
    "SELECT p.village, count(*) AS n FROM population p JOIN enterprises e ON p.id_number = e.owner_id "
    "GROUP BY p.village",
]


@pytest.mark.parametrize("sql", ACCEPTED)
def test_aggregate_queries_are_accepted_and_rewritten_onto_views(sql: str) -> None:
    plan = sandbox.validate(sql, GRANTED)
    assert '"v_population"' in plan.sql
    assert "population" not in plan.sql.replace('"v_population"', "").replace('AS "population"', "")
    # every query carries its hidden group size(s)
    assert [h for h, _k in plan.hidden] and all(h in plan.sql for h, _k in plan.hidden)


def test_joins_count_distinct_rows_of_each_dataset_against_its_own_k() -> None:
    plan = sandbox.validate(
        "SELECT p.village, count(*) FROM population p JOIN enterprises e ON p.village = e.village "
        "GROUP BY p.village",
        GRANTED,
    )
    assert plan.hidden == [("__cg_k0", 10), ("__cg_k1", 5)]
    assert 'COUNT(DISTINCT "p"."id_number")' in plan.sql and 'COUNT(DISTINCT "e"."owner_id")' in plan.sql


def test_suppress_drops_small_groups_and_hidden_columns() -> None:
    plan = sandbox.validate("SELECT village, count(*) AS n FROM population GROUP BY village", GRANTED)
    rows, dropped, truncated = sandbox.suppress(
        plan, ["village", "n", "__cg_k0"], [("村1", 12, 12), ("村2", 9, 9), ("村3", 10, 10)]
    )
    assert rows == [["村1", 12], ["村3", 10]] and dropped == 1 and not truncated


def test_personal_field_granted_in_clear_may_be_grouped() -> None:
    clear = SandboxTable(
        name="population",
        view="v",
        fields=POP.fields,
        all_fields=POP.all_fields,
        clear=frozenset({"name"}),
        primary_key=("id_number",),
    )
    plan = sandbox.validate("SELECT name, count(*) FROM population GROUP BY name", {"population": clear})
    assert "GROUP BY name" in plan.sql


# ---- through the engine, with real grants -----------------------------------------------------

VILLAGES = {"村1": 30, "村2": 12, "村3": 5}  # 村3 is below k = 10


def _population_csv(path: Path) -> Path:
    lines = ["village,name,id_number,phone,age"]
    n = 0
    for village, count in VILLAGES.items():
        for i in range(count):
            n += 1
            lines.append(f"{village},张{n},11010119900307{n:04d},138{n:08d},{20 + i % 60}")
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


SANDBOX_FIELDS: list[dict[str, Any]] = [
    {"name": "village", "title": "村"},
    {"name": "name", "title": "姓名", "sensitivity": "personal", "mask": "name"},
    {
        "name": "id_number",
        "title": "身份证号",
        "sensitivity": "personal",
        "mask": "id_number",
        "primary_key": True,
    },
    {"name": "phone", "title": "手机号", "sensitivity": "personal", "mask": "phone"},
    {"name": "age", "title": "年龄", "type": "integer"},
]


@dataclass
class SandboxWorld:
    db: Any
    w: DataWorld


def _grant(world: SandboxWorld, **approve: Any) -> None:
    with world.db.session() as s:
        app = access.apply(
            s,
            world.w.actor(s, "consumer"),
            dataset="population",
            purpose="各村人口结构分析",
            fields=["village", "name", "id_number", "age"],
            until=access.today() + timedelta(days=30),
            mode="sandbox",
        )
        access.approve(s, world.w.actor(s, "steward"), app.id, **approve)


@pytest.fixture
def sandbox_world(
    data_world: DataWorld, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[SandboxWorld]:
    monkeypatch.setenv("CIVICGRID_DATA_DIR", str(tmp_path / "data"))
    get_settings.cache_clear()
    db = data_world.db
    with db.session() as s:
        steward = data_world.actor(s, "steward")
        common: dict[str, Any] = {"theme": "people", "grade": "general", "open_class": "closed"}
        service.create_dataset(
            s,
            steward,
            name="population",
            title="人口",
            share_class="conditional",
            share_condition="用于民生服务",
            fields=SANDBOX_FIELDS,
            **common,
        )
        service.create_dataset(
            s,
            steward,
            name="shops",
            title="个体工商户",
            share_class="unconditional",
            fields=[{"name": "shop"}],
            **common,
        )
        service.create_dataset(
            s,
            steward,
            name="secret",
            title="涉密",
            share_class="none",
            share_condition="涉及国家秘密",
            fields=[{"name": "x"}],
            **common,
        )
    dv = ingest.ingest(db, steward, "population", path=_population_csv(tmp_path / "pop.csv"), mode="replace")
    assert dv.rows == sum(VILLAGES.values()), dv.error
    yield SandboxWorld(db, data_world)
    get_settings.cache_clear()


def _run(world: SandboxWorld, sql: str, username: str = "consumer", **kw: Any) -> sandbox.SandboxResult:
    with world.db.session() as s:
        return sandbox.run_query(s, world.w.actor(s, username), sql, **kw)


def _refused(world: SandboxWorld, sql: str, username: str = "consumer") -> AppError:
    """Run and expect a refusal; the log entry is committed as the API route does."""
    with world.db.session() as s:
        with pytest.raises(AppError) as e:
            sandbox.run_query(s, world.w.actor(s, username), sql)
        s.commit()
    return e.value


def _log(world: SandboxWorld) -> list[SandboxQuery]:
    with world.db.session() as s:
        return list(s.scalars(select(SandboxQuery).order_by(SandboxQuery.id)))


def test_small_groups_are_suppressed_and_every_query_is_logged(sandbox_world: SandboxWorld) -> None:
    world = sandbox_world
    _grant(world)
    result = _run(
        world,
        "SELECT village, count(*) AS n, avg(age) AS mean_age FROM population "
        "GROUP BY village ORDER BY village",
    )
    assert result.columns == ["village", "n", "mean_age"]
    assert [(r[0], r[1]) for r in result.rows] == [("村1", 30), ("村2", 12)]  # 村3 (5 people) is gone
    assert result.suppressed == 1
    # a query narrowed to fewer than k rows in all is one small group: nothing comes back
    small = _run(world, "SELECT count(*) FROM population WHERE village = '村3'")
    assert small.rows == [] and small.suppressed == 1
    log = _log(world)
    assert [(q.outcome, q.rows_out, q.suppressed_groups) for q in log] == [("ok", 2, 1), ("ok", 0, 1)]
    assert json.loads(log[0].datasets) == ["population"]
    with world.db.session() as s:
        reads = list(s.scalars(select(AuditRecord).where(AuditRecord.action == "data.read")))
    assert len(reads) == 2 and all('"sandbox"' in r.diff for r in reads)


def test_personal_fields_are_only_counted_and_never_leave(sandbox_world: SandboxWorld) -> None:
    world = sandbox_world
    _grant(world)
    result = _run(world, "SELECT count(DISTINCT id_number) AS people, count(name) AS named FROM population")
    assert result.rows == [[47, 47]]  # distinct pseudonyms count like the values themselves
    err = _refused(world, "SELECT name, count(*) FROM population GROUP BY name")
    assert err.code == "sandbox_refused" and "name" in err.translated()


def test_escapes_through_the_engine_are_refused_and_logged(sandbox_world: SandboxWorld) -> None:
    world = sandbox_world
    _grant(world)
    attempts = [
        "SELECT count(*) FROM read_parquet('"
        + str(Path(get_settings().data_dir).resolve())
        + "/datasets/population/v1/data/*.parquet')",
        "SELECT count(*) FROM read_csv('/etc/passwd')",
        "COPY population TO '/tmp/stolen.csv'",
        "ATTACH '/tmp/x.db' AS x",
        "SELECT count(*) FROM population; SELECT 1",
        "SELECT count(*) FROM shops",  # unconditionally shared, but never applied for
        "SELECT count(*) FROM secret",  # not shared at all
        "SELECT village, age FROM population",
    ]
    for sql in attempts:
        err = _refused(world, sql)
        assert err.status in (403, 422), sql
    log = _log(world)
    assert [q.outcome for q in log] == ["refused"] * len(attempts)
    assert all(q.reason for q in log)
    with world.db.session() as s:
        refusals = s.scalar(
            select(func.count()).select_from(AuditRecord).where(AuditRecord.action == "data.sandbox.refused")
        )
    assert refusals == len(attempts)
    assert not Path("/tmp/stolen.csv").exists()


def test_row_filter_of_the_grant_applies_under_the_query(sandbox_world: SandboxWorld) -> None:
    world = sandbox_world
    _grant(world, extra_filter=[{"field": "village", "op": "eq", "value": "村1"}])
    result = _run(world, "SELECT village, count(*) FROM population GROUP BY village")
    assert result.rows == [["村1", 30]] and result.suppressed == 0


def test_no_grant_revoked_grant_and_time_limit(sandbox_world: SandboxWorld) -> None:
    world = sandbox_world
    err = _refused(world, "SELECT count(*) FROM population")
    assert err.status == 403  # never applied
    _grant(world)
    # A legal query that explodes: a five-way self-join on an inequality (47**5 rows).
    slow = (
        "SELECT count(*) FROM population a JOIN population b ON a.age >= b.age "
        "JOIN population c ON c.age >= b.age JOIN population d ON d.age >= c.age "
        "JOIN population e ON e.age >= d.age"
    )
    with world.db.session() as s:
        with pytest.raises(AppError) as e:
            sandbox.run_query(s, world.w.actor(s, "consumer"), slow, timeout_s=0.2)
        s.commit()
    assert e.value.code == "query_timeout"
    assert _log(world)[-1].outcome == "timeout"
    with world.db.session() as s:
        grant = s.scalar(select(Grant))
        access.revoke(s, world.w.actor(s, "steward"), grant.id, reason="项目结束")
    assert "revoked" in _refused(world, "SELECT count(*) FROM population").message


def test_sandbox_api_runs_refuses_and_keeps_history(sandbox_world: SandboxWorld, client: TestClient) -> None:
    _grant(sandbox_world)
    headers = login_headers(client, "consumer")
    ok = client.post(
        "/api/v1/data/sandbox/queries",
        json={"sql": "SELECT village, count(*) AS n FROM population GROUP BY village ORDER BY village"},
        headers=headers,
    )
    assert ok.status_code == 200, ok.text
    assert ok.json()["rows"] == [["村1", 30], ["村2", 12]] and ok.json()["suppressed_groups"] == 1
    refused = client.post(
        "/api/v1/data/sandbox/queries",
        json={"sql": "COPY population TO '/tmp/x.csv'"},
        headers=headers | {"Accept-Language": "zh-CN"},
    )
    assert refused.status_code == 422
    assert refused.json()["error"]["code"] == "sandbox_refused"
    assert "COPY" in refused.json()["error"]["message"] and "沙箱" in refused.json()["error"]["message"]
    history = client.get("/api/v1/data/sandbox/queries", headers=headers).json()
    assert [q["outcome"] for q in history["items"]] == ["refused", "ok"]  # the refusal was kept
    assert history["items"][1]["datasets"] == ["population"]
    assert "count" in client.get("/api/v1/data/sandbox/functions", headers=headers).json()["aggregates"]
    # a resident has no data rights
    assert (
        client.post(
            "/api/v1/data/sandbox/queries",
            json={"sql": "SELECT 1"},
            headers=login_headers(client, "resident"),
        ).status_code
        == 403
    )
