"""Event lists and their export: CSV and Excel export of the full 100,000-row cap, the search
list (jieba terms, ranking) and the dispatcher's queue page data, over the demo jurisdiction
with generated events. Median of --repeat runs after one warm-up. Baseline in the same process:
the same rows read with one plain SELECT of the exported columns and written by csv.writer
(what an export costs without describe(): names, masking, deadlines, labels).

    .venv/bin/python bench/events_web_export.py --count 100000 [--pg postgresql://…/cg_export_bench]

Prints a Markdown section for docs/benchmarks-events-web.md.
"""

from __future__ import annotations

import argparse
import csv
import io
import os
import platform
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from sqlalchemy import create_engine, select, text
from sqlalchemy.engine import make_url

from civicgrid.accounts import service as accounts
from civicgrid.core.auth import Actor
from civicgrid.core.db import Database
from civicgrid.core.i18n import set_locale
from civicgrid.core.migrate import upgrade
from civicgrid.core.pagination import PageParams, paginate
from civicgrid.demo import service as demo
from civicgrid.demo.events import generate_events
from civicgrid.events import export
from civicgrid.events.models import Event


def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as fh:
            for line in fh:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def prepare(url: str, count: int) -> None:
    if url.startswith("postgresql"):
        base = make_url(url.replace("postgresql://", "postgresql+psycopg://", 1))
        admin = create_engine(base.set(database="postgres"), isolation_level="AUTOCOMMIT")
        with admin.connect() as c:
            c.execute(text(f'DROP DATABASE IF EXISTS "{base.database}" WITH (FORCE)'))
            c.execute(text(f'CREATE DATABASE "{base.database}"'))
        admin.dispose()
    upgrade(url)
    db = Database(url)
    with db.session() as s:
        demo.load_demo(s, grids=600, seed=2021, data_dir=Path(tempfile.mkdtemp(prefix="cg-export-")))
    with db.session() as s:
        generate_events(s, count=count, seed=2021, days=365)
    db.dispose()


def actor(db: Database, username: str) -> Actor:
    with db.session() as s:
        user = accounts.get_user_by_username(s, username)
        assert user is not None
        return accounts.actor_for_user(s, user)


def timed(fn: Callable[[], Any], repeat: int) -> tuple[float, Any]:
    fn()  # warm-up
    runs, out = [], None
    for _ in range(repeat):
        t = time.perf_counter()
        out = fn()
        runs.append(time.perf_counter() - t)
    return statistics.median(runs), out


def drain(chunks: Any) -> int:
    return sum(len(c) for c in chunks)


def baseline_csv(db: Database, stmt: Any) -> int:
    cols = [Event.number, Event.state, Event.title, Event.category_id, Event.platform, Event.level]
    cols += [Event.address, Event.grid_id, Event.lon, Event.lat, Event.reporter_name, Event.owner_org_id]
    cols += [Event.lead_org_id, Event.reported_at, Event.handle_due_at, Event.description, Event.result]
    ids = stmt.with_only_columns(Event.id).order_by(None).limit(export.EXPORT_CAP).subquery()
    buf = io.StringIO()
    w = csv.writer(buf)
    with db.session() as s:
        for row in s.execute(select(*cols).where(Event.id.in_(select(ids.c.id)))):
            w.writerow(row)
    return len(buf.getvalue().encode("utf-8"))


def measure(url: str, repeat: int) -> list[tuple[str, str, float, str]]:
    set_locale("zh_Hans")
    db = Database(url)
    leader, dispatcher = actor(db, "leader"), actor(db, "dispatcher")
    everything = export.list_stmt(leader, "search", export.Filters())
    with db.session() as s:
        rows = min(export.count(s, everything), export.EXPORT_CAP)
    out: list[tuple[str, str, float, str]] = []
    base, size = timed(lambda: baseline_csv(db, everything), repeat)
    out.append(("baseline: plain SELECT + csv.writer", f"{rows:,} rows", base, f"{size / 1e6:.1f} MB"))
    t, size = timed(lambda: drain(export.csv_chunks(db, leader, everything)), repeat)
    out.append(("CSV export (describe, masking, labels)", f"{rows:,} rows", t, f"{size / 1e6:.1f} MB"))
    t, size = timed(lambda: drain(export.xlsx_chunks(db, leader, everything)), max(1, repeat // 2))
    out.append(("Excel export (openpyxl write-only)", f"{rows:,} rows", t, f"{size / 1e6:.1f} MB"))

    def page(name: str, who: Actor, q: str = "") -> int:
        stmt = export.list_stmt(who, name, export.Filters(q=q))
        with db.session() as s:
            events, total = paginate(s, stmt, PageParams(page=1, size=50))
            for e in events:
                export.row_of(s, who, e)
        return total

    for label, name, who, q in (
        ("search page, no text (city leader)", "search", leader, ""),
        ("search page, q=小区门口垃圾 (city leader)", "search", leader, "小区门口垃圾"),
        ("search page, q=占道经营 (city leader)", "search", leader, "占道经营"),
        ("queue page (township dispatcher)", "queue", dispatcher, ""),
    ):
        t, total = timed(lambda name=name, who=who, q=q: page(name, who, q), repeat)
        out.append((label, f"{total:,} matches", t, "50 rows + count"))
    db.dispose()
    return [(*o[:2], o[2], o[3]) for o in out] + [("_baseline", "", base, "")]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--count", type=int, default=100_000)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--sqlite", default=str(Path(tempfile.gettempdir()) / "cg-export-bench.db"))
    ap.add_argument("--pg", default="")
    ap.add_argument("--no-prepare", action="store_true")
    args = ap.parse_args()
    targets = [("SQLite", f"sqlite:///{args.sqlite}")]
    if args.pg:
        targets.append(("PostgreSQL", args.pg))
    print(
        f"Machine: {cpu_model()}, {os.cpu_count()} cores; {args.count:,} generated events, demo 600 grids\n"
    )
    for name, url in targets:
        if not args.no_prepare:
            if name == "SQLite" and os.path.exists(args.sqlite):
                os.remove(args.sqlite)
            t = time.perf_counter()
            prepare(url, args.count)
            print(f"({name}: prepared in {time.perf_counter() - t:.0f} s)\n")
        results = measure(url, args.repeat)
        base = next(r[2] for r in results if r[0] == "_baseline")
        print(f"### {name}\n")
        print("| what | size | median | output | ratio to baseline |")
        print("|---|---|---|---|---|")
        for label, n, t, extra in results:
            if label != "_baseline":
                print(f"| {label} | {n} | {t * 1000:,.0f} ms | {extra} | {t / base:.1f}× |")
        print()


if __name__ == "__main__":
    main()
