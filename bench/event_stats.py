"""Statistics queries over many events, read from the rollups (events/rollups.py): every stats
function, city-wide (the city centre's leader) and for one township (its dispatcher), over this
month, the last 90 days and the last 365 days, unfiltered and filtered (platform, lead org);
and the whole set of calls one cockpit screen makes. Median of --repeat runs after one
warm-up; baseline in the same process: a plain `SELECT count(*) FROM event` (touching every
row once).

    # build fresh databases (demo jurisdiction + N generated events + rollups), then measure
    .venv/bin/python bench/event_stats.py --prepare --count 1000000 --sqlite /tmp/stats.db \
        --pg postgresql://postgres@127.0.0.1:5432/cg_stats_bench
    # measure databases built before (--rebuild: recompute their rollups first, timed)
    .venv/bin/python bench/event_stats.py --sqlite /tmp/stats.db --pg postgresql://.../cg_stats_bench
"""

from __future__ import annotations

import argparse
import os
import platform
import sqlite3
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from datetime import timedelta
from functools import partial
from pathlib import Path
from typing import Any

from sqlalchemy import func, select, text

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import fresh_database

from civicgrid.accounts import service as accounts
from civicgrid.core.db import Database, utcnow
from civicgrid.core.migrate import upgrade
from civicgrid.demo import service as demo
from civicgrid.demo.events import generate_events
from civicgrid.events import rollups, stats
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
    fresh_database(url)
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
    db.dispose()
    rebuild(url)
    return took


def rebuild(url: str) -> float:
    """Recompute the rollups (the generator writes rows below the ORM: COPY / executemany)."""
    db = Database(url)
    start = time.perf_counter()
    with db.session() as s:
        result = rollups.rebuild(s)
    took = time.perf_counter() - start
    print(f"{url}: rollups rebuilt in {took:.1f} s: {result['rows']}", flush=True)
    if db.engine.dialect.name == "postgresql":
        with db.engine.connect().execution_options(isolation_level="AUTOCOMMIT") as c:
            # index-only scans need the visibility map
            c.execute(text("VACUUM ANALYZE event, event_timeline, event_rollup"))
    else:
        with db.engine.begin() as c:
            c.execute(text("ANALYZE"))
    db.dispose()
    return took


BACKEND_PID: list[int] = []  # the PostgreSQL backend serving the measuring session


