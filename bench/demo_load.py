"""Time the demo jurisdiction: `build_jurisdiction` alone and the full `load_demo` into a
fresh, migrated SQLite database (optionally also PostgreSQL), repeated; prints the medians
as a Markdown section and writes it to docs/benchmarks-demo.md.

    .venv/bin/python bench/demo_load.py [--grids 10000] [--repeat 3] [--pg postgresql://...]
"""

from __future__ import annotations

import argparse
import os
import platform
import sqlite3
import statistics
import tempfile
import time
import uuid
from collections.abc import Callable
from pathlib import Path

import shapely
import sqlalchemy
from sqlalchemy import create_engine, func, select, text
from sqlalchemy.engine import make_url

from civicgrid.accounts.models import Org, User
from civicgrid.core.db import Database
from civicgrid.core.migrate import upgrade
from civicgrid.demo import service as demo
from civicgrid.models import load_all
from civicgrid.regions.models import Region

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "docs" / "benchmarks-demo.md"


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def load_once(url: str, grids: int, seed: int, data_dir: Path) -> tuple[float, dict[str, int]]:
    """Migrate (untimed), then time load_demo including its commit."""
    upgrade(url)
    db = Database(url)
    try:
        start = time.perf_counter()
        with db.session() as session:
            demo.load_demo(session, grids=grids, seed=seed, data_dir=data_dir)
        elapsed = time.perf_counter() - start
        with db.session() as session:
            counts = {
                "regions": session.scalar(select(func.count()).select_from(Region)) or 0,
                "orgs": session.scalar(select(func.count()).select_from(Org)) or 0,
                "users": session.scalar(select(func.count()).select_from(User)) or 0,
            }
    finally:
        db.dispose()
    return elapsed, counts


def sqlite_run(grids: int, seed: int) -> tuple[float, dict[str, int]]:
    with tempfile.TemporaryDirectory(prefix="civicgrid-bench-") as tmp:
        return load_once(f"sqlite:///{tmp}/civicgrid.db", grids, seed, Path(tmp))


def pg_run(server: str, grids: int, seed: int) -> tuple[float, dict[str, int]]:
    base = make_url(server.replace("postgresql://", "postgresql+psycopg://", 1))
    name = f"cg_bench_{uuid.uuid4().hex[:12]}"
    admin = create_engine(base.render_as_string(hide_password=False), isolation_level="AUTOCOMMIT")
    with admin.connect() as c:
        c.execute(text(f'CREATE DATABASE "{name}"'))
    try:
        with tempfile.TemporaryDirectory(prefix="civicgrid-bench-") as tmp:
            url = base.set(database=name).render_as_string(hide_password=False)
            return load_once(url, grids, seed, Path(tmp))
    finally:
        with admin.connect() as c:
            c.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


def median_of(repeat: int, run: Callable[[], float]) -> tuple[float, list[float]]:
    times = [run() for _ in range(repeat)]
    return statistics.median(times), times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--grids", type=int, default=10000)
    parser.add_argument("--seed", type=int, default=2021)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument(
        "--pg", default=os.environ.get("CIVICGRID_BENCH_PG", ""), help="PostgreSQL server URL"
    )
    parser.add_argument("--no-write", action="store_true", help="print only; leave docs/ alone")
    args = parser.parse_args()
    load_all()

    def build() -> float:
        start = time.perf_counter()
        demo.build_jurisdiction(args.grids, args.seed)
        return time.perf_counter() - start

    build_median, build_times = median_of(args.repeat, build)
    counts: dict[str, int] = {}

    def sqlite_load() -> float:
        elapsed, c = sqlite_run(args.grids, args.seed)
        counts.update(c)
        return elapsed

    sqlite_median, sqlite_times = median_of(args.repeat, sqlite_load)
    rows = [
        ("`build_jurisdiction` (geometry and names only)", build_median, build_times),
        ("`load_demo` into a fresh SQLite file (incl. commit)", sqlite_median, sqlite_times),
    ]
    if args.pg:
        pg_median, pg_times = median_of(args.repeat, lambda: pg_run(args.pg, args.grids, args.seed)[0])
        rows.append(("`load_demo` into a fresh PostgreSQL database (incl. commit)", pg_median, pg_times))

    fmt = ", ".join
    lines = [
        f"## Demo jurisdiction: {args.grids} grids",
        "",
        f"Command: `.venv/bin/python bench/demo_load.py --grids {args.grids} --repeat {args.repeat}"
        + (" --pg …`" if args.pg else "`"),
        f"Seed {args.seed}; {counts.get('regions', '?')} regions, {counts.get('orgs', '?')} orgs, "
        f"{counts.get('users', '?')} users per load; median of {args.repeat} runs.",
        "",
        "| step | median (s) | runs (s) |",
        "|---|---:|---|",
        *[f"| {name} | {m:.2f} | {fmt(f'{t:.2f}' for t in ts)} |" for name, m, ts in rows],
        "",
        f"Machine: {cpu_model()}, {os.cpu_count()} logical cores; {platform.system()} {platform.release()}; "
        f"Python {platform.python_version()}, SQLite {sqlite3.sqlite_version}, "
        f"SQLAlchemy {sqlalchemy.__version__}, shapely {shapely.__version__} (GEOS "
        f"{'.'.join(map(str, shapely.geos_version))}).",
        "",
        "The database migration (`civicgrid db upgrade`) is not timed. The load hashes 11 argon2 "
        "passwords (10 named demo users and the one shared grid-worker password); the per-grid "
        "worker accounts are inserted in bulk.",
        "",
    ]
    section = "\n".join(lines)
    print(section)
    if not args.no_write:
        OUT.write_text("# Benchmarks: demo jurisdiction\n\n" + section, encoding="utf-8")
        print(f"written to {OUT.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
