"""HTTP intake benchmark: POST /api/v1/events on PostgreSQL, with the real location lookup and
duplicate check, a uvicorn server started here on a loopback port, and a threaded httpx client
with a connection pool on loopback. Prints events/s, median and p99 latency per server setup.

    .venv/bin/python bench/event_intake.py --pg postgresql://postgres@127.0.0.1:5432/postgres \
        [--requests 20000] [--seconds 120] [--workers 1 2] [--threads 16] [--prefill 100000] [--profile]

A fresh database is created on the server (and dropped afterwards): migrations, the demo
jurisdiction (600 grids), optionally `--prefill` generated events (so the duplicate check has
neighbours to compare), and bearer tokens of grid workers (one per client thread).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import shapely
from fastapi import Request
from sqlalchemy import create_engine, select, text
from sqlalchemy.engine import make_url

from civicgrid.accounts import service as accounts
from civicgrid.core.auth import Actor
from civicgrid.core.db import Database
from civicgrid.core.deps import SessionDep, optional_actor
from civicgrid.core.errors import Unauthenticated
from civicgrid.core.migrate import upgrade
from civicgrid.demo import service as demo
from civicgrid.demo.events import DESCRIPTIONS, generate_events
from civicgrid.events import service as events
from civicgrid.models import load_all
from civicgrid.regions.models import Region, RegionLevel

ROOT = Path(__file__).resolve().parent.parent


def cpu_model() -> str:
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.processor()


def bearer_actor(request: Request, session: SessionDep) -> Actor | None:
    """The proposed fix of core/deps.optional_actor: a plain `def`, so FastAPI runs the token
    lookup (and its `last_used_at` UPDATE) in the thread pool instead of blocking the event
    loop. Bearer tokens only (what this benchmark sends)."""
    auth = request.headers.get("authorization", "")
    actor = None
    if auth.lower().startswith("bearer "):
        actor = accounts.actor_for_api_token(session, auth[7:].strip())
        if actor is None:
            raise Unauthenticated("The API token is invalid, expired or revoked.")
    request.state.actor = actor
    return actor


def create_app_sync_auth() -> Any:
    """The app with `bearer_actor` overriding optional_actor (uvicorn --factory)."""
    from civicgrid.main import create_app

    app = create_app()
    app.dependency_overrides[optional_actor] = bearer_actor
    return app


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def prepare(url: str, data_dir: Path, prefill: int) -> dict[str, Any]:
    """Migrate, load the demo, prefill events; return credentials, categories and grid samples."""
    upgrade(url)
    db = Database(url)
    with db.session() as s:
        creds = demo.load_demo(s, grids=600, seed=2021, data_dir=data_dir)
    with db.session() as s:
        if prefill:
            generate_events(s, count=prefill, seed=1, days=90)
        else:
            from civicgrid.core.auth import SYSTEM

            events.seed_catalogue(s, SYSTEM)
    with db.session() as s:
        cats = [(c.code, c.name, (c.code[:2])) for c in events.list_categories(s) if c.parent_id is not None]
        grids = s.execute(
            select(Region.code, Region.geometry).where(Region.level == RegionLevel.grid).order_by(Region.code)
        ).all()
    if db.engine.dialect.name == "postgresql":
        with db.engine.connect().execution_options(isolation_level="AUTOCOMMIT") as c:
            c.execute(text("VACUUM ANALYZE"))
    db.dispose()
    return {"creds": creds, "categories": cats, "grids": grids}


def points(grids: list[Any], n: int, rng: np.random.Generator) -> list[tuple[str, float, float]]:
    """n points, each inside a random grid (so every request is inside the jurisdiction)."""
    geoms = shapely.from_geojson([g[1] for g in grids])
    out: list[tuple[str, float, float]] = []
    while len(out) < n:
        i = int(rng.integers(len(grids)))
        x0, y0, x1, y1 = geoms[i].bounds
        x, y = rng.uniform(x0, x1), rng.uniform(y0, y1)
        if shapely.contains_xy(geoms[i], x, y):
            out.append((grids[i][0], round(float(x), 6), round(float(y), 6)))
    return out


def start_server(url: str, data_dir: Path, port: int, workers: int, variant: str) -> subprocess.Popen[bytes]:
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(ROOT / "bench"), os.environ.get("PYTHONPATH", "")]),
        "CIVICGRID_DATABASE_URL": url,
        "CIVICGRID_DATA_DIR": str(data_dir),
        "CIVICGRID_EMBEDDED_WORKER": "false",
        "CIVICGRID_LOG_LEVEL": "WARNING",
    }
    factory = "civicgrid.main:create_app" if variant == "as-is" else "event_intake:create_app_sync_auth"
    args = ["-m", "uvicorn", factory, "--factory", "--host", "127.0.0.1"]
    args += ["--port", str(port), "--workers", str(workers), "--log-level", "warning", "--no-access-log"]
    proc = subprocess.Popen([sys.executable, *args], env=env, cwd=ROOT)
    deadline = time.time() + 60
    while time.time() < deadline:
        try:
            if httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=1).status_code == 200:
                return proc
        except httpx.HTTPError:
            time.sleep(0.2)
    proc.kill()
    raise RuntimeError("the server did not start")


def login(base: str, username: str, password: str) -> str:
    res = httpx.post(f"{base}/api/v1/accounts/login", json={"username": username, "password": password})
    res.raise_for_status()
    return str(res.json()["token"])


def run(
    base: str, tokens: list[str], bodies: list[dict[str, Any]], threads: int, seconds: float
) -> dict[str, Any]:
    """Send the bodies from `threads` threads (one pooled client and token each) until done or
    out of time; latency of every successful request."""
    latencies: list[float] = []
    errors: dict[int, int] = {}
    lock = threading.Lock()
    stop_at = time.perf_counter() + seconds
    chunks = [bodies[i::threads] for i in range(threads)]

    def worker(i: int) -> None:
        headers = {"Authorization": f"Bearer {tokens[i % len(tokens)]}"}
        mine: list[float] = []
        bad: dict[int, int] = {}
        with httpx.Client(
            base_url=base, headers=headers, timeout=30, limits=httpx.Limits(max_connections=2)
        ) as c:
            for body in chunks[i]:
                if time.perf_counter() > stop_at:
                    break
                t = time.perf_counter()
                try:
                    status = c.post("/api/v1/events", json=body).status_code
                except httpx.HTTPError:
                    status = 0  # timed out or the connection broke
                if status == 201:
                    mine.append(time.perf_counter() - t)
                else:
                    bad[status] = bad.get(status, 0) + 1
        with lock:
            latencies.extend(mine)
            for k, v in bad.items():
                errors[k] = errors.get(k, 0) + v

    start = time.perf_counter()
    with ThreadPoolExecutor(threads) as pool:
        list(pool.map(worker, range(threads)))
    elapsed = time.perf_counter() - start
    lat = sorted(latencies)
    return {
        "ok": len(lat),
        "errors": errors,
        "seconds": round(elapsed, 2),
        "per_second": round(len(lat) / elapsed, 1),
        "median_ms": round(statistics.median(lat) * 1000, 1) if lat else None,
        "p99_ms": round(lat[int(len(lat) * 0.99) - 1] * 1000, 1) if lat else None,
    }


def profile_in_process(url: str, bodies: list[dict[str, Any]], username: str) -> None:
    """What one request does, in this thread under cProfile (the server runs sync routes on a
    thread pool, which cProfile cannot see): token → actor, create_event, the response's
    detail, commit — the same calls as POST /api/v1/events."""
    import cProfile
    import pstats

    from civicgrid.events import api
    from civicgrid.events.models import Channel

    db = Database(url)
    with db.session() as s:
        user = accounts.get_user_by_username(s, username)
        assert user is not None
        actor = accounts.actor_for_user(s, user)
        _token, raw = accounts.create_api_token(s, actor, name="bench")

    def one(body: dict[str, Any]) -> None:
        with db.session() as s:
            a = accounts.actor_for_api_token(s, raw)
            assert a is not None
            e = events.create_event(
                s, a, channel=Channel.api, category_code=body["category"], lon=body["lon"],
                lat=body["lat"], description=body["description"],
            )  # fmt: skip
            api.detail(s, a, e)

    for body in bodies[:50]:
        one(body)  # warm-up
    prof = cProfile.Profile()
    start = time.perf_counter()
    prof.enable()
    for body in bodies[50:]:
        one(body)
    prof.disable()
    took = time.perf_counter() - start
    n = len(bodies) - 50
    print(f"in-process, one thread: {n / took:.0f} events/s ({took / n * 1000:.2f} ms each)")
    pstats.Stats(prof).sort_stats("cumulative").print_stats(45)
    db.dispose()


def main() -> None:
    load_all()
    ap = argparse.ArgumentParser()
    ap.add_argument("--pg", required=True, help="PostgreSQL server URL (a database is created there)")
    ap.add_argument("--requests", type=int, default=20_000)
    ap.add_argument("--seconds", type=float, default=120)
    ap.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--threads", type=int, default=16)
    ap.add_argument(
        "--variants",
        nargs="+",
        default=["as-is", "sync-auth"],
        choices=["as-is", "sync-auth"],
        help="the app as it is, and with the token lookup moved off the event loop",
    )
    ap.add_argument("--prefill", type=int, default=100_000)
    ap.add_argument("--profile", action="store_true", help="also profile the intake path in-process")
    ap.add_argument("--profile-requests", type=int, default=1000)
    args = ap.parse_args()

    base_url = make_url(args.pg.replace("postgresql://", "postgresql+psycopg://", 1))
    name = f"cg_bench_intake_{uuid.uuid4().hex[:8]}"
    admin = create_engine(base_url.render_as_string(hide_password=False), isolation_level="AUTOCOMMIT")
    with admin.connect() as c:
        c.execute(text(f'CREATE DATABASE "{name}"'))
    url = base_url.set(database=name).render_as_string(hide_password=False).replace("+psycopg", "")
    data_dir = Path(tempfile.mkdtemp(prefix="cg-intake-"))
    results = []
    try:
        t = time.perf_counter()
        world = prepare(url, data_dir, args.prefill)
        print(f"prepared in {time.perf_counter() - t:.1f} s (prefill {args.prefill} events)", flush=True)
        rng = np.random.default_rng(42)
        pts = points(world["grids"], args.requests, rng)
        cats = world["categories"]
        bodies = []
        for grid, lon, lat in pts:
            code, cname, cls = cats[int(rng.integers(len(cats)))]
            text_ = DESCRIPTIONS.get(cls, DESCRIPTIONS["01"])[int(rng.integers(3))]
            desc = text_.format(addr=f"网格{grid[-3:]}附近{int(rng.integers(1, 300))}号", name=cname)
            bodies.append({"category": code, "lon": lon, "lat": lat, "description": desc})
        password = world["creds"]["grid_workers"]["password"]
        usernames = [f"gw{g[0]}" for g in world["grids"][: args.threads]]
        for variant, workers in [(v, w) for v in args.variants for w in args.workers]:
            port = free_port()
            server = start_server(url, data_dir, port, workers, variant)
            try:
                base = f"http://127.0.0.1:{port}"
                tokens = [login(base, u, password) for u in usernames]
                # warm-up: one request alone first (it loads jieba's dictionary and the grid
                # index, seconds on a busy machine), then a concurrent round
                run(base, tokens[:1], bodies[:3], 1, 300)
                run(base, tokens, bodies[:200], args.threads, 30)
                res = run(base, tokens, bodies, args.threads, args.seconds)
                res.update(variant=variant, workers=workers, threads=args.threads, load=os.getloadavg()[0])
                results.append(res)
                print(json.dumps(res), flush=True)
            finally:
                server.send_signal(2)
                try:
                    server.wait(timeout=30)
                except subprocess.TimeoutExpired:  # a hung server (see the as-is results)
                    server.kill()
                    server.wait()
        if args.profile:
            profile_in_process(url, bodies[: args.profile_requests], usernames[0])
    finally:
        with admin.connect() as c:
            c.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    print()
    print(f"Machine: {cpu_model()}, {os.cpu_count()} logical cores; Python {platform.python_version()}")
    print(
        "| app | uvicorn workers | client threads | requests ok | events/s | median ms | p99 ms | errors "
        "| load |"
    )
    print("|---|---:|---:|---:|---:|---:|---:|---|---:|")
    for r in results:
        print(
            f"| {r['variant']} | {r['workers']} | {r['threads']} | {r['ok']} | {r['per_second']} "
            f"| {r['median_ms']} | {r['p99_ms']} | {r['errors'] or '-'} | {r['load']:.1f} |"
        )


if __name__ == "__main__":
    main()
