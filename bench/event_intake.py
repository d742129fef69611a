"""HTTP intake benchmark: POST /api/v1/events on PostgreSQL, with the real location lookup and
duplicate check, uvicorn (uvloop + httptools) started here on a loopback port, and a lean
asyncio client (raw HTTP/1.1 keep-alive, several processes) on loopback.

    .venv/bin/python bench/event_intake.py --pg postgresql://postgres@127.0.0.1:5432/postgres \\
        [--requests 20000] [--seconds 60] [--workers 2] [--connections 32] [--client-procs 1] \\
        [--prefill 30000] [--baseline-src DIR] [--factory MODULE:FN] [--py-spy] [--profile] \\
        [--serve] [--no-floor]

A fresh database is created on the server (and dropped afterwards): migrations, the demo
jurisdiction (600 grids), `--prefill` generated events (so the duplicate check has neighbours
to compare), and bearer tokens of grid workers (one per connection). Every server (setup ×
worker count) then runs against its own copy of it (`CREATE DATABASE … TEMPLATE`) and posts the
same reports, so an A/B compares like with like.

Each setup is measured in the same run against two baselines: the client alone against a
canned-response server (the client's own ceiling), and `GET /healthz` through the same
uvicorn (the framework's floor). CPU time per event is read from /proc for the uvicorn
processes, the PostgreSQL backends of the benchmark database and the client processes, so
the ceiling of an idle 2-core machine is 2 s / (CPU seconds per event) whatever the load of
the shared machine while it runs. `--baseline-src DIR` also runs the server from another
source tree (e.g. `git archive HEAD | tar -x -C DIR`) against the same database: an A/B in
one run (the database is migrated by this tree: an index this tree adds serves the baseline
too; drop it from the baseline's copy to measure it). `--serve` starts this tree and the
baseline as an operator would, `civicgrid serve --workers N` (a `--factory` by uvicorn's command
line); `--no-floor` skips the `GET /healthz` runs. `--py-spy` adds a run under py-spy
(GIL-holding samples of the workers, the POSTs only) and prints where Python spends its CPU;
`--profile` profiles the same calls in-process and counts SQL.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing as mp
import os
import platform
import resource
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections import Counter
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import shapely
from sqlalchemy import create_engine, event, select, text
from sqlalchemy.engine import Engine, make_url

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import fresh_database

from civicgrid.accounts import service as accounts
from civicgrid.core.db import Database
from civicgrid.core.migrate import upgrade
from civicgrid.demo import service as demo
from civicgrid.demo.events import DESCRIPTIONS, generate_events
from civicgrid.events import service as events
from civicgrid.models import load_all
from civicgrid.regions.models import Region, RegionLevel

ROOT = Path(__file__).resolve().parent.parent
WARM = 200  # warm-up reports per server (jieba's dictionary, the grid index, the first places)
TICK = os.sysconf("SC_CLK_TCK")


def cpu_model() -> str:
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.processor()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


# ---- CPU accounting ---------------------------------------------------------------------


def proc_cpu(pid: int) -> float:
    """User + system CPU seconds of a process (0 when it is gone)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / TICK


def process_tree(pid: int) -> list[int]:
    out = [pid]
    for task in Path(f"/proc/{pid}/task").glob("*"):
        try:
            kids = (task / "children").read_text().split()
        except OSError:
            continue
        for k in kids:
            out += process_tree(int(k))
    return out


def backend_pids(admin: Engine, dbname: str) -> list[int]:
    with admin.connect() as c:
        return [
            int(p)
            for p in c.execute(
                text("SELECT pid FROM pg_stat_activity WHERE datname = :d"), {"d": dbname}
            ).scalars()
        ]


