"""Shared helpers of the benchmark scripts: machine description, load, medians and
percentiles, and writing a result section into a Markdown file between markers.

The machine is usually shared with other engineers' work, so every script reports the load
average next to its numbers and compares against a baseline measured in the same run."""

from __future__ import annotations

import math
import os
import platform
import statistics
from collections.abc import Sequence
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def cpu_model() -> str:
    """The CPU's model name from /proc/cpuinfo (or what the platform says)."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as fp:
            for line in fp:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def memory_gib() -> float:
    try:
        with open("/proc/meminfo", encoding="utf-8") as fp:
            for line in fp:
                if line.startswith("MemTotal:"):
                    return int(line.split()[1]) / 2**20
    except OSError:
        pass
    return float("nan")


def load_average() -> str:
    """The 1-, 5- and 15-minute load averages, e.g. "12.3 / 11.0 / 9.8"."""
    one, five, fifteen = os.getloadavg()
    return f"{one:.1f} / {five:.1f} / {fifteen:.1f}"


def machine_info(*, duckdb: bool = False) -> str:
    """One line: CPU, cores, memory, OS, Python (and DuckDB) versions, load averages now."""
    parts = [
        f"{cpu_model()} (from /proc/cpuinfo)",
        f"{os.cpu_count()} logical cores",
        f"{memory_gib():.0f} GiB",
        f"Linux {platform.release()}" if platform.system() == "Linux" else platform.platform(),
        f"Python {platform.python_version()}",
    ]
    if duckdb:
        import duckdb as _duckdb  # a benchmark may name the version of the library it measures

        parts.append(f"DuckDB {_duckdb.__version__}")
    return ", ".join(parts) + f"; load average (1/5/15 min) {load_average()}"


def median(values: Sequence[float]) -> float:
    return statistics.median(values) if values else float("nan")


def percentile(values: Sequence[float], p: float) -> float:
    """The p-th percentile (0–100) by linear interpolation between closest ranks."""
    if not values:
        return float("nan")
    ordered = sorted(values)
    if len(ordered) == 1:
        return ordered[0]
    rank = (len(ordered) - 1) * p / 100.0
    low, high = math.floor(rank), math.ceil(rank)
    return ordered[low] + (ordered[high] - ordered[low]) * (rank - low)


def write_section(doc: Path, marker: str, text: str, title: str = "# Benchmarks\n\n") -> None:
    """Put `text` into `doc` between <!-- marker --> and <!-- /marker -->, replacing an
    earlier run's section or appending a new one."""
    existing = doc.read_text(encoding="utf-8") if doc.exists() else title
    start, end = f"<!-- {marker} -->", f"<!-- /{marker} -->"
    block = f"{start}\n{text.rstrip()}\n{end}"
    if start in existing and end in existing:
        head, _, rest = existing.partition(start)
        tail = rest.split(end, 1)[1]
        existing = head + block + tail
    else:
        existing = existing.rstrip() + "\n\n" + block + "\n"
    doc.write_text(existing, encoding="utf-8")


def fresh_database(url: str, *, template: str = "") -> None:
    """Make `url` an empty database (PostgreSQL: dropped and created again, as a copy of the
    database `template` when given; SQLite: the file removed)."""
    if not url.startswith("postgresql"):
        Path(url.removeprefix("sqlite:///")).unlink(missing_ok=True)
        return
    from sqlalchemy import create_engine, text
    from sqlalchemy.engine import make_url

    u = make_url(url.replace("postgresql://", "postgresql+psycopg://", 1))
    admin = create_engine(u.set(database="postgres").render_as_string(hide_password=False),
                          isolation_level="AUTOCOMMIT")  # fmt: skip
    copy = f' TEMPLATE "{template}"' if template else ""
    with admin.connect() as c:
        c.execute(text(f'DROP DATABASE IF EXISTS "{u.database}" WITH (FORCE)'))
        if template:  # a template must have no session (e.g. a cached engine of the process)
            c.execute(
                text("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = :db"),
                {"db": template},
            )
        c.execute(text(f'CREATE DATABASE "{u.database}"{copy}'))
    admin.dispose()
