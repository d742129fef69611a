"""Ingestion benchmark (issue 4): a 10,000,000-row population-by-village CSV, loaded

1. by DuckDB's own `read_csv → COPY TO parquet` (the baseline the issue names), and the same
   with the dataset's column types (id numbers, mobiles and codes as text, as ours must keep them),
2. by CivicGrid's ingest (`data.ingest.ingest`: rules incl. the ID-number check digit, rejected
   rows kept aside with line numbers, quality report, publish with fsync and sha256) — the goal
   is ≥ 0.8× the baseline's speed,
3. row by row through SQLAlchemy into PostgreSQL, the slow baseline: bounded to the first
   --pg-rows rows and extrapolated (said so in the output).

All runs use the same generated file in the same process; medians of --runs runs, interleaved
so that machine load affects each the same. Usage:

    .venv/bin/python bench/data_ingest.py [--rows 10000000] [--runs 3] [--pg URL] [--cluster] [--write]

`--cluster` adds a fourth load: the same ingest sorting the rows by village_code (what a dataset
whose village_code rule says "cluster": true gets; see bench/data_api.py for what it buys reads).
"""

from __future__ import annotations

import argparse
import csv
import os
import shutil
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import ROOT, load_average, machine_info, median, write_section

DOC = ROOT / "docs" / "benchmarks.md"

# One in 1,000 rows has a bad mobile, one in 1,500 a wrong check digit: realistic rejects.
GENERATE = """
COPY (
WITH b AS (
  SELECT i,
    '3310' || lpad(CAST(1 + i % 9 AS VARCHAR), 2, '0') AS area,
    DATE '1940-01-01' + CAST(hash(i) % 29000 AS INTEGER) AS birth,
    lpad(CAST(i % 1000 AS VARCHAR), 3, '0') AS seq
  FROM range({rows}) t(i)
), c AS (
  SELECT *, area || strftime(birth, '%Y%m%d') || seq AS body FROM b
), d AS (
  SELECT *, substr('10X98765432', 1 + CAST((
       7*CAST(body[1] AS INT)+9*CAST(body[2] AS INT)+10*CAST(body[3] AS INT)+5*CAST(body[4] AS INT)
      +8*CAST(body[5] AS INT)+4*CAST(body[6] AS INT)+2*CAST(body[7] AS INT)+1*CAST(body[8] AS INT)
      +6*CAST(body[9] AS INT)+3*CAST(body[10] AS INT)+7*CAST(body[11] AS INT)+9*CAST(body[12] AS INT)
      +10*CAST(body[13] AS INT)+5*CAST(body[14] AS INT)+8*CAST(body[15] AS INT)+4*CAST(body[16] AS INT)
      +2*CAST(body[17] AS INT)) % 11 AS INT), 1) AS check_char FROM c
)
SELECT
  i + 1 AS person_id,
  body || CASE WHEN i % 1500 = 7 THEN (CASE WHEN check_char = '0' THEN '1' ELSE '0' END) ELSE check_char END
    AS id_number,
  ['王','李','张','刘','陈','杨','黄','赵','吴','周'][1 + i % 10]
    || ['伟','芳','娜','敏','静','丽','强','磊','军','洋','勇','艳'][1 + (i // 10) % 12] AS name,
  CASE WHEN i % 2 = 0 THEN '男' ELSE '女' END AS gender,
  birth AS birth_date,
  CASE WHEN i % 1000 = 3 THEN '12345'
       ELSE '1' || ['3','5','8','9'][1 + i % 4] || lpad(CAST(hash(i * 7) % 1000000000 AS VARCHAR), 9, '0')
  END AS mobile,
  '331002' || lpad(CAST(1 + i % 150 AS VARCHAR), 3, '0') || lpad(CAST(1 + i % 23 AS VARCHAR), 3, '0')
    AS village_code,
  'H' || lpad(CAST(i // 3 AS VARCHAR), 9, '0') AS household_id,
  '台州市' || ['椒江区','黄岩区','路桥区'][1 + i % 3] || CAST(1 + i % 300 AS VARCHAR) || '号' AS address,
  CASE WHEN i % 97 = 0 THEN '回族' ELSE '汉族' END AS ethnicity
FROM d
) TO '{path}' (HEADER, DELIMITER ',')
"""

FIELDS: list[dict[str, Any]] = [
    {"name": "person_id", "type": "integer", "primary_key": True, "rules": {"not_null": True}},
    {
        "name": "id_number",
        "sensitivity": "personal",
        "mask": "id_number",
        "rules": {"not_null": True, "id_number": True},
    },
    {"name": "name", "sensitivity": "personal", "mask": "name", "rules": {"not_null": True}},
    {"name": "gender"},
    {"name": "birth_date", "type": "date"},
    {"name": "mobile", "sensitivity": "personal", "mask": "phone", "rules": {"mobile": True}},
    {"name": "village_code", "rules": {"regex": r"\d{12}"}},
    {"name": "household_id"},
    {"name": "address", "sensitivity": "personal", "mask": "partial"},
    {"name": "ethnicity"},
]
TEXT_TYPES = "{'id_number': 'VARCHAR', 'mobile': 'VARCHAR', 'village_code': 'VARCHAR'}"