class CpuMeter:
    """CPU seconds used between start() and stop() by the server's processes and the
    database's backends (backends that appear meanwhile count from zero)."""

    def __init__(self, admin: Engine, dbname: str, server_pid: int) -> None:
        self.admin, self.dbname, self.server_pid = admin, dbname, server_pid

    def _read(self) -> tuple[dict[int, float], dict[int, float]]:
        server = {p: proc_cpu(p) for p in process_tree(self.server_pid)}
        pg = {p: proc_cpu(p) for p in backend_pids(self.admin, self.dbname)}
        return server, pg

    def start(self) -> None:
        self.before = self._read()

    def stop(self) -> tuple[float, float]:
        after = self._read()
        server = sum(v - self.before[0].get(p, 0.0) for p, v in after[0].items())
        pg = sum(v - self.before[1].get(p, 0.0) for p, v in after[1].items())
        return server, pg


class WaitSampler:
    """Samples what the database's backends are doing every 50 ms while the load runs:
    running, waiting for the application (ClientRead, idle in transaction), for a lock
    (which kind), or for the WAL flush of a commit."""

    def __init__(self, admin: Engine, dbname: str) -> None:
        self.admin, self.dbname = admin, dbname
        self.counts: Counter[str] = Counter()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        sql = text(
            "SELECT state, wait_event_type, wait_event, left(query, 40) FROM pg_stat_activity "
            "WHERE datname = :d AND pid <> pg_backend_pid()"
        )
        with self.admin.connect() as c:
            while not self._stop.wait(0.05):
                for state, wtype, wevent, query in c.execute(sql, {"d": self.dbname}):
                    if state == "idle":
                        continue
                    if wtype == "Lock":
                        what = f"lock wait: {wevent} ({' '.join((query or '').split()[:3])})"
                    elif wtype:
                        what = f"{state}: {wtype}/{wevent}"
                    else:
                        what = f"{state}: on CPU"
                    self.counts[what] += 1

    def __enter__(self) -> WaitSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self._stop.set()
        self._thread.join()

    def report(self) -> None:
        total = sum(self.counts.values())
        if total:
            print(f"database backends, busy samples ({total}):")
            for what, n in self.counts.most_common(10):
                print(f"  {100 * n / total:5.1f} %  {what}")


# ---- data ---------------------------------------------------------------------------------


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


def make_bodies(world: dict[str, Any], n: int, seed: int) -> list[dict[str, Any]]:
    rng = np.random.default_rng(seed)
    cats = world["categories"]
    bodies = []
    for grid, lon, lat in points(world["grids"], n, rng):
        code, cname, cls = cats[int(rng.integers(len(cats)))]
        text_ = DESCRIPTIONS.get(cls, DESCRIPTIONS["01"])[int(rng.integers(3))]
        desc = text_.format(addr=f"网格{grid[-3:]}附近{int(rng.integers(1, 300))}号", name=cname)
        bodies.append({"category": code, "lon": lon, "lat": lat, "description": desc})
    return bodies


# ---- server -------------------------------------------------------------------------------


def create_app_without_rollups() -> Any:
    """The app with the statistics rollups' listeners (events/rollups.py) removed, for
    `--factory event_intake:create_app_without_rollups`: what the rollups cost intake."""
    from sqlalchemy.orm import Session

    from civicgrid.events.models import Event
    from civicgrid.main import create_app

    app = create_app()
    try:
        from civicgrid.events import rollups
    except ImportError:
        return app
    for name, fn in (("after_flush", "_after_flush"), ("do_orm_execute", "_bulk_statement")):
        f = getattr(rollups, fn, None)
        if f is not None and event.contains(Session, name, f):
            event.remove(Session, name, f)
    setter = getattr(rollups, "_load_old_on_set", None)
    for attr in getattr(rollups, "TRACKED", ()):
        if setter is not None and event.contains(getattr(Event, attr), "set", setter):
            event.remove(getattr(Event, attr), "set", setter)
    return app


