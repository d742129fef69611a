"""Metering counts in memory, flushes in batches with an upsert, and loses nothing."""

from __future__ import annotations

import threading
from datetime import date

import pytest
from sqlalchemy import select

from civicgrid.data import keys, metering
from civicgrid.data.models import Usage
from tests.data.access_world import AccessWorld, access_world_fixture  # noqa: F401


def _ids(w: AccessWorld):
    with w.db.session() as s:
        key, _ = keys.create_key(s, w.actor(s, "consumer"), name="低保系统")
        from civicgrid.data.access import get_dataset

        return key.id, get_dataset(s, "population").id


def _usage(w: AccessWorld):
    with w.db.session() as s:
        return sorted(
            ((u.key_id, u.dataset_id, u.channel, u.calls, u.rows) for u in s.scalars(select(Usage))),
            key=str,
        )


def test_flush_upserts_and_accumulates(access_world: AccessWorld):
    w = access_world
    key_id, ds_id = _ids(w)
    meter = metering.Meter()
    meter.count(key_id, ds_id, "api", 10)
    meter.count(key_id, ds_id, "api", 5)
    meter.count(None, ds_id, "sandbox", 2)
    assert meter.flush(w.db.engine) == 2
    assert meter.pending() == {}
    meter.count(key_id, ds_id, "api", 1)
    meter.count(None, ds_id, "sandbox", 1)
    meter.flush(w.db.engine)
    assert _usage(w) == sorted([(key_id, ds_id, "api", 3, 16), (None, ds_id, "sandbox", 2, 3)], key=str)
    with w.db.session() as s:
        assert meter.rows_used(s, key_id, ds_id) == 16
        meter.count(key_id, ds_id, "ckan", 4)  # other channels count towards the same quota
        assert meter.rows_used(s, key_id, ds_id) == 20


def test_rows_used_reads_what_another_process_stored(access_world: AccessWorld):
    w = access_world
    key_id, ds_id = _ids(w)
    other = metering.Meter()
    other.count(key_id, ds_id, "api", 7)
    other.flush(w.db.engine)
    with w.db.session() as s:
        assert metering.Meter().rows_used(s, key_id, ds_id) == 7


def test_a_failed_flush_keeps_its_counts(access_world: AccessWorld, monkeypatch):
    w = access_world
    key_id, ds_id = _ids(w)
    meter = metering.Meter()
    meter.count(key_id, ds_id, "api", 9)

    def boom(session, batch):
        raise RuntimeError("database away")

    monkeypatch.setattr(metering, "_upsert", boom)
    with pytest.raises(RuntimeError):
        meter.flush(w.db.engine)
    meter.count(key_id, ds_id, "api", 1)
    assert meter.pending() == {(key_id, ds_id, metering.local_day(), "api"): (2, 10)}
    monkeypatch.undo()
    meter.flush(w.db.engine)
    assert _usage(w) == [(key_id, ds_id, "api", 2, 10)]


def test_counting_from_many_threads_while_flushing_loses_nothing(access_world: AccessWorld):
    w = access_world
    key_id, ds_id = _ids(w)
    meter = metering.Meter()
    per_thread, threads = 2000, 8
    stop = threading.Event()

    def count():
        for _ in range(per_thread):
            meter.count(key_id, ds_id, "api", 3)

    def flusher():
        while not stop.is_set():
            meter.flush(w.db.engine)

    f = threading.Thread(target=flusher)
    f.start()
    workers = [threading.Thread(target=count) for _ in range(threads)]
    for t in workers:
        t.start()
    for t in workers:
        t.join()
    stop.set()
    f.join()
    meter.flush(w.db.engine)
    assert _usage(w) == [(key_id, ds_id, "api", per_thread * threads, 3 * per_thread * threads)]


def test_the_app_flushes_on_shutdown(access_world: AccessWorld, settings):
    from fastapi.testclient import TestClient

    from civicgrid.main import create_app

    w = access_world
    key_id, ds_id = _ids(w)
    app = create_app(settings, w.db)
    with TestClient(app):
        metering.meter_for(w.db.engine).count(key_id, ds_id, "api", 11)
    assert _usage(w) == [(key_id, ds_id, "api", 1, 11)]