def _cpu_seconds() -> float:
    """CPU time of this process and of its PostgreSQL backend: what a query costs whatever the
    load of the shared machine (the wall time waits for a core as well)."""
    cpu = time.process_time()
    for pid in BACKEND_PID:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        cpu += (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    return cpu


CPU: dict[tuple[str, str, str], float] = {}  # mean CPU ms per call, next to the wall medians


def timed(fn: Callable[[], Any], repeat: int, key: tuple[str, str, str] | None = None) -> float:
    fn()  # warm-up: caches, plans
    runs = []
    cpu0 = _cpu_seconds()
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        runs.append((time.perf_counter() - t) * 1000)
    if key is not None:
        CPU[key] = (_cpu_seconds() - cpu0) / repeat * 1000
    return statistics.median(runs)


def cockpit_calls(s: Any, actor: Any, win: stats.Window) -> dict[str, Callable[[], Any]]:
    """What one cockpit screen asks of the statistics (events/panels.py) for one period."""
    D = stats.Dimension
    last = stats.window().last
    trend = stats.window(last - timedelta(days=29), last)
    return {
        "summary": partial(stats.summary, s, actor, win),
        "flows (30-day trend)": partial(stats.flows, s, actor, trend),
        "funnel": partial(stats.funnel, s, actor, win),
        "by platform": partial(stats.breakdown, s, actor, win, D.platform),
        "by category (big class)": partial(
            stats.breakdown, s, actor, win, D.category, category_level="class"
        ),
        "by org": partial(stats.breakdown, s, actor, win, D.org),
        "handbacks": partial(stats.handbacks, s, actor, win),
        "by region": partial(stats.breakdown, s, actor, win, D.region),
        "regions (map)": partial(stats.counts_by_region, s, actor, win),
    }


def measure(url: str, repeat: int) -> tuple[dict[tuple[str, str, str], float], float, int]:
    db = Database(url)
    out: dict[tuple[str, str, str], float] = {}
    with db.session() as s:
        total = s.scalar(select(func.count()).select_from(Event)) or 0
        BACKEND_PID[:] = (
            [s.scalar(text("SELECT pg_backend_pid()"))] if s.bind.dialect.name == "postgresql" else []
        )
        baseline = timed(lambda: s.scalar(select(func.count()).select_from(Event)), repeat)
        today = stats.window().last
        for scope, username in (("city", "leader"), ("township", "dispatcher")):
            user = accounts.get_user_by_username(s, username)
            assert user is not None, f"no demo user {username}"
            actor = accounts.actor_for_user(s, user)
            in_scope = stats.scope_of(s, actor).where
            org = s.scalar(
                select(Event.lead_org_id).where(Event.lead_org_id.is_not(None), *in_scope).limit(1)
            )
            org_code = s.scalar(select(stats.Org.code).where(stats.Org.id == org))
            for wname, days in WINDOWS.items():
                win = stats.window(today - timedelta(days=days - 1), today) if days else stats.window()
                period = {None: stats.Period.day, 90: stats.Period.week, 365: stats.Period.month}[days]
                D = stats.Dimension
                calls = cockpit_calls(s, actor, win)
                queries: dict[str, Callable[[], Any]] = {
                    **calls,
                    f"by period ({period})": partial(stats.breakdown, s, actor, win, D.period, period=period),
                    "flows (window)": partial(stats.flows, s, actor, win),
                    "summary, platform filter": partial(
                        stats.summary, s, actor, win, stats.filters(s, platform=stats.Platform.safety)
                    ),
                    "summary, org filter": partial(
                        stats.summary, s, actor, win, stats.filters(s, org=org_code)
                    ),
                }
                if days == 365 and stats.window().last - win.first > timedelta(days=stats.MAX_BUCKETS):
                    queries.pop("flows (window)")
                for qname, fn in queries.items():
                    key = "by period" if qname.startswith("by period") else qname
                    k = (scope, wname, key)
                    out[k] = timed(fn, repeat, k)
                    print(
                        f"  {scope:8} {wname:8} {qname:26} {out[k]:8.1f} ms (CPU {CPU[k]:6.1f})", flush=True
                    )

                def screen(calls: dict[str, Callable[[], Any]] = calls) -> None:
                    for fn in calls.values():
                        fn()

                key = (scope, wname, "whole cockpit screen (9 calls)")
                out[key] = timed(screen, repeat, key)
                label = "whole cockpit screen"
                print(f"  {scope:8} {wname:8} {label:26} {out[key]:8.1f} ms (CPU {CPU[key]:6.1f})")
    db.dispose()
    return out, baseline, total


def write_cost(url: str, rounds: int) -> str:
    """What keeping the rollups costs a write: reports (service.create_event) and the first two
    steps (accept, dispatch), with the rollup listeners on and off in alternating batches of the
    same process on a fresh copy of the test world; CPU ms per event (this process and its
    database backend) and wall ms, medians over the batches."""
    from sqlalchemy import event as sa_event
    from sqlalchemy.orm import Session

    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from tests.events.conftest import build_world

    from civicgrid.events import actions, service
    from civicgrid.events.models import Channel

    fresh_database(url)
    upgrade(url)
    db = Database(url)
    with db.session() as s:
        build_world(s)
    listeners = [
        (Session, "after_flush", rollups._after_flush),
        (Session, "do_orm_execute", rollups._bulk_statement),
    ]

    def switch(on: bool) -> None:
        for target, name, fn in listeners:
            if on and not sa_event.contains(target, name, fn):
                sa_event.listen(target, name, fn)
            if not on and sa_event.contains(target, name, fn):
                sa_event.remove(target, name, fn)

    def batch(n: int) -> None:
        for i in range(n):
            with db.session() as s:
                who = accounts.actor_for_user(s, accounts.get_user_by_username(s, "resident"))
                number = service.create_event(
                    s,
                    who,
                    category_code="0102",
                    lon=2.5,
                    lat=2.5,
                    description=f"暴露垃圾 {i}",
                    channel=Channel.web,
                ).number
            with db.session() as s:
                d = accounts.actor_for_user(s, accounts.get_user_by_username(s, "dispatcher"))
                actions.act(s, d, number, "accept")
                actions.act(s, d, number, "dispatch")

    with db.session() as s:
        BACKEND_PID[:] = []
    per: dict[bool, list[tuple[float, float]]] = {True: [], False: []}
    size = 20
    batch(size)  # warm-up
    for r in range(rounds):
        for on in (r % 2 == 0, r % 2 == 1):
            switch(on)
            with db.engine.connect() as c:  # the pool's connection: its backend does the work
                pids = (
                    [c.exec_driver_sql("SELECT pg_backend_pid()").scalar()]
                    if db.engine.dialect.name == "postgresql"
                    else []
                )
            BACKEND_PID[:] = [p for p in pids if p]
            cpu0, t0 = _cpu_seconds(), time.perf_counter()
            batch(size)
            per[on].append(((_cpu_seconds() - cpu0) / size * 1000, (time.perf_counter() - t0) / size * 1000))
    switch(True)
    db.dispose()
    on_cpu, off_cpu = (statistics.median(c for c, _ in per[k]) for k in (True, False))
    on_wall, off_wall = (statistics.median(w for _, w in per[k]) for k in (True, False))
    return (
        f"report + accept + dispatch, {rounds} × {size} events per setting: CPU {on_cpu:.1f} ms/event with "
        f"rollups vs {off_cpu:.1f} without ({(on_cpu / off_cpu - 1) * 100:+.0f} %); wall {on_wall:.1f} vs "
        f"{off_wall:.1f} ms ({(on_wall / off_wall - 1) * 100:+.0f} %); load {os.getloadavg()[0]:.1f}"
    )


def table(name: str, res: dict[tuple[str, str, str], float], baseline: float, total: int) -> str:
    cols = [(scope, w) for scope in ("city", "township") for w in WINDOWS]
    queries = list(dict.fromkeys(k[2] for k in res))
    lines = [
        f"### {name}: {total:,} events; median wall ms (ratio to the baseline full count, {baseline:.1f} ms)"
        " · mean CPU ms of the client process and its database backend",
        "",
        "| query | " + " | ".join(f"{s} · {w}" for s, w in cols) + " |",
        "|---|" + "---:|" * len(cols),
    ]
    for q in queries:
        cells = [
            f"{res[(s, w, q)]:.1f} ({res[(s, w, q)] / baseline:.2f}) · {CPU.get((s, w, q), 0):.1f}"
            if (s, w, q) in res
            else "—"
            for s, w in cols
        ]
        lines.append(f"| {q} | " + " | ".join(cells) + " |")
    single = {k: v for k, v in res.items() if not k[2].startswith("whole")}
    screens = {k: v for k, v in res.items() if k[2].startswith("whole")}
    over = sum(v > 200 for v in single.values())
    lines += [
        "",
        f"{len(single) - over} of {len(single)} query medians within 200 ms; "
        f"{sum(v <= 1000 for v in screens.values())} of {len(screens)} whole screens within 1 s.",
    ]
    return "\n".join(lines)


def main() -> None:
    load_all()
    ap = argparse.ArgumentParser()
    ap.add_argument("--sqlite", help="SQLite file")
    ap.add_argument("--pg", help="PostgreSQL database URL")
    ap.add_argument("--prepare", action="store_true", help="build the databases first")
    ap.add_argument("--rebuild", action="store_true", help="recompute the rollups first (timed)")
    ap.add_argument(
        "--write-cost", type=int, default=0, metavar="ROUNDS", help="instead: what the rollups cost a write"
    )
    ap.add_argument("--count", type=int, default=1_000_000)
    ap.add_argument("--repeat", type=int, default=5)
    args = ap.parse_args()
    targets = []
    if args.sqlite:
        targets.append(("SQLite", f"sqlite:///{Path(args.sqlite).resolve()}"))
    if args.pg:
        targets.append(("PostgreSQL", args.pg))
    if args.write_cost:
        for name, url in targets:
            print(f"{name}: {write_cost(url, args.write_cost)}", flush=True)
        return
    sections = []
    for name, url in targets:
        took = prepare(url, args.count) if args.prepare else None
        rebuilt = rebuild(url) if args.rebuild and not args.prepare else None
        print(f"{name}: measuring (load average {os.getloadavg()[0]:.1f})", flush=True)
        res, baseline, total = measure(url, args.repeat)
        section = table(name, res, baseline, total)
        if took is not None:
            section += f" Generating the events took {took:.0f} s."
        if rebuilt is not None:
            section += f" Rebuilding the rollups took {rebuilt:.0f} s."
        sections.append(section + f" Load average during the run: {os.getloadavg()[0]:.1f}.")
    print()
    print(f"Machine: {cpu_model()}, {os.cpu_count()} logical cores; Python {platform.python_version()}, "
          f"SQLite {sqlite3.sqlite_version}; measured {utcnow():%Y-%m-%d %H:%M} UTC.")  # fmt: skip
    print()
    print("\n\n".join(sections))


if __name__ == "__main__":
    main()
