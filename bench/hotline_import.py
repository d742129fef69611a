"""Hotline (12345) import at scale: dry run and all-or-nothing commit of a generated CSV.

    .venv/bin/python bench/hotline_import.py sqlite|postgresql COMMIT_ROWS DRY_ROWS REPEATS

Results: docs/benchmarks.md, "Benchmarks: hotline (12345) import"."""

import csv
import io
import random
import statistics
import sys
import time
from datetime import datetime, timedelta
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the tests' world builder
sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import fresh_database
from tests.events.conftest import build_world

from civicgrid.accounts import service as accounts
from civicgrid.core.db import Database
from civicgrid.core.migrate import upgrade
from civicgrid.events import hotline, service
from civicgrid.events.models import Channel
from civicgrid.events.text import tokens

HEAD = ["工单编号", "诉求内容", "事件类别", "经度", "纬度", "来电人", "联系电话", "来电时间"]
WORDS = [
    "垃圾",
    "占道",
    "噪音",
    "路灯",
    "井盖",
    "污水",
    "违章",
    "停车",
    "油烟",
    "绿化",
    "广告",
    "积水",
    "施工",
    "扬尘",
    "摊贩",
]


def make_csv(n, seed, prefix):
    rnd = random.Random(seed)
    when = (datetime.now() - timedelta(days=1)).strftime("%Y-%m-%d %H:%M:%S")
    out = io.StringIO()
    w = csv.writer(out)
    w.writerow(HEAD)
    for i in range(n):
        w.writerow(
            [
                f"{prefix}{i:06d}",
                "".join(rnd.sample(WORDS, 4)) + f"问题{i}",
                "0102",
                round(rnd.uniform(0.01, 4.99), 6),
                round(rnd.uniform(0.01, 9.99), 6),
                "张三",
                "13800000000",
                when,
            ]
        )
    return out.getvalue().encode("utf-8-sig")


def fresh(kind, name):
    """An empty database of that name, made again on each call (runs do not pile up databases)."""
    pg = "postgresql://postgres@127.0.0.1:5432/"
    url = f"sqlite:////tmp/{name}.db" if kind == "sqlite" else pg + name
    fresh_database(url)
    upgrade(url)
    db = Database(url)
    with db.session() as s:
        build_world(s)
    return db


def run(kind, commit_rows, dry_rows, repeats):
    tokens("预热分词词典")  # load jieba's dictionary before timing
    dry, com, base = [], [], []
    for r in range(repeats):
        db = fresh(kind, "hlbench_import")
        p = Path(f"/tmp/dry{r}.csv")
        p.write_bytes(make_csv(dry_rows, r, "D"))
        t = time.perf_counter()
        hotline.import_file(db, path=p, username="dispatcher", dry_run=True)
        dry.append(dry_rows / (time.perf_counter() - t))
        p = Path(f"/tmp/com{r}.csv")
        p.write_bytes(make_csv(commit_rows, 100 + r, "C"))
        t = time.perf_counter()
        hotline.import_file(db, path=p, username="dispatcher")
        com.append(commit_rows / (time.perf_counter() - t))
        db.dispose()
        db = fresh(kind, "hlbench_baseline")  # a fresh database: duplicate scans see the same
        sheet = hotline.read_sheet("b.csv", make_csv(commit_rows, 200 + r, "B"))
        t = time.perf_counter()
        with db.session() as s:
            actor = accounts.actor_for_user(s, accounts.get_user_by_username(s, "dispatcher"))
            for _line, c in sheet.rows:
                service.create_event(
                    s,
                    actor,
                    category_code=c[2],
                    lon=float(c[3]),
                    lat=float(c[4]),
                    description=c[1],
                    channel=Channel.hotline,
                    external_id=c[0],
                    reporter_name=c[5],
                    reporter_phone=c[6],
                )
        base.append(commit_rows / (time.perf_counter() - t))
        db.dispose()
    md, mc, mb = (statistics.median(x) for x in (dry, com, base))
    print(
        f"{kind}: dry {md:,.0f} rows/s; commit {mc:,.0f} rows/s; "
        f"create_event {mb:,.0f} rows/s; ratio {mc / mb:.2f}"
    )


if __name__ == "__main__":
    run(sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]))