def test_the_worker_flushes(access_world: AccessWorld):
    from civicgrid import worker

    w = access_world
    key_id, ds_id = _ids(w)
    metering.meter_for(w.db.engine).count(key_id, ds_id, "api", 4)
    assert "data.flush_usage" in worker.run_due(w.db, {})
    assert _usage(w) == [(key_id, ds_id, "api", 1, 4)]


def test_local_day_turns_at_china_midnight():
    from datetime import UTC, datetime

    assert metering.local_day(datetime(2026, 3, 1, 15, 59, tzinfo=UTC)) == date(2026, 3, 1)
    assert metering.local_day(datetime(2026, 3, 1, 16, 0, tzinfo=UTC)) == date(2026, 3, 2)
    assert metering.seconds_to_local_midnight(datetime(2026, 3, 1, 15, 59, tzinfo=UTC)) == 60


def test_rate_limiter_refills_evenly_and_says_how_long_to_wait():
    lim = metering.RateLimiter()
    assert [lim.take(1, 1, 3, now=0.0) for _ in range(3)] == [0, 0, 0]
    assert lim.take(1, 1, 3, now=0.0) == 20  # 3 a minute: one more in 20 seconds
    assert lim.take(2, 1, 3, now=0.0) == 0  # another key has its own bucket
    assert lim.take(1, 1, 3, now=19.0) == 1
    assert lim.take(1, 1, 3, now=20.0) == 0


def test_rows_in_flight_still_count_towards_the_quota(access_world: AccessWorld, monkeypatch):
    w = access_world
    key_id, ds_id = _ids(w)
    meter = metering.Meter()
    meter.count(key_id, ds_id, "api", 8)
    seen: list[int] = []
    real = metering._upsert

    def watching(session, batch):
        with w.db.session() as other:  # what a request sees while the batch is being written
            seen.append(meter.rows_used(other, key_id, ds_id))
        return real(session, batch)

    monkeypatch.setattr(metering, "_upsert", watching)
    meter.flush(w.db.engine)
    with w.db.session() as s:
        assert seen == [8] and meter.rows_used(s, key_id, ds_id) == 8


def test_without_the_embedded_worker_the_app_flushes_every_few_seconds_and_at_shutdown(
    access_world: AccessWorld, settings, monkeypatch
):
    """Production runs the worker as its own process, which cannot see the app's counts: the
    app's flusher stores them while it runs, and the rest when it stops cleanly."""
    import time

    from fastapi.testclient import TestClient

    from civicgrid.main import create_app
    from tests.data.access_world import POPULATION_ROWS
    from tests.data.test_query_api import _grant, _key

    w = access_world
    w.data.load_rows("population", POPULATION_ROWS)
    monkeypatch.setattr(metering, "FLUSH_EVERY", 0.05)
    app = create_app(settings.model_copy(update={"embedded_worker": False}), w.db)
    with TestClient(app) as client:
        _grant(client)
        key = _key(client)
        read = lambda: client.get("/api/v1/data/query/population", headers={"X-API-Key": key})  # noqa: E731
        assert all(read().status_code == 200 for _ in range(3))
        deadline = time.monotonic() + 10
        while sum(u[3] for u in _usage(w)) < 3 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert [u[2:4] for u in _usage(w)] == [("api", 3)]  # stored while the app runs
        monkeypatch.setattr(metering, "FLUSH_EVERY", 3600.0)
        time.sleep(0.3)  # the flusher is now in its long wait: only the shutdown can store these
        assert all(read().status_code == 200 for _ in range(4))
        assert [u[2:4] for u in _usage(w)] == [("api", 3)]
    usage = _usage(w)
    assert [(u[2], u[3]) for u in usage] == [("api", 7)]
    assert usage[0][4] == 7 * len(POPULATION_ROWS)  # every read's rows, none lost