def duck_copy(path: Path, out: Path, types: str = "") -> tuple[float, float]:
    """DuckDB on its own (the benchmark may use it directly; the application goes through
    civicgrid.data.engine)."""
    import duckdb

    con = duckdb.connect()
    con.execute(f"SET threads = {os.cpu_count() or 1}")
    con.execute("SET enable_progress_bar = false")
    opts = f", types = {types}" if types else ""
    started, cpu = time.perf_counter(), time.process_time()
    con.execute(f"COPY (SELECT * FROM read_csv('{path}'{opts})) TO '{out}' (FORMAT parquet)")
    seconds, cpu = time.perf_counter() - started, time.process_time() - cpu
    con.close()
    out.unlink()
    return seconds, cpu


def ours(work: Path, path: Path, run: int, cluster: bool = False) -> tuple[float, float, int, int]:
    from civicgrid.core.db import Database
    from civicgrid.core.migrate import upgrade
    from civicgrid.data import ingest, service

    url = f"sqlite:///{work / f'bench-{run}-{int(cluster)}.db'}"
    upgrade(url)
    db = Database(url)
    from tests.data.conftest import build_data_world  # a bureau, an owner department, a steward

    with db.session() as s:
        build_data_world(s)
    from civicgrid.accounts import service as accounts

    with db.session() as s:
        user = accounts.get_user_by_username(s, "steward")
        assert user is not None
        actor = accounts.actor_for_user(s, user)
        service.create_dataset(
            s,
            actor,
            name=f"bench-population-{run}",
            title="村人口信息（基准）",
            theme="people",
            grade="important",
            share_class="conditional",
            share_condition="bench",
            open_class="closed",
            fields=FIELDS,
        )
    started, cpu = time.perf_counter(), time.process_time()
    dv = ingest.ingest(
        db,
        actor,
        f"bench-population-{run}",
        path=path,
        mode="replace",
        cluster_by=["village_code"] if cluster else None,
    )
    seconds, cpu = time.perf_counter() - started, time.process_time() - cpu
    db.dispose()
    return seconds, cpu, dv.rows, dv.rejected


