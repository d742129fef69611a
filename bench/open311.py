"""Benchmark: the Open311 channel against the JSON API in the same process
(run: .venv/bin/python bench/open311.py [--database-url postgresql://…/postgres]).

Builds the test suite's small two-county world in a fresh database, then times, interleaved:
POST /open311/v2/requests.json (form) against POST /api/v1/events (JSON) with the same report,
and GET /open311/v2/requests.json/.xml (every row, public masking) against GET /api/v1/events
(one page of the same size). In-process ASGI client: no network, one worker thread.
Prints a Markdown section for docs/benchmarks-open311.md.
"""

from __future__ import annotations

import argparse
import os
import platform
import random
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
os.environ["CIVICGRID_EMBEDDED_WORKER"] = "false"

from fastapi.testclient import TestClient
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url
from tests.events.conftest import build_world
from tests.factories import make_user

from civicgrid.accounts import service as accounts
from civicgrid.accounts.permissions import Role
from civicgrid.core.config import Settings
from civicgrid.core.db import Database
from civicgrid.core.migrate import upgrade
from civicgrid.main import create_app


def cpu_model() -> str:
    with open("/proc/cpuinfo", encoding="utf-8") as fh:
        for line in fh:
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or "unknown"


def timed(fn: Callable[[], Any]) -> float:
    t0 = time.perf_counter()
    fn()
    return (time.perf_counter() - t0) * 1000


def p99(xs: list[float]) -> float:
    return sorted(xs)[max(0, int(len(xs) * 0.99) - 1)]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--reports", type=int, default=300, help="reports per channel")
    ap.add_argument("--reads", type=int, default=20, help="timed list reads per endpoint")
    ap.add_argument("--database-url", default="", help="a PostgreSQL server URL (a scratch db is made)")
    args = ap.parse_args()

    tmp = Path(tempfile.mkdtemp(prefix="cg-bench-open311-"))
    drop: Callable[[], None] = lambda: None  # noqa: E731
    if args.database_url:
        base = make_url(args.database_url.replace("postgresql://", "postgresql+psycopg://", 1))
        name = f"cg_bench_{uuid.uuid4().hex[:8]}"
        admin = create_engine(base, isolation_level="AUTOCOMMIT")
        with admin.connect() as c:
            c.execute(text(f'CREATE DATABASE "{name}"'))
        url = base.set(database=name).render_as_string(hide_password=False)

        def drop() -> None:
            with admin.connect() as c:
                c.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))

        backend = "PostgreSQL"
    else:
        url = f"sqlite:///{tmp / 'bench.db'}"
        backend = "SQLite"
    try:
        upgrade(url)
        db = Database(url)
        with db.session() as s:
            tree = build_world(s)
            make_user(s, tree, "open311", Role.resident, "bureau")
            user = accounts.get_user_by_username(s, "open311")
            assert user is not None
            _row, key = accounts.create_api_token(s, accounts.actor_for_user(s, user), name="bench")
            dispatcher = accounts.get_user_by_username(s, "admin")
            assert dispatcher is not None
            _row, admin_key = accounts.create_api_token(s, accounts.actor_for_user(s, dispatcher), name="b")
        app = create_app(Settings(data_dir=tmp / "data", embedded_worker=False), db)
        rng = random.Random(20261125)
        post_o311: list[float] = []
        post_api: list[float] = []
        with TestClient(app) as client:
            for i in range(args.reports):
                lon, lat = rng.uniform(0.2, 9.8), rng.uniform(0.2, 9.8)
                text_ = f"第{i}处暴露垃圾，靠近{rng.randint(1, 300)}号"
                form = {"api_key": key, "service_code": "0102", "lat": lat, "long": lon, "description": text_}
                body = {"category": "0102", "lon": lon, "lat": lat, "description": text_}

                def o311(form: dict[str, Any] = form) -> None:
                    assert client.post("/open311/v2/requests.json", data=form).status_code == 201

                def api(body: dict[str, Any] = body) -> None:
                    headers = {"Authorization": f"Bearer {key}"}
                    assert client.post("/api/v1/events", json=body, headers=headers).status_code == 201

                pair = [(post_o311, o311), (post_api, api)]
                rng.shuffle(pair)
                for sink, fn in pair:
                    sink.append(timed(fn))
            rows = 2 * args.reports
            size = min(rows, 500)
            admin_headers = {"Authorization": f"Bearer {admin_key}"}
            reads: dict[str, list[float]] = {"json": [], "xml": [], "api": []}
            for _ in range(args.reads):
                reads["json"].append(timed(lambda: client.get("/open311/v2/requests.json")))
                reads["xml"].append(timed(lambda: client.get("/open311/v2/requests.xml")))
                reads["api"].append(
                    timed(lambda: client.get(f"/api/v1/events?size={size}", headers=admin_headers))
                )
            got = len(client.get("/open311/v2/requests.json").json())
    finally:
        drop()

    med_o, med_a = statistics.median(post_o311), statistics.median(post_api)
    print(f"## {backend}: {args.reports} reports per channel, {got} rows read\n")
    print(f"- Machine: {cpu_model()}, {os.cpu_count()} logical cores; Python {platform.python_version()}")
    print(
        "- In-process ASGI client (no network), one request at a time; reports interleaved in random order\n"
    )
    print("| what | median ms | p99 ms | vs baseline |")
    print("|---|---:|---:|---:|")
    print(f"| POST /api/v1/events (baseline) | {med_a:.2f} | {p99(post_api):.2f} | 1.00× |")
    print(f"| POST /open311/v2/requests.json | {med_o:.2f} | {p99(post_o311):.2f} | {med_o / med_a:.2f}× |")
    base = statistics.median(reads["api"])
    api_p99 = p99(reads["api"])
    print(f"| GET /api/v1/events?size={size} (baseline, {size} rows) | {base:.1f} | {api_p99:.1f} | 1.00× |")
    for fmt in ("json", "xml"):
        m, tail = statistics.median(reads[fmt]), p99(reads[fmt])
        print(f"| GET /open311/v2/requests.{fmt} ({got} rows) | {m:.1f} | {tail:.1f} | {m / base:.2f}× |")


if __name__ == "__main__":
    main()
