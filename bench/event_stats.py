"""Statistics queries over many events: every stats function, city-wide (the city centre's
leader) and for one township (its dispatcher), over this month, the last 90 days and the last
365 days. Median of --repeat runs after one warm-up; baseline in the same process: a plain
`SELECT count(*) FROM event` (touching every row once).

    # build fresh databases (demo jurisdiction + N generated events), then measure
    .venv/bin/python bench/event_stats.py --prepare --count 1000000 --sqlite /tmp/stats.db \
        --pg postgresql://postgres@127.0.0.1:5432/cg_stats_bench
    # measure databases built before
    .venv/bin/python bench/event_stats.py --sqlite /tmp/stats.db --pg postgresql://.../cg_stats_bench
"""

from __future__ import annotations

import argparse
import os
import platform
import sqlite3
import statistics
import tempfile
import time
from collections.abc import Callable
from datetime import timedelta
from functools import partial
from pathlib import Path
from typing import Any

from sqlalchemy import create_engine, func, select, text
from sqlalchemy.engine import make_url

from civicgrid.accounts import service as accounts
from civicgrid.core.db import Database, utcnow
from civicgrid.core.migrate import upgrade
from civicgrid.demo import service as demo
from civicgrid.demo.events import generate_events
from civicgrid.events import stats
from civicgrid.events.models import Event
from civicgrid.models import load_all

WINDOWS = {"month": None, "90 days": 90, "365 days": 365}


def cpu_model() -> str:
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.processor()


def prepare(url: str, count: int) -> float:
    """A fresh database with the demo jurisdiction and `count` events; returns the seconds the
    generation took (including its commit)."""
    if url.startswith("postgresql"):
        u = make_url(url.replace("postgresql://", "postgresql+psycopg://", 1))
        admin = create_engine(u.set(database="postgres").render_as_string(hide_password=False),
                              isolation_level="AUTOCOMMIT")  # fmt: skip
        with admin.connect() as c:
            c.execute(text(f'DROP DATABASE IF EXISTS "{u.database}" WITH (FORCE)'))
            c.execute(text(f'CREATE DATABASE "{u.database}"'))
        admin.dispose()
    else:
        Path(url.removeprefix("sqlite:///")).unlink(missing_ok=True)
    upgrade(url)
    db = Database(url)
    with db.session() as s:
        demo.load_demo(s, grids=600, seed=2021, data_dir=Path(tempfile.mkdtemp(prefix="cg-stats-")))
    start = time.perf_counter()
    with db.session() as s:
        report = generate_events(s, count=count, seed=2021, days=365)
    took = time.perf_counter() - start
    print(
        f"{url}: generated {report.count} events, {report.timeline_entries} timeline entries in {took:.1f} s"
    )
    if db.engine.dialect.name == "postgresql":
        with db.engine.connect().execution_options(isolation_level="AUTOCOMMIT") as c:
            c.execute(
                text("VACUUM ANALYZE event, event_timeline")
            )  # index-only scans need the visibility map
    db.dispose()
    return took


def timed(fn: Callable[[], Any], repeat: int) -> float:
    fn()  # warm-up: caches, plans
    runs = []
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        runs.append((time.perf_counter() - t) * 1000)
    return statistics.median(runs)


def measure(url: str, repeat: int) -> tuple[dict[tuple[str, str, str], float], float, int]:
    db = Database(url)
    out: dict[tuple[str, str, str], float] = {}
    with db.session() as s:
        total = s.scalar(select(func.count()).select_from(Event)) or 0
        baseline = timed(lambda: s.scalar(select(func.count()).select_from(Event)), repeat)
        today = stats.window().last
        for scope, username in (("city", "leader"), ("township", "dispatcher")):
            user = accounts.get_user_by_username(s, username)
            assert user is not None, f"no demo user {username}"
            actor = accounts.actor_for_user(s, user)
            for wname, days in WINDOWS.items():
                win = stats.window(today - timedelta(days=days - 1), today) if days else stats.window()
                period = {None: stats.Period.day, 90: stats.Period.week, 365: stats.Period.month}[days]
                D = stats.Dimension
                queries: dict[str, Callable[[], Any]] = {
                    "summary": partial(stats.summary, s, actor, win),
                    "by region": partial(stats.breakdown, s, actor, win, D.region),
                    "by platform": partial(stats.breakdown, s, actor, win, D.platform),
                    "by category (big class)": partial(
                        stats.breakdown, s, actor, win, D.category, category_level="class"
                    ),
                    "by org": partial(stats.breakdown, s, actor, win, D.org),
                    f"by period ({period})": partial(stats.breakdown, s, actor, win, D.period, period=period),
                    "handbacks": partial(stats.handbacks, s, actor, win),
                    "funnel": partial(stats.funnel, s, actor, win),
                }
                for qname, fn in queries.items():
                    key = "by period" if qname.startswith("by period") else qname
                    out[(scope, wname, key)] = timed(fn, repeat)
                    print(f"  {scope:8} {wname:8} {qname:26} {out[(scope, wname, key)]:8.1f} ms", flush=True)
    db.dispose()
    return out, baseline, total


def table(name: str, res: dict[tuple[str, str, str], float], baseline: float, total: int) -> str:
    cols = [(scope, w) for scope in ("city", "township") for w in WINDOWS]
    queries = list(dict.fromkeys(k[2] for k in res))
    lines = [
        f"### {name}: {total:,} events; median ms (ratio to the baseline full count, {baseline:.1f} ms)",
        "",
        "| query | " + " | ".join(f"{s} · {w}" for s, w in cols) + " |",
        "|---|" + "---:|" * len(cols),
    ]
    for q in queries:
        cells = [f"{res[(s, w, q)]:.1f} ({res[(s, w, q)] / baseline:.2f})" for s, w in cols]
        lines.append(f"| {q} | " + " | ".join(cells) + " |")
    over = sum(v > 200 for v in res.values())
    lines += ["", f"{len(res) - over} of {len(res)} medians within 200 ms."]
    return "\n".join(lines)


def main() -> None:
    load_all()
    ap = argparse.ArgumentParser()
    ap.add_argument("--sqlite", help="SQLite file")
    ap.add_argument("--pg", help="PostgreSQL database URL")
    ap.add_argument("--prepare", action="store_true", help="build the databases first")
    ap.add_argument("--count", type=int, default=1_000_000)
    ap.add_argument("--repeat", type=int, default=5)
    args = ap.parse_args()
    targets = []
    if args.sqlite:
        targets.append(("SQLite", f"sqlite:///{Path(args.sqlite).resolve()}"))
    if args.pg:
        targets.append(("PostgreSQL", args.pg))
    sections = []
    for name, url in targets:
        took = prepare(url, args.count) if args.prepare else None
        print(f"{name}: measuring (load average {os.getloadavg()[0]:.1f})", flush=True)
        res, baseline, total = measure(url, args.repeat)
        section = table(name, res, baseline, total)
        if took is not None:
            section += f" Generating the events took {took:.0f} s."
        sections.append(section + f" Load average during the run: {os.getloadavg()[0]:.1f}.")
    print()
    print(f"Machine: {cpu_model()}, {os.cpu_count()} logical cores; Python {platform.python_version()}, "
          f"SQLite {sqlite3.sqlite_version}; measured {utcnow():%Y-%m-%d %H:%M} UTC.")  # fmt: skip
    print()
    print("\n\n".join(sections))


if __name__ == "__main__":
    main()
