"""Rate limits shared by every worker process through Redis (CIVICGRID_REDIS_URL), the
in-process fallback, and quotas that see other processes' stored reads."""

from __future__ import annotations

import os
import uuid

import pytest

from civicgrid.data import keys, metering
from tests.data.access_world import AccessWorld, access_world_fixture  # noqa: F401

REDIS_URL = os.environ.get("CIVICGRID_TEST_REDIS", "redis://127.0.0.1:6379/15")


def _redis_or_skip() -> str:
    import redis

    try:
        redis.Redis.from_url(REDIS_URL, socket_connect_timeout=0.5).ping()
    except (redis.RedisError, OSError):
        if os.environ.get("CI"):
            pytest.fail(f"Redis is not reachable at {REDIS_URL} in CI (.ci/run starts it)")
        pytest.skip(f"no Redis at {REDIS_URL}")
    return REDIS_URL


def test_in_process_buckets_refill_over_the_minute() -> None:
    lim = metering.RateLimiter()
    assert [lim.take(1, 2, 2, now=0.0) for _ in range(3)] == [0, 0, 30]
    assert lim.take(1, 3, 2, now=0.0) == 0  # another dataset has its own bucket
    assert lim.take(1, 2, 2, now=30.0) == 0  # half a minute refills one call


def test_two_processes_share_one_redis_bucket() -> None:
    url = _redis_or_skip()
    bucket = ("test", uuid.uuid4().hex)
    # Two limiters stand for two uvicorn workers: together they get the limit once, not twice.
    a, b = metering.RedisRateLimiter(url), metering.RedisRateLimiter(url)
    taken = [a.take_bucket(bucket, 4), b.take_bucket(bucket, 4), a.take_bucket(bucket, 4)]
    taken += [b.take_bucket(bucket, 4), a.take_bucket(bucket, 4)]
    assert taken[:4] == [0, 0, 0, 0]
    assert 1 <= taken[4] <= 15  # the fifth waits for a quarter of a minute's refill
    a.forget([bucket])
    assert b.take_bucket(bucket, 4) == 0


def test_unreachable_redis_falls_back_to_per_process_limits() -> None:
    lim = metering.RedisRateLimiter("redis://127.0.0.1:1/0")  # nothing listens there
    assert lim.take(7, 8, 1) == 0
    assert lim.take(7, 8, 1) > 0


def test_limiter_for_uses_redis_when_configured(monkeypatch: pytest.MonkeyPatch, access_world: AccessWorld):
    monkeypatch.delenv(metering.REDIS_URL_ENV, raising=False)
    local = metering.limiter_for(access_world.db.engine)
    assert type(local) is metering.RateLimiter
    monkeypatch.setenv(metering.REDIS_URL_ENV, "redis://127.0.0.1:6379/15")
    shared = metering.limiter_for(access_world.db.engine)
    assert isinstance(shared, metering.RedisRateLimiter)
    assert metering.limiter_for(object()) is shared  # one for the process, whatever the database


def test_quota_sees_rows_another_process_stored_after_the_cache_ages(
    access_world: AccessWorld, monkeypatch: pytest.MonkeyPatch
) -> None:
    w = access_world
    with w.db.session() as s:
        key, _ = keys.create_key(s, w.actor(s, "consumer"), name="两个进程")
        from civicgrid.data.access import get_dataset

        key_id, ds_id = key.id, get_dataset(s, "population").id
    mine, other = metering.Meter(), metering.Meter()
    clock = [1000.0]
    monkeypatch.setattr(metering.time, "monotonic", lambda: clock[0])
    with w.db.session() as s:
        assert mine.rows_used(s, key_id, ds_id) == 0
    other.count(key_id, ds_id, "api", 40)
    other.flush(w.db.engine)  # the other worker stores its reads
    with w.db.session() as s:
        assert mine.rows_used(s, key_id, ds_id) == 0  # cached for STORED_TTL seconds
        clock[0] += metering.STORED_TTL + 0.1
        assert mine.rows_used(s, key_id, ds_id) == 40
