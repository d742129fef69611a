"""Benchmark: a sandbox aggregate over 100,000,000 rows (target ≤ 2 s median)
(run: .venv/bin/python bench/data_sandbox.py [--rows N] [--runs 7] [--data-dir DIR]).

Builds the data tests' world in a fresh SQLite database, registers a conditionally shared
dataset with a personal key, grants the consumer org sandbox access, and writes N generated
rows as Parquet straight into the dataset's version folder (see `write_parquet`: the engine
has no data generator, and a 100M-row CSV through ingestion would be a different benchmark).
Then times, interleaved, the whole sandbox path (`sandbox.run_query`: parse, validate against
the grant, rewrite with the hidden group size, run through the engine with its time and memory
limits, suppress small groups, log and audit) against the baseline of the same aggregate run
directly through `Engine.run_sql` over a plain view (no validation, no hidden count, no log).
Prints a Markdown section for docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import ROOT, load_average, machine_info, median, percentile, write_section

sys.path.insert(0, str(ROOT))
DOC = ROOT / "docs" / "benchmarks.md"
os.environ["CIVICGRID_EMBEDDED_WORKER"] = "false"

NAME = "bench-population"
QUERIES = {
    "people per village (2,000 groups)": (
        f'SELECT village_id, count(*) AS people FROM "{NAME}" GROUP BY village_id'
    ),
    "elderly by sex, mean age (filter, 2 groups)": (
        f'SELECT sex, count(*) AS people, avg(age) AS mean_age FROM "{NAME}" WHERE age >= 60 GROUP BY sex'
    ),
    "mean income per village (2,000 groups, high-entropy column)": (
        f'SELECT village_id, count(*) AS people, avg(income) AS mean_income FROM "{NAME}" GROUP BY village_id'
    ),
}


def write_parquet(folder: Path, rows: int) -> list[Path]:
    """The benchmark's data generator (the one place here that uses DuckDB directly): `rows`
    people in 2,000 villages, ordered by village as a register export is (age, sex and income
    pseudo-random), in row groups of 1M; integers only so generation stays I/O-bound."""
    import duckdb

    folder.mkdir(parents=True, exist_ok=True)
    target = folder / "part-v00001-00000.parquet"
    con = duckdb.connect(":memory:")
    try:
        con.execute(
            f"""COPY (
                SELECT i AS person_id,
                       CAST(i // {max(1, int(rows) // 2000)} AS INTEGER) AS village_id,
                       CAST((i * 40503) % 100 AS INTEGER) AS age,
                       CAST(i % 2 AS INTEGER) AS sex,
                       CAST((i * 7919) % 100000 AS INTEGER) AS income
                FROM range({int(rows)}) t(i)
            ) TO '{target}' (FORMAT parquet, ROW_GROUP_SIZE 1000000)"""
        )
    finally:
        con.close()
    return [target]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rows", type=int, default=100_000_000)
    parser.add_argument("--runs", type=int, default=7)
    parser.add_argument(
        "--data-dir", type=Path, default=None, help="keep the data here (default: a temp dir)"
    )
    parser.add_argument("--write", action="store_true", help="Write the results into the docs.")
    args = parser.parse_args()
    host = machine_info(duckdb=True)

    data_dir = (args.data_dir or Path(tempfile.mkdtemp(prefix="cg-bench-sandbox-"))).resolve()
    os.environ["CIVICGRID_DATA_DIR"] = str(data_dir)
    db_file = data_dir / "civicgrid.db"
    db_file.unlink(missing_ok=True)

    from tests.data.conftest import DataWorld, build_data_world

    from civicgrid.core.config import Settings, get_settings
    from civicgrid.core.db import Database
    from civicgrid.core.migrate import upgrade
    from civicgrid.data import access, sandbox, service
    from civicgrid.data.engine import View
    from civicgrid.data.models import DataVersion, VersionState

    get_settings.cache_clear()
    settings = Settings(data_dir=data_dir)
    settings.ensure_data_dir()
    upgrade(settings.resolved_database_url)
    db = Database(settings.resolved_database_url)
    with db.session() as s:
        tree = build_data_world(s)
    world = DataWorld(db=db, tree=tree, tmp=data_dir)
    folder = data_dir / "datasets" / NAME / "v1"
    files = sorted((folder / "data").glob("*.parquet"))
    t0 = time.perf_counter()
    if not files or service.engine().count(files) != args.rows:
        files = write_parquet(folder / "data", args.rows)
    generated_s = time.perf_counter() - t0
    with db.session() as s:
        steward = world.actor(s, "steward")
        ds = service.create_dataset(
            s,
            steward,
            name=NAME,
            title="基准测试人口",
            theme="people",
            grade="general",
            share_class="conditional",
            share_condition="基准测试",
            open_class="closed",
            fields=[
                {"name": "person_id", "type": "integer", "sensitivity": "personal", "primary_key": True},
                {"name": "village_id", "type": "integer"},
                {"name": "age", "type": "integer"},
                {"name": "sex", "type": "integer"},
                {"name": "income", "type": "integer"},
            ],
        )
        dv = DataVersion(
            dataset_id=ds.id,
            version=1,
            mode="replace",
            state=VersionState.ready,
            path=str(folder.relative_to(data_dir)),
            rows=args.rows,
            source="bench",
            created_by="bench",
        )
        s.add(dv)
        s.flush()
        ds.current_version_id = dv.id
        app = access.apply(
            s,
            world.actor(s, "consumer"),
            dataset=NAME,
            purpose="基准测试：沙箱聚合",
            fields=["person_id", "village_id", "age", "sex", "income"],
            until=access.today() + timedelta(days=1),
            mode="sandbox",
        )
        access.approve(s, steward, app.id)
        consumer = world.actor(s, "consumer")

    eng = service.engine()
    view = {"t": View(files=files, fields=["village_id", "age", "sex", "income"])}
    results: dict[str, tuple[list[float], list[float], int]] = {}
    loads: list[float] = []
    cpus: dict[str, list[float]] = {}
    for label, sql in QUERIES.items():
        base_sql = sql.replace(f'"{NAME}"', "t")
        full: list[float] = []
        cpu: list[float] = []
        base: list[float] = []
        groups = 0
        for _ in range(args.runs):
            loads.append(os.getloadavg()[0])
            t = time.perf_counter()
            eng.run_sql(base_sql, view, timeout=60, memory_limit=sandbox.MEMORY_LIMIT)
            base.append(time.perf_counter() - t)
            c = time.process_time()
            with db.sessionmaker() as s:
                t = time.perf_counter()
                res = sandbox.run_query(s, consumer, sql, timeout_s=60)
                full.append(time.perf_counter() - t)
                cpu.append(time.process_time() - c)
                s.rollback()
            groups = len(res.rows)
        results[label] = (full, base, groups)
        cpus[label] = cpu

    size = files[0].stat().st_size / 2**20
    lines = [
        f"### Sandbox aggregate over {args.rows:,} rows ({datetime.now(UTC):%Y-%m-%d %H:%M} UTC)",
        "",
        f"- Machine: {host}",
        f"- Load average (1-minute) before each run: {min(loads):.1f}–{max(loads):.1f}; "
        f"after: {load_average()}",
        f"- Data: one Parquet file, {size:,.0f} MiB, generated in {generated_s:.0f} s",
        f"- {args.runs} runs per query, interleaved; engine threads 2, memory limit {sandbox.MEMORY_LIMIT}",
        "",
        "| query | sandbox median s | sandbox p90 s | sandbox median CPU s (all threads) "
        "| baseline median s (Engine.run_sql, no checks) | ratio | groups |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for label, (full, base, groups) in results.items():
        f, b = median(full), median(base)
        p90, c = percentile(full, 90), median(cpus[label])
        lines.append(f"| {label} | {f:.3f} | {p90:.3f} | {c:.3f} | {b:.3f} | {f / b:.2f}× | {groups} |")
    text = "\n".join(lines) + "\n"
    print(text)
    if args.write:
        write_section(DOC, "data_sandbox", text)
    db.dispose()


if __name__ == "__main__":
    main()
