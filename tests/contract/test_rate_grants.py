"""The Redis publish-rate bucket hands a worker a few tokens at a time, so a
busy publisher pays a round trip per grant, not per publish; the shared
bucket is never overdrawn, however many workers draw on it."""

from __future__ import annotations

import time

from notifier.broker.redis_guards import RedisRateLimiter
from notifier.broker.redis_store import make_client


def test_a_grant_serves_several_publishes_without_a_round_trip(redis_server, prefix: str) -> None:
    client = make_client(redis_server.url, 2)
    limiter = RedisRateLimiter(client, prefix, rate=200, burst=100)
    assert limiter.chunk == 10
    key = limiter.prefix + "billing"
    assert limiter.acquire("billing") == 0.0
    left = float(client.hget(key, "tokens"))
    assert 89 <= left < 91, "one round trip took ten tokens"
    for _ in range(9):
        assert limiter.acquire("billing") == 0.0
    assert float(client.hget(key, "tokens")) == left, "spent locally: Redis was not asked again"
    assert limiter.acquire("billing") == 0.0
    assert float(client.hget(key, "tokens")) < left, "the next grant came from the bucket"


def test_workers_sharing_a_bucket_never_overdraw_it(redis_server, prefix: str) -> None:
    client = make_client(redis_server.url, 2)
    workers = [RedisRateLimiter(client, prefix, rate=200, burst=100) for _ in range(3)]
    started = time.monotonic()
    granted = sum(1 for i in range(600) if workers[i % 3].acquire("billing") == 0.0)
    refilled = 200 * (time.monotonic() - started)
    assert granted <= 100 + refilled + 1, f"{granted} publishes from a bucket of 100 (+{refilled:.0f} refilled)"
    assert granted >= 60, "most of the burst is usable even when workers hold grants"
    assert workers[0].acquire("billing") > 0, "an empty bucket says how long to wait"
