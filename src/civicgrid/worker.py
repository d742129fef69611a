"""The background worker: periodic jobs from every capability, run by `civicgrid worker`
or, in the embedded default, on a thread inside `civicgrid serve`.

Each job is a plain service function taking a session; it must be idempotent, because a
restart may run it again and several workers may run at once on PostgreSQL.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

from sqlalchemy.orm import Session

from civicgrid.core.db import Database

log = logging.getLogger("civicgrid.worker")


@dataclass(frozen=True)
class Job:
    name: str
    every_seconds: float
    run: Callable[[Session], object]


def jobs() -> list[Job]:
    from civicgrid.accounts import service as accounts
    from civicgrid.data import lifecycle, metering
    from civicgrid.disputes import service as disputes
    from civicgrid.events import deadlines, hotline
    from civicgrid.risks import service as risks

    return [
        Job("accounts.purge_expired", 300, accounts.purge_expired),
        Job("data.flush_usage", 5, metering.flush_job),
        Job("data.check_retention", 3600, lifecycle.retention_job),
        Job("events.check_deadlines", 30, deadlines.check_deadlines),
        Job("disputes.check_follow_ups", 60, disputes.check_follow_ups),
        Job("events.purge_hotline_files", 3600, hotline.purge_files),
        Job("risks.evaluate_new", 5, risks.evaluate_new),
        Job("risks.check_deadlines", 60, risks.check_deadlines),
        Job("risks.full_pass", 600, risks.full_pass),
    ]


def run_due(db: Database, last_run: dict[str, float], now: float | None = None) -> list[str]:
    """Run every job whose interval has passed; a failing job is logged and retried next time."""
    now = time.monotonic() if now is None else now
    ran = []
    for job in jobs():
        if now - last_run.get(job.name, -1e18) < job.every_seconds:
            continue
        try:
            with db.session() as session:
                job.run(session)
            ran.append(job.name)
        except Exception:
            log.exception("job %s failed", job.name)
        last_run[job.name] = now
    return ran


def run_forever(db: Database, stop: threading.Event, tick: float = 1.0) -> None:
    last_run: dict[str, float] = {}
    log.info("worker started")
    while not stop.is_set():
        run_due(db, last_run)
        stop.wait(tick)
    log.info("worker stopped")


def start_embedded(db: Database) -> tuple[threading.Thread, threading.Event]:
    stop = threading.Event()
    thread = threading.Thread(target=run_forever, args=(db, stop), name="civicgrid-worker", daemon=True)
    thread.start()
    return thread, stop