def py_spy_command(out: Path) -> list[str]:
    """py-spy launching the server (attaching to a running process is not allowed in this
    sandbox): samples only the thread holding the GIL, i.e. where Python spends CPU."""
    exe = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
    if not Path(exe).exists():
        raise SystemExit("py-spy is not installed (.venv/bin/pip install py-spy)")
    return [exe, "record", "--subprocesses", "--gil", "--rate", "100", "--format", "raw", "--nonblocking",
            "--output", str(out), "--"]  # fmt: skip


def start_server(
    url: str,
    data_dir: Path,
    port: int,
    workers: int,
    src: Path | None = None,
    factory: str = "",
    spy_out: Path | None = None,
    serve: bool = False,
) -> subprocess.Popen[bytes]:
    paths = [str(ROOT / "bench")]
    if src is not None:
        paths.insert(0, str(src / "src"))
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([*paths, os.environ.get("PYTHONPATH", "")]),
        "CIVICGRID_DATABASE_URL": url,
        "CIVICGRID_DATA_DIR": str(data_dir),
        "CIVICGRID_EMBEDDED_WORKER": "false",
        "CIVICGRID_LOG_LEVEL": "WARNING",
    }
    if serve:  # what an operator runs (its default pool: 20 connections divided among the workers)
        args = ["-c", "from civicgrid.cli import app; app()", "serve", "--host", "127.0.0.1"]
        args += ["--port", str(port), "--workers", str(workers)]
    else:
        args = ["-m", "uvicorn", factory or "civicgrid.main:create_app", "--factory", "--host", "127.0.0.1"]
        args += ["--port", str(port), "--workers", str(workers), "--log-level", "warning", "--no-access-log"]
        args += ["--loop", "uvloop", "--http", "httptools", "--backlog", "2048"]
    prefix = py_spy_command(spy_out) if spy_out else []
    proc = subprocess.Popen([*prefix, sys.executable, *args], env=env, cwd=src or ROOT)
    deadline = time.time() + 600  # a loaded 2-core machine imports slowly
    while time.time() < deadline:
        try:
            if httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=2).status_code == 200:
                return proc
        except httpx.HTTPError:
            time.sleep(0.3)
    proc.kill()
    raise RuntimeError("the server did not start")


def stop_server(proc: subprocess.Popen[bytes], spied: bool = False) -> None:
    if spied:  # stop uvicorn (py-spy's child); py-spy then writes its file and exits
        for pid in process_tree(proc.pid)[1:2]:
            os.kill(pid, 2)
    else:
        proc.send_signal(2)
    try:
        proc.wait(timeout=30)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def login(base: str, username: str, password: str) -> str:
    res = httpx.post(
        f"{base}/api/v1/accounts/login", json={"username": username, "password": password}, timeout=120
    )
    res.raise_for_status()
    return str(res.json()["token"])


# ---- the lean client ----------------------------------------------------------------------


def encode_posts(bodies: list[dict[str, Any]], tokens: list[str], port: int) -> list[bytes]:
    """Complete HTTP/1.1 requests, prepared before the clock starts."""
    out = []
    for i, body in enumerate(bodies):
        payload = json.dumps(body, ensure_ascii=False).encode()
        head = (
            f"POST /api/v1/events HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n"
            f"Authorization: Bearer {tokens[i % len(tokens)]}\r\n"
            f"Content-Type: application/json\r\nContent-Length: {len(payload)}\r\n\r\n"
        )
        out.append(head.encode() + payload)
    return out


