"""Risk rule evaluation at scale: the worker's incremental run per new event with 50 active
rules and 1,000,000 events stored, and the periodic full pass over the same store.

    # build a database once (demo jurisdiction, 600 grids, N generated events over 365 days)
    .venv/bin/python bench/risk_eval.py --prepare --count 1000000 --sqlite /tmp/risk.db
    # measure (SQLite and/or PostgreSQL databases built before)
    .venv/bin/python bench/risk_eval.py --sqlite /tmp/risk.db [--pg postgresql://.../cg_risk_bench]

Incremental: one new event goes in through `events.service.create_event` (not timed), then one
worker run (`risks.service.evaluate_new` in its own session and transaction, commit included)
is timed; median and p95 over --events runs. Also in batches of 100 (time per event). Full
pass: `risks.service.full_pass`, the first run (raising the warnings) and then the idempotent
repeats (median). Baselines in the same process: a primary-key read of one event (the cheapest
round trip) and `SELECT count(*) FROM event` (every row once). Results go to
docs/benchmarks-risks.md.
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import tempfile
import time
from datetime import timedelta
from pathlib import Path
from typing import Any

from sqlalchemy import delete, func, select, text

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import ROOT, fresh_database, machine_info, median, percentile

from civicgrid.accounts import service as accounts
from civicgrid.accounts.models import Membership, Org, OrgKind, User
from civicgrid.core.auth import SYSTEM
from civicgrid.core.db import Database, utcnow
from civicgrid.core.migrate import upgrade
from civicgrid.demo import service as demo
from civicgrid.demo.events import generate_events
from civicgrid.events import service as events
from civicgrid.events.models import Category, Channel, Event
from civicgrid.models import load_all
from civicgrid.regions.models import Region, RegionLevel
from civicgrid.risks import service as risks
from civicgrid.risks.models import (
    Cursor,
    RiskRule,
    Subject,
    Warning,
    WarningEntry,
    WarningEvidence,
)

DOC = ROOT / "docs" / "benchmarks-risks.md"


def prepare(url: str, count: int) -> None:
    fresh_database(url)
    upgrade(url)
    db = Database(url)
    with db.session() as s:
        demo.load_demo(s, grids=600, seed=2021, data_dir=Path(tempfile.mkdtemp(prefix="cg-risk-")))
    start = time.perf_counter()
    with db.session() as s:
        report = generate_events(s, count=count, seed=2021, days=365)
    print(f"{url}: generated {report.count} events in {time.perf_counter() - start:.0f} s", flush=True)
    if url.startswith("postgresql"):
        # What autovacuum does soon after a bulk load: the visibility map lets the covering
        # indexes answer counts without visiting the table.
        with db.engine.connect().execution_options(isolation_level="AUTOCOMMIT") as c:
            c.execute(text("VACUUM (ANALYZE) event"))
    db.dispose()


# 50 rules over the whole city: the kinds and parameters a county centre would configure.
def rule_specs(session: Any) -> list[tuple[str, str, dict[str, Any]]]:
    classes = [c for c in session.scalars(select(Category.code).where(Category.parent_id.is_(None)))]
    subs = list(
        session.scalars(select(Category.code).where(Category.parent_id.is_not(None)).order_by(Category.code))
    )
    rng = random.Random(7)
    specs: list[tuple[str, str, dict[str, Any]]] = []
    for i in range(20):
        per = ["township", "village", "county"][i % 3]
        days = [1, 3, 7, 14][i % 4]
        base = {"township": 40, "village": 12, "county": 200}[per] * days
        specs.append(
            (
                f"阈值{i}",
                "threshold",
                {
                    "categories": [classes[i % len(classes)]],
                    "window_days": days,
                    "per": per,
                    "levels": {"yellow": base, "orange": base * 2, "red": base * 4},
                },
            )
        )
    for i in range(10):
        specs.append(
            (
                f"聚集{i}",
                "cluster",
                {
                    "categories": [classes[(i * 3) % len(classes)]],
                    "radius_m": [100, 200, 300][i % 3],
                    "days": [1, 2, 3][i % 3],
                    "levels": {"yellow": 4, "orange": 6, "red": 10},
                },
            )
        )
    for i in range(10):
        specs.append(
            (
                f"趋势{i}",
                "trend",
                {
                    "categories": [rng.choice(subs)],
                    "min_count": 8,
                    "per": "township",
                    "levels": {"yellow": 100, "orange": 200, "red": 400},
                },
            )
        )
    for i in range(10):
        key = "address" if i < 5 else "party"
        specs.append(
            (
                f"重复{i}",
                "repeat",
                {
                    "key": key,
                    "days": [30, 60, 90][i % 3],
                    "levels": {"yellow": 6, "orange": 10, "red": 20},
                    **({"categories": [classes[i % len(classes)]]} if i % 2 else {}),
                },
            )
        )
    return specs


def reset_risks(db: Database) -> None:
    with db.session() as s:
        for model in (WarningEvidence, WarningEntry, Warning, Subject, Cursor):
            s.execute(delete(model))
        s.execute(delete(RiskRule))
        max_id = s.scalar(select(func.max(Event.id))) or 0
        for name, kind, params in rule_specs(s):
            risks.create_rule(
                s,
                SYSTEM,
                risks.RuleInput(name=name, kind=kind, params=params, region_code=_city(s).code),
            )
        # The worker has caught up with history: only new events are incremental work.
        s.add(Cursor(name="events", last_id=max_id, updated_at=utcnow()))


def _city(s: Any) -> Region:
    return s.scalars(select(Region).where(Region.level == RegionLevel.city)).first()


def _reporter(s: Any) -> Any:
    """A dispatcher of the first township office acts as the reporter of the new events."""
    org = s.scalars(select(Org).where(Org.kind == OrgKind.township_office).order_by(Org.id)).first()
    user = s.scalars(select(User).join(Membership).where(Membership.org_id == org.id)).first()
    return accounts.actor_for_user(s, user)


def _new_event(db: Database, rng: random.Random, grids: list[Region], cats: list[str]) -> None:
    with db.session() as s:
        g = rng.choice(grids)
        lon = rng.uniform(g.min_lon, g.max_lon)
        lat = rng.uniform(g.min_lat, g.max_lat)
        for _ in range(20):  # a point inside the grid polygon's bounding box, inside the jurisdiction
            try:
                events.create_event(
                    s,
                    _reporter(s),
                    category_code=rng.choice(cats),
                    lon=lon,
                    lat=lat,
                    description="基准测试新事件",
                    address=f"{g.name}东山路{rng.randint(1, 300)}号",
                    channel=Channel.web,
                )
                return
            except Exception:
                lon, lat = g.centroid_lon, g.centroid_lat


def timed(fn: Any) -> float:
    start = time.perf_counter()
    fn()
    return (time.perf_counter() - start) * 1000


def measure(url: str, n_events: int, full_repeats: int) -> dict[str, Any]:
    load_all()
    db = Database(url)
    reset_risks(db)
    with db.session() as s:
        stored = s.scalar(select(func.count(Event.id)))
        grids = list(s.scalars(select(Region).where(Region.level == RegionLevel.grid)))
        for g in grids:
            s.expunge(g)
        cats = list(
            s.scalars(select(Category.code).where(Category.parent_id.is_not(None), Category.active.is_(True)))
        )
        any_id = s.scalar(select(func.max(Event.id)))
    rng = random.Random(11)
    out: dict[str, Any] = {"url": url.split("@")[-1], "stored": stored}

    def pk_read() -> None:
        with db.session() as s:
            s.scalar(select(Event.number).where(Event.id == any_id))

    def count_all() -> None:
        with db.session() as s:
            s.scalar(select(func.count()).select_from(Event))

    out["pk_read_ms"] = median([timed(pk_read) for _ in range(50)])
    out["count_ms"] = median([timed(count_all) for _ in range(3)])

    def run_worker() -> dict[str, int]:
        with db.session() as s:
            return risks.evaluate_new(s)

    run_worker()  # warm-up: parse the rules, fill caches

    def write_floor() -> None:  # the cheapest write transaction: one row updated, committed
        with db.session() as s:
            s.execute(text("UPDATE risk_cursor SET updated_at = updated_at WHERE name = 'events'"))

    out["write_floor_ms"] = median([timed(write_floor) for _ in range(50)])
    singles: list[float] = []
    quiet: list[float] = []
    busy: list[float] = []
    found = 0
    # The rule evaluation proper (`evaluate_events`: the rules the event could trigger, their
    # reads, raising) apart from the worker's bookkeeping around it (session, cursor lock and
    # read, cursor move, commit), which a batch of events shares.
    inner: list[float] = []
    evaluate_events = risks.evaluate_events

    def timed_evaluation(*args: Any, **kw: Any) -> None:
        t = time.perf_counter()
        evaluate_events(*args, **kw)
        inner.append((time.perf_counter() - t) * 1000)

    risks.evaluate_events = timed_evaluation  # type: ignore[assignment]
    for _ in range(n_events):
        _new_event(db, rng, grids, cats)
        start = time.perf_counter()
        stats = run_worker()
        ms = (time.perf_counter() - start) * 1000
        assert stats.get("events") == 1, stats
        singles.append(ms)
        (busy if stats.get("findings") else quiet).append(ms)
        found += stats.get("findings", 0)
    risks.evaluate_events = evaluate_events  # type: ignore[assignment]
    out["evaluation_median_ms"] = median(inner)
    out["evaluation_p95_ms"] = percentile(inner, 95)
    out["incremental_median_ms"] = median(singles)
    out["incremental_p95_ms"] = percentile(singles, 95)
    out["incremental_quiet_median_ms"] = median(quiet)
    out["incremental_busy_median_ms"] = median(busy)
    out["incremental_busy_runs"] = len(busy)
    out["incremental_findings"] = found
    batch = []
    for _ in range(3):
        for _ in range(100):
            _new_event(db, rng, grids, cats)
        batch.append(timed(run_worker) / 100)
    out["batch100_per_event_ms"] = median(batch)

    def full() -> dict[str, int]:
        with db.session() as s:
            return risks.full_pass(s)

    first_stats: dict[str, int] = {}
    out["full_first_s"] = timed(lambda: first_stats.update(full())) / 1000
    out["full_first_stats"] = first_stats
    repeats = [timed(full) / 1000 for _ in range(full_repeats)]
    out["full_repeat_s"] = median(repeats)
    with db.session() as s:
        out["warnings"] = s.scalar(select(func.count()).select_from(Warning))
        out["evidence"] = s.scalar(select(func.count()).select_from(WarningEvidence))
    db.dispose()
    return out


def report(results: list[dict[str, Any]], n_events: int) -> str:
    lines = [
        "## Risk rule evaluation (bench/risk_eval.py)",
        "",
        f"Machine: {machine_info()}.",
        "",
        "50 active rules over the whole demo city (600 grids): 20 threshold (1–14 day windows, per",
        "county/township/village), 10 cluster (100–300 m, 1–3 days), 10 trend (week over week, per",
        "township), 10 repeat (5 by address, 5 by party, 30–90 days). Events: `generate_events`, 365 days.",
        "Each incremental run is a whole worker run: cursor lock, read, subject index insert, evaluation,",
        "raising or adding evidence, cursor update and commit (`synchronous=FULL` on SQLite).",
        "",
        "| backend | events stored | incremental run, one new event: median (p95) |"
        " runs that found nothing / runs that added evidence (medians) | batch of 100, per event |"
        " full pass, first (raises) | full pass, repeat (median) | baseline: PK read |"
        " baseline: one-row write transaction | baseline: count(*) |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in results:
        inc = f"{r['incremental_median_ms']:.2f} ms ({r['incremental_p95_ms']:.2f} ms)"
        split = (
            f"{r['incremental_quiet_median_ms']:.2f} ms / {r['incremental_busy_median_ms']:.2f} ms"
            f" ({r['incremental_busy_runs']} of {n_events} runs)"
        )
        lines.append(
            f"| {r['backend']} | {r['stored']:,} | {inc} | {split} | {r['batch100_per_event_ms']:.2f} ms "
            f"| {r['full_first_s']:.1f} s | {r['full_repeat_s']:.1f} s | {r['pk_read_ms']:.2f} ms "
            f"| {r['write_floor_ms']:.2f} ms | {r['count_ms']:.0f} ms |"
        )
    lines += [""]
    for r in results:
        lines.append(
            f"- {r['backend']}: of a single-event run, the rule evaluation proper (`evaluate_events`) "
            f"took {r['evaluation_median_ms']:.2f} ms median (p95 {r['evaluation_p95_ms']:.2f} ms); the rest "
            f"is the worker's session, cursor lock and read, cursor move and commit."
        )
        lines.append(
            f"- {r['backend']}: {n_events} single-event runs found {r['incremental_findings']} findings; the first full "  # noqa: E501
            f"pass left {r['warnings']:,} warnings with {r['evidence']:,} evidence links "
            f"(`{json.dumps(r['full_first_stats'])}`). Ratio incremental median / PK read: "
            f"{r['incremental_median_ms'] / r['pk_read_ms']:.0f}×; full pass repeat / count(*): "
            f"{r['full_repeat_s'] * 1000 / r['count_ms']:.0f}×."
        )
    return "\n".join(lines) + "\n"


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--sqlite", default="")
    ap.add_argument("--pg", default="")
    ap.add_argument("--prepare", action="store_true")
    ap.add_argument("--count", type=int, default=1_000_000)
    ap.add_argument("--events", type=int, default=200)
    ap.add_argument("--full-repeats", type=int, default=3)
    ap.add_argument("--no-write", action="store_true")
    ap.add_argument("--prepare-only", action="store_true")
    args = ap.parse_args()
    targets = []
    if args.sqlite:
        targets.append(("SQLite", f"sqlite:///{args.sqlite}"))
    if args.pg:
        targets.append(("PostgreSQL", args.pg))
    results = []
    for name, url in targets:
        if args.prepare or args.prepare_only:
            prepare(url, args.count)
        if args.prepare_only:
            continue
        r = measure(url, args.events, args.full_repeats)
        r["backend"] = name
        print(json.dumps(r, ensure_ascii=False, default=str), flush=True)
        results.append(r)
    if not results:
        return
    text_ = report(results, args.events)
    print(text_)
    if not args.no_write and results:
        DOC.write_text("# Benchmarks: risks\n\n" + text_, encoding="utf-8")
    _ = timedelta


if __name__ == "__main__":
    main()
