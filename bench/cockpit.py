"""The cockpit's data: every panel's query, and the whole big-screen page's data (all its panels
through the service, one shared summary), for the city centre's leader, a county leader
(临海市) and a township dispatcher, on the demo and on big generated databases.

Each panel is timed cold — a fresh context, no cache, no memo — as the first screen of an
interval would pay; the page is timed through `service.compute_many` with the cache cleared
before each run. Median of --repeat runs after one warm-up. Baseline in the same process: a
plain `SELECT count(*) FROM event` (touching every event once).

    # build a database: the demo jurisdiction (600 grids) and N events over 365 days
    .venv/bin/python bench/cockpit.py --prepare --count 1000000 --sqlite /tmp/cockpit.db \
        --pg postgresql://postgres@127.0.0.1:5432/cg_cockpit_bench
    # measure databases built before (and the demo of `make run`: --demo builds it in a temp dir)
    .venv/bin/python bench/cockpit.py --demo --sqlite /tmp/cockpit.db --pg postgresql://.../cg_cockpit_bench
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

from sqlalchemy import func, select, text
from sqlalchemy.engine import make_url

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import ROOT, fresh_database, machine_info, median, write_section

from civicgrid.accounts import service as accounts
from civicgrid.cockpit import service as cockpit
from civicgrid.cockpit.registry import View, panels
from civicgrid.core.db import Database
from civicgrid.core.migrate import upgrade
from civicgrid.demo import service as demo
from civicgrid.demo.events import MAX_COUNT, generate_events
from civicgrid.events import rollups
from civicgrid.events.models import Event
from civicgrid.models import load_all

DOC = ROOT / "docs" / "benchmarks-cockpit.md"
READERS = (("city", "leader"), ("county", "leader.linhai"), ("township", "dispatcher"))
GOAL_PANEL_MS = 200
GOAL_PAGE_MS = 1000


def prepare(url: str, count: int, *, days: int = 365, demo_events: int = 0) -> float:
    """A fresh database: the demo jurisdiction and `count` events (or the `make run` demo with
    `demo_events`), rollups rebuilt. Returns the seconds it took."""
    started = time.perf_counter()
    fresh_database(url)
    upgrade(url)
    db = Database(url)
    with db.session() as s:
        demo.load_demo(s, grids=600, seed=2021, data_dir=Path(tempfile.mkdtemp(prefix="cg-cockpit-")),
                       events=demo_events)  # fmt: skip
    # The generator takes at most MAX_COUNT events a call: bigger databases are built in parts,
    # one transaction each, with their own seeds (numbers continue each county's sequence).
    done = 0
    while done < count:
        part = min(MAX_COUNT, count - done)
        with db.session() as s:
            generate_events(s, count=part, seed=2021 + done // MAX_COUNT, days=days)
        done += part
        print(f"{url.split('@')[-1]}: {done:,} events, {time.perf_counter() - started:.0f} s", flush=True)
    if count:
        with db.session() as s:
            rollups.rebuild(s)
    if url.startswith("postgresql"):
        with db.engine.connect().execution_options(isolation_level="AUTOCOMMIT") as c:
            c.execute(text("VACUUM ANALYZE"))
    db.dispose()
    return time.perf_counter() - started


def replicate(src: str, dst: str, factor: int) -> float:
    """PostgreSQL: `dst` = a copy of `src` whose events are repeated `factor` times (new ids and
    numbers, everything else the same) and whose rollup counters are multiplied by `factor` —
    exactly what `rollups.rebuild` would count, since every copy has the same dimensions.
    Timelines are not copied (no panel reads them). A 10,000,000-event database in about half an
    hour and half the disk of generating it. Returns the seconds it took."""
    started = time.perf_counter()
    fresh_database(dst, template=str(make_url(src).database))
    db = Database(dst)
    with db.engine.begin() as c:
        base = int(c.scalar(text("SELECT max(id) FROM event")) or 0)
        cols = [str(r[0]) for r in c.execute(text(
            "SELECT column_name FROM information_schema.columns WHERE table_name = 'event' "
            "ORDER BY ordinal_position"))]  # fmt: skip
    for k in range(1, factor):
        picked = ", ".join(
            f"id + {k * base}" if col == "id" else f"number || '~{k}'" if col == "number" else col
            for col in cols
        )
        with db.engine.begin() as c:
            c.execute(
                text(f"INSERT INTO event ({', '.join(cols)}) SELECT {picked} FROM event WHERE id <= {base}")
            )
        print(f"copy {k} of {factor - 1}: {time.perf_counter() - started:.0f} s", flush=True)
    with db.engine.begin() as c:
        c.execute(
            text("UPDATE event_rollup SET " + ", ".join(f"{n} = {n} * {factor}" for n in rollups.COUNTERS))
        )
    with db.engine.connect().execution_options(isolation_level="AUTOCOMMIT") as c:
        c.execute(text("VACUUM ANALYZE"))
    db.dispose()
    return time.perf_counter() - started


def timed(fn: Callable[[], Any], repeat: int) -> float:
    fn()  # warm-up: caches of SQLite pages, PostgreSQL buffers, Python imports
    out = []
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        out.append((time.perf_counter() - t) * 1000)
    return median(out)


def measure(url: str, repeat: int) -> dict[str, Any]:
    load_all()
    db = Database(url)
    res: dict[str, Any] = {"panels": {}, "page": {}, "analytic": {}}
    with db.session() as s:
        res["events"] = s.scalar(select(func.count()).select_from(Event)) or 0
        res["baseline"] = timed(lambda: s.scalar(select(func.count()).select_from(Event)), repeat)
        for level, username in READERS:
            user = accounts.get_user_by_username(s, username)
            assert user is not None, username
            actor = accounts.actor_for_user(s, user)
            region = cockpit.cockpit_region(s, actor)

            def ctx(actor: Any = actor, region: Any = region) -> Any:
                return cockpit.context_for(s, actor, region)

            for p in panels(None, actor):
                c = ctx()
                bare = replace(c, memo=None)  # cold: no shared summary
                res["panels"].setdefault(p.key, {})[level] = timed(
                    lambda p=p, bare=bare: p.query(s, bare), repeat
                )

            def page(view: View, actor: Any = actor) -> None:
                cockpit.CACHE.clear()
                out = cockpit.compute_many(s, cockpit.visible_panels(actor, view), ctx())
                errors = [k for k, v in out.items() if "error" in v]
                assert not errors, errors

            res["page"][level] = timed(lambda: page(View.screen), repeat)
            res["analytic"][level] = timed(lambda: page(View.analytic), repeat)
            s.rollback()
    db.dispose()
    return res


def report(results: dict[str, dict[str, Any]], repeat: int) -> str:
    names = list(results)
    lines = [
        f"Machine: {machine_info()}.",
        f"Medians of {repeat} runs after one warm-up; each panel cold (no cache, no shared summary).",
        "Goal: ≤ 200 ms per panel, ≤ 1 s for the whole big-screen page.",
        "",
    ]
    for name in names:
        r = results[name]
        lines.append(f"- **{name}**: {r['events']:,} events; baseline `SELECT count(*) FROM event` "
                     f"{r['baseline']:.1f} ms")  # fmt: skip
    lines.append("")
    head = "| panel | " + " | ".join(f"{n} · {lvl}" for n in names for lvl, _u in READERS) + " |"
    lines += [head, "|---" * (1 + len(names) * len(READERS)) + "|"]
    keys = sorted({k for r in results.values() for k in r["panels"]})
    worst: dict[str, float] = {}
    for key in keys:
        cells = []
        for n in names:
            for lvl, _u in READERS:
                ms = results[n]["panels"].get(key, {}).get(lvl)
                cells.append("—" if ms is None else f"{ms:.0f}" + (" ⚠" if ms > GOAL_PANEL_MS else ""))
                if ms is not None:
                    worst[n] = max(worst.get(n, 0.0), ms)
        lines.append(f"| `{key}` | " + " | ".join(cells) + " |")
    for label, part in (
        ("**big-screen page (all panels)**", "page"),
        ("analytic page (all panels)", "analytic"),
    ):
        cells = []
        for n in names:
            for lvl, _u in READERS:
                ms = results[n][part][lvl]
                cells.append(f"{ms:.0f}" + (" ⚠" if part == "page" and ms > GOAL_PAGE_MS else ""))
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    lines.append("")
    lines.append("Times in milliseconds; ⚠ marks a number over the goal. Ratios to the baseline:")
    for n in names:
        r = results[n]
        page = max(r["page"].values())
        slow = worst.get(n, 0.0)
        lines.append(
            f"- {n}: slowest panel {slow:.0f} ms = {slow / r['baseline']:.1f}× the count; "
            f"slowest big-screen page {page:.0f} ms = {page / r['baseline']:.1f}×."
        )
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--prepare", action="store_true", help="build the databases first")
    ap.add_argument("--count", type=int, default=1_000_000)
    ap.add_argument("--sqlite", help="SQLite file of the big database")
    ap.add_argument("--pg", help="PostgreSQL URL of the big database")
    ap.add_argument(
        "--demo", action="store_true", help="also measure the `make run` demo (SQLite, 3,000 events)"
    )
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument(
        "--replicate-from", help="PostgreSQL URL of a prepared database: --pg becomes it × --factor"
    )
    ap.add_argument("--factor", type=int, default=10)
    ap.add_argument("--no-write", action="store_true", help="print only; leave docs/benchmarks-cockpit.md")
    args = ap.parse_args()
    results: dict[str, dict[str, Any]] = {}
    if args.demo:
        path = Path(tempfile.mkdtemp(prefix="cg-cockpit-demo-")) / "demo.db"
        secs = prepare(f"sqlite:///{path}", 0, demo_events=3000)
        print(f"demo built in {secs:.0f} s", flush=True)
        results["demo, SQLite"] = measure(f"sqlite:///{path}", args.repeat)
    for kind, url in (
        ("SQLite", f"sqlite:///{args.sqlite}" if args.sqlite else None),
        ("PostgreSQL", args.pg),
    ):
        if not url:
            continue
        if kind == "PostgreSQL" and args.replicate_from:
            secs = replicate(args.replicate_from, url, args.factor)
            print(f"{kind}: replicated × {args.factor} in {secs:.0f} s", flush=True)
        elif args.prepare:
            secs = prepare(url, args.count)
            print(f"{kind}: {args.count:,} events prepared in {secs:.0f} s", flush=True)
        r = measure(url, args.repeat)
        results[f"{r['events'] // 1000:,}k events, {kind}"] = r
    text_ = report(results, args.repeat)
    print(text_)
    if not args.no_write:
        write_section(
            DOC, "cockpit", "## Cockpit panels and pages\n\n" + text_, title="# Benchmarks: cockpit\n\n"
        )


if __name__ == "__main__":
    main()