def postgres_row_by_row(url: str, path: Path, rows: int) -> float:
    """Seconds per row for plain SQLAlchemy single-row INSERTs (one transaction)."""
    from sqlalchemy import Column, Date, Integer, MetaData, String, Table, create_engine, insert

    engine = create_engine(url.replace("postgresql://", "postgresql+psycopg://", 1))
    meta = MetaData()
    table = Table(
        "bench_population_rows",
        meta,
        Column("person_id", Integer, primary_key=True),
        Column("id_number", String(18)),
        Column("name", String(50)),
        Column("gender", String(4)),
        Column("birth_date", Date),
        Column("mobile", String(11)),
        Column("village_code", String(12)),
        Column("household_id", String(12)),
        Column("address", String(100)),
        Column("ethnicity", String(10)),
    )
    meta.drop_all(engine)
    meta.create_all(engine)
    stmt = insert(table)
    try:
        with path.open(encoding="utf-8", newline="") as fp, engine.begin() as conn:
            reader = csv.DictReader(fp)
            started = time.perf_counter()
            for i, row in enumerate(reader):
                if i >= rows:
                    break
                conn.execute(
                    stmt,
                    {
                        **row,
                        "person_id": int(row["person_id"]),
                        "birth_date": datetime.strptime(row["birth_date"], "%Y-%m-%d").date(),
                    },
                )
            seconds = time.perf_counter() - started
        return seconds / rows
    finally:
        meta.drop_all(engine)
        engine.dispose()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rows", type=int, default=10_000_000)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument(
        "--pg", default=os.environ.get("CIVICGRID_TEST_PG", "postgresql://postgres@127.0.0.1:5432/test")
    )
    ap.add_argument("--pg-rows", type=int, default=200_000)
    ap.add_argument("--cluster", action="store_true", help="Also time the ingest sorting by village_code.")
    ap.add_argument("--write", action="store_true", help=f"Write the results into {DOC.relative_to(ROOT)}.")
    args = ap.parse_args()

    sys.path.insert(0, str(ROOT))
    host = machine_info(duckdb=True)
    work = Path(tempfile.mkdtemp(prefix="cg-bench-ingest-"))
    os.environ["CIVICGRID_DATA_DIR"] = str(work / "data")
    import duckdb

    try:
        csv_path = work / "population.csv"
        t = time.perf_counter()
        gen_con = duckdb.connect()
        gen_con.execute("SET enable_progress_bar = false")
        gen_con.execute(GENERATE.format(rows=args.rows, path=csv_path))
        gen_con.close()
        gen = time.perf_counter() - t
        size = csv_path.stat().st_size
        print(f"generated {args.rows:,} rows ({size / 1e6:.0f} MB) in {gen:.1f} s", flush=True)
        cases = ["duckdb", "duckdb_types", "ingest", *(["ingest_cluster"] if args.cluster else [])]
        wall: dict[str, list[float]] = {c: [] for c in cases}
        cpu: dict[str, list[float]] = {c: [] for c in cases}
        loads: list[float] = []
        counts = (0, 0)
        for run in range(args.runs):
            for case in cases:
                loads.append(os.getloadavg()[0])
                if case == "duckdb":
                    w, c = duck_copy(csv_path, work / "baseline.parquet")
                elif case == "duckdb_types":
                    w, c = duck_copy(csv_path, work / "baseline.parquet", TEXT_TYPES)
                else:
                    w, c, rows, rejected = ours(work, csv_path, run, cluster=case == "ingest_cluster")
                    counts = (rows, rejected)
                    shutil.rmtree(work / "data" / "datasets", ignore_errors=True)
                wall[case].append(w)
                cpu[case].append(c)
            print(
                f"run {run + 1}: "
                + ", ".join(f"{c} {wall[c][-1]:.1f} s (cpu {cpu[c][-1]:.1f} s)" for c in cases)
                + f"; load {os.getloadavg()[0]:.1f}",
                flush=True,
            )
        pg_per_row = postgres_row_by_row(args.pg, csv_path, args.pg_rows) if args.pg else float("nan")
        b = median(wall["duckdb"])
        # Per-run ratios: runs are interleaved, so each ratio compares loads under the same load.
        ratio = {c: median([x / y for x, y in zip(wall["duckdb"], wall[c], strict=True)]) for c in cases}
        pg_total = pg_per_row * args.rows
        labels = {
            "duckdb": "DuckDB `read_csv` → `COPY TO parquet` (baseline, sniffed types)",
            "duckdb_types": "same, with the dataset's column types (ID, mobile, code as text)",
            "ingest": "CivicGrid ingest (rules, rejects aside, quality report, publish)",
            "ingest_cluster": "CivicGrid ingest, rows sorted by village_code (`cluster`)",
        }
        lines = [
            f"### Ingestion of a {args.rows:,}-row CSV ({datetime.now(UTC):%Y-%m-%d %H:%M} UTC)",
            "",
            f"Machine: {host}. Load average during the runs: {min(loads):.1f}–{max(loads):.1f} "
            f"(1-minute, sampled before each load; now {load_average()}). DuckDB threads = cores. "
            f"{args.runs} interleaved runs on the same generated file ({size / 1e6:.0f} MB, population "
            "by village: ID number, name, mobile, village code, birth date, household, address; 1 in "
            "1,000 mobiles and 1 in 1,500 check digits bad).",
            "",
            "| load | median wall s | median CPU s (all threads) | rows/s "
            "| speed vs baseline (median of per-run ratios) |",
            "|---|---:|---:|---:|---:|",
            *(
                f"| {labels[c]} | {median(wall[c]):.1f} | {median(cpu[c]):.1f} | "
                f"{args.rows / median(wall[c]):,.0f} | {'1.00×' if c == 'duckdb' else f'{ratio[c]:.2f}×'} |"
                for c in cases
            ),
            f"| SQLAlchemy row-by-row INSERT into PostgreSQL (first {args.pg_rows:,} rows timed, "
            f"extrapolated) | {pg_total:.0f} | – | {1 / pg_per_row:,.0f} | {b / pg_total:.3f}× |",
            "",
            f"Ingest result: {counts[0]:,} rows loaded, {counts[1]:,} rejected (kept with line numbers). "
            f"Goal ≥ 0.80×: {'met' if ratio['ingest'] >= 0.8 else 'NOT met'} ({ratio['ingest']:.2f}×).",
            "",
            f"CPU (all threads, medians): baseline {median(cpu['duckdb']):.1f} s, ingest "
            f"{median(cpu['ingest']):.1f} s, so {median(cpu['duckdb']) / median(cpu['ingest']):.2f}× the "
            "baseline's CPU speed: the wall-clock ratio above equals it only when both loads get the "
            "same share of the cores.",
            "",
        ]
        text = "\n".join(lines)
        print(text)
        if args.write:
            write_section(DOC, "data_ingest", text)
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