def encode_gets(n: int, port: int, path: str = "/healthz") -> list[bytes]:
    return [f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n\r\n".encode()] * n


async def _drive(port: int, requests: list[bytes], connections: int, seconds: float) -> dict[str, Any]:
    """Closed loop: each keep-alive connection sends its next request when the answer to the
    previous one has arrived; latency = request written → whole response read."""
    latencies: list[float] = []
    statuses: Counter[int] = Counter()
    it = iter(requests)
    stop_at = time.perf_counter() + seconds

    async def conn() -> None:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        try:
            for req in it:
                if time.perf_counter() > stop_at:
                    return
                t = time.perf_counter()
                writer.write(req)
                head = await reader.readuntil(b"\r\n\r\n")
                status = int(head[9:12])
                length = 0
                for line in head.split(b"\r\n"):
                    if line[:15].lower() == b"content-length:":
                        length = int(line[15:])
                if length:
                    await reader.readexactly(length)
                if status in (200, 201):
                    latencies.append(time.perf_counter() - t)
                statuses[status] += 1
        except (ConnectionError, asyncio.IncompleteReadError):
            statuses[0] += 1
        finally:
            writer.close()

    await asyncio.gather(*(conn() for _ in range(connections)))
    return {"latencies": latencies, "statuses": dict(statuses)}


def _client_proc(args: tuple[int, list[bytes], int, float, float]) -> dict[str, Any]:
    port, requests, connections, seconds, start_at = args
    try:
        import uvloop

        uvloop.install()
    except ImportError:
        pass
    time.sleep(max(0.0, start_at - time.time()))
    r0 = resource.getrusage(resource.RUSAGE_SELF)
    t0 = time.perf_counter()
    res = asyncio.run(_drive(port, requests, connections, seconds))
    res["elapsed"] = time.perf_counter() - t0
    r1 = resource.getrusage(resource.RUSAGE_SELF)
    res["cpu"] = (r1.ru_utime - r0.ru_utime) + (r1.ru_stime - r0.ru_stime)
    return res


def run_load(
    port: int, requests: list[bytes], connections: int, procs: int, seconds: float
) -> dict[str, Any]:
    """Send `requests` over `connections` split across `procs` client processes."""
    start_at = time.time() + 0.5
    per = max(1, connections // procs)
    jobs = [(port, requests[i::procs], per, seconds, start_at) for i in range(procs)]
    with mp.get_context("fork").Pool(procs) as pool:
        parts = pool.map(_client_proc, jobs)
    lat = sorted(x for p in parts for x in p["latencies"])
    statuses: Counter[int] = Counter()
    for p in parts:
        statuses.update(p["statuses"])
    elapsed = max(p["elapsed"] for p in parts)
    errors = {k: v for k, v in statuses.items() if k not in (200, 201)}
    return {
        "ok": len(lat),
        "errors": errors,
        "seconds": round(elapsed, 2),
        "per_second": round(len(lat) / elapsed, 1),
        "median_ms": round(statistics.median(lat) * 1000, 2) if lat else None,
        "p99_ms": round(lat[max(0, int(len(lat) * 0.99) - 1)] * 1000, 2) if lat else None,
        "client_cpu_s": round(sum(p["cpu"] for p in parts), 2),
    }


CANNED = b'{"number":"331082-20261125-00017","state":"reported"' + b" " * 1400 + b"}"


async def _canned_server(port: int) -> None:
    resp = (
        b"HTTP/1.1 201 Created\r\ncontent-type: application/json\r\n"
        + f"content-length: {len(CANNED)}\r\n\r\n".encode()
        + CANNED
    )

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                length = 0
                for line in head.split(b"\r\n"):
                    if line[:15].lower() == b"content-length:":
                        length = int(line[15:])
                if length:
                    await reader.readexactly(length)
                writer.write(resp)
        except (ConnectionError, asyncio.IncompleteReadError):
            writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", port, backlog=2048)
    async with server:
        await server.serve_forever()


def _serve_canned(port: int) -> None:
    try:
        import uvloop

        uvloop.install()
    except ImportError:
        pass
    asyncio.run(_canned_server(port))


def client_alone(requests: list[bytes], connections: int, procs: int, seconds: float) -> dict[str, Any]:
    """The client against a server that answers every request with a canned 201 at once."""
    port = free_port()
    server = mp.get_context("fork").Process(target=_serve_canned, args=(port,), daemon=True)
    server.start()
    time.sleep(0.5)
    try:
        t0 = proc_cpu(server.pid or 0)
        res = run_load(port, requests, connections, procs, seconds)
        res["server_cpu_s"] = round(proc_cpu(server.pid or 0) - t0, 2)
        return res
    finally:
        server.terminate()
        server.join()


# ---- profiles -----------------------------------------------------------------------------


BUCKETS = [
    ("psycopg wait (database round trips)", ("psycopg/connection.py:wait", "psycopg/waiting.py")),
    ("jieba / duplicate text", ("jieba", "events/text.py")),
    ("audit.record", ("core/audit.py",)),
    ("SQLAlchemy ORM / Core", ("sqlalchemy/",)),
    ("pydantic", ("pydantic",)),
    ("FastAPI / Starlette routing and deps", ("fastapi/", "starlette/")),
    ("anyio thread hop", ("anyio/",)),
    ("uvicorn / httptools", ("uvicorn/",)),
    ("civicgrid code", ("civicgrid/",)),
]


def summarise_py_spy(path: Path) -> None:
    """Share of samples by the innermost frame of interest; and the civicgrid functions that
    hold the most samples cumulatively."""
    if not path.exists():
        return
    total = 0
    own: Counter[str] = Counter()
    cum: Counter[str] = Counter()
    idle = 0
    leaves: Counter[str] = Counter()
    for line in path.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        n = int(count)
        frames = stack.split(";")
        if any("warm_up" in f or "healthz" in f or "accounts/api.py" in f for f in frames):
            continue  # start-up, the readiness probe and the logins: not the POSTs measured
        leaves[frames[-1].split(" (")[0] + " " + frames[-1].rsplit("/", 1)[-1].rstrip(")")] += n
        total += n
        if any("threading.py" in f and "wait" in f for f in frames[-2:]) or frames[-1].startswith("select"):
            idle += n
        leaf = next(
            (name for name, keys in BUCKETS if any(k in f for f in reversed(frames[-6:]) for k in keys)),
            "other",
        )
        own[leaf] += n
        for f in set(frames):
            if "civicgrid/" in f:
                cum[f.split(" (")[0] + " " + f.split("/civicgrid/")[-1].rstrip(")")] += n
    if not total:
        return
    print(f"py-spy: {total} samples of the uvicorn workers holding the GIL (Python on CPU)")
    for name, n in own.most_common():
        print(f"  {name:45s} {100 * n / total:5.1f} %")
    print("  cumulative, civicgrid functions:")
    for name, n in cum.most_common(12):
        print(f"    {name:60s} {100 * n / total:5.1f} %")
    print("  innermost frames:")
    for name, n in leaves.most_common(40):
        print(f"    {name:60s} {100 * n / total:5.1f} %")


def profile_in_process(url: str, bodies: list[dict[str, Any]], username: str) -> None:
    """What one request does, in this thread under cProfile: token → actor, receive_event, the
    reply built from it, commit — the same calls as POST /api/v1/events. Counts statements."""
    import cProfile
    import pstats

    from civicgrid.events import api
    from civicgrid.events.models import Channel

    db = Database(url)
    statements: Counter[str] = Counter()

    @event.listens_for(db.engine, "before_cursor_execute")
    def _count(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        statements[" ".join(statement.split())[:90]] += 1

    with db.session() as s:
        user = accounts.get_user_by_username(s, username)
        assert user is not None
        actor = accounts.actor_for_user(s, user)
        _token, raw = accounts.create_api_token(s, actor, name="bench")

    def one(body: dict[str, Any]) -> None:
        with db.session() as s:
            a = accounts.actor_for_api_token(s, raw)
            assert a is not None
            intake = events.receive_event(
                s, events.Report(a, channel=Channel.api, category_code=body["category"], lon=body["lon"],
                lat=body["lat"], description=body["description"]),
            )  # fmt: skip
            api.intake_detail(s, a, intake).model_dump_json()

    for body in bodies[:50]:
        one(body)  # warm-up
    statements.clear()
    prof = cProfile.Profile()
    start = time.perf_counter()
    cpu0 = time.process_time()
    prof.enable()
    for body in bodies[50:]:
        one(body)
    prof.disable()
    took = time.perf_counter() - start
    cpu = time.process_time() - cpu0
    n = len(bodies) - 50
    print(
        f"in-process, one thread: {n / took:.0f} events/s ({took / n * 1000:.2f} ms each, "
        f"{cpu / n * 1000:.2f} ms CPU of this process under cProfile); "
        f"{sum(statements.values()) / n:.1f} SQL statements per event:"
    )
    for stmt, count in statements.most_common():
        print(f"  {count / n:5.2f}  {stmt}")
    pstats.Stats(prof).sort_stats("cumulative").print_stats(30)
    db.dispose()


# ---- main ---------------------------------------------------------------------------------


def main() -> None:
    load_all()
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--pg", required=True, help="PostgreSQL server URL (a database is created there)")
    ap.add_argument("--requests", type=int, default=20_000)
    ap.add_argument("--seconds", type=float, default=60)
    ap.add_argument("--workers", type=int, nargs="+", default=[2])
    ap.add_argument("--connections", type=int, default=32, help="keep-alive connections (one token each)")
    ap.add_argument("--client-procs", type=int, default=1)
    ap.add_argument("--prefill", type=int, default=30_000)
    ap.add_argument("--baseline-src", type=Path, help="also run the server from this source tree")
    ap.add_argument("--factory", default="", help="another app factory (module:function) to compare")
    ap.add_argument("--py-spy", action="store_true", help="one more run of this tree under py-spy")
    ap.add_argument("--profile", action="store_true", help="also profile the intake path in-process")
    ap.add_argument("--profile-requests", type=int, default=1000)
    ap.add_argument("--no-floor", action="store_true", help="skip the GET /healthz runs")
    ap.add_argument("--serve", action="store_true", help="start this tree by `civicgrid serve --workers N`")
    args = ap.parse_args()

    base_url = make_url(args.pg.replace("postgresql://", "postgresql+psycopg://", 1))
    name = f"cg_bench_intake_{uuid.uuid4().hex[:8]}"
    admin = create_engine(base_url.render_as_string(hide_password=False), isolation_level="AUTOCOMMIT")
    with admin.connect() as c:
        c.execute(text(f'CREATE DATABASE "{name}"'))
    url = base_url.set(database=name).render_as_string(hide_password=False).replace("+psycopg", "")
    run_name = f"{name}_run"
    run_url = base_url.set(database=run_name).render_as_string(hide_password=False).replace("+psycopg", "")
    data_dir = Path(tempfile.mkdtemp(prefix="cg-intake-"))
    results: list[dict[str, Any]] = []
    try:
        t = time.perf_counter()
        world = prepare(url, data_dir, args.prefill)
        print(f"prepared in {time.perf_counter() - t:.1f} s (prefill {args.prefill} events)", flush=True)
        # Every server gets a fresh copy of the prepared database and the same reports: a
        # server that ran after another one wrote into a denser database (more duplicate
        # candidates per report) and measured ≈ 25–30 % slower whatever its code.
        bodies = make_bodies(world, WARM + args.requests, seed=42)
        password = world["creds"]["grid_workers"]["password"]
        usernames = [f"gw{g[0]}" for g in world["grids"][: args.connections]]

        alone = client_alone(
            encode_posts(bodies, ["x" * 43], 1), args.connections, args.client_procs, min(args.seconds, 15)
        )
        alone.update(setup="client alone (canned 201)", load=os.getloadavg()[0])
        results.append(alone)
        print(json.dumps(alone), flush=True)

        setups: list[tuple[str, Path | None, str, bool]] = [("this tree", None, "", False)]
        if args.factory:
            setups.append((args.factory, None, args.factory, False))
        if args.baseline_src:
            setups.append((f"baseline {args.baseline_src.name}", args.baseline_src, "", False))
        if args.py_spy:
            setups.append(("this tree under py-spy", None, "", True))
        for label, src, factory, spied in setups:
            for workers in args.workers:
                fresh_database(run_url, template=name)
                port = free_port()
                spy_out = data_dir / f"spy-{port}.txt" if spied else None
                serve = args.serve and not factory
                server = start_server(run_url, data_dir, port, workers, src, factory, spy_out, serve)
                try:
                    base = f"http://127.0.0.1:{port}"
                    tokens = [login(base, u, password) for u in usernames]
                    meter = CpuMeter(admin, run_name, server.pid)
                    # warm-up: jieba's dictionary, the grid index and the places of the grids
                    warm = encode_posts(bodies[:WARM], tokens, port)
                    run_load(port, warm[:4], 1, 1, 300)
                    run_load(port, warm[4:], args.connections, args.client_procs, 60)
                    if not (spied or args.no_floor):  # py-spy records all: only the POSTs count there
                        gets = encode_gets(20_000, port)
                        floor = run_load(port, gets, args.connections, args.client_procs, 10)
                        floor.update(setup=f"{label}: GET /healthz", workers=workers, load=os.getloadavg()[0])
                        results.append(floor)
                        print(json.dumps(floor), flush=True)
                    reqs = encode_posts(bodies[WARM:], tokens, port)
                    meter.start()
                    with WaitSampler(admin, run_name) as waits:
                        res = run_load(port, reqs, args.connections, args.client_procs, args.seconds)
                    server_cpu, pg_cpu = meter.stop()
                    if res["ok"] and not spied:  # py-spy's own CPU would count as the server's
                        res["cpu_ms_per_event"] = {
                            "server": round(server_cpu / res["ok"] * 1000, 2),
                            "postgres": round(pg_cpu / res["ok"] * 1000, 2),
                            "client": round(res["client_cpu_s"] / res["ok"] * 1000, 2),
                        }
                    res.update(
                        setup=f"{label}: POST /api/v1/events", workers=workers, load=os.getloadavg()[0]
                    )
                    results.append(res)
                    print(json.dumps(res), flush=True)
                    waits.report()
                finally:
                    stop_server(server, spied)
                if spy_out is not None:
                    summarise_py_spy(spy_out)
        if args.profile:
            fresh_database(run_url, template=name)
            profile_in_process(run_url, bodies[: args.profile_requests], usernames[0])
    finally:
        with admin.connect() as c:
            c.execute(text(f'DROP DATABASE IF EXISTS "{run_name}" WITH (FORCE)'))
            c.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        shutil.rmtree(data_dir, ignore_errors=True)
    print()
    print(
        f"Machine: {cpu_model()}, {os.cpu_count()} logical cores; Python {platform.python_version()}; "
        f"{args.connections} connections from {args.client_procs} client process(es)"
    )
    cols = "setup | uvicorn workers | ok | events/s | median ms | p99 ms | CPU ms/event server · PG · client"
    print(f"| {cols} | errors | load |")
    print("|---|---:|---:|---:|---:|---:|---|---|---:|")
    for r in results:
        cpu = r.get("cpu_ms_per_event")
        cpu_s = f"{cpu['server']} · {cpu['postgres']} · {cpu['client']}" if cpu else "-"
        print(
            f"| {r['setup']} | {r.get('workers', '-')} | {r['ok']} | {r['per_second']} | {r['median_ms']} "
            f"| {r['p99_ms']} | {cpu_s} | {r['errors'] or '-'} | {r['load']:.1f} |"
        )


if __name__ == "__main__":
    main()
